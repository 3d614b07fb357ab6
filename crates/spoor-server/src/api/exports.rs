//! Audience file export: `GET /v1/audiences/{name}/export` — the members of an audience as
//! a CSV or NDJSON file for an ad platform or an e-mail tool, with e-mail and phone
//! normalised and SHA-256 hashed (columns and hashing rules: `spoor_core::share`).
//!
//! - **Full** (no `since`): every current member, `action=add`, in profile id order, read from
//!   one snapshot of the audience's bitmap — members who join or leave while the file
//!   streams do not tear it.
//! - **Delta** (`since=N`, a number of the membership change feed): the net change of each
//!   profile that entered or left after change `N`, `add` or `remove`.
//!
//! Either way the answer's `Spoor-Next-Cursor` header is the feed's newest change number
//! when the export started: pass it as `since` next time to get only what changed since.
//! For a full export it is read *before* the snapshot, so a change racing the snapshot is
//! in both the file and the next delta (an `add` of someone already added, a `remove` of
//! someone absent) and never in neither. `Spoor-Members` says how many profiles the file
//! covers, for progress bars.
//!
//! The file streams page by page from a blocking task, so a million-member audience is
//! never held as a file in memory; what is held is the bitmap snapshot (shared with the
//! processor, copied only if it changes meanwhile) or, for a delta, one small entry per
//! changed profile. Needs the `read` or `profiles` scope, as the other member reads do.

use crate::auth::{Caller, Need};
use crate::error::ApiError;
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use roaring::RoaringTreemap;
use serde::Deserialize;
use spoor_core::identity::ProfileId;
use spoor_core::share::{Action, DeltaFold, ExportSpec, Format, Identifiers, Member, RowWriter};
use spoor_store::state::StateReader;
use spoor_store::StoreError;
use std::sync::Arc;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/audiences/{name}/export", get(export))
}

/// The header with the cursor for the next delta export.
pub const NEXT_CURSOR: &str = "spoor-next-cursor";
/// The header with the number of profiles the file covers.
pub const MEMBERS: &str = "spoor-members";

/// Members read and written per streamed chunk.
const PAGE: usize = 1000;
/// Feed rows read per call while folding a delta.
const FEED_PAGE: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportQuery {
    /// `csv` (default) or `ndjson`.
    pub(crate) format: Option<String>,
    /// `true` (default) or `false` for plain normalised e-mail and phone.
    pub(crate) hashed: Option<String>,
    /// Comma-separated trait names to add as columns.
    pub(crate) traits: Option<String>,
    /// A change number: export only what changed after it.
    pub(crate) since: Option<String>,
    /// `first` (default: one row per profile) or `all` (a row per e-mail/phone).
    pub(crate) identifiers: Option<String>,
    /// A consent purpose (`advertising`): members who do not consent to it are left out
    /// (their `remove` rows of a delta stay).
    pub(crate) purpose: Option<String>,
}

fn bad(msg: String) -> ApiError {
    ApiError::InvalidRequest(msg)
}

impl ExportQuery {
    fn spec(&self) -> Result<ExportSpec, ApiError> {
        let format = match self.format.as_deref() {
            None => Format::Csv,
            Some(f) => Format::parse(f)
                .ok_or_else(|| bad(format!("format {f:?} is not one of csv, ndjson")))?,
        };
        let hashed = match self.hashed.as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(h) => return Err(bad(format!("hashed {h:?} is not true or false"))),
        };
        let traits = match self.traits.as_deref() {
            None | Some("") => Vec::new(),
            Some(t) => t.split(',').map(|t| t.trim().to_owned()).collect(),
        };
        let identifiers = match self.identifiers.as_deref() {
            None => Identifiers::First,
            Some(i) => Identifiers::parse(i)
                .ok_or_else(|| bad(format!("identifiers {i:?} is not first or all")))?,
        };
        ExportSpec::new(format, hashed, traits, identifiers).map_err(bad)
    }

    fn since(&self) -> Result<Option<u64>, ApiError> {
        self.since
            .as_deref()
            .map(|s| {
                s.parse::<u64>().map_err(|_| {
                    bad(format!(
                        "since {s:?} is not a change number (the Spoor-Next-Cursor of an earlier export)"
                    ))
                })
            })
            .transpose()
    }
}

/// What the file will hold, fixed before the first byte is sent.
enum Plan {
    /// Every member of this snapshot, added.
    Full(Arc<RoaringTreemap>),
    /// Net changes, in the order of each profile's last change.
    Delta(Vec<(ProfileId, Action)>),
}

impl Plan {
    fn members(&self) -> u64 {
        match self {
            Self::Full(b) => b.len(),
            Self::Delta(v) => v.len() as u64,
        }
    }
}

pub(crate) async fn export(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    caller.require(Need::ReadProfiles)?;
    if !app.defs.current().audiences.contains_key(&name) {
        return Err(ApiError::NotFound(format!("no audience {name:?}")));
    }
    let spec = q.spec()?;
    let since = q.since()?;
    let purposes: Vec<String> = q.purpose.iter().cloned().collect();
    crate::privacy::enforce::check_purposes(&app.consent, &purposes).map_err(bad)?;
    let consent = app.consent.clone();
    let r = app.state.reader()?;
    let (r, head, plan) = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
            let head = feed_head(&r)?;
            let plan = match since {
                None => Plan::Full(r.audience_snapshot(&name)?),
                Some(s) if s > head => {
                    return Err(bad(format!(
                        "since {s} is past the newest change ({head}); \
                         use the Spoor-Next-Cursor of an earlier export"
                    )))
                }
                Some(s) => Plan::Delta(fold_changes(&r, &name, s, head)?),
            };
            Ok((r, head, plan))
        })
        .await
        .map_err(ApiError::internal)??
    };
    let members = plan.members();
    let content_type = HeaderValue::from_static(spec.format.content_type());
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        // The consent gate of delivery, applied per member (removals always pass).
        let gate = |(pid, action): &(ProfileId, Action)| {
            *action != Action::Add
                || crate::privacy::enforce::allows(&r, &consent, Some(*pid), &purposes)
                    .unwrap_or(false)
        };
        let sent = match plan {
            Plan::Full(b) => stream(
                &r,
                spec,
                b.iter()
                    .map(|raw| (ProfileId::from_raw(raw), Action::Add))
                    .filter(gate),
                &tx,
            ),
            Plan::Delta(v) => stream(&r, spec, v.into_iter().filter(gate), &tx),
        };
        if let Err(e) = sent {
            tracing::warn!(audience = %name, error = ?e, "audience export failed");
            let _ = tx.blocking_send(Err(std::io::Error::other("export failed")));
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (
            HeaderName::from_static(NEXT_CURSOR),
            HeaderValue::from(head),
        ),
        (HeaderName::from_static(MEMBERS), HeaderValue::from(members)),
    ];
    Ok((headers, Body::from_stream(body)).into_response())
}

/// Writes the rows of `items` in chunks of [`PAGE`] members. Stops quietly when the client
/// goes away.
fn stream(
    r: &StateReader,
    spec: ExportSpec,
    mut items: impl Iterator<Item = (ProfileId, Action)>,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), ApiError> {
    let with_traits = !spec.traits.is_empty();
    let mut w = RowWriter::new(spec).map_err(ApiError::internal)?;
    loop {
        let mut n = 0;
        for (pid, action) in items.by_ref().take(PAGE) {
            n += 1;
            let identity = r.identity(pid)?;
            let profile = if with_traits { r.profile(pid)? } else { None };
            let m = Member {
                id: pid,
                action,
                identifiers: identity.as_ref().map_or(&[], |i| &i.identifiers),
                profile: profile.as_ref(),
            };
            w.write(&m).map_err(ApiError::internal)?;
        }
        // The first chunk carries the CSV header even when there are no members.
        let chunk = w.take().map_err(ApiError::internal)?;
        if !chunk.is_empty() && tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
            return Ok(()); // the client went away
        }
        if n < PAGE {
            return Ok(());
        }
    }
}

/// The newest change number of the membership feed, 0 if none. The feed only answers
/// "changes after x", so this searches for the smallest x with none after it: doubling,
/// then bisecting — about 2·log2(head) small range reads.
fn feed_head(r: &StateReader) -> Result<u64, StoreError> {
    let beyond =
        |x: u64| -> Result<bool, StoreError> { Ok(!r.membership_changes(x, 1)?.is_empty()) };
    if !beyond(0)? {
        return Ok(0);
    }
    // Invariant: a change above `lo`, none above `hi`.
    let (mut lo, mut hi) = (0u64, 1u64);
    while beyond(hi)? {
        lo = hi;
        hi = hi.saturating_mul(2);
        if hi == u64::MAX {
            break;
        }
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if beyond(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(hi)
}

/// The net changes of `audience` in the feed after `since` up to `head` inclusive.
fn fold_changes(
    r: &StateReader,
    audience: &str,
    since: u64,
    head: u64,
) -> Result<Vec<(ProfileId, Action)>, StoreError> {
    let mut fold = DeltaFold::new();
    let mut after = since;
    while after < head {
        let page = r.membership_changes(after, FEED_PAGE)?;
        let Some(last) = page.last().map(|c| c.0) else {
            break;
        };
        for (no, c) in page.into_iter().take_while(|c| c.0 <= head) {
            if c.audience == audience {
                fold.push(no, c.profile, c.entered);
            }
        }
        after = last;
    }
    Ok(fold.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use spoor_store::state::{ChangeCause, MembershipChange, StateStore};

    fn change(audience: &str, pid: u64, entered: bool) -> MembershipChange {
        MembershipChange {
            audience: audience.into(),
            profile: ProfileId::from_raw(pid),
            entered,
            at_ms: 0,
            seq: 0,
            cause: ChangeCause::Event,
        }
    }

    #[test]
    fn the_feed_head_is_found_by_search_before_and_after_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let mut st = store.processor_state(16).unwrap();
        let r = store.reader().unwrap();
        assert_eq!(feed_head(&r).unwrap(), 0);
        for n in 1..=70u64 {
            assert_eq!(st.record_membership(change("a", n, true)), n);
            assert_eq!(feed_head(&r).unwrap(), n);
            if n % 16 == 0 {
                st.checkpoint().unwrap();
            }
        }
        st.checkpoint().unwrap();
        assert_eq!(feed_head(&store.durable_reader().unwrap()).unwrap(), 70);
    }

    #[test]
    fn a_delta_keeps_its_audience_up_to_the_head_and_a_snapshot_does_not_move() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let mut st = store.processor_state(16).unwrap();
        let r = store.reader().unwrap();
        for (aud, pid, entered) in [
            ("a", 1, true),  // 1
            ("b", 2, true),  // 2: another audience
            ("a", 3, true),  // 3
            ("a", 1, false), // 4: 1 came and went
            ("a", 4, true),  // 5: after the head below
        ] {
            st.set_member(aud, ProfileId::from_raw(pid), entered);
            st.record_membership(change(aud, pid, entered));
        }
        let p = ProfileId::from_raw;
        assert_eq!(fold_changes(&r, "a", 0, 4).unwrap(), [(p(3), Action::Add)]);
        assert_eq!(
            fold_changes(&r, "a", 3, 5).unwrap(),
            [(p(1), Action::Remove), (p(4), Action::Add)]
        );
        assert!(fold_changes(&r, "b", 2, 5).unwrap().is_empty());

        let snap = r.audience_snapshot("a").unwrap();
        st.set_member("a", p(9), true);
        st.set_member("a", p(3), false);
        assert_eq!(snap.iter().collect::<Vec<_>>(), [3, 4], "as it was");
        assert_eq!(r.audience_size("a").unwrap(), 2);
        assert!(r.audience_snapshot("nobody").unwrap().is_empty());
    }
}
