//! The web UI's security: nothing without a login, CSRF on every form, cookie flags, login
//! rate limiting, and roles (viewers and marketers refused what is not theirs); the Users
//! page; the audience preview's sample and the exact count.

use crate::common::{TestServer, ADMIN_PASSWORD, ADMIN_TOKEN};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::json;

fn encode(form: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish()
}

/// A browser without cookie jar magic: cookies are kept by hand, redirects not followed.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn new(s: &TestServer) -> Self {
        Self {
            http: spoor_server::tls::http_client()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            base: s.url.clone(),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, resp: &reqwest::Response) {
        for c in resp.headers().get_all(SET_COOKIE) {
            let c = c.to_str().unwrap();
            let (kv, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !v.is_empty() {
                self.cookies.push((k.to_owned(), v.to_owned()));
            }
        }
    }

    async fn get(&mut self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&resp);
        let s = resp.status().as_u16();
        (s, resp.text().await.unwrap())
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(form))
            .send()
            .await
            .unwrap();
        self.keep(&resp);
        resp
    }

    /// The CSRF token of the last page (`name="_csrf" value="…"`).
    fn csrf_of(page: &str) -> String {
        let at = page.find("name=\"_csrf\" value=\"").expect("a csrf field") + 20;
        page[at..].split('"').next().unwrap().to_owned()
    }

    async fn login(&mut self, user: &str, password: &str) -> reqwest::Response {
        let (s, page) = self.get("/ui/login").await;
        assert_eq!(s, 200);
        let csrf = Self::csrf_of(&page);
        self.post(
            "/ui/login",
            &[("_csrf", &csrf), ("user", user), ("password", password)],
        )
        .await
    }

    /// Logs in and returns the session's CSRF token.
    async fn logged_in(&mut self, user: &str, password: &str) -> String {
        let r = self.login(user, password).await;
        assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
        let (s, page) = self.get("/ui/").await;
        assert_eq!(s, 200, "{page}");
        Self::csrf_of(&page)
    }
}

async fn create_user(s: &TestServer, name: &str, role: &str) {
    let r = s
        .http
        .post(format!("{}/v1/admin/users", s.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": name, "role": role, "password": "password-of-".to_string() + name}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

const PAGES: &[&str] = &[
    "/ui/",
    "/ui/profiles",
    "/ui/profiles/prof_x",
    "/ui/audiences",
    "/ui/audiences/new",
    "/ui/audiences/x",
    "/ui/audiences/overlap?a=x&b=y",
    "/ui/sources",
    "/ui/debugger",
    "/ui/destinations",
    "/ui/privacy",
    "/ui/privacy/export?ref=user_id:u1",
    "/ui/users",
    "/ui/audiences/count/x",
];

/// Every state-changing route of the UI (the login form has its own double-submit check).
const POSTS: &[&str] = &[
    "/ui/logout",
    "/ui/audiences",
    "/ui/audiences/preview",
    "/ui/profiles/prof_x/split",
    "/ui/destinations/x/replay",
    "/ui/privacy/erase",
    "/ui/audiences/count",
    "/ui/users",
    "/ui/users/x/role",
    "/ui/users/x/password",
    "/ui/users/x/delete",
];

#[tokio::test]
async fn nothing_is_reachable_without_a_login() {
    let s = TestServer::start().await;
    let mut b = Browser::new(&s);
    for p in PAGES.iter().chain(POSTS) {
        let resp = if POSTS.contains(p) {
            b.post(p, &[]).await
        } else {
            b.http.get(format!("{}{p}", s.url)).send().await.unwrap()
        };
        assert_eq!(resp.status(), 303, "{p}");
        assert_eq!(resp.headers()[LOCATION], "/ui/login", "{p}");
    }
    // htmx requests are sent to the login page as a whole page.
    let r = b
        .http
        .get(format!("{}/ui/debugger", s.url))
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["hx-redirect"], "/ui/login");
    // A made-up session is no session.
    b.cookies.push(("spoor_session".into(), "forged".into()));
    assert_eq!(b.get("/ui/").await.0, 303);
    // The API needs its token (a session cookie is not one).
    for p in [
        "/v1/profiles",
        "/v1/audiences",
        "/v1/admin/users",
        "/v1/admin/events",
    ] {
        let r = b
            .http
            .get(format!("{}{p}", s.url))
            .header(COOKIE, b.cookie_header())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{p}");
    }
    // `/` leads to the UI; the assets are public (they hold no data).
    let r = b.http.get(format!("{}/", s.url)).send().await.unwrap();
    assert_eq!(r.headers()[LOCATION], "/ui/");
    assert_eq!(b.get("/ui/assets/htmx.min.js").await.0, 200);
}

#[tokio::test]
async fn the_session_cookie_is_http_only_and_same_site_and_ends_at_logout() {
    let s = TestServer::start().await;
    let mut b = Browser::new(&s);
    let r = b.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(r.status(), 303);
    let cookie = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|c| c.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("spoor_session="))
        .expect("a session cookie");
    assert!(cookie.contains("; HttpOnly"), "{cookie}");
    assert!(cookie.contains("; SameSite=Lax"), "{cookie}");
    assert!(cookie.contains("; Path=/"), "{cookie}");
    assert!(!cookie.contains("Secure"), "not configured: {cookie}");
    let (st, page) = b.get("/ui/").await;
    assert_eq!(st, 200);
    let csrf = Browser::csrf_of(&page);
    let stolen = b.cookie_header();
    let r = b.post("/ui/logout", &[("_csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    // The old cookie no longer opens anything.
    let r = b
        .http
        .get(format!("{}/ui/", s.url))
        .header(COOKIE, stolen)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);

    // Behind https, `Secure` is added.
    let s2 = TestServer::start_with(|c| c.ui.secure_cookies = true).await;
    let r = Browser::new(&s2).login("admin", ADMIN_PASSWORD).await;
    let cookie = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[tokio::test]
async fn every_form_post_needs_the_session_csrf_token() {
    let s = TestServer::start().await;
    let mut b = Browser::new(&s);
    let csrf = b.logged_in("admin", ADMIN_PASSWORD).await;
    for p in POSTS {
        for form in [vec![], vec![("_csrf", "wrong-token")]] {
            let r = b.post(p, &form).await;
            assert_eq!(r.status(), 403, "{p} {form:?}");
            let body = r.text().await.unwrap();
            assert!(body.contains("CSRF"), "{p}: {body}");
        }
    }
    // With the token the audience is saved; through the header (htmx) too.
    let r = b
        .post(
            "/ui/audiences",
            &[
                ("_csrf", &csrf),
                ("name", "vips"),
                ("rule", "trait plan = \"vip\""),
            ],
        )
        .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let r = b
        .http
        .post(format!("{}/ui/audiences/preview", s.url))
        .header(COOKIE, b.cookie_header())
        .header("x-csrf-token", &csrf)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[("rule", "trait plan = \"vip\"")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("preview-size"));
    // Another session's token is refused: tokens are per session.
    let mut other = Browser::new(&s);
    other.logged_in("admin", ADMIN_PASSWORD).await;
    let r = other
        .post(
            "/ui/audiences/preview",
            &[("_csrf", &csrf), ("rule", "trait a = 1")],
        )
        .await;
    assert_eq!(r.status(), 403);
    // The login form itself is protected by its double-submit token.
    let mut fresh = Browser::new(&s);
    let r = fresh
        .post(
            "/ui/login",
            &[("user", "admin"), ("password", ADMIN_PASSWORD)],
        )
        .await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn wrong_passwords_are_rate_limited_per_user() {
    let s = TestServer::start().await;
    let mut b = Browser::new(&s);
    for _ in 0..5 {
        let r = b.login("admin", "not-the-password").await;
        assert_eq!(r.status(), 401);
        assert!(r
            .text()
            .await
            .unwrap()
            .contains("wrong user name or password"));
    }
    // Now even the right password waits, with a message saying how long.
    let r = b.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body = r.text().await.unwrap();
    assert!(body.contains("too many failed logins; wait"), "{body}");
}

#[tokio::test]
async fn roles_viewers_read_marketers_edit_audiences_admins_split() {
    let s = TestServer::start().await;
    create_user(&s, "vera", "viewer").await;
    create_user(&s, "mark", "marketer").await;
    s.send_processed(vec![
        json!({"type": "track", "event": "Product Viewed", "anonymousId": "a1"}),
        json!({"type": "identify", "anonymousId": "a2", "userId": "u1", "traits": {"email": "ann@example.com", "plan": "vip"}}),
        json!({"type": "identify", "anonymousId": "a1", "userId": "u1"}),
    ])
    .await;
    let (_, p) = s.admin_get("/v1/profiles/email:ann@example.com").await;
    let pid = p["id"].as_str().unwrap().to_owned();
    let merged = p["merged_ids"][0].as_str().expect("a merge").to_owned();
    let split = format!("/ui/profiles/{pid}/split");

    // A viewer reads the card with its merge history, but cannot split, edit or replay.
    let mut v = Browser::new(&s);
    let vcsrf = v.logged_in("vera", "password-of-vera").await;
    let (st, card) = v.get(&format!("/ui/profiles/{pid}")).await;
    assert_eq!(st, 200);
    assert!(card.contains("merged into"), "{card}");
    assert!(!card.contains("/split"), "no split button for a viewer");
    for (path, form) in [
        (
            split.as_str(),
            vec![("_csrf", vcsrf.as_str()), ("undo_merge", merged.as_str())],
        ),
        (
            "/ui/audiences",
            vec![
                ("_csrf", vcsrf.as_str()),
                ("name", "x"),
                ("rule", "trait a = 1"),
            ],
        ),
        ("/ui/destinations/x/replay", vec![("_csrf", vcsrf.as_str())]),
    ] {
        let r = v.post(path, &form).await;
        assert_eq!(r.status(), 403, "{path}");
        assert!(r.text().await.unwrap().contains("needs the"));
    }
    assert_eq!(v.get("/ui/audiences/new").await.0, 403);
    // Viewers do not see write key hints.
    let (_, src) = v.get("/ui/sources").await;
    assert!(src.contains("admins only"));

    // A marketer saves an audience but cannot split.
    let mut m = Browser::new(&s);
    let mcsrf = m.logged_in("mark", "password-of-mark").await;
    let r = m
        .post(
            "/ui/audiences",
            &[
                ("_csrf", &mcsrf),
                ("name", "vips"),
                ("rule", "trait plan = \"vip\""),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let (_, list) = m.get("/ui/audiences").await;
    assert!(list.contains("/ui/audiences/vips"), "{list}");
    let r = m
        .post(&split, &[("_csrf", &mcsrf), ("undo_merge", &merged)])
        .await;
    assert_eq!(r.status(), 403);

    // An admin splits.
    let mut a = Browser::new(&s);
    let acsrf = a.logged_in("admin", ADMIN_PASSWORD).await;
    let (_, card) = a.get(&format!("/ui/profiles/{pid}")).await;
    assert!(card.contains(&split), "a split button for admins");
    let r = a
        .post(&split, &[("_csrf", &acsrf), ("undo_merge", &merged)])
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("re-derived"));

    // The users API is for admin tokens only.
    let r = s
        .http
        .get(format!("{}/v1/admin/users", s.url))
        .bearer_auth("nope-nope-nope-nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn the_rule_editor_points_at_errors_and_previews_sizes() {
    let s = TestServer::start().await;
    s.send_processed(vec![
        json!({"type": "identify", "userId": "u1", "traits": {"plan": "vip"}}),
        json!({"type": "identify", "userId": "u2", "traits": {"plan": "free"}}),
    ])
    .await;
    let mut b = Browser::new(&s);
    let csrf = b.logged_in("admin", ADMIN_PASSWORD).await;
    let r = b
        .post(
            "/ui/audiences/preview",
            &[("_csrf", &csrf), ("rule", "trait plan = \"vip\"")],
        )
        .await;
    let html = r.text().await.unwrap();
    assert!(
        html.contains(r#"<b id="preview-size">1</b> of 2 profiles"#),
        "{html}"
    );
    let r = b
        .post(
            "/ui/audiences/preview",
            &[("_csrf", &csrf), ("rule", "trait plan =")],
        )
        .await;
    let html = r.text().await.unwrap();
    assert!(
        html.contains("rule-error") && html.contains("line 1, column"),
        "{html}"
    );
    assert!(html.contains("^"), "a caret under the position: {html}");
    // Saving a broken rule keeps what was typed, with the error.
    let r = b
        .post(
            "/ui/audiences",
            &[
                ("_csrf", &csrf),
                ("name", "broken"),
                ("rule", "trait plan ="),
            ],
        )
        .await;
    assert_eq!(r.status(), 400);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("trait plan =</textarea>") && html.contains("rule-error"),
        "{html}"
    );
}

#[tokio::test]
async fn the_privacy_page_exports_and_erases_for_admins_only_and_the_card_shows_consent() {
    let s = TestServer::start().await;
    create_user(&s, "vera", "viewer").await;
    s.send_processed(vec![
        json!({"type": "identify", "userId": "u1", "traits": {"email": "zed@example.com"},
               "context": {"consent": {"categoryPreferences": {"advertising": true}}}}),
        json!({"type": "track", "userId": "u1", "event": "Order Completed"}),
        json!({"type": "identify", "userId": "u2", "traits": {"email": "amy@example.com"}}),
    ])
    .await;
    let (st, p) = s.admin_get("/v1/profiles/user_id:u1").await;
    assert_eq!(st, 200, "{p}");
    let pid = p["id"].as_str().unwrap().to_owned();

    // The card shows consent per purpose: stated, or the default.
    let mut a = Browser::new(&s);
    let acsrf = a.logged_in("admin", ADMIN_PASSWORD).await;
    let (_, card) = a.get(&format!("/ui/profiles/{pid}")).await;
    assert!(card.contains("<h2>Consent</h2>"), "{card}");
    assert!(
        card.contains("consent-granted"),
        "advertising was granted: {card}"
    );
    assert!(card.contains("default (never stated)"), "{card}");

    // A viewer neither sees nor uses the page.
    let mut v = Browser::new(&s);
    let vcsrf = v.logged_in("vera", "password-of-vera").await;
    let (_, home) = v.get("/ui/").await;
    assert!(
        !home.contains("href=\"/ui/privacy\""),
        "no Privacy link for a viewer"
    );
    assert_eq!(v.get("/ui/privacy").await.0, 403);
    assert_eq!(v.get("/ui/privacy/export?ref=user_id:u1").await.0, 403);
    let r = v
        .post(
            "/ui/privacy/erase",
            &[("_csrf", &vcsrf), ("ref", "user_id:u1")],
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(s.admin_get("/v1/profiles/user_id:u1").await.0, 200);

    // An admin downloads the access export, then erases the person.
    let (st, page) = a.get("/ui/privacy").await;
    assert_eq!(st, 200, "{page}");
    assert!(page.contains("no erasures"), "{page}");
    assert!(
        page.contains("/v1/profiles/{pref}"),
        "the API read is audited: {page}"
    );
    let (st, export) = a.get("/ui/privacy/export?ref=email:zed@example.com").await;
    assert_eq!(st, 200, "{export}");
    assert!(export.contains("zed@example.com") && export.contains("Order Completed"));
    let r = a
        .post(
            "/ui/privacy/erase",
            &[
                ("_csrf", &acsrf),
                ("ref", "email:zed@example.com"),
                ("suppress", "1"),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("<b>done</b>"));
    assert_eq!(s.admin_get("/v1/profiles/user_id:u1").await.0, 404);
    assert_eq!(s.admin_get("/v1/profiles/user_id:u2").await.0, 200);
    let (_, page) = a.get("/ui/privacy").await;
    assert!(page.contains("era_"), "the job is listed: {page}");
    // The UI's own reads, exports and changes are audited under the user's name.
    for what in [
        "ui:admin",
        "POST /ui/privacy/erase",
        "GET /ui/privacy/export",
        "GET /ui/profiles/{pref}",
    ] {
        assert!(page.contains(what), "{what} is audited: {page}");
    }
    assert!(
        page.contains("ui:vera"),
        "refused attempts are audited too: {page}"
    );
    assert!(
        !page.contains("zed@example.com"),
        "the page holds no erased value"
    );
    // A bad reference is an error that names it, not a crash.
    let r = a
        .post(
            "/ui/privacy/erase",
            &[("_csrf", &acsrf), ("ref", "email:nobody@example.com")],
        )
        .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn the_audience_list_shows_the_change_over_24_hours_and_a_line_of_sizes() {
    let s = TestServer::start_with(|c| c.ui.size_sample_secs = 1).await;
    s.define(|d| {
        d.audiences.insert(
            "vips".into(),
            spoor_core::audience::AudienceDefinition {
                name: "vips".into(),
                description: String::new(),
                rule: spoor_core::audience::parse(r#"trait plan = "vip""#).unwrap(),
                created_ms: 0,
                updated_ms: 0,
                revision: 1,
            },
        );
    })
    .await;
    // Let the sampler see the empty audience, then two people enter.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    s.send_processed(vec![
        json!({"type": "identify", "userId": "u1", "traits": {"plan": "vip"}}),
        json!({"type": "identify", "userId": "u2", "traits": {"plan": "vip"}}),
    ])
    .await;
    let mut b = Browser::new(&s);
    b.logged_in("admin", ADMIN_PASSWORD).await;
    let (_, list) = b.get("/ui/audiences").await;
    assert!(list.contains(r#"<td class="num change">+2</td>"#), "{list}");
    // After the next sample the 30-day line has two points.
    let mut drawn = false;
    for _ in 0..50 {
        let (_, list) = b.get("/ui/audiences").await;
        if list.contains("<polyline") {
            drawn = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(drawn, "a line of sizes is drawn");
}

async fn users_json(s: &TestServer) -> Vec<serde_json::Value> {
    let (st, v) = s.admin_get("/v1/admin/users").await;
    assert_eq!(st, 200, "{v}");
    v["users"].as_array().unwrap().clone()
}

async fn role_of(s: &TestServer, name: &str) -> Option<String> {
    users_json(s)
        .await
        .iter()
        .find(|u| u["name"] == name)
        .map(|u| u["role"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn the_users_page_is_for_admins_and_keeps_the_last_admin() {
    let s = TestServer::start().await;
    create_user(&s, "vera", "viewer").await;
    create_user(&s, "mark", "marketer").await;
    create_user(&s, "idle", "viewer").await;

    // Viewers and marketers neither see the page nor change anything through it.
    for (name, password) in [("vera", "password-of-vera"), ("mark", "password-of-mark")] {
        let mut b = Browser::new(&s);
        let csrf = b.logged_in(name, password).await;
        let (_, home) = b.get("/ui/").await;
        assert!(
            !home.contains("href=\"/ui/users\""),
            "no Users link for {name}"
        );
        assert_eq!(b.get("/ui/users").await.0, 403, "{name}");
        for (path, form) in [
            (
                "/ui/users",
                vec![
                    ("name", "evil"),
                    ("role", "admin"),
                    ("password", "password-evil"),
                ],
            ),
            ("/ui/users/idle/role", vec![("role", "admin")]),
            (
                "/ui/users/idle/password",
                vec![("password", "password-new")],
            ),
            ("/ui/users/idle/delete", vec![]),
        ] {
            let mut form = form;
            form.push(("_csrf", csrf.as_str()));
            let r = b.post(path, &form).await;
            assert_eq!(r.status(), 403, "{name} {path}");
        }
    }
    assert_eq!(role_of(&s, "idle").await.as_deref(), Some("viewer"));
    assert_eq!(role_of(&s, "evil").await, None);

    // The admin sees everyone, with the last login where there was one.
    let mut a = Browser::new(&s);
    let acsrf = a.logged_in("admin", ADMIN_PASSWORD).await;
    let (st, page) = a.get("/ui/users").await;
    assert_eq!(st, 200, "{page}");
    assert!(
        page.contains("href=\"/ui/users\""),
        "a Users link for admins"
    );
    for n in ["admin", "vera", "mark", "idle"] {
        assert!(page.contains(&format!("data-user=\"{n}\"")), "{n}: {page}");
    }
    let users = users_json(&s).await;
    let last = |n: &str| users.iter().find(|u| u["name"] == n).unwrap()["last_login"].clone();
    assert!(last("vera").is_string(), "vera logged in");
    assert!(last("idle").is_null(), "idle never did");

    // Create: the CLI's password rule, then a user who can log in.
    let r = a
        .post(
            "/ui/users",
            &[
                ("_csrf", &acsrf),
                ("name", "nina"),
                ("role", "viewer"),
                ("password", "short"),
            ],
        )
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("at least 8 characters"));
    let r = a
        .post(
            "/ui/users",
            &[
                ("_csrf", &acsrf),
                ("name", "nina"),
                ("role", "viewer"),
                ("password", "nina-password-1"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/ui/users?done=created&user=nina");
    let (_, page) = a.get("/ui/users?done=created&user=nina").await;
    assert!(page.contains("User nina created.") && page.contains("data-user=\"nina\""));
    let r = a
        .post(
            "/ui/users",
            &[
                ("_csrf", &acsrf),
                ("name", "nina"),
                ("role", "viewer"),
                ("password", "nina-password-1"),
            ],
        )
        .await;
    assert_eq!(r.status(), 409, "a name is taken once");
    let mut n = Browser::new(&s);
    let ncsrf = n.logged_in("nina", "nina-password-1").await;
    assert_eq!(n.get("/ui/audiences/new").await.0, 403, "a viewer");

    // A new role applies to the open session at its next request.
    let r = a
        .post(
            "/ui/users/nina/role",
            &[("_csrf", &acsrf), ("role", "marketer")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(role_of(&s, "nina").await.as_deref(), Some("marketer"));
    assert_eq!(n.get("/ui/audiences/new").await.0, 200, "now a marketer");
    let r = a
        .post(
            "/ui/users/nina/role",
            &[("_csrf", &acsrf), ("role", "owner")],
        )
        .await;
    assert_eq!(r.status(), 400, "no such role");

    // A reset password ends her sessions; only the new one opens.
    let r = a
        .post(
            "/ui/users/nina/password",
            &[("_csrf", &acsrf), ("password", "tiny")],
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        n.get("/ui/").await.0,
        200,
        "a refused reset changes nothing"
    );
    let r = a
        .post(
            "/ui/users/nina/password",
            &[("_csrf", &acsrf), ("password", "nina-password-2")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(n.get("/ui/").await.0, 303, "her session ended");
    assert_eq!(
        Browser::new(&s)
            .login("nina", "nina-password-1")
            .await
            .status(),
        401
    );
    let mut n2 = Browser::new(&s);
    n2.logged_in("nina", "nina-password-2").await;
    let _ = ncsrf;

    // A deleted user's sessions end at once.
    let mut v = Browser::new(&s);
    v.logged_in("vera", "password-of-vera").await;
    assert_eq!(v.get("/ui/profiles").await.0, 200);
    let r = a.post("/ui/users/vera/delete", &[("_csrf", &acsrf)]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(v.get("/ui/profiles").await.0, 303, "logged out at once");
    assert_eq!(role_of(&s, "vera").await, None);
    assert_eq!(
        a.post("/ui/users/vera/delete", &[("_csrf", &acsrf)])
            .await
            .status(),
        404
    );

    // The last admin is neither demoted nor deleted, with the reason on the page.
    for (path, form) in [
        (
            "/ui/users/admin/role",
            vec![("_csrf", acsrf.as_str()), ("role", "viewer")],
        ),
        ("/ui/users/admin/delete", vec![("_csrf", acsrf.as_str())]),
    ] {
        let r = a.post(path, &form).await;
        assert_eq!(r.status(), 409, "{path}");
        let page = r.text().await.unwrap();
        assert!(page.contains("is the last admin"), "{page}");
        assert!(page.contains("role=\"alert\""), "{page}");
    }
    assert_eq!(role_of(&s, "admin").await.as_deref(), Some("admin"));
    // With a second admin, the first may step down.
    let r = a
        .post(
            "/ui/users/nina/role",
            &[("_csrf", &acsrf), ("role", "admin")],
        )
        .await;
    assert_eq!(r.status(), 303);
    let r = a
        .post(
            "/ui/users/admin/role",
            &[("_csrf", &acsrf), ("role", "marketer")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(a.get("/ui/users").await.0, 403, "no longer an admin");

    // Every change is audited under the acting user's name, refused ones too.
    let mut n3 = Browser::new(&s);
    n3.logged_in("nina", "nina-password-2").await;
    let (_, privacy) = n3.get("/ui/privacy").await;
    for what in [
        "POST /ui/users",
        "POST /ui/users/{name}/role",
        "POST /ui/users/{name}/password",
        "POST /ui/users/{name}/delete",
        "ui:admin",
        "ui:mark",
    ] {
        assert!(privacy.contains(what), "{what} is audited: {privacy}");
    }
}

async fn preview(s: &TestServer, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let r = s
        .http
        .post(format!("{}/v1/audiences/preview", s.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// 300 people; the newest 100 (by id, i.e. age) are VIPs.
async fn three_hundred_people(s: &TestServer) {
    let events: Vec<serde_json::Value> = (0..300)
        .map(|i| {
            json!({"type": "identify", "userId": format!("p{i}"),
                   "traits": {"plan": if i >= 200 { "vip" } else { "member" }}})
        })
        .collect();
    s.send_processed(events).await;
}

#[tokio::test]
async fn the_preview_samples_uniformly_not_the_oldest_profiles() {
    let s = TestServer::start().await;
    three_hundred_people(&s).await;
    let rule = r#"trait plan = "vip""#;
    // Everyone is evaluated when the scan allows: exact.
    let (st, v) = preview(&s, &json!({"rule": rule, "scan": 1000})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["matched"].as_u64(), v["exact"].as_bool()),
        (Some(100), Some(true)),
        "{v}"
    );
    assert_eq!(v["margin_95"], 0, "{v}");
    // 30 of 300: the oldest 30 hold no VIP, a uniform sample holds ~10. Over 20 seeds
    // (the same seed draws the same people, so this is deterministic) ~200 in all.
    let mut hits = 0;
    let mut covered = 0;
    for seed in 1..=20u64 {
        let body = json!({"rule": rule, "scan": 30, "sample": 100, "seed": seed});
        let (_, v) = preview(&s, &body).await;
        assert_eq!(
            (v["scanned"].as_u64(), v["exact"].as_bool()),
            (Some(30), Some(false)),
            "{v}"
        );
        assert_eq!(v["sampling"], "uniform_random");
        let (est, lo, hi) = (
            v["estimated_size"].as_u64().unwrap(),
            v["interval_95"][0].as_u64().unwrap(),
            v["interval_95"][1].as_u64().unwrap(),
        );
        assert!(lo <= est && est <= hi && hi <= 300, "{v}");
        assert_eq!(
            est,
            v["matched"].as_u64().unwrap() * 10,
            "scaled by 300/30: {v}"
        );
        if (lo..=hi).contains(&100) {
            covered += 1;
        }
        hits += v["matched"].as_u64().unwrap();
        let (_, again) = preview(&s, &body).await;
        assert_eq!(again["sample"], v["sample"], "same seed, same people");
    }
    assert!((140..=260).contains(&hits), "≈ 200 VIPs drawn, got {hits}");
    assert!(
        covered >= 16,
        "the 95 % interval holds the truth for most seeds: {covered}/20"
    );
}

#[tokio::test]
async fn the_editor_shows_a_margin_and_counts_exactly_in_the_background() {
    // A zero budget: the live preview stops after its first few draws and estimates.
    let s = TestServer::start_with(|c| c.ui.preview_budget_ms = 0).await;
    three_hundred_people(&s).await;
    let mut b = Browser::new(&s);
    let csrf = b.logged_in("admin", ADMIN_PASSWORD).await;
    let (_, editor) = b.get("/ui/audiences/new").await;
    assert!(
        editor.contains(r#"name="seed""#),
        "the editor keeps a sample seed"
    );
    let rule = r#"trait plan = "vip""#;
    let r = b
        .post(
            "/ui/audiences/preview",
            &[("_csrf", &csrf), ("rule", rule), ("seed", "7")],
        )
        .await;
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"<b id="preview-size">≈ "#), "{html}");
    assert!(
        html.contains("(95%)") && html.contains("random sample"),
        "{html}"
    );
    assert!(html.contains("Count exactly"), "{html}");

    // The exact count runs as a job; its page is polled until it shows the size.
    let r = b
        .post("/ui/audiences/count", &[("_csrf", &csrf), ("rule", rule)])
        .await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    let at = html.find("/ui/audiences/count/").expect("a job to poll");
    let job: String = html[at..].split('"').next().unwrap().to_owned();
    let mut done = String::new();
    for _ in 0..100 {
        let (st, frag) = b.get(&job).await;
        assert_eq!(st, 200, "{frag}");
        if frag.contains("count-size") {
            done = frag;
            break;
        }
        assert!(frag.contains("<progress"), "{frag}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        done.contains(r#"<b id="count-size">100</b> of 300 profiles"#),
        "{done}"
    );
    // Only its owner sees a job.
    create_user(&s, "mark", "marketer").await;
    let mut m = Browser::new(&s);
    m.logged_in("mark", "password-of-mark").await;
    assert_eq!(m.get(&job).await.0, 404);
    // A broken rule is refused in place.
    let r = b
        .post(
            "/ui/audiences/count",
            &[("_csrf", &csrf), ("rule", "trait =")],
        )
        .await;
    assert!(r.text().await.unwrap().contains("count error"));
}

#[tokio::test]
async fn the_preview_and_the_exact_count_agree_with_the_engine() {
    // People whose events interleave (seqs far apart and close together), some merged
    // across two anonymous ids, with events the rules select and events they do not.
    let s = TestServer::start().await;
    let mut events = Vec::new();
    for round in 0..3 {
        for i in 0..80 {
            let anon = format!("a{i}-{}", round % 2);
            let cat = ["shoes", "bags"][(i * 7 + round) % 2];
            events.push(
                json!({"type": "track", "event": "Product Viewed", "anonymousId": anon,
                               "properties": {"category": cat}}),
            );
            if i % 3 == 0 {
                events.push(json!({"type": "page", "name": "Home", "anonymousId": anon}));
            }
            if round == 2 && i % 4 == 0 {
                events.push(json!({"type": "identify", "anonymousId": format!("a{i}-0"),
                                   "userId": format!("u{i}"), "traits": {"plan": "vip"}}));
                events.push(json!({"type": "identify", "anonymousId": format!("a{i}-1"),
                                   "userId": format!("u{i}")}));
            }
        }
    }
    s.send_processed(events).await;
    let rules = [
        r#"performed "Product Viewed" where category = "shoes" at least 2 times"#,
        r#"performed "Product Viewed" and not performed page "Home""#,
        r#"trait plan = "vip" or performed page "Home" at least 3 times"#,
    ];
    s.define(|d| {
        for (i, r) in rules.iter().enumerate() {
            let name = format!("r{i}");
            d.audiences.insert(
                name.clone(),
                spoor_core::audience::AudienceDefinition {
                    name,
                    description: String::new(),
                    rule: spoor_core::audience::parse(r).unwrap(),
                    created_ms: 0,
                    updated_ms: 0,
                    revision: 1,
                },
            );
        }
    })
    .await;
    let mut b = Browser::new(&s);
    let csrf = b.logged_in("admin", ADMIN_PASSWORD).await;
    for (i, rule) in rules.iter().enumerate() {
        let (_, size) = s.admin_get(&format!("/v1/audiences/r{i}/size")).await;
        let engine = size["size"].as_u64().unwrap_or_else(|| panic!("{size}"));
        assert!(engine > 0, "{rule}: a rule that matches someone");
        let (_, v) = preview(&s, &json!({"rule": rule, "scan": 100_000, "seed": i})).await;
        assert_eq!(v["exact"], true, "{v}");
        assert_eq!(v["matched"].as_u64(), Some(engine), "{rule}: {v}");
        let r = b
            .post("/ui/audiences/count", &[("_csrf", &csrf), ("rule", rule)])
            .await;
        let html = r.text().await.unwrap();
        let at = html.find("/ui/audiences/count/").expect("a job");
        let job = html[at..].split('"').next().unwrap().to_owned();
        let mut counted = None;
        for _ in 0..200 {
            let (_, frag) = b.get(&job).await;
            if let Some(i) = frag.find(r#"id="count-size">"#) {
                counted = frag[i + 16..]
                    .split('<')
                    .next()
                    .unwrap()
                    .parse::<u64>()
                    .ok();
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(counted, Some(engine), "{rule}");
    }
}
