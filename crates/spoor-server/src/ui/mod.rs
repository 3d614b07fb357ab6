//! The web UI for marketers: server-rendered HTML under `/ui/…` on the API's port.
//!
//! Why server-rendered: every page is one handler that reads exactly what it shows through
//! the same internals as the API (`StateReader`, the definitions, the API handlers called as
//! functions with the user's role as their `Caller`), so the UI can never drift from the API
//! and needs no front-end build. Interactivity (live preview, the debugger) is htmx, vendored
//! in `assets/` and embedded with `include_str!` like the stylesheet — the binary works
//! offline.
//!
//! Security: a session cookie (`HttpOnly; SameSite=Lax; Path=/`, `Secure` when configured),
//! a per-session CSRF token checked by the [`Posted`] extractor that every state-changing
//! handler takes (form field `_csrf` or header `X-CSRF-Token`, which htmx sends from
//! `hx-headers` on `<body>`), and a login rate limiter per user and per address.

pub mod audiences;
pub mod count;
pub mod html;
pub mod overview;
pub mod overview_stats;
pub mod privacy;
pub mod profiles;
pub mod session;
pub mod sizes;
pub mod sources;
pub mod users;
pub mod users_page;

use crate::AppState;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

pub use session::{Posted, UiError, UiUser};

/// `[ui]` in the config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Hours a login lasts.
    pub session_hours: u64,
    /// Add `Secure` to the session cookie (set when Spoor is served over https).
    pub secure_cookies: bool,
    /// Failed logins (per user name, and per address) before a lockout.
    pub login_max_failures: u32,
    /// The window failures are counted in, seconds.
    pub login_window_secs: u64,
    /// How long a lockout lasts, seconds.
    pub login_lockout_secs: u64,
    /// Seconds between samples of the audience sizes the audience list draws over time.
    pub size_sample_secs: u64,
    /// How long the audience editor's live preview evaluates a random sample before it
    /// answers with an estimate, milliseconds.
    pub preview_budget_ms: u64,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            session_hours: 12,
            secure_cookies: false,
            login_max_failures: 5,
            login_window_secs: 900,
            login_lockout_secs: 300,
            size_sample_secs: 3600,
            preview_budget_ms: 60,
        }
    }
}

const HTMX: &str = include_str!("assets/htmx.min.js");
const CSS: &str = include_str!("assets/style.css");

fn asset(body: &'static str, kind: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route(
            "/ui/assets/htmx.min.js",
            get(|| async { asset(HTMX, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/assets/style.css",
            get(|| async { asset(CSS, "text/css; charset=utf-8") }),
        )
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/", get(overview::page))
        .route("/ui/sources", get(sources::page))
        .route("/ui/debugger", get(sources::debugger))
        .route("/ui/destinations", get(sources::destinations))
        .route("/ui/destinations/{name}/replay", post(sources::replay))
        .route("/ui/profiles", get(profiles::search))
        .route("/ui/profiles/{pref}", get(profiles::card))
        .route("/ui/profiles/{pref}/split", post(profiles::split))
        .route("/ui/audiences", get(audiences::list).post(audiences::save))
        .route("/ui/audiences/new", get(audiences::editor_new))
        .route("/ui/audiences/preview", post(audiences::preview))
        .route("/ui/audiences/overlap", get(audiences::overlap))
        .route("/ui/audiences/count", post(count::start))
        .route("/ui/audiences/count/{id}", get(count::poll))
        .route("/ui/audiences/{name}", get(audiences::editor))
        .route("/ui/users", get(users_page::page).post(users_page::create))
        .route("/ui/users/{name}/role", post(users_page::set_role))
        .route(
            "/ui/users/{name}/password",
            post(users_page::reset_password),
        )
        .route("/ui/users/{name}/delete", post(users_page::delete))
        .route("/ui/privacy", get(privacy::page))
        .route("/ui/privacy/erase", post(privacy::erase))
        .route("/ui/privacy/export", get(privacy::export))
}
