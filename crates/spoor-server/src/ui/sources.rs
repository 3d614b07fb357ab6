//! Sources (write keys, SDK snippets, the live event debugger) and destinations (health,
//! counts, last errors, dead letters with replay).

use super::html::{self, esc, url, val, when};
use super::users::Role;
use super::{Posted, UiError, UiUser};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use std::fmt::Write;

/// Events the debugger shows.
const DEBUGGER_EVENTS: usize = 50;
const DEBUGGER_REJECTS: usize = 20;

fn host(headers: &HeaderMap) -> String {
    let h = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1:8080");
    format!("http://{h}")
}

fn snippets(host: &str, key: &str) -> String {
    // analytics.js (analytics-next) loads its settings from `cdnURL`; Spoor answers
    // `/v1/projects/{key}/settings` pointing the Segment.io integration back at itself.
    let js = format!(
        r#"import {{ AnalyticsBrowser }} from '@segment/analytics-next'
export const analytics = AnalyticsBrowser.load(
  {{ writeKey: '{key}', cdnURL: '{host}' }},
  {{ integrations: {{ 'Segment.io': {{ apiHost: '{h}/v1', protocol: 'http' }} }} }})
analytics.page()"#,
        h = host.trim_start_matches("http://"),
    );
    let node = format!(
        r#"import {{ Analytics }} from '@segment/analytics-node'
const analytics = new Analytics({{ writeKey: '{key}', host: '{host}' }})
analytics.track({{ userId: 'u1', event: 'Order Completed', properties: {{ revenue: 12.5 }} }})"#
    );
    let py = format!(
        r#"import segment.analytics as analytics
analytics.write_key = '{key}'
analytics.host = '{host}'
analytics.track('u1', 'Order Completed', {{'revenue': 12.5}})"#
    );
    let curl = format!(
        r#"curl -u '{key}:' {host}/v1/track -H 'content-type: application/json' \
  -d '{{"userId":"u1","event":"Order Completed","properties":{{"revenue":12.5}}}}'"#
    );
    let mut b = String::from("<div class=\"snippets\">");
    for (name, code) in [
        ("analytics.js", js),
        ("analytics-node", node),
        ("analytics-python", py),
        ("curl", curl),
    ] {
        let _ = write!(
            b,
            "<details><summary>{name}</summary><pre>{}</pre></details>",
            esc(&code)
        );
    }
    b.push_str("</div>");
    b
}

/// `GET /ui/sources`: sources, snippets, and the debugger (polled by htmx every 2 s).
pub async fn page(
    State(app): State<AppState>,
    who: UiUser,
    headers: HeaderMap,
) -> Result<Response, UiError> {
    let host = host(&headers);
    let mut b = String::from(
        "<table><tr><th>source</th><th>id</th><th>write key</th><th>created</th></tr>",
    );
    for s in app
        .auth
        .sources()?
        .iter()
        .filter(|s| s.revoked_at.is_none())
    {
        // Keys are stored hashed; admins see the hint, and create keys with the CLI/API.
        let key = if who.user.role == Role::Admin {
            format!("<code>{}</code>", esc(&s.write_key_hint))
        } else {
            "<span class=\"muted\">admins only</span>".into()
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td><code>{}</code></td><td>{key}</td><td>{}</td></tr>",
            esc(&s.name),
            esc(s.id.as_str()),
            s.created_at.format("%Y-%m-%d %H:%M")
        );
    }
    b.push_str("</table>");
    let _ = write!(
        b,
        "<h2>Send events</h2><p class=\"muted\">Use your write key (shown once when the source was created: <code>spoor sources create NAME</code>) with any Segment library; only the host changes.</p>{}",
        snippets(&host, "YOUR_WRITE_KEY")
    );
    b.push_str(
        r#"<h2>Live event debugger</h2><p class="muted">The newest events, refreshed every 2 seconds; click one for its full JSON (refreshing pauses while one is open).</p>
<div id="debugger" hx-get="/ui/debugger" hx-trigger="load, every 2s [!document.querySelector('#debugger details[open]')]" hx-swap="innerHTML"></div>"#,
    );
    Ok(html::layout(&who.user, who.csrf(), "Sources", "/ui/sources", &b).into_response())
}

fn event_row(seq: u64, v: &Value) -> String {
    let kind = v["type"].as_str().unwrap_or("?");
    let m = &v["message"];
    let name = m["event"].as_str().or(m["name"].as_str()).unwrap_or("");
    let who = m["userId"]
        .as_str()
        .or(m["anonymousId"].as_str())
        .unwrap_or("");
    format!(
        r#"<li data-seq="{seq}"><details><summary><span class="icon">{i}</span> <b>{k}</b> {n} <span class="uid">{w}</span> <span class="muted">{t} · #{seq}</span></summary><pre>{j}</pre></details></li>"#,
        i = html::icon(kind, name),
        k = esc(kind),
        n = esc(name),
        w = esc(who),
        t = when(&v["received_at"]),
        j = html::pretty(v)
    )
}

/// `GET /ui/debugger` (htmx fragment): newest events and rejections.
pub async fn debugger(State(app): State<AppState>, _who: UiUser) -> Result<Html<String>, UiError> {
    let (reader, rejects) = (app.reader.clone(), app.rejects_reader.clone());
    let (events, rejected) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        Ok((
            reader.read_back(u64::MAX, DEBUGGER_EVENTS)?,
            rejects.read_back(u64::MAX, DEBUGGER_REJECTS)?,
        ))
    })
    .await
    .map_err(ApiError::internal)??;
    let mut b = format!(
        "<p class=\"muted\">{} events in the log; newest first.</p><ul class=\"events debugger\">",
        app.reader.last_seq()
    );
    for e in &events {
        let v: Value = serde_json::from_slice(&e.payload).unwrap_or(Value::Null);
        b.push_str(&event_row(e.seq, &v));
    }
    if events.is_empty() {
        b.push_str("<li class=\"muted\">no events yet — send one with a snippet above</li>");
    }
    b.push_str("</ul><h3>Rejected</h3><ul class=\"events rejected\">");
    for e in &rejected {
        let v: Value = serde_json::from_slice(&e.payload).unwrap_or(Value::Null);
        let reason = ["reason", "message", "code"]
            .iter()
            .find_map(|k| v[*k].as_str())
            .unwrap_or("rejected");
        let _ = write!(
            b,
            r#"<li><details><summary><span class="icon">⛔</span> <b>{}</b> <span class="muted">#{}</span></summary><pre>{}</pre></details></li>"#,
            esc(reason),
            e.seq,
            html::pretty(&v)
        );
    }
    if rejected.is_empty() {
        b.push_str("<li class=\"muted\">nothing rejected</li>");
    }
    b.push_str("</ul>");
    Ok(Html(b))
}

#[derive(Debug, Deserialize)]
pub struct DestQuery {
    dead: Option<String>,
}

/// `GET /ui/destinations`: health and counts for everyone; URLs, dead letters and replay
/// for admins (a webhook URL or a dead letter can carry credentials and personal data).
pub async fn destinations(
    State(app): State<AppState>,
    who: UiUser,
    Query(q): Query<DestQuery>,
) -> Result<Response, UiError> {
    let admin = who.user.role == Role::Admin;
    let Json(all) =
        crate::api::destinations::list(State(app.clone()), who.user.editor_caller()).await?;
    let mut b = String::from("<table class=\"destinations\"><tr><th>name</th><th>status</th><th class=\"num\">delivered</th><th class=\"num\">dead letters</th><th class=\"num\">retries</th><th class=\"num\">behind</th><th>last error</th><th></th></tr>");
    let list = all["destinations"].as_array().cloned().unwrap_or_default();
    for d in &list {
        let name = val(&d["name"]);
        let s = &d["stats"];
        let actions = if admin {
            format!(
                r#"<a href="/ui/destinations?dead={u}">dead letters</a> <form method="post" action="/ui/destinations/{u}/replay" class="inline">{csrf}<button type="submit">Replay all</button></form>"#,
                u = url(&name),
                csrf = html::csrf_field(who.csrf())
            )
        } else {
            String::new()
        };
        let _ = write!(
            b,
            r#"<tr><td>{n}{url}</td><td class="status-{st}">{st}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td>{err} <span class="muted">{at}</span></td><td>{actions}</td></tr>"#,
            s["delivered"],
            s["dead_letters"],
            s["retries"],
            s["events_behind"],
            n = esc(&name),
            url = if admin {
                format!(
                    "<div class=\"muted\">{}</div>",
                    esc(&val(&d["webhook"]["url"]))
                )
            } else {
                String::new()
            },
            st = esc(&val(&d["status"])),
            err = esc(&s["last_error"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_default()),
            at = s["last_error_at"]
                .as_str()
                .map(|_| when(&s["last_error_at"]))
                .unwrap_or_default(),
        );
    }
    if list.is_empty() {
        b.push_str(r#"<tr><td colspan="8" class="muted">no destinations; create one with <code>spoor destinations create</code></td></tr>"#);
    }
    b.push_str("</table>");
    if let (true, Some(name)) = (admin, q.dead) {
        let Json(dl) = crate::api::destinations::dead_letters(
            State(app.clone()),
            who.user.caller(),
            Path(name.clone()),
            Query(crate::api::destinations::PageQuery {
                after: None,
                limit: Some(50),
            }),
        )
        .await?;
        let _ = write!(
            b,
            "<h2>Dead letters of {}</h2><ul class=\"events\">",
            esc(&name)
        );
        for x in dl["dead_letters"].as_array().cloned().unwrap_or_default() {
            let _ = write!(
                b,
                "<li><details><summary>#{} {}</summary><pre>{}</pre></details></li>",
                x["id"],
                esc(&val(&x["error"])),
                html::pretty(&x)
            );
        }
        b.push_str("</ul>");
    }
    Ok(html::layout(
        &who.user,
        who.csrf(),
        "Destinations",
        "/ui/destinations",
        &b,
    )
    .into_response())
}

/// `POST /ui/destinations/{name}/replay` (admin): every dead letter back in the queue.
pub async fn replay(
    State(app): State<AppState>,
    Path(name): Path<String>,
    posted: Posted,
) -> Result<Response, UiError> {
    posted.who.require(Role::Admin)?;
    let _ = crate::api::destinations::replay(
        State(app.clone()),
        posted.who.user.caller(),
        Path(name),
        axum::body::Bytes::new(),
    )
    .await?;
    Ok(Redirect::to("/ui/destinations").into_response())
}
