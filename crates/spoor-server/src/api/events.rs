//! Reading the event log back: list/tail with filters and a cursor, NDJSON export, the
//! rejected events, and the log's status. Every original field is returned as stored.

use crate::auth::{Caller, Need};
use crate::error::ApiError;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use spoor_core::ingest::normalize::parse_time;
use spoor_core::ingest::wire::Lenient;
use spoor_store::log::{LogEntry, LogReader};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/events", get(list))
        .route("/v1/admin/events/export", get(export))
        .route("/v1/admin/rejections", get(rejections))
        .route("/v1/admin/status", get(status))
}

/// Most entries one page returns.
const MAX_LIMIT: usize = 1000;
/// Most entries one request examines while filtering, so a rare filter cannot pin a core.
const MAX_SCAN: usize = 200_000;
const CHUNK: usize = 1000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    pub limit: Option<usize>,
    /// Continue after the page that returned this cursor.
    pub cursor: Option<String>,
    /// `desc` (newest first, the default) or `asc`.
    pub order: Option<String>,
    /// A source id or name.
    pub source: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Event name (track) or page/screen name.
    pub event: Option<String>,
    /// Only events whose (corrected) timestamp is at or after this time.
    pub since: Option<String>,
    /// Only events whose timestamp is before this time.
    pub until: Option<String>,
    /// For export: start at this sequence number.
    pub from: Option<u64>,
}

/// Filters compiled from a query.
struct Filter {
    source: Option<String>,
    kind: Option<String>,
    event: Option<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    source_id: std::borrow::Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    message: MessageHead<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MessageHead<'a> {
    #[serde(borrow)]
    event: Lenient<'a>,
    #[serde(borrow)]
    name: Lenient<'a>,
}

impl Filter {
    fn new(app: &AppState, q: &EventsQuery) -> Result<Self, ApiError> {
        let time = |v: &Option<String>, what: &str| -> Result<Option<i64>, ApiError> {
            v.as_deref()
                .map(|s| {
                    parse_time(s).map(|t| t.timestamp_millis()).ok_or_else(|| {
                        ApiError::InvalidRequest(format!("{what} {s:?} is not a timestamp"))
                    })
                })
                .transpose()
        };
        let source = match q.source.as_deref() {
            Some(s) => Some(app.auth.find_source(s)?.id.as_str().to_owned()),
            None => None,
        };
        Ok(Self {
            source,
            kind: q.kind.clone(),
            event: q.event.clone(),
            since_ms: time(&q.since, "since")?,
            until_ms: time(&q.until, "until")?,
        })
    }

    fn is_trivial(&self) -> bool {
        self.source.is_none() && self.kind.is_none() && self.event.is_none()
    }

    fn matches(&self, e: &LogEntry) -> bool {
        if e.is_erased() {
            return false; // erased (privacy): nothing of it is shown, not even its seq
        }
        if self.since_ms.is_some_and(|s| e.timestamp_ms < s)
            || self.until_ms.is_some_and(|u| e.timestamp_ms >= u)
        {
            return false;
        }
        if self.is_trivial() {
            return true;
        }
        let Ok(h) = serde_json::from_slice::<Head>(&e.payload) else {
            return false;
        };
        self.source.as_deref().is_none_or(|s| h.source_id == s)
            && self.kind.as_deref().is_none_or(|k| h.kind == k)
            && self.event.as_deref().is_none_or(|ev| {
                h.message.event.get() == Some(ev) || h.message.name.get() == Some(ev)
            })
    }
}

/// `{"seq":N, …envelope…}` without re-serialising the envelope.
pub fn with_seq(e: &LogEntry) -> String {
    let body = std::str::from_utf8(&e.payload).unwrap_or("{}");
    match body.strip_prefix('{') {
        Some(rest) if rest.trim_start().starts_with('}') => format!("{{\"seq\":{}}}", e.seq),
        Some(rest) => format!("{{\"seq\":{},{rest}", e.seq),
        None => format!(
            "{{\"seq\":{},\"payload\":{}}}",
            e.seq,
            serde_json::Value::String(body.into())
        ),
    }
}

struct Page {
    items: Vec<String>,
    next_cursor: Option<u64>,
}

/// Reads one page from `reader`, newest first unless `asc`.
fn read_page(
    reader: &LogReader,
    filter: &Filter,
    asc: bool,
    cursor: Option<u64>,
    limit: usize,
) -> Result<Page, ApiError> {
    let mut items = Vec::new();
    let mut scanned = 0;
    // Cursor semantics: asc → next seq to read; desc → read strictly below it.
    let mut pos = cursor.unwrap_or(if asc { 1 } else { u64::MAX });
    loop {
        let chunk = if asc {
            reader.read_from(pos, CHUNK)?
        } else {
            reader.read_back(pos, CHUNK)?
        };
        if chunk.is_empty() {
            return Ok(Page {
                items,
                next_cursor: None,
            });
        }
        for e in &chunk {
            scanned += 1;
            pos = if asc { e.seq + 1 } else { e.seq };
            if filter.matches(e) {
                items.push(with_seq(e));
                if items.len() == limit {
                    let more = if asc {
                        reader.last_seq() >= pos
                    } else {
                        pos > 1
                    };
                    return Ok(Page {
                        items,
                        next_cursor: more.then_some(pos),
                    });
                }
            }
            if scanned >= MAX_SCAN {
                return Ok(Page {
                    items,
                    next_cursor: Some(pos),
                });
            }
        }
    }
}

/// `{"<key>":[…],"next_cursor":…}` built from already-serialised items.
fn page_response(page: Page, key: &str) -> Response {
    let mut out = String::with_capacity(page.items.iter().map(|s| s.len() + 1).sum::<usize>() + 64);
    out.push_str(&format!("{{\"{key}\":["));
    for (i, item) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out.push_str("],\"next_cursor\":");
    match page.next_cursor {
        Some(c) => out.push_str(&format!("\"{c}\"")),
        None => out.push_str("null"),
    }
    out.push('}');
    ([(header::CONTENT_TYPE, "application/json")], out).into_response()
}

fn parse_cursor(c: &Option<String>) -> Result<Option<u64>, ApiError> {
    c.as_deref()
        .map(|s| {
            s.parse::<u64>()
                .map_err(|_| ApiError::InvalidRequest(format!("cursor {s:?} is not valid")))
        })
        .transpose()
}

fn parse_order(o: &Option<String>) -> Result<bool, ApiError> {
    match o.as_deref() {
        None | Some("desc") => Ok(false),
        Some("asc") => Ok(true),
        Some(other) => Err(ApiError::InvalidRequest(format!(
            "order {other:?} must be asc or desc"
        ))),
    }
}

async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    caller.require(Need::ReadEvents)?;
    let filter = Filter::new(&app, &q)?;
    paged(app.reader.clone(), filter, &q, "events").await
}

/// Rejected events and requests, newest first. Only the time filters apply (a rejection
/// may not even be valid JSON, so it has no type or name to filter on).
async fn rejections(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    caller.require(Need::ReadEvents)?;
    let full = Filter::new(&app, &q)?;
    let filter = Filter {
        source: None,
        kind: None,
        event: None,
        ..full
    };
    paged(app.rejects_reader.clone(), filter, &q, "rejections").await
}

/// One page of a log under `key`, read off the async runtime.
async fn paged(
    reader: LogReader,
    filter: Filter,
    q: &EventsQuery,
    key: &str,
) -> Result<Response, ApiError> {
    let asc = parse_order(&q.order)?;
    let cursor = parse_cursor(&q.cursor)?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let page = tokio::task::spawn_blocking(move || read_page(&reader, &filter, asc, cursor, limit))
        .await
        .map_err(ApiError::internal)??;
    Ok(page_response(page, key))
}

/// Streams matching events as NDJSON, oldest first, from `from` (default: the start).
async fn export(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    caller.require(Need::ReadEvents)?;
    let filter = Filter::new(&app, &q)?;
    let reader = app.reader.clone();
    let from = q.from.unwrap_or(1);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(16);
    tokio::task::spawn_blocking(move || {
        let mut buf = String::new();
        for entry in reader.iter_from(from) {
            match entry {
                Ok(e) if filter.matches(&e) => {
                    buf.push_str(&with_seq(&e));
                    buf.push('\n');
                }
                Ok(_) => {}
                Err(err) => {
                    let _ = tx.blocking_send(Err(std::io::Error::other(err.to_string())));
                    return;
                }
            }
            if buf.len() > 256 * 1024 && tx.blocking_send(Ok(std::mem::take(&mut buf))).is_err() {
                return;
            }
        }
        if !buf.is_empty() {
            let _ = tx.blocking_send(Ok(buf));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn status(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Need::Any)?;
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": app.started.elapsed().as_secs(),
        "log": {"last_seq": app.reader.last_seq(), "size_bytes": app.writer.size_bytes()},
        "rejections": {"last_seq": app.rejects_reader.last_seq()},
    })))
}
