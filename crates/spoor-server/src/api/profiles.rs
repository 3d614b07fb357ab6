//! The Profile API: one person as Spoor knows them (`/v1/profiles/{ref}`), their event
//! timeline, their identity graph with every decision explained, and search.
//!
//! `{ref}` is a profile id (`prof_…`; a merged-away id answers with the survivor) or
//! `type:value` (`user_id:u1`, `email:Ann@Example.com` — normalised like at ingest).

use crate::auth::{Caller, Need};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use spoor_core::identity::{ProfileId, ProfileIdentity};
use spoor_core::profile::Profile;
use spoor_store::state::{StateReader, TimelineCursor};
use std::sync::Arc;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/profiles", get(search))
        .route("/v1/profiles/{pref}", get(show))
        .route("/v1/profiles/{pref}/events", get(events))
        .route("/v1/profiles/{pref}/identity", get(identity))
        .route("/v1/profiles/{pref}/audiences", get(audiences))
        .route("/v1/profiles/{pref}/split", axum::routing::post(split))
        .route("/v1/admin/processor", get(processor_status))
}

fn snapshot(app: &AppState) -> Result<StateReader, ApiError> {
    Ok(app.state.reader()?)
}

/// Resolves `{ref}` to a live profile.
pub fn resolve_ref(app: &AppState, r: &StateReader, pref: &str) -> Result<ProfileId, ApiError> {
    Ok(resolve_ref_identity(app, r, pref)?.0)
}

/// [`resolve_ref`], with the live profile's identity record (read on the way).
pub fn resolve_ref_identity(
    app: &AppState,
    r: &StateReader,
    pref: &str,
) -> Result<(ProfileId, Arc<ProfileIdentity>), ApiError> {
    let not_found = || ApiError::NotFound(format!("no profile {pref:?}"));
    let start = if let Some(p) = ProfileId::parse(pref) {
        p
    } else if let Some((kind, value)) = pref.split_once(':') {
        let id = app.rules.normalize(kind, value).map_err(|e| {
            ApiError::InvalidRequest(format!("{pref:?} is not a usable identifier: {e:?}"))
        })?;
        r.owner(id.kind.as_str(), &id.value)?
            .ok_or_else(not_found)?
    } else {
        return Err(ApiError::InvalidRequest(format!(
            "{pref:?} is neither a profile id (prof_…) nor type:value (e.g. email:a@example.com)"
        )));
    };
    r.resolve_identity(start)?.ok_or_else(not_found)
}

fn ms(t: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(t)
        .map(|d| json!(d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

/// The JSON shape of a profile: what the API, the CLI and (later) the UI show.
pub fn profile_json(r: &StateReader, pid: ProfileId, p: &Profile) -> Result<Value, ApiError> {
    profile_json_with(r, pid, r.identity_arc(pid)?.as_deref(), p)
}

/// [`profile_json`] with the profile's identity record already read.
pub fn profile_json_with(
    r: &StateReader,
    pid: ProfileId,
    ident: Option<&ProfileIdentity>,
    p: &Profile,
) -> Result<Value, ApiError> {
    let identities: Vec<Value> = ident
        .map(|i| {
            i.identifiers
                .iter()
                .map(|l| json!({"type": l.identifier.kind.as_str(), "value": l.identifier.value}))
                .collect()
        })
        .unwrap_or_default();
    let cluster = match ident {
        Some(i) => r.cluster_of(pid, i)?,
        None => vec![pid],
    };
    let merged: Vec<String> = cluster.iter().skip(1).map(ToString::to_string).collect();
    let mut provenance = Map::new();
    for (k, t) in p.traits.iter() {
        if !t.removed {
            provenance.insert(k.clone(), json!({"source_id": t.source_id, "set_at": ms(t.set_at_ms), "message_id": t.message_id, "seq": t.seq}));
        }
    }
    let mut groups = Vec::new();
    for (gid, joined) in p.groups.iter() {
        let traits = r
            .group(gid)?
            .map(|g| Value::Object(g.trait_values()))
            .unwrap_or(json!({}));
        groups.push(json!({"id": gid, "joined_at": ms(*joined), "traits": traits}));
    }
    Ok(json!({
        "id": pid.to_string(),
        "traits": p.trait_values(),
        "identities": identities,
        "audiences": audience_list(p),
        "computed_traits": p.activation.values,
        "first_seen": ms(p.first_seen_ms),
        "last_seen": ms(p.last_seen_ms),
        "event_count": p.event_count,
        "event_counts": *p.event_counts,
        "sources": *p.sources,
        "channels": *p.channels,
        "devices": *p.devices,
        "groups": groups,
        "merged_ids": merged,
        "trait_provenance": provenance,
    }))
}

/// The audiences a profile is in, with when it entered each.
fn audience_list(p: &Profile) -> Vec<Value> {
    p.activation
        .members
        .iter()
        .map(|(name, since)| json!({"name": name, "since": ms(*since)}))
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    pub(crate) limit: Option<usize>,
}

/// The audiences a person is in now, and their entries and exits, newest first.
pub(crate) async fn audiences(
    State(app): State<AppState>,
    caller: Caller,
    Path(pref): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::ReadProfiles)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let r = snapshot(&app)?;
    let pid = resolve_ref(&app, &r, &pref)?;
    let p = r
        .profile(pid)?
        .ok_or_else(|| ApiError::NotFound(format!("no profile {pref:?}")))?;
    let cluster = r.cluster(pid)?;
    let history: Vec<Value> = r
        .membership_history(&cluster, limit)?
        .into_iter()
        .map(|c| {
            json!({
                "audience": c.audience,
                "change": if c.entered { "entered" } else { "exited" },
                "at": ms(c.at_ms),
                "seq": c.seq,
                "cause": c.cause,
                "profile_id": c.profile.to_string(),
            })
        })
        .collect();
    Ok(Json(json!({
        "id": pid.to_string(),
        "audiences": audience_list(&p),
        "history": history,
    })))
}

async fn show(
    State(app): State<AppState>,
    caller: Caller,
    Path(pref): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::ReadProfiles)?;
    let r = snapshot(&app)?;
    let (pid, ident) = resolve_ref_identity(&app, &r, &pref)?;
    let p = r
        .profile_arc(pid)?
        .ok_or_else(|| ApiError::NotFound(format!("no profile {pref:?}")))?;
    let mut out = profile_json_with(&r, pid, Some(&ident), &p)?;
    out["consent"] = super::consent::consent_json(&app.consent, &p.consent);
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    pub(crate) limit: Option<usize>,
    cursor: Option<String>,
}

/// The person's events across all their identifiers, newest first.
async fn events(
    State(app): State<AppState>,
    caller: Caller,
    Path(pref): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    caller.require(Need::ReadProfiles)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let before = match q.cursor.as_deref() {
        Some(c) => Some(
            c.parse::<TimelineCursor>()
                .map_err(|_| ApiError::InvalidRequest(format!("cursor {c:?} is not valid")))?,
        ),
        None => None,
    };
    let r = snapshot(&app)?;
    let pid = resolve_ref(&app, &r, &pref)?;
    let cluster = r.cluster(pid)?;
    let rows = r.timeline(&cluster, before, limit + 1)?;
    let reader = app.reader.clone();
    let page: Vec<TimelineCursor> = rows.iter().take(limit).copied().collect();
    let next = (rows.len() > limit)
        .then(|| page.last().map(ToString::to_string))
        .flatten();
    let items = tokio::task::spawn_blocking(move || -> Result<Vec<String>, ApiError> {
        let mut out = Vec::with_capacity(page.len());
        for c in page {
            if let Some(e) = reader
                .read_from(c.seq, 1)?
                .into_iter()
                .next()
                .filter(|e| e.seq == c.seq)
            {
                out.push(crate::api::events::with_seq(&e));
            }
        }
        Ok(out)
    })
    .await
    .map_err(ApiError::internal)??;
    let body = format!(
        "{{\"events\":[{}],\"next_cursor\":{}}}",
        items.join(","),
        next.map_or("null".to_string(), |c| format!("\"{c}\""))
    );
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The identity graph of a person: identifiers with when they were seen, merged profiles,
/// and every decision (created, linked, merged, refused — with the rule) that shaped it.
pub(crate) async fn identity(
    State(app): State<AppState>,
    caller: Caller,
    Path(pref): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::ReadProfiles)?;
    let r = snapshot(&app)?;
    let pid = resolve_ref(&app, &r, &pref)?;
    let ident = r
        .identity(pid)?
        .ok_or_else(|| ApiError::NotFound(format!("no profile {pref:?}")))?;
    let cluster = r.cluster(pid)?;
    let identifiers: Vec<Value> = ident
        .identifiers
        .iter()
        .map(|l| {
            json!({"type": l.identifier.kind.as_str(), "value": l.identifier.value,
                   "first_seen": ms(l.first_seen_ms), "last_seen": ms(l.last_seen_ms), "since_seq": l.since_seq})
        })
        .collect();
    let decisions = r.decisions(&cluster)?;
    Ok(Json(json!({
        "id": pid.to_string(),
        "created_seq": ident.created_seq,
        "created_at": ms(ident.created_ms),
        "identifiers": identifiers,
        "merged_ids": cluster.iter().skip(1).map(ToString::to_string).collect::<Vec<_>>(),
        "decisions": decisions,
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchQuery {
    /// Identifier type to search (with `prefix`).
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) prefix: Option<String>,
    /// A trait to match (with `value`): scans profiles, bounded per request.
    #[serde(rename = "trait")]
    pub(crate) trait_name: Option<String>,
    pub(crate) value: Option<String>,
    pub(crate) limit: Option<usize>,
    pub(crate) cursor: Option<String>,
}

const MAX_TRAIT_SCAN: usize = 50_000;

/// Lists profiles: by identifier prefix (`?type=email&prefix=ann`), by trait
/// (`?trait=plan&value=pro`), or all, paged by cursor.
pub(crate) async fn search(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::ReadProfiles)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let r = snapshot(&app)?;
    if let Some(kind) = &q.kind {
        let prefix = q.prefix.clone().unwrap_or_default();
        let prefix = if prefix.is_empty() {
            prefix
        } else {
            // Normalise like stored values where the type lowercases (e-mail prefixes).
            match app.rules.normalize(kind, &format!("{prefix}@x.y")) {
                Ok(id) if id.value.ends_with("@x.y") => {
                    id.value.trim_end_matches("@x.y").to_string()
                }
                _ => app
                    .rules
                    .normalize(kind, &prefix)
                    .map(|i| i.value)
                    .unwrap_or(prefix),
            }
        };
        let hits = r.search_identifiers(kind, &prefix, q.cursor.as_deref(), limit + 1)?;
        let more = hits.len() > limit;
        let mut out = Vec::new();
        for (id, owner) in hits.iter().take(limit) {
            let live = r.resolve(*owner)?.unwrap_or(*owner);
            out.push(json!({"type": id.kind.as_str(), "value": id.value, "profile_id": live.to_string()}));
        }
        let next = more
            .then(|| hits.get(limit - 1).map(|(id, _)| id.value.clone()))
            .flatten();
        return Ok(Json(json!({"matches": out, "next_cursor": next})));
    }
    let after = match q.cursor.as_deref() {
        Some(c) => Some(
            ProfileId::parse(c)
                .ok_or_else(|| ApiError::InvalidRequest(format!("cursor {c:?} is not valid")))?,
        ),
        None => None,
    };
    let mut out = Vec::new();
    let mut last = after;
    let mut scanned = 0;
    'scan: loop {
        let chunk = r.list_profiles(last, 500)?;
        if chunk.is_empty() {
            last = None;
            break;
        }
        for p in chunk {
            scanned += 1;
            last = Some(p.id);
            let hit = match (&q.trait_name, &q.value) {
                (Some(t), v) => p.trait_values().get(t).is_some_and(|x| {
                    v.as_deref().is_none_or(|v| match x {
                        Value::String(s) => s == v,
                        other => serde_json::to_string(other).is_ok_and(|t| t == v),
                    })
                }),
                (None, _) => true,
            };
            if hit {
                out.push(profile_json(&r, p.id, &p)?);
                if out.len() == limit {
                    break 'scan;
                }
            }
            if scanned >= MAX_TRAIT_SCAN {
                break 'scan;
            }
        }
    }
    Ok(Json(
        json!({"profiles": out, "next_cursor": last.map(|p| p.to_string())}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    /// Wait until this seq is processed (or `timeout_ms` passes).
    wait_for: Option<u64>,
    timeout_ms: Option<u64>,
}

/// How far the processor is behind ingest. With `?wait_for=SEQ` it answers once SEQ is
/// processed (tests and scripts wait for their events to be applied). `durable_seq` is
/// the last seq whose effects are checkpointed (a crash replays the rest from the log).
async fn processor_status(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<WaitQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Any)?;
    let st = &app.processor.status;
    if let Some(target) = q.wait_for {
        let deadline = std::time::Instant::now()
            + std::time::Duration::from_millis(q.timeout_ms.unwrap_or(10_000).min(60_000));
        while st.processed_seq.load(std::sync::atomic::Ordering::Acquire) < target
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    let ingested = app.reader.last_seq();
    let processed = st.processed_seq.load(std::sync::atomic::Ordering::Acquire);
    Ok(Json(json!({
        "ingested_seq": ingested,
        "processed_seq": processed,
        "durable_seq": st.durable_seq.load(std::sync::atomic::Ordering::Acquire),
        "lag": ingested.saturating_sub(processed),
        "live_profiles": st.live_profiles.load(std::sync::atomic::Ordering::Relaxed),
        "healthy": !st.failed.load(std::sync::atomic::Ordering::Relaxed),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitIn {
    /// A profile id that was merged into this profile (see `merged_ids`): undo that merge.
    pub undo_merge: Option<String>,
    /// `type:value` of one of this profile's identifiers: detach it.
    pub detach: Option<String>,
}

/// Undoes a merge or detaches an identifier. Admin only. The profiles of both sides are
/// re-derived from the log, and the decision is kept as a rule for all future events.
pub(crate) async fn split(
    State(app): State<AppState>,
    caller: Caller,
    Path(pref): Path<String>,
    Json(body): Json<SplitIn>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    let r = snapshot(&app)?;
    let pid = resolve_ref(&app, &r, &pref)?;
    let req = match (&body.undo_merge, &body.detach) {
        (Some(m), None) => {
            let gone = ProfileId::parse(m)
                .ok_or_else(|| ApiError::InvalidRequest(format!("{m:?} is not a profile id")))?;
            if !r.cluster(pid)?.contains(&gone) || gone == pid {
                return Err(ApiError::InvalidRequest(format!(
                    "{m} was not merged into {pid}"
                )));
            }
            crate::processor::SplitRequest::UndoMerge(gone)
        }
        (None, Some(d)) => {
            let (kind, value) = d.split_once(':').ok_or_else(|| {
                ApiError::InvalidRequest(format!("detach {d:?} must be type:value"))
            })?;
            let id = app.rules.normalize(kind, value).map_err(|e| {
                ApiError::InvalidRequest(format!("{d:?} is not a usable identifier: {e:?}"))
            })?;
            if r.owner(id.kind.as_str(), &id.value)?
                .and_then(|o| r.resolve(o).ok().flatten())
                != Some(pid)
            {
                return Err(ApiError::InvalidRequest(format!(
                    "{d} does not belong to {pid}"
                )));
            }
            crate::processor::SplitRequest::Detach(id)
        }
        _ => {
            return Err(ApiError::InvalidRequest(
                "give exactly one of \"undo_merge\" or \"detach\"".into(),
            ))
        }
    };
    drop(r);
    let out = app.processor.split(req).await.map_err(ApiError::Conflict)?;
    tracing::info!(profile = %pid, rule = %out.rule.id, by = %caller.token_id, "profile split");
    Ok(Json(json!({
        "rule": out.rule,
        "profiles": out.profiles.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "events_replayed": out.events_replayed,
    })))
}
