//! Audiences: the list with sizes, the rule editor with positioned errors and a live
//! preview (htmx posts the text 400 ms after the last key stroke), save, and overlap.
//!
//! The preview is the API's preview (`api::preview::run_preview`, a uniform random sample of
//! the live profiles): the same code path the API and CLI use, with the UI's time budget
//! (`ui.preview_budget_ms`) and a seed kept by the editor page, so the sample — and with it
//! the size — changes only with the rule while one editor is open. *Count exactly* runs the
//! full evaluation as a background job (`count.rs`).

use super::html::{self, esc, url, val};
use super::users::Role;
use super::{Posted, UiError, UiUser};
use crate::api::audiences as api;
use crate::api::preview::{run_preview, PreviewOpts};
use crate::error::ApiError;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;
use std::fmt::Write;

/// Members shown in a preview.
const SAMPLE: usize = 10;
/// Profiles a live preview evaluates at most; `ui.preview_budget_ms` bounds it in time. It
/// runs on every pause in typing, so it answers fast with an estimate and its margin.
const SCAN: usize = 20_000;

/// `GET /ui/audiences`
pub async fn list(State(app): State<AppState>, who: UiUser) -> Result<Response, UiError> {
    let defs = app.defs.current();
    let backfills = app.defs.backfills();
    let r = app.state.reader()?;
    let mut b = String::new();
    if who.user.role >= Role::Marketer {
        b.push_str(r#"<p><a class="button" href="/ui/audiences/new">New audience</a></p>"#);
    }
    let history = super::sizes::SizeHistory::load(&app);
    let now_ms = app.clock.now().timestamp_millis();
    b.push_str("<table class=\"audiences\"><tr><th>name</th><th class=\"num\">members</th><th class=\"num\">24 h</th><th>30 days</th><th>rule</th><th>updated</th><th>backfill</th></tr>");
    for a in defs.audiences.values() {
        let size = r.audience_size(&a.name)?;
        let change = match history.change_24h(&a.name, size, now_ms) {
            Some(c) if c > 0 => format!("+{c}"),
            Some(c) => c.to_string(),
            None => String::new(),
        };
        let spark = history.sparkline(&a.name);
        let bf = backfills
            .get(&a.name)
            .map(|b| match b.started {
                true => format!("{}/{}", b.done, b.total),
                false => "waiting".into(),
            })
            .unwrap_or_else(|| "done".into());
        let _ = write!(
            b,
            r#"<tr><td><a href="/ui/audiences/{u}">{n}</a><div class="muted">{d}</div></td><td class="num size">{size}</td><td class="num change">{change}</td><td>{spark}</td><td><code>{rule}</code></td><td>{up}</td><td>{bf}</td></tr>"#,
            u = url(&a.name),
            n = esc(&a.name),
            d = esc(&a.description),
            rule = esc(&a.rule.to_string()),
            up = html::when_ms(a.updated_ms),
        );
    }
    if defs.audiences.is_empty() {
        b.push_str(r#"<tr><td colspan="7" class="muted">no audiences yet</td></tr>"#);
    }
    b.push_str("</table>");
    // Overlap of two audiences.
    let opts: String = defs
        .audiences
        .keys()
        .map(|n| format!(r#"<option value="{0}">{0}</option>"#, esc(n)))
        .collect();
    let _ = write!(
        b,
        r##"<h2>Overlap</h2><form hx-get="/ui/audiences/overlap" hx-target="#overlap" class="inline">
<select name="a">{opts}</select> and <select name="b">{opts}</select> <button type="submit">Compare</button></form><div id="overlap"></div>"##
    );
    Ok(html::layout(&who.user, who.csrf(), "Audiences", "/ui/audiences", &b).into_response())
}

#[derive(Debug, Deserialize)]
pub struct OverlapIn {
    a: String,
    b: String,
}

/// `GET /ui/audiences/overlap?a=&b=` (an htmx fragment).
pub async fn overlap(
    State(app): State<AppState>,
    _who: UiUser,
    Query(q): Query<OverlapIn>,
) -> Result<Html<String>, UiError> {
    let defs = app.defs.current();
    for n in [&q.a, &q.b] {
        if !defs.audiences.contains_key(n) {
            return Err(ApiError::NotFound(format!("no audience {n:?}")).into());
        }
    }
    let (a, b, both) = app.state.reader()?.audience_overlap(&q.a, &q.b)?;
    Ok(Html(format!(
        r#"<table class="overlap"><tr><th>only {a_n}</th><th>both</th><th>only {b_n}</th></tr><tr><td class="num">{}</td><td class="num">{both}</td><td class="num">{}</td></tr></table>"#,
        a - both,
        b - both,
        a_n = esc(&q.a),
        b_n = esc(&q.b),
    )))
}

fn editor_page(who: &UiUser, name: Option<&str>, description: &str, rule: &str) -> Html<String> {
    let can_edit = who.user.role >= Role::Marketer;
    let name_field = match name {
        Some(n) => format!(
            r#"<input type="hidden" name="name" value="{0}"><input type="hidden" name="existing" value="1"><p>Audience <b>{0}</b></p>"#,
            esc(n)
        ),
        None => r#"<label>Name <input name="name" required pattern="[A-Za-z0-9_-]{1,64}" placeholder="cart-abandoners"></label>"#.into(),
    };
    let save = if can_edit {
        r#"<button type="submit">Save</button>"#
    } else {
        r#"<p class="muted">Viewers cannot change audiences.</p>"#
    };
    let body = format!(
        r##"<form method="post" action="/ui/audiences" class="editor">{csrf}{name_field}
<label>Description <input name="description" value="{desc}" size="60"></label>
<input type="hidden" name="seed" value="{seed}">
<label>Rule <textarea name="rule" rows="6" cols="80" spellcheck="false"
 hx-post="/ui/audiences/preview" hx-trigger="load, input changed delay:400ms" hx-target="#preview"
 hx-include="[name=seed]" placeholder='performed "Order Completed" at least 2 times within 30d'>{rule}</textarea></label>
{save}</form>
<section id="preview" aria-live="polite"></section>
<details class="help"><summary>Rule language</summary><pre>trait plan = "pro"
computed orders_30d >= 2
utm source = "newsletter"      device type = "mobile"
performed "Product Viewed" where category = "shoes" at least 3 times within 30d
performed "Product Added" and not followed by "Order Completed" within 2h
not in audience "employees"    (… and … or not …)</pre></details>"##,
        csrf = html::csrf_field(who.csrf()),
        seed = rand::random::<u64>(),
        desc = esc(description),
        rule = esc(rule),
    );
    let title = name.map_or("New audience".to_string(), |n| format!("Audience {n}"));
    html::layout(&who.user, who.csrf(), &title, "/ui/audiences", &body)
}

/// `GET /ui/audiences/new`
pub async fn editor_new(who: UiUser) -> Result<Html<String>, UiError> {
    who.require(Role::Marketer)?;
    Ok(editor_page(&who, None, "", ""))
}

/// `GET /ui/audiences/{name}`
pub async fn editor(
    State(app): State<AppState>,
    who: UiUser,
    Path(name): Path<String>,
) -> Result<Html<String>, UiError> {
    let defs = app.defs.current();
    let a = defs
        .audiences
        .get(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no audience {name:?}")))?;
    Ok(editor_page(
        &who,
        Some(&a.name),
        &a.description,
        &a.rule.to_string(),
    ))
}

/// A rule error under the editor: the message, and the line with a caret at the column.
fn rule_error(rule: &str, err: &ApiError) -> String {
    let mut b = format!(
        r#"<div class="rule-error" role="alert"><p>{}</p>"#,
        esc(&err.to_string())
    );
    if let ApiError::InvalidRule(_, Some(pe)) = err {
        if let Some(line) = rule.lines().nth(pe.line.saturating_sub(1)) {
            let caret = format!("{}^", " ".repeat(pe.column.saturating_sub(1)));
            let _ = write!(
                b,
                r#"<pre class="at"><span class="muted">line {}, column {}</span>
{}
<span class="caret">{}</span></pre>"#,
                pe.line,
                pe.column,
                esc(line),
                caret
            );
        }
    }
    b.push_str("</div>");
    b
}

/// `POST /ui/audiences/preview` (htmx): size and sample members, or the positioned error.
pub async fn preview(State(app): State<AppState>, posted: Posted) -> Result<Html<String>, UiError> {
    let rule_text = posted.field("rule").unwrap_or("").to_owned();
    if rule_text.trim().is_empty() {
        return Ok(Html(
            r#"<p class="muted">Type a rule to see who matches.</p>"#.into(),
        ));
    }
    let catalog = app.defs.current().catalog();
    let rule = match api::read_rule(Some(&rule_text), None, &catalog) {
        Ok(r) => r,
        Err(e) => return Ok(Html(rule_error(&rule_text, &e))),
    };
    let opts = PreviewOpts {
        sample: SAMPLE,
        scan: SCAN,
        budget: std::time::Duration::from_millis(app.cfg.ui.preview_budget_ms),
        seed: posted
            .field("seed")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random),
    };
    let app2 = app.clone();
    let out = tokio::task::spawn_blocking(move || run_preview(&app2, &rule, opts))
        .await
        .map_err(ApiError::internal)??;
    let exact = out["exact"] == true;
    let (size, margin) = if exact {
        (out["matched"].to_string(), String::new())
    } else {
        (
            format!("≈ {}", out["estimated_size"]),
            format!(
                r#" <span class="margin" title="95 % interval: {lo} to {hi}">± {m} (95%)</span>"#,
                m = out["margin_95"],
                lo = out["interval_95"][0],
                hi = out["interval_95"][1],
            ),
        )
    };
    let how = if exact {
        format!("every profile evaluated in {} ms", out["took_ms"])
    } else {
        format!(
            "estimated from a random sample of {} evaluated in {} ms{}",
            out["scanned"],
            out["took_ms"],
            if out["truncated"] == true {
                ", stopped at the time budget"
            } else {
                ""
            }
        )
    };
    let count = if exact {
        String::new()
    } else {
        r##"<div id="count"><button type="button" class="secondary" hx-post="/ui/audiences/count" hx-include="[name=rule]" hx-target="#count" hx-swap="outerHTML">Count exactly</button></div>"##.to_owned()
    };
    let mut b = format!(
        r#"<p class="preview-size"><b id="preview-size">{size}</b>{margin} of {total} profiles match <span class="muted">({how})</span></p>{count}<table class="sample"><tr><th>sample member</th><th>traits</th></tr>"#,
        total = out["total_profiles"],
    );
    if let Some(s) = out["sample"].as_array() {
        for m in s {
            let id = val(&m["id"]);
            let traits = m["traits"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .take(4)
                        .map(|(k, v)| format!("{k}={}", val(v)))
                        .collect::<Vec<_>>()
                        .join(" · ")
                })
                .unwrap_or_default();
            let _ = write!(
                b,
                r#"<tr><td><a href="/ui/profiles/{}">{}</a></td><td>{}</td></tr>"#,
                url(&id),
                esc(&id),
                esc(&traits)
            );
        }
    }
    b.push_str("</table>");
    Ok(Html(b))
}

/// `POST /ui/audiences` (marketer, admin): create or replace, then back to the list.
pub async fn save(State(app): State<AppState>, posted: Posted) -> Result<Response, UiError> {
    posted.who.require(Role::Marketer)?;
    let name = posted.field("name").unwrap_or("").trim().to_owned();
    let rule = posted.field("rule").unwrap_or("").to_owned();
    let description = posted.field("description").unwrap_or("").to_owned();
    // The API's writes need the admin scope; the role check above is the UI's rule
    // (marketers edit audiences), so act with it for this call only.
    let caller = posted.who.user.editor_caller();
    let existing = posted.field("existing") == Some("1");
    let out = if existing {
        let body = json!({"rule": rule, "description": description}).to_string();
        api::replace(
            State(app.clone()),
            caller,
            Path(name.clone()),
            Bytes::from(body),
        )
        .await
        .map(|_| ())
    } else {
        let body = json!({"name": name, "rule": rule, "description": description}).to_string();
        api::create(State(app.clone()), caller, Bytes::from(body))
            .await
            .map(|_| ())
    };
    match out {
        Ok(()) => Ok(Redirect::to("/ui/audiences").into_response()),
        Err(
            e @ (ApiError::InvalidRule(..) | ApiError::InvalidRequest(_) | ApiError::Conflict(_)),
        ) => {
            // Back to the editor with what was typed and the error in place.
            let page = editor_page(
                &posted.who,
                existing.then_some(name.as_str()),
                &description,
                &rule,
            );
            let err = rule_error(&rule, &e);
            let html = page.0.replacen(
                r#"<section id="preview""#,
                &format!(r#"{err}<section id="preview""#),
                1,
            );
            Ok((e.status(), Html(html)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}
