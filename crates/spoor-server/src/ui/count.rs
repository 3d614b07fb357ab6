//! *Count exactly*: the audience editor's full evaluation of a rule over every live profile,
//! as a background job whose progress the page polls (htmx, every second).
//!
//! Why a job: the live preview answers from a sample within its budget; an exact count of a
//! million people takes seconds to minutes (event rules read each person's events), longer
//! than a request should. Jobs are in memory (a restart forgets them — they store nothing),
//! visible only to the user who started them, at most [`MAX_RUNNING`] at a time, and stopped
//! when serving ends (so the data directory is free).

use super::html::esc;
use super::{Posted, UiError, UiUser};
use crate::api::audiences as api;
use crate::api::preview::count_all;
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Path, State};
use axum::response::Html;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Counts running at once (each keeps a blocking thread busy).
pub const MAX_RUNNING: usize = 2;
/// Finished jobs kept for their pages.
const KEEP: usize = 20;

/// One count.
pub struct CountJob {
    pub id: String,
    pub user: String,
    pub rule: String,
    started: Instant,
    /// Live profiles when it started (the progress bar's end; the count may pass it).
    pub total: u64,
    pub scanned: AtomicU64,
    pub matched: AtomicU64,
    /// `None` while running; then the exact size and the seconds it took, or the error.
    outcome: Mutex<Option<Result<(u64, f64), String>>>,
}

impl CountJob {
    fn running(&self) -> bool {
        self.outcome.lock().is_none()
    }
}

/// The jobs of one server.
#[derive(Default)]
pub struct CountJobs {
    jobs: Mutex<Vec<Arc<CountJob>>>,
    stopping: AtomicBool,
}

impl CountJobs {
    /// Stops every running count at its next page (serving ends).
    pub fn stop_all(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    fn get(&self, id: &str, user: &str) -> Option<Arc<CountJob>> {
        self.jobs
            .lock()
            .iter()
            .find(|j| j.id == id && j.user == user)
            .cloned()
    }

    /// Registers a job unless [`MAX_RUNNING`] are running; forgets the oldest finished ones.
    fn add(&self, job: Arc<CountJob>) -> Result<(), ApiError> {
        let mut jobs = self.jobs.lock();
        if jobs.iter().filter(|j| j.running()).count() >= MAX_RUNNING {
            return Err(ApiError::Conflict(format!(
                "{MAX_RUNNING} exact counts are running; wait for one to finish"
            )));
        }
        jobs.push(job);
        while jobs.len() > KEEP {
            let Some(i) = jobs.iter().position(|j| !j.running()) else {
                break;
            };
            jobs.remove(i);
        }
        Ok(())
    }
}

fn fragment(job: &CountJob) -> String {
    let scanned = job.scanned.load(Ordering::Relaxed);
    let matched = job.matched.load(Ordering::Relaxed);
    match &*job.outcome.lock() {
        None => format!(
            r#"<div id="count" class="count running" hx-get="/ui/audiences/count/{id}" hx-trigger="every 1s" hx-swap="outerHTML"><progress value="{scanned}" max="{max}"></progress> counting exactly: {scanned} of ~{total} profiles evaluated, {matched} match so far</div>"#,
            id = esc(&job.id),
            max = job.total.max(scanned).max(1),
            total = job.total,
        ),
        Some(Ok((size, secs))) => format!(
            r#"<div id="count" class="count done"><p>Exactly <b id="count-size">{size}</b> of {scanned} profiles match <span class="muted">(every profile evaluated in {secs:.1} s)</span></p></div>"#
        ),
        Some(Err(e)) => format!(
            r#"<div id="count" class="count error" role="alert">the count stopped: {}</div>"#,
            esc(e)
        ),
    }
}

/// `POST /ui/audiences/count` (htmx, field `rule`): starts a count; answers its progress.
pub async fn start(State(app): State<AppState>, posted: Posted) -> Result<Html<String>, UiError> {
    let text = posted.field("rule").unwrap_or("").to_owned();
    // Refusals go into the page's count box (htmx does not swap error responses).
    let refused = |e: ApiError| {
        Html(format!(
            r#"<div id="count" class="count error" role="alert">{}</div>"#,
            esc(&e.to_string())
        ))
    };
    let rule = match api::read_rule(Some(&text), None, &app.defs.current().catalog()) {
        Ok(r) => r,
        Err(e) => return Ok(refused(e)),
    };
    let job = Arc::new(CountJob {
        id: super::users::random_token(16),
        user: posted.who.user.name.clone(),
        rule: text,
        started: Instant::now(),
        total: app.processor.status.live_profiles.load(Ordering::Relaxed),
        scanned: AtomicU64::new(0),
        matched: AtomicU64::new(0),
        outcome: Mutex::new(None),
    });
    if let Err(e) = app.counts.add(job.clone()) {
        return Ok(refused(e));
    }
    tracing::info!(user = %job.user, rule = %job.rule, "exact audience count started");
    // Rendered before the job starts, so the page always gets the polling form first.
    let first = fragment(&job);
    let (app2, j) = (app.clone(), job.clone());
    tokio::task::spawn_blocking(move || {
        let out = count_all(&app2, &rule, |scanned, matched| {
            j.scanned.store(scanned, Ordering::Relaxed);
            j.matched.store(matched, Ordering::Relaxed);
            !app2.counts.stopping.load(Ordering::Acquire)
        });
        let secs = j.started.elapsed().as_secs_f64();
        *j.outcome.lock() = Some(match out {
            Ok(Some((_, matched))) => Ok((matched, secs)),
            Ok(None) => Err("the server is stopping".into()),
            Err(e) => {
                tracing::error!(error = %e, "exact audience count failed");
                Err("internal error (see the server log)".into())
            }
        });
    });
    Ok(Html(first))
}

/// `GET /ui/audiences/count/{id}` (htmx polling): the progress, or the exact size.
pub async fn poll(
    State(app): State<AppState>,
    who: UiUser,
    Path(id): Path<String>,
) -> Result<Html<String>, UiError> {
    let job = app
        .counts
        .get(&id, &who.user.name)
        .ok_or_else(|| ApiError::NotFound(format!("no count {id:?} (a restart forgets them)")))?;
    Ok(Html(fragment(&job)))
}
