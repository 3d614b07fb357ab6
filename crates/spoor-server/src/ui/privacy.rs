//! The Privacy page (admins only): erase a person, their access export (GDPR art. 15),
//! the erasure jobs with their progress, and the newest audit records. Every action calls
//! the API handler itself, with the admin's caller, so the UI cannot do what the API
//! refuses.

use super::html::{self, esc, url};
use super::users::Role;
use super::{Posted, UiError, UiUser};
use crate::api::erasure::{ErasureIn, WaitQ};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::fmt::Write;

/// Audit records shown (the newest).
const AUDIT_ROWS: usize = 50;
/// Erasure jobs shown (the newest).
const JOBS: usize = 50;

fn ms(t: i64) -> String {
    chrono::DateTime::from_timestamp_millis(t)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// `GET /ui/privacy`.
pub async fn page(State(app): State<AppState>, who: UiUser) -> Result<Response, UiError> {
    who.require(Role::Admin)?;
    let mut jobs = app.privacy.jobs().map_err(ApiError::Internal)?;
    jobs.reverse();
    let pending = app.privacy.compact_pending().map_err(ApiError::Internal)?;
    let app2 = app.clone();
    let audit = tokio::task::spawn_blocking(move || app2.audit.tail(AUDIT_ROWS))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::Internal(e.to_string()))?;

    let csrf = html::csrf_field(who.csrf());
    let mut b = String::new();
    let _ = write!(
        b,
        r#"<div class="grid">
<section><h2>Erase a person</h2>
<form method="post" action="/ui/privacy/erase">{csrf}
<p><input name="ref" required placeholder="email:ann@example.com, user_id:…, prof_…" size="36"></p>
<p><label><input type="checkbox" name="suppress" value="1" checked> keep hashed identifiers so new events do not re-create them</label></p>
<p><button class="danger" type="submit">Erase everywhere</button></p>
<p class="muted">Removes the whole merged profile: events, identity, traits, computed state, memberships (an exit is sent) and delivery records; destinations that received data get a deletion notice.</p>
</form></section>
<section><h2>Access export (art. 15)</h2>
<form method="get" action="/ui/privacy/export">
<p><input name="ref" required placeholder="email:ann@example.com" size="36"></p>
<p><button type="submit">Download JSON</button></p>
<p class="muted">Everything held about the person: profile, identifiers, merge decisions, consent history, computed traits, audience history, deliveries and all events.</p>
</form></section></div>"#
    );
    let _ = write!(
        b,
        "<section><h2>Erasures</h2>{}<table><tr><th>job</th><th>status</th><th>requested</th><th>profiles</th><th>events</th><th>rejected</th><th>delivery rows</th><th>exits</th><th>files rewritten</th></tr>",
        if pending {
            "<p class=\"warn\">Databases not rewritten yet since the last erasure: stale pages may still hold erased values until the next start or <code>spoor privacy compact</code>.</p>"
        } else {
            ""
        }
    );
    if jobs.is_empty() {
        b.push_str("<tr><td colspan=\"9\" class=\"muted\">no erasures</td></tr>");
    }
    for j in jobs.iter().take(JOBS) {
        let status = serde_json::to_value(j.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let step = if status == "running" {
            format!(" ({})", esc(&j.step))
        } else {
            String::new()
        };
        let _ = write!(
            b,
            "<tr><td><code>{}</code></td><td>{}{step}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&j.id),
            esc(&status),
            j.error.as_deref().map(|e| format!(" — {}", esc(e))).unwrap_or_default(),
            ms(j.created_ms),
            j.profiles,
            j.events,
            j.rejected_events,
            j.delivery_rows,
            j.exits,
            if j.compacted { "yes" } else { "not yet" },
        );
    }
    b.push_str("</table></section>");
    b.push_str("<section><h2>Audit log <span class=\"muted\">(newest first; identifiers pseudonymised)</span></h2><table><tr><th>when</th><th>who</th><th>action</th><th>request</th><th>target</th><th>status</th></tr>");
    if audit.is_empty() {
        b.push_str("<tr><td colspan=\"6\" class=\"muted\">nothing audited yet</td></tr>");
    }
    for r in audit.iter().rev() {
        let _ = write!(
            b,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{} {}</td><td><code>{}</code></td><td>{}</td></tr>",
            r.at.format("%Y-%m-%d %H:%M:%S"),
            esc(r.who.as_deref().unwrap_or("-")),
            esc(&r.action),
            esc(&r.method),
            esc(&r.route),
            esc(&r.target.join(" ")),
            r.status
        );
    }
    b.push_str("</table></section>");
    Ok(html::layout(&who.user, who.csrf(), "Privacy", "/ui/privacy", &b).into_response())
}

/// `POST /ui/privacy/erase` (admin, CSRF): runs the erasure and shows its job.
pub async fn erase(State(app): State<AppState>, posted: Posted) -> Result<Response, UiError> {
    posted.who.require(Role::Admin)?;
    let reference = posted.field("ref").unwrap_or_default().trim().to_owned();
    if reference.is_empty() {
        return Err(ApiError::InvalidRequest("say whom to erase (ref)".into()).into());
    }
    let body = ErasureIn {
        reference,
        suppress: Some(posted.field("suppress").is_some()),
    };
    let (_, Json(out)) = crate::api::erasure::create(
        State(app),
        posted.who.user.caller(),
        Query(WaitQ { wait: true }),
        Json(body),
    )
    .await?;
    let job = &out["erasure"];
    let b = format!(
        "<p>Erasure <code>{}</code>: <b>{}</b> — {} profile(s), {} event(s), {} delivery row(s), {} exit(s).</p><p><a href=\"/ui/privacy\">Back to Privacy</a></p>",
        esc(job["id"].as_str().unwrap_or_default()),
        esc(job["status"].as_str().unwrap_or_default()),
        job["profiles"],
        job["events"],
        job["delivery_rows"],
        job["exits"],
    );
    Ok(html::layout(
        &posted.who.user,
        posted.who.csrf(),
        "Erasure",
        "/ui/privacy",
        &b,
    )
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct ExportQ {
    #[serde(rename = "ref")]
    reference: String,
}

/// `GET /ui/privacy/export?ref=…` (admin): the access export, as a download.
pub async fn export(
    State(app): State<AppState>,
    who: UiUser,
    Query(q): Query<ExportQ>,
) -> Result<Response, UiError> {
    who.require(Role::Admin)?;
    let reference = q.reference.trim().to_owned();
    let mut resp =
        crate::api::privacy::export(State(app), who.user.caller(), Path(reference.clone())).await?;
    let file = format!(
        "attachment; filename=\"spoor-export-{}.json\"",
        url(&reference).replace('"', "")
    );
    if let Ok(v) = file.parse() {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
