//! Who is calling: passwords (Argon2id), login sessions (a cookie for the
//! console, a bearer token for API clients), API tokens for machines, the
//! caller's role, and a limit on login attempts.
//!
//! Tokens are 32 random bytes, base64url, with a prefix that says what they
//! are (`fds_` session, `fdt_` API token); only their SHA-256 is stored.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::context::App;
use crate::error::{ApiError, ErrorKind};
use store::models::audit::ActorKind;
use store::models::session::{ApiToken, Session};
use store::models::user::{Role, User};

/// The console's session cookie.
pub const SESSION_COOKIE: &str = "fd_session";
/// Prefix of session tokens.
pub const SESSION_PREFIX: &str = "fds_";
/// Prefix of API tokens.
pub const API_TOKEN_PREFIX: &str = "fdt_";
/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// A new random token with `prefix`.
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// What is stored of a token: its SHA-256, hex.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Why a password is refused, if it is.
pub fn password_problem(password: &str) -> Option<String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Some(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters (it has {chars})"
        ));
    }
    if password.len() > 1024 {
        return Some("the password must be at most 1024 bytes".into());
    }
    None
}

/// The Argon2id PHC string of `password`.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Whether `password` matches the PHC string `hash`.
pub fn verify_password(hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Spends the time a real verification takes, so a login for an unknown
/// email is not faster than one with a wrong password.
pub fn verify_nothing(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = DUMMY.get_or_init(|| hash_password("not a real password").unwrap_or_default());
    let _ = verify_password(hash, password);
}

/// Who acts.
#[derive(Debug, Clone, PartialEq)]
pub enum Actor {
    /// A logged-in user.
    User {
        /// The user.
        id: String,
        /// Their login.
        email: String,
        /// The session's token hash (to log out).
        session: String,
    },
    /// A machine.
    Token {
        /// The token's id.
        id: String,
        /// Its name.
        name: String,
    },
}

/// An authenticated caller: who, in which workspace, with which role.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// Who.
    pub actor: Actor,
    /// The workspace every request of theirs is scoped to.
    pub workspace_id: String,
    /// What they may do there.
    pub role: Role,
}

impl Principal {
    /// 403 unless the caller's role includes `needed`.
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role.allows(needed) {
            return Ok(());
        }
        let who = match needed {
            Role::Owner => "owners",
            Role::Admin => "admins and owners",
            Role::Agent => "members",
        };
        Err(ApiError::new(
            ErrorKind::Forbidden,
            format!("only {who} may do this; your role is {}", self.role),
        ))
    }

    /// The user's id, if a user.
    pub fn user_id(&self) -> Option<&str> {
        match &self.actor {
            Actor::User { id, .. } => Some(id),
            Actor::Token { .. } => None,
        }
    }

    /// For audit entries.
    pub fn actor_kind(&self) -> ActorKind {
        match self.actor {
            Actor::User { .. } => ActorKind::User,
            Actor::Token { .. } => ActorKind::ApiToken,
        }
    }

    /// For audit entries: the user's or the token's id.
    pub fn actor_id(&self) -> &str {
        match &self.actor {
            Actor::User { id, .. } | Actor::Token { id, .. } => id,
        }
    }
}

/// The token a request carries: `Authorization: Bearer`, else the session
/// cookie, else (when `query` allows it, for websockets) `?token=`.
pub fn token_of(req: &HttpRequest, query: bool) -> Option<String> {
    if let Some(value) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    if let Some(cookie) = req.cookie(SESSION_COOKIE) {
        return Some(cookie.value().to_owned());
    }
    if query {
        return url_param(req.query_string(), "token");
    }
    None
}

/// A query parameter, percent-decoded.
pub fn url_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorKind::Unauthorized, message)
}

/// Finds who `token` belongs to. 401 when it is missing, unknown, expired,
/// revoked, or its user is disabled or no longer in the workspace.
pub async fn authenticate(app: &App, token: Option<&str>) -> Result<Principal, ApiError> {
    let Some(token) = token.filter(|t| !t.is_empty() && t.len() <= 256) else {
        return Err(unauthorized(
            "log in first: send Authorization: Bearer <token>",
        ));
    };
    let hash = token_hash(token);
    let mut conn = app.db.get().await?;
    if token.starts_with(API_TOKEN_PREFIX) {
        let Some(found) = ApiToken::live(&mut conn, &hash).await? else {
            return Err(unauthorized("the API token is unknown, expired or revoked"));
        };
        ApiToken::touch(&mut conn, &found.id).await?;
        return Ok(Principal {
            actor: Actor::Token {
                id: found.id,
                name: found.name,
            },
            workspace_id: found.workspace_id,
            role: found.role,
        });
    }
    let Some(session) = Session::live(&mut conn, &hash).await? else {
        return Err(unauthorized(
            "the session has expired or was ended; log in again",
        ));
    };
    let user = User::find_by_id(&mut conn, &session.user_id).await?;
    let Some(user) = user.filter(|u| !u.disabled) else {
        return Err(unauthorized("this account is disabled"));
    };
    let Some(role) = User::role_in(&mut conn, &user.id, &session.workspace_id).await? else {
        return Err(unauthorized("you are no longer a member of this workspace"));
    };
    Session::touch(&mut conn, &hash).await?;
    Ok(Principal {
        actor: Actor::User {
            id: user.id,
            email: user.email,
            session: hash,
        },
        workspace_id: session.workspace_id,
        role,
    })
}

/// Counts failed logins per key (an email, a client address) in a sliding
/// window. In process: each node counts its own.
#[derive(Debug)]
pub struct LoginLimiter {
    attempts: u32,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    /// `attempts` failures per key per `window`.
    pub fn new(attempts: u32, window: Duration) -> Self {
        Self {
            attempts,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Failures allowed for `key`: an address (`ip:…`) may be shared by a
    /// whole office, so it gets five times an email's allowance.
    fn limit(&self, key: &str) -> usize {
        let attempts = self.attempts.max(1) as usize;
        if key.starts_with("ip:") {
            attempts * 5
        } else {
            attempts
        }
    }

    /// `Some(wait)` when any key is over its limit.
    pub fn blocked(&self, keys: &[String]) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter_map(|key| {
                let times = map.get_mut(key)?;
                while times.front().is_some_and(|t| now - *t > self.window) {
                    times.pop_front();
                }
                let oldest = times.front()?;
                (times.len() >= self.limit(key)).then(|| self.window.saturating_sub(now - *oldest))
            })
            .max()
    }

    /// Records a failure for each key.
    pub fn failed(&self, keys: &[String]) {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            // Bounded memory under a flood of distinct keys.
            map.retain(|_, times| times.back().is_some_and(|t| now - *t <= self.window));
        }
        for key in keys {
            let times = map.entry(key.clone()).or_default();
            times.push_back(now);
            while times.len() > self.limit(key) {
                times.pop_front();
            }
        }
    }

    /// Forgets the failures of `key` (a successful login).
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse battery").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse battery!"));
        assert!(!verify_password("not a phc string", "x"));
        assert_ne!(hash, hash_password("correct horse battery").expect("hash"));
        assert!(password_problem("short").is_some());
        assert!(password_problem("long enough pw").is_none());
    }

    #[test]
    fn tokens_are_random_and_stored_as_hashes() {
        let a = new_token(SESSION_PREFIX);
        let b = new_token(SESSION_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with("fds_") && a.len() == 4 + 43, "{a}");
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    #[test]
    fn query_parameters_are_decoded() {
        assert_eq!(
            url_param("a=1&token=x%2By+z", "token").as_deref(),
            Some("x+y z")
        );
        assert_eq!(url_param("token=%zz%4", "token").as_deref(), Some("%zz%4"));
        assert_eq!(url_param("a=1", "token"), None);
    }

    #[test]
    fn the_limiter_blocks_after_n_failures_per_key() {
        let limiter = LoginLimiter::new(3, Duration::from_secs(60));
        let keys = vec!["email:a@x".to_owned(), "ip:1.2.3.4".to_owned()];
        for _ in 0..3 {
            assert!(limiter.blocked(&keys).is_none());
            limiter.failed(&keys);
        }
        let wait = limiter.blocked(&keys).expect("blocked");
        assert!(wait <= Duration::from_secs(60) && wait > Duration::from_secs(50));
        // The address has a larger allowance (a shared office address)…
        let other = ["email:b@x".to_owned(), "ip:1.2.3.4".to_owned()];
        assert!(limiter.blocked(&other).is_none());
        for _ in 0..12 {
            limiter.failed(&["ip:1.2.3.4".to_owned()]);
        }
        // …but it is limited too.
        assert!(limiter.blocked(&other).is_some());
        limiter.succeeded("email:a@x");
        assert!(limiter.blocked(&["email:a@x".into()]).is_none());
    }
}
