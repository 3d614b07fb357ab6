//! Profiles: search, and the profile card — everything known about one person.
//!
//! The card reads one profile, its identity record and decisions, its newest timeline rows
//! (one log read each), its membership history and its delivery log: a fixed amount of
//! work per page whatever the number of profiles.

use super::html::{self, esc, url, val, when, when_ms};
use super::users::Role;
use super::{Posted, UiError, UiUser};
use crate::api::profiles::{self as api, SearchQuery, SplitIn};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use std::fmt::Write;

#[derive(Debug, Deserialize)]
pub struct SearchIn {
    q: Option<String>,
}

/// Timeline rows shown on the card.
const TIMELINE: usize = 60;
/// A gap longer than this starts a new session in the timeline.
const SESSION_GAP_MS: i64 = 30 * 60 * 1000;

fn search_form(q: &str) -> String {
    format!(
        r#"<form method="get" action="/ui/profiles" class="search">
<input name="q" value="{}" placeholder="email:ann@example.com · user_id:u1 · prof_… · plan=pro · ann" size="48" autofocus>
<button type="submit">Search</button></form>
<p class="muted">An identifier (<code>type:value</code>, or a prefix of one), a profile id, <code>trait=value</code>, or the start of an e-mail address.</p>"#,
        esc(q)
    )
}

/// `GET /ui/profiles?q=…`
pub async fn search(
    State(app): State<AppState>,
    who: UiUser,
    Query(q): Query<SearchIn>,
) -> Result<Response, UiError> {
    let caller = who.user.caller();
    let text = q.q.unwrap_or_default().trim().to_owned();
    let mut body = search_form(&text);
    // Exact hits go straight to the card.
    if text.starts_with("prof_") || text.contains(':') {
        let r = app.state.reader()?;
        if let Ok(pid) = api::resolve_ref(&app, &r, &text) {
            return Ok(Redirect::to(&format!("/ui/profiles/{pid}")).into_response());
        }
    }
    let query = if let Some((t, v)) = text.split_once('=') {
        SearchQuery {
            trait_name: Some(t.trim().to_owned()),
            value: Some(v.trim().to_owned()).filter(|v| !v.is_empty()),
            limit: Some(50),
            ..Default::default()
        }
    } else if let Some((kind, prefix)) = text.split_once(':') {
        SearchQuery {
            kind: Some(kind.to_owned()),
            prefix: Some(prefix.to_owned()),
            limit: Some(50),
            ..Default::default()
        }
    } else if !text.is_empty() {
        SearchQuery {
            kind: Some("email".into()),
            prefix: Some(text.clone()),
            limit: Some(50),
            ..Default::default()
        }
    } else {
        SearchQuery {
            limit: Some(25),
            ..Default::default()
        }
    };
    let Json(found) = api::search(State(app.clone()), caller, Query(query)).await?;
    body.push_str(
        "<table class=\"results\"><tr><th>profile</th><th>matched</th><th>traits</th></tr>",
    );
    let mut n = 0;
    if let Some(ms) = found["matches"].as_array() {
        for m in ms {
            n += 1;
            let pid = val(&m["profile_id"]);
            let _ = write!(
                body,
                r#"<tr><td><a href="/ui/profiles/{u}">{p}</a></td><td>{k}:{v}</td><td></td></tr>"#,
                u = url(&pid),
                p = esc(&pid),
                k = esc(&val(&m["type"])),
                v = esc(&val(&m["value"]))
            );
        }
    }
    if let Some(ps) = found["profiles"].as_array() {
        for p in ps {
            n += 1;
            let pid = val(&p["id"]);
            let ids: Vec<String> = p["identities"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .take(3)
                        .map(|i| format!("{}:{}", val(&i["type"]), val(&i["value"])))
                        .collect()
                })
                .unwrap_or_default();
            let _ = write!(
                body,
                r#"<tr><td><a href="/ui/profiles/{u}">{p}</a></td><td>{ids}</td><td>{t}</td></tr>"#,
                u = url(&pid),
                p = esc(&pid),
                ids = esc(&ids.join(", ")),
                t = esc(&short_traits(&p["traits"]))
            );
        }
    }
    if n == 0 {
        body.push_str(r#"<tr><td colspan="3" class="muted">no profile matches</td></tr>"#);
    }
    body.push_str("</table>");
    Ok(html::layout(&who.user, who.csrf(), "Profiles", "/ui/profiles", &body).into_response())
}

fn short_traits(t: &Value) -> String {
    t.as_object()
        .map(|o| {
            o.iter()
                .take(4)
                .map(|(k, v)| format!("{k}={}", val(v)))
                .collect::<Vec<_>>()
                .join(" · ")
        })
        .unwrap_or_default()
}

fn kv_table(v: &Value, empty: &str) -> String {
    let mut out = String::from("<table class=\"kv\">");
    match v.as_object() {
        Some(o) if !o.is_empty() => {
            for (k, v) in o {
                let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&val(v)));
            }
        }
        _ => {
            let _ = write!(out, "<tr><td class=\"muted\">{}</td></tr>", esc(empty));
        }
    }
    out.push_str("</table>");
    out
}

/// The reason of an identity decision, in words.
fn decision_text(d: &Value) -> String {
    let id = |v: &Value| format!("{}:{}", val(&v["type"]), val(&v["value"]));
    match d["decision"].as_str() {
        Some("created") => format!("profile {} created", val(&d["profile"])),
        Some("linked") => format!("{} linked", id(&d["identifier"])),
        Some("merged") => format!(
            "{} merged into {}: the event carried {} (of the merged profile) together with {}",
            val(&d["from"]),
            val(&d["into"]),
            id(&d["via"]),
            id(&d["with"])
        ),
        Some(other) => {
            let mut m = d.clone();
            if let Some(o) = m.as_object_mut() {
                for k in ["seq", "message_id", "timestamp_ms", "decision"] {
                    o.remove(k);
                }
            }
            format!("{other}: {m}")
        }
        None => d.to_string(),
    }
}

/// `GET /ui/profiles/{ref}`: the profile card.
pub async fn card(
    State(app): State<AppState>,
    who: UiUser,
    Path(pref): Path<String>,
) -> Result<Response, UiError> {
    let caller = who.user.caller();
    let r = app.state.reader()?;
    let pid = api::resolve_ref(&app, &r, &pref)?;
    let p = r
        .profile(pid)?
        .ok_or_else(|| ApiError::NotFound(format!("no profile {pref:?}")))?;
    let pj = api::profile_json(&r, pid, &p)?;
    let cluster = r.cluster(pid)?;
    let rows = r.timeline(&cluster, None, TIMELINE)?;
    drop(r);
    let pids = pid.to_string();
    let Json(ident) = api::identity(State(app.clone()), caller.clone(), Path(pids.clone())).await?;
    let Json(aud) = api::audiences(
        State(app.clone()),
        caller.clone(),
        Path(pids.clone()),
        Query(api::HistoryQuery { limit: Some(50) }),
    )
    .await?;
    let Json(del) = crate::api::destinations::profile_log(
        State(app.clone()),
        caller,
        Path(pids.clone()),
        Query(crate::api::destinations::LogQuery { limit: Some(20) }),
    )
    .await?;
    let reader = app.reader.clone();
    let events = tokio::task::spawn_blocking(move || -> Result<Vec<(u64, Value)>, ApiError> {
        let mut out = Vec::with_capacity(rows.len());
        for c in rows {
            if let Some(e) = reader
                .read_from(c.seq, 1)?
                .into_iter()
                .find(|e| e.seq == c.seq)
            {
                let v: Value = serde_json::from_slice(&e.payload).unwrap_or(Value::Null);
                out.push((e.seq, v));
            }
        }
        Ok(out)
    })
    .await
    .map_err(ApiError::internal)??;

    let traits = &pj["traits"];
    let title = ["email", "name", "first_name"]
        .iter()
        .find_map(|k| traits[*k].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| pids.clone());
    let mut b = String::new();
    let _ = write!(
        b,
        r#"<p class="muted">{pid} · first seen {fs} · last seen {ls} · {n} events</p><div class="grid">"#,
        pid = esc(&pids),
        fs = when(&pj["first_seen"]),
        ls = when(&pj["last_seen"]),
        n = pj["event_count"]
    );
    let _ = write!(
        b,
        "<section><h2>Traits</h2>{}</section>",
        kv_table(traits, "no traits yet")
    );
    let _ = write!(
        b,
        "<section><h2>Computed traits</h2>{}</section>",
        kv_table(&pj["computed_traits"], "no computed traits defined")
    );
    // Identifiers.
    b.push_str("<section><h2>Identifiers</h2><table class=\"ids\">");
    if let Some(ids) = ident["identifiers"].as_array() {
        for i in ids {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td class=\"muted\">since {}</td></tr>",
                esc(&val(&i["type"])),
                esc(&val(&i["value"])),
                when(&i["first_seen"])
            );
        }
    }
    b.push_str("</table>");
    if let Some(ch) = pj["channels"].as_object().filter(|c| !c.is_empty()) {
        b.push_str("<h3>Channels (UTM)</h3><table class=\"channels\">");
        for (k, c) in ch {
            let _ = write!(
                b,
                "<tr><td>{}</td><td class=\"num\">{}</td></tr>",
                esc(k),
                c["count"]
            );
        }
        b.push_str("</table>");
    }
    b.push_str("</section>");
    // Merge history with reasons, and the split action for admins.
    b.push_str("<section class=\"merges\"><h2>Merge history</h2><ol class=\"decisions\">");
    if let Some(ds) = ident["decisions"].as_array() {
        for d in ds {
            let merged = d["decision"] == "merged";
            let _ = write!(
                b,
                "<li class=\"{cls}\"><span class=\"muted\">{t}</span> {txt}",
                cls = if merged { "merge" } else { "" },
                t = d["timestamp_ms"].as_i64().map(when_ms).unwrap_or_default(),
                txt = esc(&decision_text(d))
            );
            let from = val(&d["from"]);
            if merged
                && who.user.role == Role::Admin
                && cluster.iter().any(|c| c.to_string() == from)
            {
                let _ = write!(
                    b,
                    r#" <form method="post" action="/ui/profiles/{u}/split" class="inline" onsubmit="return confirm('Undo this merge? Both people are re-derived from the log.')">{csrf}<input type="hidden" name="undo_merge" value="{f}"><button type="submit" class="danger">Split</button></form>"#,
                    u = url(&pids),
                    csrf = html::csrf_field(who.csrf()),
                    f = esc(&from)
                );
            }
            b.push_str("</li>");
        }
    }
    b.push_str("</ol></section>");
    // Audiences now and their history.
    b.push_str("<section><h2>Audiences</h2><ul class=\"chips\">");
    if let Some(a) = aud["audiences"].as_array() {
        for x in a {
            let n = val(&x["name"]);
            let _ = write!(
                b,
                r#"<li><a href="/ui/audiences/{}">{}</a> <span class="muted">since {}</span></li>"#,
                url(&n),
                esc(&n),
                when(&x["since"])
            );
        }
        if a.is_empty() {
            b.push_str("<li class=\"muted\">in no audience</li>");
        }
    }
    b.push_str("</ul><table class=\"history\">");
    if let Some(h) = aud["history"].as_array() {
        for x in h {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"muted\">{}</td></tr>",
                when(&x["at"]),
                esc(&val(&x["change"])),
                esc(&val(&x["audience"])),
                esc(&val(&x["cause"]))
            );
        }
    }
    b.push_str("</table></section>");
    // Consent per purpose: what destinations and audiences that require a purpose see.
    b.push_str("<section><h2>Consent</h2><table class=\"consent\">");
    let consent = crate::api::consent::consent_json(&app.consent, &p.consent);
    if let Some(m) = consent.as_object() {
        for (purpose, c) in m {
            let value = c["value"].as_str().unwrap_or("?");
            let how = if c["default"] == true {
                "default (never stated)".to_owned()
            } else {
                format!("{} via {}", when(&c["at"]), esc(&val(&c["via"])))
            };
            let _ = write!(
                b,
                "<tr><th>{}</th><td class=\"consent-{v}\">{v}</td><td class=\"muted\">{how}</td></tr>",
                esc(purpose),
                v = esc(value),
            );
        }
    }
    b.push_str("</table></section>");
    // Deliveries.
    b.push_str("<section><h2>Deliveries</h2><table>");
    match del["deliveries"].as_array() {
        Some(d) if !d.is_empty() => {
            for x in d {
                let _ = write!(b, "<tr><td><code>{}</code></td></tr>", esc(&x.to_string()));
            }
        }
        _ => b.push_str("<tr><td class=\"muted\">nothing delivered about this person</td></tr>"),
    }
    b.push_str("</table></section></div>");
    b.push_str(&timeline(&events));
    Ok(html::layout(&who.user, who.csrf(), &title, "/ui/profiles", &b).into_response())
}

/// The event timeline, newest first, grouped into sessions (a gap of 30 min starts one).
fn timeline(events: &[(u64, Value)]) -> String {
    let mut b = format!("<section class=\"timeline\"><h2>Timeline <span class=\"muted\">(newest {} events)</span></h2>", events.len());
    let mut last_ms: Option<i64> = None;
    let mut open = false;
    for (seq, e) in events {
        let ms = e["timestamp"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|d| d.timestamp_millis())
            .unwrap_or(0);
        if last_ms.is_none_or(|l| l - ms > SESSION_GAP_MS) {
            if open {
                b.push_str("</ul>");
            }
            let _ = write!(
                b,
                "<h3>Session ending {}</h3><ul class=\"events\">",
                when_ms(ms)
            );
            open = true;
        }
        last_ms = Some(ms);
        let kind = e["type"].as_str().unwrap_or("?");
        let m = &e["message"];
        let name = m["event"].as_str().or(m["name"].as_str()).unwrap_or("");
        let _ = write!(
            b,
            r#"<li><details><summary><span class="icon">{i}</span> <b>{k}</b> {n} <span class="muted">{t} · #{seq}</span></summary><pre>{j}</pre></details></li>"#,
            i = html::icon(kind, name),
            k = esc(kind),
            n = esc(name),
            t = when_ms(ms),
            j = html::pretty(e)
        );
    }
    if open {
        b.push_str("</ul>");
    } else {
        b.push_str("<p class=\"muted\">no events</p>");
    }
    b.push_str("</section>");
    b
}

/// `POST /ui/profiles/{ref}/split` (admin): undo a merge.
pub async fn split(
    State(app): State<AppState>,
    Path(pref): Path<String>,
    posted: Posted,
) -> Result<Response, UiError> {
    posted.who.require(Role::Admin)?;
    let body = SplitIn {
        undo_merge: posted.field("undo_merge").map(str::to_owned),
        detach: posted.field("detach").map(str::to_owned),
    };
    let Json(out) = api::split(
        State(app.clone()),
        posted.who.user.caller(),
        Path(pref),
        Json(body),
    )
    .await?;
    let mut b = String::from("<p>Split done; these profiles were re-derived from the log:</p><ul>");
    if let Some(ps) = out["profiles"].as_array() {
        for p in ps {
            let p = val(p);
            let _ = write!(
                b,
                r#"<li><a href="/ui/profiles/{}">{}</a></li>"#,
                url(&p),
                esc(&p)
            );
        }
    }
    b.push_str("</ul>");
    Ok(html::layout(
        &posted.who.user,
        posted.who.csrf(),
        "Profile split",
        "/ui/profiles",
        &b,
    )
    .into_response())
}
