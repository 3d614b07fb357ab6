//! Routes, one file per API resource.

pub mod audiences;
pub mod computed;
pub mod consent;
pub mod destinations;
pub mod erasure;
pub mod events;
pub mod exports;
pub mod health;
pub mod ingest;
pub mod memberships;
pub mod preview;
pub mod privacy;
pub mod profiles;
pub mod settings;
pub mod sources;
pub mod tokens;
pub mod users;

use crate::AppState;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tower_http::cors::{AllowHeaders, AllowOrigin, Any, CorsLayer};

/// The whole HTTP surface.
pub fn router(app: AppState) -> Router {
    let cors = cors_layer(&app.cfg.server.cors_origins);
    let public = ingest::routes().merge(settings::routes()).layer(cors);
    Router::new()
        .merge(public)
        .merge(events::routes())
        .merge(sources::routes())
        .merge(tokens::routes())
        .merge(profiles::routes())
        .merge(audiences::routes())
        .merge(memberships::routes())
        .merge(exports::routes())
        .merge(computed::routes())
        .merge(destinations::routes())
        .merge(health::routes())
        .merge(consent::routes())
        .merge(privacy::routes())
        .merge(users::routes())
        .merge(crate::ui::routes())
        .merge(erasure::routes())
        // Outermost last: the count and the duration include the audit record.
        .layer(middleware::from_fn_with_state(app.clone(), audit))
        .layer(middleware::from_fn_with_state(app.clone(), count_requests))
        .with_state(app)
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let base = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        // Mirrored rather than `*`: a wildcard does not cover `Authorization` in browsers.
        .allow_headers(AllowHeaders::mirror_request())
        .max_age(std::time::Duration::from_secs(86_400));
    if origins.iter().any(|o| o == "*") {
        base.allow_origin(Any)
    } else {
        let list: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
        base.allow_origin(AllowOrigin::list(list))
    }
}

/// Counts every request by route and status, and times it by route.
async fn count_requests(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    let only = crate::metrics::RouteOnly { route };
    app.metrics
        .request_duration
        .get_or_create(&only)
        .observe(started.elapsed().as_secs_f64());
    app.metrics
        .requests
        .get_or_create(&crate::metrics::RouteLabels {
            route: only.route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// Records audited requests (see [`crate::privacy::audit`]): every route gets it, so a new
/// admin route is audited without code of its own.
async fn audit(State(app): State<AppState>, req: Request, next: Next) -> Response {
    use crate::privacy::audit::{classify, pseudonymise, AuditRecord};
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    let method = req.method().as_str().to_owned();
    let bearer = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_owned());
    let Some(action) = classify(&method, &route) else {
        return next.run(req).await;
    };
    // An API call names its token; a web UI request its logged-in user.
    let ui_user = if bearer.is_none() && route.starts_with("/ui") {
        crate::ui::session::cookie(req.headers(), crate::ui::session::COOKIE)
            .and_then(|t| app.users.session(&t))
            .map(|(_, u)| format!("ui:{}", u.name))
    } else {
        None
    };
    let who = match (bearer, ui_user) {
        (Some(token), _) => app
            .auth
            .caller_for_token(&token)
            .map(|c| c.token_id.to_string()),
        (None, Some(user)) => Some(user),
        // No token, or a UI request without a session (refused by the page: nothing read).
        (None, None) => return next.run(req).await,
    };
    // A person named in the query (the UI's access export) is recorded like a path one.
    let query_ref = req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "ref")
            .map(|(_, v)| pseudonymise(&v))
    });
    let (mut parts, body) = req.into_parts();
    let mut target: Vec<String> =
        axum::extract::RawPathParams::from_request_parts(&mut parts, &app)
            .await
            .map(|ps| ps.iter().map(|(_, v)| pseudonymise(v)).collect())
            .unwrap_or_default();
    target.extend(query_ref);
    let req = Request::from_parts(parts, body);
    let resp = next.run(req).await;
    let rec = AuditRecord {
        at: app.clock.now(),
        who,
        method,
        route,
        target,
        action: action.into(),
        status: resp.status().as_u16(),
    };
    if let Err(e) = app.audit.append(&rec, action != "read") {
        tracing::error!(error = %e, "cannot record an audited request");
    }
    resp
}
