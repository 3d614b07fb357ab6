//! The web UI's security: nothing without a login, CSRF on every form, cookie flags, login
//! rate limiting, and roles (viewers and marketers refused what is not theirs). The Users
//! page is tested in `ui_users.rs`, the audience preview's sample and exact count in
//! `ui_preview.rs`.

use crate::common::{TestServer, ADMIN_PASSWORD, ADMIN_TOKEN};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::json;

pub(crate) fn encode(form: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish()
}

/// A browser without cookie jar magic: cookies are kept by hand, redirects not followed.
pub(crate) struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

impl Browser {
    pub(crate) fn new(s: &TestServer) -> Self {
        Self {
            http: spoor_server::tls::http_client()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            base: s.url.clone(),
            cookies: Vec::new(),
        }
    }

    pub(crate) fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub(crate) fn keep(&mut self, resp: &reqwest::Response) {
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

    pub(crate) async fn get(&mut self, path: &str) -> (u16, String) {
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

    pub(crate) async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
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
    pub(crate) fn csrf_of(page: &str) -> String {
        let at = page.find("name=\"_csrf\" value=\"").expect("a csrf field") + 20;
        page[at..].split('"').next().unwrap().to_owned()
    }

    pub(crate) async fn login(&mut self, user: &str, password: &str) -> reqwest::Response {
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
    pub(crate) async fn logged_in(&mut self, user: &str, password: &str) -> String {
        let r = self.login(user, password).await;
        assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
        let (s, page) = self.get("/ui/").await;
        assert_eq!(s, 200, "{page}");
        Self::csrf_of(&page)
    }
}

pub(crate) async fn create_user(s: &TestServer, name: &str, role: &str) {
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
