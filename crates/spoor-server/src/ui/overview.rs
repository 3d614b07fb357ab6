//! The overview: events per minute over the last hour (an SVG bar chart), events by type
//! and source, top UTM sources and mediums, profiles and the share identified, and how far
//! processing is behind ingest.
//!
//! The event figures are kept per minute and updated incrementally
//! ([`super::overview_stats`]); the identified share is measured on a sample of profiles.
//! The page says when a figure comes from a bounded sample.

use super::html;
use super::{UiError, UiUser};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;

const PROFILE_SAMPLE: usize = 500;

fn top(m: HashMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// Share of a sample of profiles that carry a `user_id` or an e-mail.
fn identified(app: &AppState) -> Result<(usize, usize), ApiError> {
    let r = app.state.reader()?;
    let sample = r.list_profiles(None, PROFILE_SAMPLE)?;
    let mut known = 0;
    for p in &sample {
        if let Some(i) = r.identity(p.id)? {
            if i.identifiers
                .iter()
                .any(|l| matches!(l.identifier.kind.as_str(), "user_id" | "email"))
            {
                known += 1;
            }
        }
    }
    Ok((known, sample.len()))
}

/// `GET /ui/`
pub async fn page(State(app): State<AppState>, who: UiUser) -> Result<Response, UiError> {
    let now = app.clock.now().timestamp_millis();
    let app2 = app.clone();
    let (f, (known, sampled)) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        Ok((app2.overview.hour(&app2, now)?, identified(&app2)?))
    })
    .await
    .map_err(ApiError::internal)??;
    let st = &app.processor.status;
    let ingested = app.reader.last_seq();
    let processed = st.processed_seq.load(Ordering::Acquire);
    let profiles = st.live_profiles.load(Ordering::Relaxed);
    let names: HashMap<String, String> = app
        .auth
        .sources()?
        .into_iter()
        .map(|s| (s.id.as_str().to_owned(), s.name))
        .collect();
    let t = f.total;
    let by_source: Vec<(String, u64)> = top(t.by_source, 10)
        .into_iter()
        .map(|(id, n)| (names.get(&id).cloned().unwrap_or(id), n))
        .collect();
    let share = if sampled == 0 {
        "—".to_string()
    } else {
        format!("{:.0} %", known as f64 * 100.0 / sampled as f64)
    };
    let mut b = String::new();
    let _ = write!(
        b,
        r#"<div class="tiles">
<div class="tile"><div class="big">{events}</div>events in the last hour{since}</div>
<div class="tile"><div class="big">{profiles}</div>profiles</div>
<div class="tile"><div class="big">{share}</div>identified <span class="muted">(of {sampled} sampled)</span></div>
<div class="tile"><div class="big">{lag}</div>events waiting to be processed</div>
</div>"#,
        events = t.events,
        since = match f
            .counted_since_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
        {
            Some(at) => format!(
                " <span class=\"muted\">(counted since {} UTC)</span>",
                at.format("%H:%M:%S")
            ),
            None => String::new(),
        },
        lag = ingested.saturating_sub(processed),
    );
    let _ = write!(
        b,
        "<h2>Events per minute, last hour</h2>{}",
        html::bar_chart(&f.per_minute, "60 min ago", "now")
    );
    let note = if t.parsed < t.events {
        format!(
            " <span class=\"muted\">({} of {} events)</span>",
            t.parsed, t.events
        )
    } else {
        String::new()
    };
    let _ = write!(
        b,
        r#"<div class="grid"><section><h2>By type{note}</h2>{}</section><section><h2>By source{note}</h2>{}</section>
<section><h2>Top UTM sources{note}</h2>{}</section><section><h2>Top UTM mediums{note}</h2>{}</section></div>"#,
        html::count_table("type", &top(t.by_type, 10)),
        html::count_table("source", &by_source),
        html::count_table("utm_source", &top(t.utm_source, 8)),
        html::count_table("utm_medium", &top(t.utm_medium, 8)),
    );
    let _ = write!(
        b,
        "<p class=\"muted\">log position {ingested}, processed {processed}{}</p>",
        if st.failed.load(Ordering::Relaxed) {
            " — <b>the processor has failed; see the server log</b>"
        } else {
            ""
        }
    );
    Ok(html::layout(&who.user, who.csrf(), "Overview", "/ui/", &b).into_response())
}
