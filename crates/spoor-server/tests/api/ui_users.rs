//! The Users page: for admins only, the last admin kept, sessions ended with a user.

use crate::common::{TestServer, ADMIN_PASSWORD};
use crate::ui::{create_user, Browser};
use reqwest::header::LOCATION;

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
