//! The Users page (admins only): list the UI accounts, create one, change a role, reset a
//! password, delete one.
//!
//! Every change goes through [`super::users::Users`], the same code `spoor users` reaches
//! through the admin API: the same name and password rules, the last admin can be neither
//! removed nor demoted, a deleted user's sessions end at once and a reset password ends the
//! user's other sessions. Each form is a `Posted` (CSRF-checked) POST, audited as
//! `ui:<admin>` by the API's audit layer like every UI change. A refusal re-renders the
//! page with the reason at the top (and the error's status); a success redirects back with
//! a notice chosen from a fixed list (nothing from the query string is echoed but a user
//! name, escaped).

use super::html::{self, esc, url};
use super::users::{Role, User};
use super::{Posted, UiError, UiUser};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::fmt::Write;

const ROLES: [Role; 3] = [Role::Admin, Role::Marketer, Role::Viewer];

#[derive(Debug, Default, Deserialize)]
pub struct DoneQ {
    done: Option<String>,
    user: Option<String>,
}

fn role_options(selected: Role) -> String {
    ROLES
        .iter()
        .map(|r| {
            format!(
                r#"<option value="{0}"{1}>{0}</option>"#,
                r.as_str(),
                if *r == selected { " selected" } else { "" }
            )
        })
        .collect()
}

fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "—".into())
}

/// The page, with an optional notice (`Ok`) or refusal (`Err`) at the top.
fn render(app: &AppState, who: &UiUser, message: Option<Result<String, String>>) -> String {
    let csrf = html::csrf_field(who.csrf());
    let mut b = match message {
        Some(Ok(m)) => format!(r#"<p class="notice" role="status">{}</p>"#, esc(&m)),
        Some(Err(e)) => format!(r#"<p class="error" role="alert">{}</p>"#, esc(&e)),
        None => String::new(),
    };
    let mut users: Vec<User> = app.users.list();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    b.push_str(r#"<table class="users"><tr><th>name</th><th>role</th><th>created</th><th>last login</th><th>change role</th><th>reset password</th><th></th></tr>"#);
    for u in &users {
        let n = url(&u.name);
        let me = if u.name == who.user.name {
            r#" <span class="muted">(you)</span>"#
        } else {
            ""
        };
        let _ = write!(
            b,
            r#"<tr data-user="{name}"><td>{name}{me}</td><td class="role">{role}</td><td>{created}</td><td>{last}</td>
<td><form method="post" action="/ui/users/{n}/role" class="inline">{csrf}<select name="role" aria-label="role of {name}">{opts}</select> <button type="submit">Change</button></form></td>
<td><form method="post" action="/ui/users/{n}/password" class="inline">{csrf}<input type="password" name="password" minlength="8" required autocomplete="new-password" placeholder="new password" aria-label="new password for {name}"> <button type="submit">Reset</button></form></td>
<td><form method="post" action="/ui/users/{n}/delete" class="inline">{csrf}<button type="submit" class="danger">Delete</button></form></td></tr>"#,
            name = esc(&u.name),
            role = u.role.as_str(),
            created = when(Some(u.created_at)),
            last = when(u.last_login),
            opts = role_options(u.role),
        );
    }
    b.push_str("</table>");
    let _ = write!(
        b,
        r#"<section><h2>New user</h2><form method="post" action="/ui/users" class="new-user">{csrf}
<label>Name <input name="name" required pattern="[A-Za-z0-9._@-]{{1,64}}" placeholder="mia"></label>
<label>Role <select name="role">{opts}</select></label>
<label>Initial password <input type="password" name="password" minlength="8" required autocomplete="new-password"></label>
<button type="submit">Create user</button></form>
<p class="muted">Passwords: at least 8 characters. Viewers read every page; marketers also edit audiences; admins do everything. Deleting a user ends their sessions at once; resetting a password ends their other sessions. The last admin can be neither deleted nor demoted.</p></section>"#,
        opts = role_options(Role::Viewer),
    );
    b
}

fn page_response(
    app: &AppState,
    who: &UiUser,
    status: StatusCode,
    message: Option<Result<String, String>>,
) -> Response {
    let body = render(app, who, message);
    (
        status,
        html::layout(&who.user, who.csrf(), "Users", "/ui/users", &body),
    )
        .into_response()
}

/// `GET /ui/users` (admin).
pub async fn page(
    State(app): State<AppState>,
    who: UiUser,
    Query(q): Query<DoneQ>,
) -> Result<Response, UiError> {
    who.require(Role::Admin)?;
    let user = q.user.unwrap_or_default();
    let notice = match q.done.as_deref() {
        Some("created") => Some(format!("User {user} created.")),
        Some("role") => Some(format!("{user}'s role changed.")),
        Some("password") => Some(format!(
            "{user}'s password reset; their other sessions ended."
        )),
        Some("deleted") => Some(format!("User {user} deleted; their sessions ended.")),
        _ => None,
    };
    Ok(page_response(&app, &who, StatusCode::OK, notice.map(Ok)))
}

/// After a change: back to the list with a notice, or the list with the refusal.
fn outcome(
    app: &AppState,
    who: &UiUser,
    done: &str,
    name: &str,
    result: Result<User, ApiError>,
) -> Result<Response, UiError> {
    match result {
        Ok(_) => {
            Ok(Redirect::to(&format!("/ui/users?done={done}&user={}", url(name))).into_response())
        }
        Err(e @ (ApiError::InvalidRequest(_) | ApiError::Conflict(_) | ApiError::NotFound(_))) => {
            Ok(page_response(
                app,
                who,
                e.status(),
                Some(Err(e.to_string())),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs argon2 (tens of milliseconds) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

fn role_field(posted: &Posted) -> Result<Role, ApiError> {
    let r = posted.field("role").unwrap_or("");
    Role::parse(r).ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "unknown role {r:?}; expected admin, marketer or viewer"
        ))
    })
}

/// `POST /ui/users` (admin): create a user.
pub async fn create(State(app): State<AppState>, posted: Posted) -> Result<Response, UiError> {
    posted.who.require(Role::Admin)?;
    let name = posted.field("name").unwrap_or("").trim().to_owned();
    let password = posted.field("password").unwrap_or("").to_owned();
    let result = match role_field(&posted) {
        Ok(role) => {
            let (users, n) = (app.users.clone(), name.clone());
            blocking(move || users.create(&n, role, &password)).await
        }
        Err(e) => Err(e),
    };
    if let Ok(u) = &result {
        tracing::info!(user = %u.name, role = u.role.as_str(), by = %posted.who.user.name, "ui user created in the ui");
    }
    outcome(&app, &posted.who, "created", &name, result)
}

/// `POST /ui/users/{name}/role` (admin): change a role; the last admin stays admin.
pub async fn set_role(
    State(app): State<AppState>,
    Path(name): Path<String>,
    posted: Posted,
) -> Result<Response, UiError> {
    posted.who.require(Role::Admin)?;
    let result = role_field(&posted).and_then(|role| app.users.set_role(&name, role));
    if let Ok(u) = &result {
        tracing::info!(user = %u.name, role = u.role.as_str(), by = %posted.who.user.name, "ui user role changed");
    }
    outcome(&app, &posted.who, "role", &name, result)
}

/// `POST /ui/users/{name}/password` (admin): set a new password; ends the user's other
/// sessions (an admin resetting their own keeps the session they do it from).
pub async fn reset_password(
    State(app): State<AppState>,
    Path(name): Path<String>,
    posted: Posted,
) -> Result<Response, UiError> {
    posted.who.require(Role::Admin)?;
    let password = posted.field("password").unwrap_or("").to_owned();
    let keep = posted.who.session.token_hash.clone();
    let (users, n) = (app.users.clone(), name.clone());
    let result = blocking(move || users.set_password(&n, &password, Some(&keep))).await;
    if result.is_ok() {
        tracing::info!(user = %name, by = %posted.who.user.name, "ui user password reset");
    }
    outcome(&app, &posted.who, "password", &name, result)
}

/// `POST /ui/users/{name}/delete` (admin): delete a user and end their sessions at once.
pub async fn delete(
    State(app): State<AppState>,
    Path(name): Path<String>,
    posted: Posted,
) -> Result<Response, UiError> {
    posted.who.require(Role::Admin)?;
    let result = app.users.delete(&name);
    if result.is_ok() {
        tracing::info!(user = %name, by = %posted.who.user.name, "ui user deleted");
    }
    outcome(&app, &posted.who, "deleted", &name, result)
}
