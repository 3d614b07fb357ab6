//! Rewriting a redb file into a fresh one, so no stale page survives.
//!
//! redb is copy-on-write and never zeroes a page it frees: a deleted profile's bytes stay in
//! the file until the page happens to be reused, and `Database::compact` only moves live
//! pages towards the start (freed pages inside the file keep their old contents). For the
//! right to erasure that is not enough, so the live tables are copied into a new file
//! (`NAME.redb.rewrite`), which is fsynced and renamed over the old one, and the directory
//! fsynced: a crash leaves either the old file or the new one, never a mix (a leftover
//! `.rewrite` is removed by the next rewrite). The database must not be open elsewhere.

use crate::error::StoreError;
use redb::{Database, ReadTransaction, ReadableDatabase, TableDefinition, WriteTransaction};
use std::path::Path;

fn e(path: &Path, err: impl std::fmt::Display) -> StoreError {
    StoreError::Meta(format!("rewrite of {}: {err}", path.display()))
}

/// Copies one table (if it exists in the source) into the destination transaction.
pub fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64, redb::Error> {
    let from = match src.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(err) => return Err(err.into()),
    };
    let mut to = dst.open_table(def)?;
    let mut n = 0;
    for row in redb::ReadableTable::iter(&from)? {
        let (k, v) = row?;
        to.insert(k.value(), v.value())?;
        n += 1;
    }
    Ok(n)
}

/// Rewrites the redb file at `path` by running `copy` (which copies every table with
/// [`copy_table`]) from the old file into a fresh one, then swapping it in atomically.
/// Returns the (old, new) file sizes. A missing file is left alone.
pub fn rewrite_redb(
    path: &Path,
    copy: impl Fn(&ReadTransaction, &WriteTransaction) -> Result<(), redb::Error>,
) -> Result<Option<(u64, u64)>, StoreError> {
    if !path.exists() {
        return Ok(None);
    }
    let tmp = path.with_extension("redb.rewrite");
    if tmp.exists() {
        std::fs::remove_file(&tmp).map_err(|err| StoreError::io(&tmp, err))?;
    }
    let old_len = std::fs::metadata(path)
        .map_err(|err| StoreError::io(path, err))?
        .len();
    {
        let src = Database::open(path).map_err(|err| e(path, err))?;
        let dst = Database::create(&tmp).map_err(|err| e(&tmp, err))?;
        let r = src.begin_read().map_err(|err| e(path, err))?;
        let w = dst.begin_write().map_err(|err| e(&tmp, err))?;
        copy(&r, &w).map_err(|err| e(path, err))?;
        w.commit().map_err(|err| e(&tmp, err))?;
    }
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|err| StoreError::io(&tmp, err))?;
    std::fs::rename(&tmp, path).map_err(|err| StoreError::io(path, err))?;
    if let Some(dir) = path.parent() {
        crate::log::sync_dir_pub(dir)?;
    }
    let new_len = std::fs::metadata(path)
        .map_err(|err| StoreError::io(path, err))?
        .len();
    Ok(Some((old_len, new_len)))
}
