//! Login, logout, the session extractor ([`UiUser`]), the CSRF-checking form extractor
//! ([`Posted`]) and the UI's error pages.

use super::html::{self, esc};
use super::users::{LoginError, Role, Session, User};
use crate::error::ApiError;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use std::collections::HashMap;
use std::net::SocketAddr;

pub const COOKIE: &str = "spoor_session";
/// Double-submit cookie that protects the login form itself (there is no session yet).
pub const LOGIN_COOKIE: &str = "spoor_login_csrf";
/// Form bodies are small (a rule text at most).
const MAX_FORM: usize = 64 * 1024;

/// An error shown as a page: the API error's status, its message, and for a 401 a way to
/// the login page (htmx requests get `HX-Redirect` so the whole page goes there).
#[derive(Debug)]
pub struct UiError {
    pub err: ApiError,
    pub htmx: bool,
}

impl From<ApiError> for UiError {
    fn from(err: ApiError) -> Self {
        Self { err, htmx: false }
    }
}

impl From<spoor_store::StoreError> for UiError {
    fn from(e: spoor_store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let status = self.err.status();
        if status == StatusCode::UNAUTHORIZED {
            if self.htmx {
                return (status, [("HX-Redirect", "/ui/login")], "").into_response();
            }
            return Redirect::to("/ui/login").into_response();
        }
        let message = match &self.err {
            ApiError::Internal(cause) => {
                tracing::error!(cause = %cause, "internal error in the ui");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let title = match status {
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::BAD_REQUEST => "Bad request",
            _ => "Error",
        };
        let body = format!(
            r#"<p class="error" data-status="{}">{}</p><p><a href="/ui/">Back to the overview</a></p>"#,
            status.as_u16(),
            esc(&message)
        );
        (status, html::bare(title, &body)).into_response()
    }
}

pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn is_htmx(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request")
}

/// A logged-in user and their session.
#[derive(Debug, Clone)]
pub struct UiUser {
    pub user: User,
    pub session: Session,
}

impl UiUser {
    /// Fails with a 403 page unless the user's role is at least `min`.
    pub fn require(&self, min: Role) -> Result<(), UiError> {
        if self.user.role >= min {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this needs the {} role; you are {} ({})",
                min.as_str(),
                self.user.name,
                self.user.role.as_str()
            ))
            .into())
        }
    }

    pub fn csrf(&self) -> &str {
        &self.session.csrf
    }
}

impl FromRequestParts<AppState> for UiUser {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, UiError> {
        let htmx = is_htmx(&parts.headers);
        let unauthorized = || UiError {
            err: ApiError::Unauthorized("log in first".into()),
            htmx,
        };
        let token = cookie(&parts.headers, COOKIE).ok_or_else(unauthorized)?;
        let (session, user) = app.users.session(&token).ok_or_else(unauthorized)?;
        Ok(Self { user, session })
    }
}

/// A state-changing request: the logged-in user plus the form fields, accepted only when
/// the session's CSRF token came with it (field `_csrf` or header `X-CSRF-Token`).
pub struct Posted {
    pub who: UiUser,
    pub form: HashMap<String, String>,
}

impl Posted {
    pub fn field(&self, k: &str) -> Option<&str> {
        self.form.get(k).map(String::as_str)
    }
}

pub fn parse_form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl FromRequest<AppState> for Posted {
    type Rejection = UiError;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, UiError> {
        let (mut parts, body) = req.into_parts();
        let who = UiUser::from_request_parts(&mut parts, app).await?;
        let htmx = is_htmx(&parts.headers);
        let bytes = axum::body::to_bytes(body, MAX_FORM)
            .await
            .map_err(|_| UiError {
                err: ApiError::TooLarge(format!("a form is at most {MAX_FORM} bytes")),
                htmx,
            })?;
        let form = parse_form(&bytes);
        let sent = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| form.get("_csrf").cloned());
        match sent {
            Some(t) if same(&t, &who.session.csrf) => Ok(Self { who, form }),
            _ => Err(UiError {
                err: ApiError::Forbidden(
                    "the form's CSRF token is missing or wrong; reload the page and try again"
                        .into(),
                ),
                htmx,
            }),
        }
    }
}

fn set_cookie(app: &AppState, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if app.users.cfg.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let v = format!("{name}={value}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static(""))
}

fn login_form(token: &str, user: &str, message: Option<&str>) -> String {
    let msg = message
        .map(|m| format!(r#"<p class="error" role="alert">{}</p>"#, esc(m)))
        .unwrap_or_default();
    format!(
        r#"{msg}<form method="post" action="/ui/login" class="login">{csrf}
<label>User <input name="user" autocomplete="username" value="{user}" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Log in</button></form>
<p class="muted">The first start printed the password of <code>admin</code>; more users: <code>spoor users create NAME --role marketer</code>.</p>"#,
        csrf = html::csrf_field(token),
        user = esc(user)
    )
}

fn login_response(
    app: &AppState,
    status: StatusCode,
    user: &str,
    message: Option<&str>,
) -> Response {
    let token = super::users::random_token(32);
    let mut resp = (
        status,
        html::bare("Log in", &login_form(&token, user, message)),
    )
        .into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(app, LOGIN_COOKIE, &token, 3600),
    );
    resp
}

pub async fn login_page(axum::extract::State(app): axum::extract::State<AppState>) -> Response {
    login_response(&app, StatusCode::OK, "", None)
}

/// `POST /ui/login`: rate-limited per user and per address; a success sets the session
/// cookie and goes to the overview.
pub async fn login(
    axum::extract::State(app): axum::extract::State<AppState>,
    headers: HeaderMap,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    body: Bytes,
) -> Response {
    let form = parse_form(&body);
    let user = form.get("user").cloned().unwrap_or_default();
    let expected = cookie(&headers, LOGIN_COOKIE);
    let sent = form.get("_csrf");
    if !matches!((&expected, sent), (Some(a), Some(b)) if same(a, b)) {
        return login_response(
            &app,
            StatusCode::FORBIDDEN,
            &user,
            Some("the login form expired or its CSRF token is missing; try again"),
        );
    }
    let ip = crate::body::client_ip(
        peer.map(|p| (p.0).0),
        &headers,
        &app.cfg.server.trusted_proxies,
    )
    .map(|i| i.to_string())
    .unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let users = app.clone();
    let name = user.clone();
    let out = tokio::task::spawn_blocking(move || users.users.login(&name, &password, &ip)).await;
    match out {
        Ok(Ok((token, _))) => {
            tracing::info!(user = %user, "ui login");
            let max_age = app.users.cfg.session_hours as i64 * 3600;
            let mut resp = Redirect::to("/ui/").into_response();
            let h = resp.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(&app, COOKIE, &token, max_age),
            );
            h.append(header::SET_COOKIE, set_cookie(&app, LOGIN_COOKIE, "", 0));
            resp
        }
        Ok(Err(LoginError::Invalid)) => {
            tracing::info!(user = %user, "ui login refused");
            login_response(
                &app,
                StatusCode::UNAUTHORIZED,
                &user,
                Some("wrong user name or password"),
            )
        }
        Ok(Err(LoginError::Locked(wait))) => {
            let msg = format!(
                "too many failed logins; wait {} s and try again",
                wait.as_secs().max(1)
            );
            let mut resp = login_response(&app, StatusCode::TOO_MANY_REQUESTS, &user, Some(&msg));
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
            resp
        }
        Err(e) => UiError::from(ApiError::internal(e)).into_response(),
    }
}

/// `POST /ui/logout`: ends the session (CSRF-checked like every form).
pub async fn logout(
    axum::extract::State(app): axum::extract::State<AppState>,
    headers: HeaderMap,
    posted: Posted,
) -> Result<Response, UiError> {
    if let Some(token) = cookie(&headers, COOKIE) {
        app.users.logout(&token)?;
    }
    tracing::info!(user = %posted.who.user.name, "ui logout");
    let mut resp = Redirect::to("/ui/login").into_response();
    resp.headers_mut()
        .append(header::SET_COOKIE, set_cookie(&app, COOKIE, "", 0));
    Ok(resp)
}
