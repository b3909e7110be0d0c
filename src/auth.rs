//! Who is calling: passwords (Argon2id), login sessions (a cookie for the
//! console, a bearer token for API clients), API tokens for machines, the
//! caller's role, and a limit on login attempts.
//!
//! Tokens are 32 random bytes, base64url, with a prefix that says what they
//! are (`fds_` session, `fdt_` API token); only their SHA-256 is stored.

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

/// Like [`verify_password`], with Argon2's working memory in `memory`
/// (grown to the hash's cost once, then reused): a thread that checks
/// passwords all day holds one block of it, not a fresh 19 MiB per check
/// that the allocator may keep.
pub fn verify_password_in(hash: &str, password: &str, memory: &mut Vec<argon2::Block>) -> bool {
    let mut check = || -> Option<bool> {
        let parsed = PasswordHash::new(hash).ok()?;
        let params = argon2::Params::try_from(&parsed).ok()?;
        let algorithm = argon2::Algorithm::try_from(parsed.algorithm).ok()?;
        let version = match parsed.version {
            Some(v) => argon2::Version::try_from(v).ok()?,
            None => argon2::Version::default(),
        };
        let expected = parsed.hash?;
        let mut salt = [0u8; 64];
        let salt = parsed.salt?.decode_b64(&mut salt).ok()?;
        let blocks = params.block_count();
        // Our own hashes are 19 MiB; a stored hash asking for more than
        // 256 MiB is not one of ours.
        if blocks > 256 * 1024 {
            return Some(false);
        }
        if memory.len() < blocks {
            memory.resize(blocks, argon2::Block::default());
        }
        let mut out = vec![0u8; expected.len()];
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                &mut out,
                &mut memory[..blocks],
            )
            .ok()?;
        Some(channels::constant_time_eq(&out, expected.as_bytes()))
    };
    check().unwrap_or(false)
}

/// The hash a login for an unknown email is checked against, so that it
/// takes as long as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a real password").unwrap_or_default())
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

/// The door of `POST /auth/login`: how many attempts each email and client
/// address may make, and how many password checks run at once.
///
/// Every attempt counts when it starts, against its email and its address
/// at once (on the broker: in Redis every node shares the counts), so
/// concurrent requests cannot all get past the limit; a successful login is
/// taken back. Argon2 holds 19 MiB and tens of milliseconds of a core per
/// check: at most `password_checks` run at once, `login_queue` more wait
/// their turn, and the rest get 429 with `Retry-After`.
#[derive(Debug)]
pub struct LoginGate {
    attempts: u32,
    window: Duration,
    broker: broker::AnyBroker,
    /// Counts here when the broker does not answer (Redis down): limits
    /// hold per node rather than not at all.
    fallback: Mutex<broker::limits::Windows>,
    checks: tokio::sync::Semaphore,
    capacity: usize,
    /// The threads that run the checks, as many as `capacity`: Argon2's
    /// 19 MiB stays in their few malloc arenas instead of one per thread of
    /// the blocking pool (measured: 365 MiB after 500 logins, without).
    checkers: Checkers,
    waiting: std::sync::atomic::AtomicUsize,
    queue: usize,
}

/// An admitted login attempt, to take back if it succeeds.
#[derive(Debug)]
pub struct Attempt {
    id: String,
    keys: Vec<String>,
}

/// How long a login waits for a password check before 429.
const CHECK_WAIT: Duration = Duration::from_secs(10);

impl LoginGate {
    /// `attempts` per email (×5 per address) per `window`, `checks` password
    /// checks at once (0: one per core), `queue` logins waiting for one.
    pub fn new(
        broker: broker::AnyBroker,
        attempts: u32,
        window: Duration,
        checks: usize,
        queue: usize,
    ) -> Self {
        let checks = if checks == 0 {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            checks
        };
        Self {
            attempts: attempts.max(1),
            window,
            broker,
            fallback: Mutex::new(broker::limits::Windows::default()),
            checks: tokio::sync::Semaphore::new(checks),
            capacity: checks,
            checkers: Checkers::start(checks),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            queue,
        }
    }

    /// Counts an attempt for `email` from `ip`, or says how long to wait.
    pub async fn admit(&self, email: &str, ip: Option<&str>) -> Result<Attempt, Duration> {
        use broker::{Broker, Limit};
        // An address may be shared by a whole office: five times an email's
        // allowance.
        let limits = [
            Limit::new(format!("login:email:{email}"), self.attempts),
            Limit::new(
                format!("login:ip:{}", ip.unwrap_or("?")),
                self.attempts.saturating_mul(5),
            ),
        ];
        let id = new_token("");
        let wait = match self.broker.admit(&limits, &id, self.window).await {
            Ok(wait) => wait,
            Err(error) => {
                tracing::warn!(%error, "login limits counted on this node only: the broker does not answer");
                self.fallback
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .admit(&limits, &id, self.window, Instant::now())
            }
        };
        match wait {
            Some(wait) => Err(wait),
            None => Ok(Attempt {
                id,
                keys: limits.into_iter().map(|l| l.key).collect(),
            }),
        }
    }

    /// Takes a successful attempt back.
    pub async fn succeeded(&self, attempt: Attempt) {
        use broker::Broker;
        if let Err(error) = self.broker.forgive(&attempt.keys, &attempt.id).await {
            tracing::debug!(%error, "successful login not taken back on the broker");
        }
        self.fallback
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forgive(&attempt.keys, &attempt.id);
    }

    /// Checks `password` against `hash` (or spends the same time when there
    /// is no hash) once a slot is free; `Err(wait)` when too many logins
    /// are already waiting.
    pub async fn check(&self, hash: Option<String>, password: String) -> Result<bool, Duration> {
        use std::sync::atomic::Ordering;
        let busy = Duration::from_secs(1);
        // Counted down on every way out, a dropped request included.
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _waiting = Waiting(&self.waiting);
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue + self.capacity {
            return Err(busy);
        }
        let Ok(Ok(_permit)) = tokio::time::timeout(CHECK_WAIT, self.checks.acquire()).await else {
            return Err(busy);
        };
        Ok(self
            .checkers
            .run(move |memory| match hash {
                Some(hash) => verify_password_in(&hash, &password, memory),
                None => {
                    // The time a real check takes: unknown emails are not
                    // told apart by speed.
                    verify_password_in(dummy_hash(), &password, memory);
                    false
                }
            })
            .await
            .unwrap_or(false))
    }
}

/// A password check, and where its answer goes; it gets its thread's
/// Argon2 memory.
type Job = Box<dyn FnOnce(&mut Vec<argon2::Block>) + Send>;

/// A fixed set of threads for password checks; they end with the last
/// handle.
#[derive(Debug, Clone)]
struct Checkers {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Checkers {
    fn start(threads: usize) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = std::sync::Arc::new(Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-check-{n}"))
                .spawn(move || {
                    let mut memory = Vec::new();
                    loop {
                        let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            Ok(job) => job(&mut memory),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a password-check thread");
            }
        }
        Self { jobs }
    }

    /// Runs `check` on one of the threads; `None` if none is running.
    async fn run(
        &self,
        check: impl FnOnce(&mut Vec<argon2::Block>) -> bool + Send + 'static,
    ) -> Option<bool> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |memory: &mut Vec<argon2::Block>| {
                let _ = tx.send(check(memory));
            }))
            .ok()?;
        rx.await.ok()
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
        let mut memory = Vec::new();
        assert!(verify_password_in(
            &hash,
            "correct horse battery",
            &mut memory
        ));
        assert!(!verify_password_in(
            &hash,
            "correct horse batter",
            &mut memory
        ));
        assert!(!verify_password_in("not a phc string", "x", &mut memory));
        assert_eq!(memory.len(), 19 * 1024, "one 19 MiB block, reused");
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

    #[tokio::test]
    async fn the_gate_counts_attempts_per_email_and_address() {
        let broker = broker::AnyBroker::Memory(broker::memory::MemoryBroker::new());
        let gate = LoginGate::new(broker, 3, Duration::from_secs(60), 1, 0);
        let ip = Some("1.2.3.4");
        for _ in 0..3 {
            gate.admit("a@x", ip).await.expect("admitted");
        }
        let wait = gate.admit("a@x", ip).await.expect_err("blocked");
        assert!(wait <= Duration::from_secs(60) && wait > Duration::from_secs(50));
        // The address has a larger allowance (a shared office address)…
        let ok = gate.admit("b@x", ip).await.expect("admitted");
        // …and a success is taken back from both keys.
        gate.succeeded(ok).await;
        for n in 0..12 {
            gate.admit(&format!("c{n}@x"), ip).await.expect("admitted");
        }
        assert!(gate.admit("d@x", ip).await.is_err(), "15 per address");
        assert!(gate.admit("d@x", Some("5.6.7.8")).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_checks_are_bounded_and_the_rest_wait_or_get_refused() {
        let broker = broker::AnyBroker::Memory(broker::memory::MemoryBroker::new());
        // One check at a time and one waiting: of three at once, one is refused.
        let gate = std::sync::Arc::new(LoginGate::new(broker, 3, Duration::from_secs(60), 1, 1));
        let hash = hash_password("correct horse battery").expect("hash");
        let tries: Vec<_> = (0..3)
            .map(|_| {
                let gate = gate.clone();
                let hash = hash.clone();
                tokio::spawn(
                    async move { gate.check(Some(hash), "correct horse battery".into()).await },
                )
            })
            .collect();
        let mut outcomes = Vec::new();
        for t in tries {
            outcomes.push(t.await.expect("joined"));
        }
        assert_eq!(
            outcomes.iter().filter(|o| matches!(o, Ok(true))).count(),
            2,
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes.iter().filter(|o| o.is_err()).count(),
            1,
            "{outcomes:?}"
        );
        assert!(matches!(gate.check(None, "x".into()).await, Ok(false)));
    }
}
