//! Settings the store's records depend on: `[database]` (where the store
//! lives and how it is pooled) and `[llm.prices]` (what a model's tokens
//! cost, for the usage log).

use std::collections::BTreeMap;
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

/// What one model costs, per million tokens, in whatever currency the
/// operator bills in (the usage log sums it as given).
///
/// ```toml
/// [llm.prices."gpt-4o-mini"]
/// prompt_per_million = 0.15
/// completion_per_million = 0.6
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelPrice {
    /// Price of a million prompt (input) tokens.
    pub prompt_per_million: f64,
    /// Price of a million completion (output) tokens.
    pub completion_per_million: f64,
}

impl ModelPrice {
    /// The cost of `prompt` and `completion` tokens.
    pub fn cost(&self, prompt: u64, completion: u64) -> f64 {
        (prompt as f64 * self.prompt_per_million + completion as f64 * self.completion_per_million)
            / 1_000_000.0
    }
}

/// `[llm.prices]`: a [`ModelPrice`] per model, keyed by the model's name as
/// the server knows it (`llm.model` or a bot's `[llm] model`). A model
/// without a price has no cost (`null`), never a cost of zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Prices(pub BTreeMap<String, ModelPrice>);

impl Prices {
    /// The cost of `prompt` and `completion` tokens of `model`; `None`
    /// when the model has no price.
    pub fn cost(&self, model: &str, prompt: u64, completion: u64) -> Option<f64> {
        self.0.get(model).map(|p| p.cost(prompt, completion))
    }

    /// Checks every price: a model name, and prices that are finite and
    /// not negative. The error names the key (`MODEL.FIELD`, below
    /// `llm.prices`) and what is wrong.
    pub fn check(&self) -> Result<(), (String, String)> {
        for (model, price) in &self.0 {
            if model.trim().is_empty() {
                return Err((model.clone(), "a price needs a model name".into()));
            }
            for (field, value) in [
                ("prompt_per_million", price.prompt_per_million),
                ("completion_per_million", price.completion_per_million),
            ] {
                if !value.is_finite() || value < 0.0 {
                    return Err((
                        format!("{model}.{field}"),
                        format!("must be a price of zero or more, not {value}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prices(entries: &[(&str, f64, f64)]) -> Prices {
        Prices(
            entries
                .iter()
                .map(|(m, p, c)| {
                    (
                        (*m).to_owned(),
                        ModelPrice {
                            prompt_per_million: *p,
                            completion_per_million: *c,
                        },
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn cost_is_tokens_times_price_per_million() {
        let p = prices(&[("gpt-4o-mini", 0.15, 0.6), ("free", 0.0, 0.0)]);
        let cost = p.cost("gpt-4o-mini", 2_000_000, 500_000).expect("priced");
        assert!((cost - (0.3 + 0.3)).abs() < 1e-12, "{cost}");
        let one = p.cost("gpt-4o-mini", 1_000, 100).expect("priced");
        assert!((one - 0.000_21).abs() < 1e-15, "{one}");
        assert_eq!(p.cost("free", 1_000_000, 1_000_000), Some(0.0));
        assert_eq!(p.cost("gpt-4o", 10, 10), None, "unknown: no cost, not zero");
        assert_eq!(p.cost("GPT-4O-MINI", 10, 10), None, "names are exact");
    }

    #[test]
    fn prices_must_be_finite_and_not_negative() {
        assert_eq!(prices(&[("m", 0.15, 0.6), ("n", 0.0, 0.0)]).check(), Ok(()));
        let (key, message) = prices(&[("m", -1.0, 0.6)]).check().expect_err("negative");
        assert_eq!(key, "m.prompt_per_million");
        assert!(message.contains("-1"), "{message}");
        let (key, _) = prices(&[("m", 0.1, f64::NAN)]).check().expect_err("NaN");
        assert_eq!(key, "m.completion_per_million");
        let (key, _) = prices(&[("m", f64::INFINITY, 0.1)])
            .check()
            .expect_err("inf");
        assert_eq!(key, "m.prompt_per_million");
        assert!(prices(&[(" ", 0.1, 0.1)]).check().is_err());
    }

    #[test]
    fn prices_read_by_model_name_both_required() {
        let p: Prices = serde_json::from_str(
            r#"{"gpt-4o-mini": {"prompt_per_million": 0.15, "completion_per_million": 0.6}, "llama3.1:8b": {"prompt_per_million": 0, "completion_per_million": 0}}"#,
        )
        .expect("prices");
        assert_eq!(p.0.len(), 2);
        assert_eq!(p.cost("llama3.1:8b", 5, 5), Some(0.0));
        let missing = serde_json::from_str::<Prices>(r#"{"m": {"prompt_per_million": 1}}"#);
        assert!(missing.is_err(), "both prices are required");
    }
}
