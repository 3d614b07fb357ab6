//! The overview: events per minute over the last hour (an SVG bar chart), events by type
//! and source, top UTM sources and mediums, profiles and the share identified, and how far
//! processing is behind ingest.
//!
//! Bounded work: the chart reads the log backwards until an hour ago but at most
//! [`MAX_SCAN`] events, and the breakdowns decode only the envelope head of at most
//! [`MAX_PARSE`] of them; the identified share is measured on a sample of profiles.
//! The page says when a figure comes from a bounded sample.

use super::html;
use super::{UiError, UiUser};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;

const MAX_SCAN: usize = 200_000;
const MAX_PARSE: usize = 20_000;
const PROFILE_SAMPLE: usize = 500;

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    source_id: Cow<'a, str>,
    #[serde(default)]
    utm: Option<UtmHead>,
}

#[derive(Deserialize)]
struct UtmHead {
    source: Option<String>,
    medium: Option<String>,
}

#[derive(Default)]
struct Figures {
    per_minute: Vec<u64>,
    scanned: usize,
    parsed: usize,
    by_type: HashMap<String, u64>,
    by_source: HashMap<String, u64>,
    utm_source: HashMap<String, u64>,
    utm_medium: HashMap<String, u64>,
}

fn scan(app: &AppState, now_ms: i64) -> Result<Figures, ApiError> {
    let hour_ago = now_ms - 3_600_000;
    let mut f = Figures {
        per_minute: vec![0; 60],
        ..Default::default()
    };
    let mut pos = u64::MAX;
    'read: loop {
        let chunk = app.reader.read_back(pos, 2000)?;
        if chunk.is_empty() {
            break;
        }
        for e in &chunk {
            pos = e.seq;
            if e.received_ms < hour_ago || f.scanned >= MAX_SCAN {
                break 'read;
            }
            f.scanned += 1;
            let minute = ((now_ms - e.received_ms).max(0) / 60_000) as usize;
            if minute < 60 {
                f.per_minute[59 - minute] += 1;
            }
            if f.parsed < MAX_PARSE {
                if let Ok(h) = serde_json::from_slice::<Head>(&e.payload) {
                    f.parsed += 1;
                    *f.by_type.entry(h.kind.into_owned()).or_default() += 1;
                    *f.by_source.entry(h.source_id.into_owned()).or_default() += 1;
                    if let Some(u) = h.utm {
                        if let Some(s) = u.source {
                            *f.utm_source.entry(s).or_default() += 1;
                        }
                        if let Some(m) = u.medium {
                            *f.utm_medium.entry(m).or_default() += 1;
                        }
                    }
                }
            }
        }
    }
    Ok(f)
}

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
        Ok((scan(&app2, now)?, identified(&app2)?))
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
    let by_source: Vec<(String, u64)> = top(f.by_source, 10)
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
<div class="tile"><div class="big">{events}</div>events in the last hour</div>
<div class="tile"><div class="big">{profiles}</div>profiles</div>
<div class="tile"><div class="big">{share}</div>identified <span class="muted">(of {sampled} sampled)</span></div>
<div class="tile"><div class="big">{lag}</div>events waiting to be processed</div>
</div>"#,
        events = f.scanned,
        lag = ingested.saturating_sub(processed),
    );
    let _ = write!(
        b,
        "<h2>Events per minute, last hour</h2>{}",
        html::bar_chart(&f.per_minute, "60 min ago", "now")
    );
    let note = if f.parsed < f.scanned {
        format!(" <span class=\"muted\">(newest {} events)</span>", f.parsed)
    } else {
        String::new()
    };
    let _ = write!(
        b,
        r#"<div class="grid"><section><h2>By type{note}</h2>{}</section><section><h2>By source{note}</h2>{}</section>
<section><h2>Top UTM sources{note}</h2>{}</section><section><h2>Top UTM mediums{note}</h2>{}</section></div>"#,
        html::count_table("type", &top(f.by_type, 10)),
        html::count_table("source", &by_source),
        html::count_table("utm_source", &top(f.utm_source, 8)),
        html::count_table("utm_medium", &top(f.utm_medium, 8)),
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
