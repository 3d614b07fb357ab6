//! Sources, write keys and admin tokens: creation, revocation, and the in-memory index the
//! request path verifies against (one SHA-256 and one hash-map lookup per request).
//!
//! The index is rebuilt from the metadata store after every change, so a revoked key stops
//! working on the next request.

use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use spoor_core::ids::{SourceId, TokenId};
use spoor_store::meta::{hash_secret, hint, MetaStore, Source, Token};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// What an admin token may do. `admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Everything.
    Admin,
    /// Read-only access to every admin endpoint except tokens.
    Read,
    /// Read events and rejections, export.
    Events,
    /// Manage sources and write keys.
    Sources,
    /// Manage admin tokens.
    Tokens,
    /// Read profiles, identities and timelines.
    Profiles,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Self::Admin,
        Self::Read,
        Self::Events,
        Self::Sources,
        Self::Tokens,
        Self::Profiles,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Read => "read",
            Self::Events => "events",
            Self::Sources => "sources",
            Self::Tokens => "tokens",
            Self::Profiles => "profiles",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    ReadEvents,
    ReadProfiles,
    ReadSources,
    WriteSources,
    ManageTokens,
    /// Only `admin` (splitting profiles, and other irreversible or powerful actions).
    Admin,
    /// Any valid token (status).
    Any,
}

/// A verified admin token, as handlers see it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: TokenId,
    pub scopes: Vec<Scope>,
}

impl Caller {
    /// Fails with 403 unless the token's scopes allow `need`.
    pub fn require(&self, need: Need) -> Result<(), ApiError> {
        let has = |s: Scope| self.scopes.contains(&s);
        let ok = has(Scope::Admin)
            || match need {
                Need::Any => true,
                Need::Admin => false,
                Need::ReadEvents => has(Scope::Read) || has(Scope::Events),
                Need::ReadProfiles => has(Scope::Read) || has(Scope::Profiles),
                Need::ReadSources => has(Scope::Read) || has(Scope::Sources),
                Need::WriteSources => has(Scope::Sources),
                Need::ManageTokens => has(Scope::Tokens),
            };
        if ok {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this token lacks the scope for {need:?}"
            )))
        }
    }
}

#[derive(Default)]
struct Index {
    write_keys: HashMap<String, SourceId>,
    tokens: HashMap<String, Caller>,
}

/// Keys and tokens: the store plus the verification index.
pub struct Auth {
    meta: Arc<MetaStore>,
    index: RwLock<Index>,
}

/// Metadata key set once the first start has created its source and token.
const INITIALIZED: &str = "initialized";

/// Printed once, on the first start of an empty data directory.
#[derive(Debug, Clone, Default)]
pub struct FirstStart {
    /// The `default` source and its write key, when it had to be created.
    pub source: Option<(Source, String)>,
    /// The initial admin token and its secret, when it had to be created.
    pub token: Option<(Token, String)>,
    /// The first web UI user (`admin`) and its password, when it had to be created.
    pub ui_admin: Option<(String, String)>,
}

/// Source as the API shows it (no hash).
#[derive(Debug, Clone, Serialize)]
pub struct SourceOut {
    pub id: SourceId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub write_key_hint: String,
}

impl From<&Source> for SourceOut {
    fn from(s: &Source) -> Self {
        Self {
            id: s.id.clone(),
            name: s.name.clone(),
            created_at: s.created_at,
            revoked_at: s.revoked_at,
            write_key_hint: s.write_key_hint.clone(),
        }
    }
}

/// Token as the API shows it (no hash).
#[derive(Debug, Clone, Serialize)]
pub struct TokenOut {
    pub id: TokenId,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub token_hint: String,
}

impl From<&Token> for TokenOut {
    fn from(t: &Token) -> Self {
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            scopes: t.scopes.clone(),
            created_at: t.created_at,
            revoked_at: t.revoked_at,
            token_hint: t.secret_hint.clone(),
        }
    }
}

fn random_secret(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        Alphanumeric.sample_string(&mut rand::rng(), 32)
    )
}

fn valid_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidRequest(format!(
            "name {name:?} must be 1-64 characters of letters, digits, '-', '_' or '.'"
        )))
    }
}

/// Chosen keys are the user's call (existing SDK set-ups have short ones); a key must only
/// survive HTTP Basic auth, where it is the user name.
fn check_write_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.contains(':') || key.chars().any(char::is_whitespace) {
        return Err(ApiError::InvalidRequest(
            "a write key must be non-empty, without ':' or spaces".into(),
        ));
    }
    Ok(())
}

fn check_token_secret(secret: &str) -> Result<(), ApiError> {
    if secret.len() < 16 {
        return Err(ApiError::InvalidRequest(
            "an admin token must be at least 16 characters".into(),
        ));
    }
    Ok(())
}

/// Names the variable a refused first-start secret came from.
fn init_error(var: &str, e: ApiError) -> ApiError {
    ApiError::InvalidRequest(format!("{var}: {e}"))
}

impl Auth {
    pub fn new(meta: Arc<MetaStore>) -> Result<Self, ApiError> {
        let auth = Self {
            meta,
            index: RwLock::new(Index::default()),
        };
        auth.reload()?;
        Ok(auth)
    }

    fn reload(&self) -> Result<(), ApiError> {
        let mut idx = Index::default();
        for s in self.meta.sources()? {
            if s.revoked_at.is_none() {
                idx.write_keys
                    .insert(s.write_key_hash.clone(), s.id.clone());
            }
        }
        for t in self.meta.tokens()? {
            if t.revoked_at.is_none() {
                let scopes = t.scopes.iter().filter_map(|s| Scope::parse(s)).collect();
                idx.tokens.insert(
                    t.secret_hash.clone(),
                    Caller {
                        token_id: t.id.clone(),
                        scopes,
                    },
                );
            }
        }
        *self
            .index
            .write()
            .map_err(|_| ApiError::internal("auth index poisoned"))? = idx;
        Ok(())
    }

    /// The source a write key belongs to, if the key is valid and not revoked.
    pub fn source_for_key(&self, key: &str) -> Option<SourceId> {
        let h = hash_secret(key);
        self.index.read().ok()?.write_keys.get(&h).cloned()
    }

    /// The caller behind a bearer token, if valid and not revoked.
    pub fn caller_for_token(&self, token: &str) -> Option<Caller> {
        let h = hash_secret(token);
        self.index.read().ok()?.tokens.get(&h).cloned()
    }

    /// Creates the `default` source and an admin token on an empty data directory. Returns
    /// the secrets to print once, or `None` when the store was already initialised.
    pub fn initialize(
        &self,
        write_key: Option<String>,
        admin_token: Option<String>,
    ) -> Result<Option<FirstStart>, ApiError> {
        // A marker written last makes first start resumable: if Spoor died between creating
        // the source and the token, the next start creates whichever is missing.
        if self.meta.get_json::<bool>(INITIALIZED)?.is_some() {
            return Ok(None);
        }
        // Check both chosen secrets before storing anything, so a refused one leaves the
        // directory as it was.
        if let Some(k) = &write_key {
            check_write_key(k).map_err(|e| init_error("SPOOR_INIT_WRITE_KEY", e))?;
        }
        if let Some(t) = &admin_token {
            check_token_secret(t).map_err(|e| init_error("SPOOR_INIT_ADMIN_TOKEN", e))?;
        }
        let source = if self.meta.sources()?.is_empty() {
            Some(self.create_source("default", write_key)?)
        } else {
            None
        };
        let token = if self.meta.tokens()?.is_empty() {
            Some(self.create_token("initial-admin", vec![Scope::Admin], admin_token)?)
        } else {
            None
        };
        self.meta.put_json(INITIALIZED, &true)?;
        Ok((source.is_some() || token.is_some()).then_some(FirstStart {
            source,
            token,
            ui_admin: None,
        }))
    }

    pub fn sources(&self) -> Result<Vec<Source>, ApiError> {
        Ok(self.meta.sources()?)
    }

    pub fn tokens(&self) -> Result<Vec<Token>, ApiError> {
        Ok(self.meta.tokens()?)
    }

    /// Finds a source by id or name.
    pub fn find_source(&self, id_or_name: &str) -> Result<Source, ApiError> {
        self.meta
            .sources()?
            .into_iter()
            .find(|s| {
                s.id.as_str() == id_or_name || (s.name == id_or_name && s.revoked_at.is_none())
            })
            .ok_or_else(|| ApiError::NotFound(format!("no source {id_or_name:?}")))
    }

    pub fn create_source(
        &self,
        name: &str,
        write_key: Option<String>,
    ) -> Result<(Source, String), ApiError> {
        valid_name(name)?;
        let existing = self.meta.sources()?;
        if existing
            .iter()
            .any(|s| s.name == name && s.revoked_at.is_none())
        {
            return Err(ApiError::Conflict(format!(
                "a source named {name:?} exists"
            )));
        }
        let key = write_key.unwrap_or_else(|| random_secret("wk_"));
        check_write_key(&key)?;
        if self.source_for_key(&key).is_some() {
            return Err(ApiError::Conflict(
                "that write key is already in use".into(),
            ));
        }
        let source = Source {
            id: SourceId::generate(),
            name: name.to_owned(),
            created_at: Utc::now(),
            revoked_at: None,
            write_key_hash: hash_secret(&key),
            write_key_hint: hint(&key),
        };
        self.meta.put_source(&source)?;
        self.reload()?;
        Ok((source, key))
    }

    pub fn revoke_source(&self, id_or_name: &str) -> Result<Source, ApiError> {
        let mut s = self.find_source(id_or_name)?;
        if s.revoked_at.is_none() {
            s.revoked_at = Some(Utc::now());
            self.meta.put_source(&s)?;
            self.reload()?;
        }
        Ok(s)
    }

    pub fn create_token(
        &self,
        name: &str,
        scopes: Vec<Scope>,
        secret: Option<String>,
    ) -> Result<(Token, String), ApiError> {
        valid_name(name)?;
        if scopes.is_empty() {
            return Err(ApiError::InvalidRequest(
                "a token needs at least one scope".into(),
            ));
        }
        let secret = secret.unwrap_or_else(|| random_secret("spt_"));
        check_token_secret(&secret)?;
        if self.caller_for_token(&secret).is_some() {
            return Err(ApiError::Conflict("that token is already in use".into()));
        }
        let token = Token {
            id: TokenId::generate(),
            name: name.to_owned(),
            scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            created_at: Utc::now(),
            revoked_at: None,
            secret_hash: hash_secret(&secret),
            secret_hint: hint(&secret),
        };
        self.meta.put_token(&token)?;
        self.reload()?;
        Ok((token, secret))
    }

    pub fn revoke_token(&self, id_or_name: &str) -> Result<Token, ApiError> {
        let mut t = self
            .meta
            .tokens()?
            .into_iter()
            .find(|t| {
                t.id.as_str() == id_or_name || (t.name == id_or_name && t.revoked_at.is_none())
            })
            .ok_or_else(|| ApiError::NotFound(format!("no token {id_or_name:?}")))?;
        if t.revoked_at.is_none() {
            t.revoked_at = Some(Utc::now());
            self.meta.put_token(&t)?;
            self.reload()?;
        }
        Ok(t)
    }
}

/// Extracts and verifies `Authorization: Bearer <admin token>`.
impl FromRequestParts<crate::AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &crate::AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::Unauthorized("missing Authorization: Bearer <admin token>".into())
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::Unauthorized("expected Authorization: Bearer <admin token>".into())
            })?;
        app.auth
            .caller_for_token(token.trim())
            .ok_or_else(|| ApiError::Unauthorized("unknown or revoked admin token".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_parses_back() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        assert_eq!(Scope::parse("profiles"), Some(Scope::Profiles));
        assert_eq!(Scope::parse("nope"), None);
    }

    #[test]
    fn an_interrupted_first_start_is_completed_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Auth::new(Arc::new(MetaStore::open(dir.path()).unwrap())).unwrap();
        // As if Spoor died right after creating the source on its first start.
        auth.create_source("default", Some("key-1".into())).unwrap();
        let f = auth
            .initialize(None, Some("token-0123456789abcdef".into()))
            .unwrap()
            .unwrap();
        assert!(f.source.is_none(), "the existing source is kept");
        let (token, secret) = f.token.unwrap();
        assert_eq!(secret, "token-0123456789abcdef");
        assert_eq!(token.scopes, vec!["admin".to_string()]);
        assert!(auth.caller_for_token(&secret).is_some());
        assert!(auth.initialize(None, None).unwrap().is_none(), "only once");
        assert_eq!(auth.sources().unwrap().len(), 1);
    }

    #[test]
    fn a_refused_chosen_secret_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Auth::new(Arc::new(MetaStore::open(dir.path()).unwrap())).unwrap();
        let err = auth
            .initialize(Some("ok-key".into()), Some("short".into()))
            .unwrap_err();
        assert!(err.to_string().contains("SPOOR_INIT_ADMIN_TOKEN"), "{err}");
        assert!(auth.sources().unwrap().is_empty());
        assert!(auth.initialize(None, None).unwrap().is_some());
    }
}
