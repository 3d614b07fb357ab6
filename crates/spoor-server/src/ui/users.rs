//! Web UI accounts: users with a role, argon2 password hashes, sessions and the login
//! rate limiter.
//!
//! Users and sessions live in the metadata store (one JSON record each under `ui/users` and
//! `ui/sessions`, small: a handful of marketers, a session per browser). Session tokens are
//! stored as SHA-256 hashes, like write keys and admin tokens, so a copy of the data
//! directory does not hand out live sessions. The CSRF token of a session is stored as is:
//! it is not a credential on its own (it only proves a form came from a page Spoor served).

use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use spoor_core::ids::TokenId;
use spoor_store::meta::{hash_secret, MetaStore};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const USERS_KEY: &str = "ui/users";
const SESSIONS_KEY: &str = "ui/sessions";

/// What a UI user may do. Viewers read; marketers also edit audiences and traits; admins do
/// everything, and are the only ones who see write keys and run splits and erasures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Marketer,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "marketer" => Some(Self::Marketer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Marketer => "marketer",
            Self::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// PHC string (`$argon2id$v=19$…`), salt included.
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    /// The last successful login (absent for users who never logged in, and for those
    /// created before this was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_login: Option<DateTime<Utc>>,
}

impl User {
    /// The API caller the UI acts as for this user: the same scope checks as tokens.
    pub fn caller(&self) -> Caller {
        let scopes = match self.role {
            Role::Admin => vec![Scope::Admin],
            Role::Marketer | Role::Viewer => vec![Scope::Read, Scope::Profiles, Scope::Events],
        };
        Caller {
            token_id: TokenId::parse(&format!("tok_ui-{}", self.name))
                .unwrap_or_else(TokenId::generate),
            scopes,
        }
    }

    /// The caller for a change the UI allows this role and the API reserves to the admin
    /// scope (marketers editing audiences). Handlers check the role before using it.
    pub fn editor_caller(&self) -> Caller {
        Caller {
            scopes: vec![Scope::Admin],
            ..self.caller()
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// SHA-256 of the cookie value.
    pub token_hash: String,
    pub user: String,
    /// Sent with every form and htmx request of this session.
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

/// Why a login was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// Wrong user name or password (one message for both, so names cannot be probed).
    Invalid,
    /// Too many failures for this user or from this address; retry after this long.
    Locked(Duration),
}

/// Failed attempts of one key (a user name or an address) in the current window.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first: Instant,
    locked_until: Option<Instant>,
}

/// Users, sessions and the rate limiter. One per server.
pub struct Users {
    meta: Arc<MetaStore>,
    users: Mutex<Vec<User>>,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<String, Failures>>,
    pub cfg: super::UiConfig,
}

pub fn random_token(n: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), n)
}

fn valid_user_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidRequest(format!(
            "user name {name:?} must be 1-64 characters of letters, digits, '-', '_', '.' or '@'"
        )))
    }
}

/// The strength rule for every password set (CLI, API, UI): at least 8 characters.
pub fn check_password(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < 8 {
        return Err(ApiError::InvalidRequest(
            "a password must be at least 8 characters".into(),
        ));
    }
    Ok(())
}

/// Hashes with argon2id and a random 16-byte salt (the crate's default parameters: 19 MiB,
/// 2 passes — OWASP's recommendation).
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&bytes).map_err(ApiError::internal)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(ApiError::internal)
}

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

impl Users {
    pub fn open(meta: Arc<MetaStore>, cfg: super::UiConfig) -> Result<Self, ApiError> {
        let users: Vec<User> = meta.get_json(USERS_KEY)?.unwrap_or_default();
        let now = Utc::now();
        let sessions: Vec<Session> = meta.get_json(SESSIONS_KEY)?.unwrap_or_default();
        let sessions = sessions
            .into_iter()
            .filter(|s| s.expires_at > now)
            .map(|s| (s.token_hash.clone(), s))
            .collect();
        Ok(Self {
            meta,
            users: Mutex::new(users),
            sessions: Mutex::new(sessions),
            failures: Mutex::new(HashMap::new()),
            cfg,
        })
    }

    fn save_users(&self, users: &[User]) -> Result<(), ApiError> {
        Ok(self.meta.put_json(USERS_KEY, &users)?)
    }

    fn save_sessions(&self, sessions: &HashMap<String, Session>) -> Result<(), ApiError> {
        let v: Vec<&Session> = sessions.values().collect();
        Ok(self.meta.put_json(SESSIONS_KEY, &v)?)
    }

    pub fn list(&self) -> Vec<User> {
        self.users.lock().clone()
    }

    pub fn get(&self, name: &str) -> Option<User> {
        self.users.lock().iter().find(|u| u.name == name).cloned()
    }

    /// Creates a user. A password shorter than 8 characters is refused.
    pub fn create(&self, name: &str, role: Role, password: &str) -> Result<User, ApiError> {
        valid_user_name(name)?;
        check_password(password)?;
        let hash = hash_password(password)?;
        let mut users = self.users.lock();
        if users.iter().any(|u| u.name == name) {
            return Err(ApiError::Conflict(format!("a user named {name:?} exists")));
        }
        let user = User {
            name: name.to_owned(),
            role,
            password_hash: hash,
            created_at: Utc::now(),
            last_login: None,
        };
        let mut next = users.clone();
        next.push(user.clone());
        self.save_users(&next)?;
        *users = next;
        Ok(user)
    }

    /// Applies `change` to the user `name` and saves, under the users lock. The change is
    /// refused when it would leave no admin.
    fn change(
        &self,
        name: &str,
        change: impl FnOnce(&mut Vec<User>, usize) -> Result<User, ApiError>,
    ) -> Result<User, ApiError> {
        let mut users = self.users.lock();
        let Some(pos) = users.iter().position(|u| u.name == name) else {
            return Err(ApiError::NotFound(format!("no user {name:?}")));
        };
        let mut next = users.clone();
        let out = change(&mut next, pos)?;
        if !next.iter().any(|u| u.role == Role::Admin) {
            return Err(ApiError::Conflict(format!(
                "{name:?} is the last admin; make another user admin first"
            )));
        }
        self.save_users(&next)?;
        *users = next;
        Ok(out)
    }

    /// Ends every session of `name` except the one whose hash is `keep`.
    fn end_sessions(&self, name: &str, keep: Option<&str>) -> Result<(), ApiError> {
        let mut sessions = self.sessions.lock();
        let before = sessions.len();
        sessions.retain(|h, s| s.user != name || Some(h.as_str()) == keep);
        if sessions.len() != before {
            self.save_sessions(&sessions)?;
        }
        Ok(())
    }

    /// Deletes a user and ends their sessions. The last admin cannot be deleted.
    pub fn delete(&self, name: &str) -> Result<User, ApiError> {
        let gone = self.change(name, |users, pos| Ok(users.remove(pos)))?;
        self.end_sessions(name, None)?;
        Ok(gone)
    }

    /// Changes a user's role; the last admin cannot be demoted. Sessions stay: each request
    /// reads the user's current role.
    pub fn set_role(&self, name: &str, role: Role) -> Result<User, ApiError> {
        self.change(name, |users, pos| {
            users[pos].role = role;
            Ok(users[pos].clone())
        })
    }

    /// Sets a new password (the same strength rule as at creation) and ends the user's
    /// sessions, except `keep` (the session hash of an admin resetting their own).
    pub fn set_password(
        &self,
        name: &str,
        password: &str,
        keep: Option<&str>,
    ) -> Result<User, ApiError> {
        check_password(password)?;
        let hash = hash_password(password)?;
        let user = self.change(name, |users, pos| {
            users[pos].password_hash = hash;
            Ok(users[pos].clone())
        })?;
        self.end_sessions(name, keep)?;
        Ok(user)
    }

    fn record_login(&self, name: &str) {
        let mut users = self.users.lock();
        let mut next = users.clone();
        if let Some(u) = next.iter_mut().find(|u| u.name == name) {
            u.last_login = Some(Utc::now());
        }
        match self.save_users(&next) {
            Ok(()) => *users = next,
            Err(e) => tracing::error!(cause = %e, "cannot record a ui login"),
        }
    }

    /// On first start with no users: creates `admin` with `password` (or a random one) and
    /// returns the password to print once.
    pub fn initialize(
        &self,
        password: Option<String>,
    ) -> Result<Option<(String, String)>, ApiError> {
        if !self.users.lock().is_empty() {
            return Ok(None);
        }
        let password = password.unwrap_or_else(|| random_token(20));
        self.create("admin", Role::Admin, &password)
            .map_err(|e| ApiError::InvalidRequest(format!("SPOOR_INIT_ADMIN_PASSWORD: {e}")))?;
        Ok(Some(("admin".into(), password)))
    }

    /// How long `key` must still wait, if it is locked.
    fn locked(&self, key: &str, now: Instant) -> Option<Duration> {
        let f = self.failures.lock();
        f.get(key)
            .and_then(|f| f.locked_until)
            .and_then(|t| t.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    fn fail(&self, key: &str, now: Instant) {
        let window = Duration::from_secs(self.cfg.login_window_secs);
        let mut all = self.failures.lock();
        // Bounded: forget stale entries when the map grows (an attacker rotating names).
        if all.len() > 10_000 {
            all.retain(|_, f| {
                now.duration_since(f.first) < window || f.locked_until.is_some_and(|t| t > now)
            });
        }
        let f = all.entry(key.to_owned()).or_insert(Failures {
            count: 0,
            first: now,
            locked_until: None,
        });
        if now.duration_since(f.first) >= window && f.locked_until.is_none_or(|t| t <= now) {
            *f = Failures {
                count: 0,
                first: now,
                locked_until: None,
            };
        }
        f.count += 1;
        if f.count >= self.cfg.login_max_failures {
            f.locked_until = Some(now + Duration::from_secs(self.cfg.login_lockout_secs));
            f.count = 0;
            f.first = now;
        }
    }

    /// Checks a password (argon2: run it off the async runtime) with per-user and per-address
    /// rate limiting; on success opens a session and returns its cookie value.
    pub fn login(
        &self,
        name: &str,
        password: &str,
        ip: &str,
    ) -> Result<(String, Session), LoginError> {
        let now = Instant::now();
        let (ukey, ikey) = (format!("user:{name}"), format!("ip:{ip}"));
        if let Some(d) = self.locked(&ukey, now).max(self.locked(&ikey, now)) {
            return Err(LoginError::Locked(d));
        }
        let user = self.get(name);
        let ok = match &user {
            Some(u) => verify_password(password, &u.password_hash),
            None => {
                // The same work for an unknown name, so timing does not tell names apart.
                let _ = hash_password(password);
                false
            }
        };
        let Some(user) = user.filter(|_| ok) else {
            self.fail(&ukey, now);
            self.fail(&ikey, now);
            return Err(LoginError::Invalid);
        };
        self.failures.lock().remove(&ukey);
        self.record_login(&user.name);
        let token = random_token(40);
        let session = Session {
            token_hash: hash_secret(&token),
            user: user.name,
            csrf: random_token(32),
            expires_at: Utc::now()
                + chrono::Duration::seconds(self.cfg.session_hours as i64 * 3600),
        };
        let mut sessions = self.sessions.lock();
        let now_utc = Utc::now();
        sessions.retain(|_, s| s.expires_at > now_utc);
        sessions.insert(session.token_hash.clone(), session.clone());
        if let Err(e) = self.save_sessions(&sessions) {
            tracing::error!(cause = %e, "cannot store a ui session");
        }
        Ok((token, session))
    }

    /// The live session and user behind a cookie value.
    pub fn session(&self, token: &str) -> Option<(Session, User)> {
        let h = hash_secret(token);
        let s = self.sessions.lock().get(&h).cloned()?;
        if s.expires_at <= Utc::now() {
            return None;
        }
        let u = self.get(&s.user)?;
        Some((s, u))
    }

    pub fn logout(&self, token: &str) -> Result<(), ApiError> {
        let h = hash_secret(token);
        let mut sessions = self.sessions.lock();
        if sessions.remove(&h).is_some() {
            self.save_sessions(&sessions)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> (tempfile::TempDir, Users) {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(MetaStore::open(dir.path()).unwrap());
        let u = Users::open(meta, super::super::UiConfig::default()).unwrap();
        (dir, u)
    }

    #[test]
    fn passwords_are_hashed_and_checked() {
        let (_d, u) = users();
        let user = u.create("ann", Role::Marketer, "correct horse").unwrap();
        assert!(user.password_hash.starts_with("$argon2id$"));
        assert!(!user.password_hash.contains("correct horse"));
        assert!(u.login("ann", "correct horse", "1.2.3.4").is_ok());
        assert_eq!(
            u.login("ann", "wrong", "1.2.3.4").unwrap_err(),
            LoginError::Invalid
        );
        assert!(
            u.create("ann", Role::Viewer, "another one").is_err(),
            "taken"
        );
        assert!(u.create("bob", Role::Viewer, "short").is_err(), "too short");
    }

    #[test]
    fn repeated_failures_lock_the_user_even_with_the_right_password() {
        let (_d, u) = users();
        u.create("ann", Role::Admin, "correct horse").unwrap();
        for _ in 0..5 {
            assert_eq!(
                u.login("ann", "nope", "10.0.0.1").unwrap_err(),
                LoginError::Invalid
            );
        }
        assert!(matches!(
            u.login("ann", "correct horse", "10.0.0.2"),
            Err(LoginError::Locked(_))
        ));
        // The address is locked too, for every name.
        assert!(matches!(
            u.login("bob", "x", "10.0.0.1"),
            Err(LoginError::Locked(_))
        ));
    }

    #[test]
    fn sessions_survive_a_reopen_and_end_at_logout() {
        let dir = tempfile::tempdir().unwrap();
        let token = {
            let meta = Arc::new(MetaStore::open(dir.path()).unwrap());
            let u = Users::open(meta, super::super::UiConfig::default()).unwrap();
            u.create("ann", Role::Viewer, "correct horse").unwrap();
            u.login("ann", "correct horse", "::1").unwrap().0
        };
        let meta = Arc::new(MetaStore::open(dir.path()).unwrap());
        let u = Users::open(meta, super::super::UiConfig::default()).unwrap();
        let (s, user) = u.session(&token).unwrap();
        assert_eq!(user.name, "ann");
        assert_ne!(s.token_hash, token, "stored hashed");
        u.logout(&token).unwrap();
        assert!(u.session(&token).is_none());
    }

    #[test]
    fn the_last_admin_stays() {
        let (_d, u) = users();
        let (name, _) = u.initialize(None).unwrap().unwrap();
        assert!(u.initialize(None).unwrap().is_none(), "only once");
        assert!(u.delete(&name).is_err());
        assert!(u.set_role(&name, Role::Viewer).is_err(), "not demoted");
        u.create("root2", Role::Admin, "password2").unwrap();
        u.set_role(&name, Role::Viewer).unwrap();
        assert!(u.set_role("root2", Role::Marketer).is_err());
        u.set_role(&name, Role::Admin).unwrap();
        u.delete(&name).unwrap();
        assert!(u.delete("root2").is_err());
        assert_eq!(u.list().len(), 1);
    }

    #[test]
    fn a_new_password_ends_the_other_sessions_and_logins_are_recorded() {
        let (_d, u) = users();
        u.create("ann", Role::Admin, "correct horse").unwrap();
        assert!(u.get("ann").unwrap().last_login.is_none());
        let (t1, s1) = u.login("ann", "correct horse", "::1").unwrap();
        let (t2, _) = u.login("ann", "correct horse", "::2").unwrap();
        assert!(u.get("ann").unwrap().last_login.is_some());
        assert!(u.set_password("ann", "short", None).is_err());
        u.set_password("ann", "battery staple", Some(&s1.token_hash))
            .unwrap();
        assert!(u.session(&t1).is_some(), "the resetting session stays");
        assert!(u.session(&t2).is_none(), "the other one ends");
        assert_eq!(
            u.login("ann", "correct horse", "::3").unwrap_err(),
            LoginError::Invalid
        );
        assert!(u.login("ann", "battery staple", "::3").is_ok());
    }
}
