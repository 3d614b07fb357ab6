//! The metadata store: sources (with their write keys), admin tokens, and small bookkeeping
//! records (bulk-import progress). Kept in one embedded redb file, `meta.redb`.
//!
//! Secrets are stored as SHA-256 hashes: write keys and tokens are long random strings, so a
//! fast hash is enough to make a stolen file useless, and it lets the server verify a key
//! with one hash-map lookup per request.

use crate::error::StoreError;
use chrono::{DateTime, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spoor_core::ids::{SourceId, TokenId};
use std::path::Path;

const SOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("sources");
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

/// Hex SHA-256 of a secret, the only form in which secrets are stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A source of events: a website, an app or a back end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub id: SourceId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// SHA-256 of the write key.
    pub write_key_hash: String,
    /// The first characters of the write key, to tell keys apart in listings.
    pub write_key_hint: String,
}

/// An admin API token. `scopes` say what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub id: TokenId,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
    pub secret_hash: String,
    pub secret_hint: String,
}

/// The first few characters of a secret, safe to show.
pub fn hint(secret: &str) -> String {
    let n = secret
        .char_indices()
        .nth(6)
        .map(|(i, _)| i)
        .unwrap_or(secret.len());
    format!("{}…", &secret[..n])
}

/// Handle to `meta.redb`.
pub struct MetaStore {
    db: Database,
}

fn meta_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Meta(e.to_string())
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Meta(format!("encode: {e}")))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Meta(format!("unreadable record: {e}")))
}

impl MetaStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let path = dir.join("meta.redb");
        let db = Database::create(&path)
            .map_err(|e| StoreError::Meta(format!("{}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(meta_err)?;
        {
            tx.open_table(SOURCES).map_err(meta_err)?;
            tx.open_table(TOKENS).map_err(meta_err)?;
            tx.open_table(KV).map_err(meta_err)?;
        }
        tx.commit().map_err(meta_err)?;
        Ok(Self { db })
    }

    fn put(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(meta_err)?;
        {
            let mut t = tx.open_table(table).map_err(meta_err)?;
            t.insert(key, value).map_err(meta_err)?;
        }
        tx.commit().map_err(meta_err)
    }

    fn get(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(meta_err)?;
        let t = tx.open_table(table).map_err(meta_err)?;
        let v = t.get(key).map_err(meta_err)?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    fn all<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, StoreError> {
        let tx = self.db.begin_read().map_err(meta_err)?;
        let t = tx.open_table(table).map_err(meta_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(meta_err)? {
            let (_, v) = row.map_err(meta_err)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    pub fn put_source(&self, s: &Source) -> Result<(), StoreError> {
        self.put(SOURCES, s.id.as_str(), &encode(s)?)
    }

    pub fn sources(&self) -> Result<Vec<Source>, StoreError> {
        let mut v: Vec<Source> = self.all(SOURCES)?;
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    pub fn put_token(&self, t: &Token) -> Result<(), StoreError> {
        self.put(TOKENS, t.id.as_str(), &encode(t)?)
    }

    pub fn tokens(&self) -> Result<Vec<Token>, StoreError> {
        let mut v: Vec<Token> = self.all(TOKENS)?;
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    /// Rewrites `dir/meta.redb` into a fresh file (no stale pages; see
    /// [`crate::rewrite`]). The store must not be open.
    pub fn rewrite(dir: &Path) -> Result<Option<(u64, u64)>, StoreError> {
        crate::rewrite::rewrite_redb(&dir.join("meta.redb"), |r, w| {
            use crate::rewrite::copy_table;
            copy_table(r, w, SOURCES)?;
            copy_table(r, w, TOKENS)?;
            copy_table(r, w, KV)?;
            Ok(())
        })
    }

    /// A small JSON value under a key (bookkeeping such as import progress).
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.get(KV, key)?.map(|b| decode(&b)).transpose()
    }

    pub fn put_json<T: Serialize>(&self, key: &str, v: &T) -> Result<(), StoreError> {
        self.put(KV, key, &encode(v)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_tokens_round_trip_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        {
            let m = MetaStore::open(dir.path()).unwrap();
            m.put_source(&Source {
                id: SourceId::parse("src_a").unwrap(),
                name: "web".into(),
                created_at: now,
                revoked_at: None,
                write_key_hash: hash_secret("k"),
                write_key_hint: hint("k"),
            })
            .unwrap();
            m.put_token(&Token {
                id: TokenId::parse("tok_a").unwrap(),
                name: "ci".into(),
                scopes: vec!["admin".into()],
                created_at: now,
                revoked_at: None,
                secret_hash: hash_secret("s"),
                secret_hint: hint("s"),
            })
            .unwrap();
            m.put_json("import/x", &serde_json::json!({"line": 5}))
                .unwrap();
        }
        let m = MetaStore::open(dir.path()).unwrap();
        assert_eq!(m.sources().unwrap()[0].name, "web");
        assert_eq!(m.tokens().unwrap()[0].scopes, vec!["admin".to_string()]);
        let v: serde_json::Value = m.get_json("import/x").unwrap().unwrap();
        assert_eq!(v["line"], 5);
        assert_eq!(m.get_json::<serde_json::Value>("nope").unwrap(), None);
    }

    #[test]
    fn secrets_are_hashed_and_hinted() {
        assert_eq!(hash_secret("abc").len(), 64);
        assert_ne!(hash_secret("abc"), "abc");
        assert_eq!(hint("wk_1234567890"), "wk_123…");
        assert_eq!(hint("ab"), "ab…");
    }
}
