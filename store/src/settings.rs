//! The `[database]` settings: where the store lives and how it is pooled.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[database]`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` (embedded, the default) or `postgres://USER@HOST:PORT/DB`,
    /// with `?sslmode=disable|prefer|require|verify-ca|verify-full` (default
    /// `prefer`) and `sslrootcert=PATH` as in libpq (see [`crate::tls`]).
    pub url: DatabaseUrl,
    /// Pooled connections per process.
    pub pool_size: usize,
    /// How long to wait for a connection (to connect, or from the pool), in seconds.
    pub connect_timeout_secs: u64,
    /// SQLite only: how long a writer waits for the database lock, in milliseconds.
    pub sqlite_busy_timeout_ms: u32,
}

/// A parsed `database.url`. `Debug` and `Display` hide the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DatabaseUrl {
    /// `sqlite://PATH`; a relative path is relative to the working directory.
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`, as written: tokio-postgres reads
    /// it once [`crate::tls`] has taken out `sslmode` and `sslrootcert`.
    Postgres(String),
}

impl TryFrom<String> for DatabaseUrl {
    type Error = String;
    fn try_from(url: String) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite:// needs a file path, e.g. sqlite://data/frontdesk.db".into());
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // A bad sslmode stops start-up here, with the settings errors.
            crate::tls::PgUrl::parse(&url).map_err(|e| format!("{}: {e}", redact_url(&url)))?;
            return Ok(Self::Postgres(url));
        }
        Err(format!(
            "`{}` is neither sqlite://PATH nor postgres://…",
            redact_url(&url)
        ))
    }
}

impl From<DatabaseUrl> for String {
    fn from(url: DatabaseUrl) -> String {
        match url {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => url,
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

/// Replaces the password of `scheme://user:password@host` with `***`, for logs
/// and error messages.
pub fn redact_url(url: &str) -> String {
    // `?password=…` (libpq style) is hidden too.
    let (url, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    let base = redact_authority(url);
    match query {
        Some(q) => format!("{base}?{q}"),
        None => base,
    }
}

fn redact_authority(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_owned(),
    }
}
