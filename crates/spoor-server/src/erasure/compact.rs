//! Rewriting the databases of a data directory after erasures (see `spoor_store::rewrite`):
//! the last step that makes an erasure true on disk. The event logs need nothing here:
//! their records are overwritten in place.

use super::JobStatus;
use spoor_store::meta::MetaStore;
use std::path::Path;
use std::sync::Arc;

/// One database rewritten: its file and its size before and after.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rewritten {
    pub file: String,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Rewrites every redb database under `data_dir` into a fresh file, removes leftovers of
/// an interrupted rebuild, and marks finished erasure jobs as compacted. Nothing may have
/// the data directory open.
pub fn compact_data_dir(data_dir: &Path) -> Result<Vec<Rewritten>, String> {
    for leftover in ["state.rebuild", "state.old"] {
        let p = data_dir.join(leftover);
        if p.exists() {
            std::fs::remove_dir_all(&p)
                .map_err(|e| format!("cannot remove {}: {e}", p.display()))?;
        }
    }
    let mut out = Vec::new();
    let mut note = |file: &str, r: Option<(u64, u64)>| {
        if let Some((bytes_before, bytes_after)) = r {
            out.push(Rewritten {
                file: file.to_owned(),
                bytes_before,
                bytes_after,
            });
        }
    };
    let e = |e: spoor_store::StoreError| e.to_string();
    note(
        "state/state.redb",
        spoor_store::state::RedbBackend::rewrite(&data_dir.join("state")).map_err(e)?,
    );
    note(
        "destinations/destinations.redb",
        crate::destinations::store::DeliveryStore::rewrite(&data_dir.join("destinations"))
            .map_err(e)?,
    );
    // The metadata store last: the flag and the jobs it updates are in it, so a crash
    // before this point leaves the compaction pending and it runs again.
    {
        let meta_dir = data_dir.join("meta");
        if meta_dir.join("meta.redb").exists() {
            let privacy = super::Privacy::open(Arc::new(MetaStore::open(&meta_dir).map_err(e)?))
                .map_err(e)?;
            privacy.set_compact_pending(false)?;
            for j in privacy.jobs()? {
                if j.status == JobStatus::Done && !j.compacted {
                    privacy.update_job(&j.id, |j| j.compacted = true)?;
                }
            }
        }
        note("meta/meta.redb", MetaStore::rewrite(&meta_dir).map_err(e)?);
    }
    Ok(out)
}

/// Whether an erasure or retention run left stale pages to rewrite.
pub fn pending(data_dir: &Path) -> Result<bool, String> {
    let meta_dir = data_dir.join("meta");
    if !meta_dir.join("meta.redb").exists() {
        return Ok(false);
    }
    let meta = MetaStore::open(&meta_dir).map_err(|e| e.to_string())?;
    super::Privacy::open(Arc::new(meta))
        .map_err(|e| e.to_string())?
        .compact_pending()
}
