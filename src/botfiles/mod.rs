//! Bot files: `config/bots/*.toml`, each declaring one bot and its channels.
//!
//! Every command that opens the database applies them (after migrations), so
//! the database always reflects the files. All files are read, validated and
//! their secrets resolved before anything is written: a bad file stops the
//! command with one line naming the file and the key, and changes nothing.
//!
//! Secrets are written inline or as `env:VAR_NAME`; they are sealed with the
//! master key before they reach the database and never logged. Changes are
//! recorded in the audit log (without secrets). Accounts a file no longer
//! declares are disabled, not deleted, so their history stays.
//!
//! `channel.rs` reads a `[[channels]]` table into an account (the API's
//! channel requests read the same).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use channels::ChannelKind;
use knowledge::Language;
use serde::Deserialize;

use store::crypto::{MasterKey, Secret};
use store::db::{Db, DbConn, DbError};
use store::models::audit::{ActorKind, Audit};
use store::models::bot::{
    Bot, BotLlm, BotSpec, HandoffPolicy, KnowledgePaths, Upserted, WidgetOrigins,
};
use store::models::channel_account::{AccountSpec, ChannelAccount, UpsertAccountError};
use store::models::workspace::Workspace;

mod channel;

pub(crate) use channel::{ChannelFile, LoadedChannel, channel_spec, check_channel_id};

/// A bot file as written.
#[derive(Debug, Deserialize)]
struct BotFile {
    workspace: String,
    name: String,
    system_prompt: String,
    #[serde(default = "default_language")]
    language: String,
    #[serde(default)]
    knowledge: Vec<String>,
    /// Pages that may open the chat widget (`https://shop.example`); empty: any.
    #[serde(default)]
    widget_origins: Vec<String>,
    /// Opens the bot's first reply; unset: the server's `answer.disclosure`.
    #[serde(default)]
    disclosure: Option<String>,
    #[serde(default)]
    handoff: HandoffFile,
    #[serde(default)]
    llm: BotLlm,
    #[serde(default)]
    channels: Vec<ChannelFile>,
}

fn default_language() -> String {
    "en".into()
}

#[derive(Debug, Deserialize)]
struct HandoffFile {
    #[serde(default = "default_min_confidence")]
    min_confidence: f64,
    #[serde(default = "default_on_unknown")]
    on_unknown: HandoffPolicy,
    #[serde(default = "default_fallback")]
    fallback_message: String,
}

impl Default for HandoffFile {
    fn default() -> Self {
        Self {
            min_confidence: default_min_confidence(),
            on_unknown: default_on_unknown(),
            fallback_message: default_fallback(),
        }
    }
}

fn default_min_confidence() -> f64 {
    0.35
}
fn default_on_unknown() -> HandoffPolicy {
    HandoffPolicy::FallbackMessage
}
fn default_fallback() -> String {
    "Let me get a colleague to help you with that.".into()
}

/// A bot file that cannot be applied. Each variant names the file and key.
#[derive(Debug, thiserror::Error)]
pub enum BotFileError {
    /// The directory or a file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// What.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML or not the bot file format.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// Parser message, with the key and location.
        message: String,
    },
    /// A key Frontdesk does not know (probably a typo).
    #[error("{}: unknown key `{key}`", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// Dotted path.
        key: String,
    },
    /// A value that parses but is not acceptable.
    #[error("{}: `{key}`: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Dotted path.
        key: String,
        /// What to fix.
        message: String,
    },
    /// Two files claim the same thing.
    #[error("{}: {what} is already declared in {}", path.display(), other.display())]
    Duplicate {
        /// The later file.
        path: PathBuf,
        /// The earlier file.
        other: PathBuf,
        /// What is duplicated.
        what: String,
    },
    /// The database refused a change.
    #[error("{}: {message}", path.display())]
    Apply {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A validated bot file, secrets resolved.
#[derive(Debug)]
struct Loaded {
    path: PathBuf,
    workspace: String,
    spec: BotSpec,
    channels: Vec<LoadedChannel>,
}

/// What applying the bot files changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Bot files read.
    pub files: usize,
    /// Bots created or changed.
    pub bots_changed: usize,
    /// Channel accounts created or changed.
    pub channels_changed: usize,
    /// Channel accounts disabled because their file no longer declares them.
    pub channels_disabled: usize,
}

/// Bot files read and validated, secrets resolved; nothing written yet.
#[derive(Debug)]
pub struct BotFiles {
    dir: PathBuf,
    files: Vec<Loaded>,
}

impl BotFiles {
    /// Reads every `*.toml` in `dir` (none when `dir` does not exist),
    /// validates them and resolves `env:` secrets from `env`. Touches no state.
    pub fn load(dir: &Path, env: &[(String, String)]) -> Result<BotFiles, BotFileError> {
        Ok(BotFiles {
            dir: dir.to_path_buf(),
            files: load_dir(dir, env)?,
        })
    }

    /// Applies the files to the database. Accounts that a file no longer
    /// declares, and those of bots whose file is gone, are disabled first, so
    /// a renamed channel id can take over its platform identity.
    pub async fn apply(&self, db: &Db, key: &MasterKey) -> Result<SyncReport, BotFileError> {
        let mut report = SyncReport {
            files: self.files.len(),
            ..SyncReport::default()
        };
        let mut conn = db.get().await?;
        self.disable_orphans(&mut conn, &mut report).await?;
        for file in &self.files {
            apply(&mut conn, key, file, &mut report).await?;
        }
        Ok(report)
    }

    /// Bots managed by a file of this directory that is gone keep their
    /// history, but their channels stop taking traffic.
    async fn disable_orphans(
        &self,
        conn: &mut DbConn,
        report: &mut SyncReport,
    ) -> Result<(), BotFileError> {
        let present: Vec<String> = self
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        for bot in Bot::file_managed(conn).await? {
            let Some(source) = &bot.source_file else {
                continue;
            };
            let in_dir = Path::new(source).parent() == Some(self.dir.as_path());
            if !in_dir || present.contains(source) {
                continue;
            }
            let actor = format!("bot-file:{source}");
            for stale in ChannelAccount::disable_others(conn, &bot.id, &[]).await? {
                report.channels_disabled += 1;
                tracing::warn!(channel = %stale.public_id, file = %source, "bot file removed: channel disabled");
                audit(
                    conn,
                    &bot.workspace_id,
                    &actor,
                    "channel_account.disable",
                    "channel_account",
                    &stale.id,
                    serde_json::to_value(&stale).ok(),
                    None,
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// Reads, validates and applies the bot files of `dir` (see [`BotFiles`]).
pub async fn sync(
    db: &Db,
    key: &MasterKey,
    dir: &Path,
    env: &[(String, String)],
) -> Result<SyncReport, BotFileError> {
    BotFiles::load(dir, env)?.apply(db, key).await
}

#[allow(clippy::too_many_arguments)] // one audit row, field by field
async fn audit(
    conn: &mut DbConn,
    workspace_id: &str,
    actor: &str,
    action: &str,
    target_kind: &str,
    target_id: &str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> Result<(), DbError> {
    Audit {
        workspace_id: Some(workspace_id),
        actor_kind: Some(ActorKind::System),
        actor_id: Some(actor),
        action,
        target_kind,
        target_id: Some(target_id),
        before,
        after,
        ..Audit::default()
    }
    .record(conn)
    .await
}

async fn apply(
    conn: &mut DbConn,
    key: &MasterKey,
    file: &Loaded,
    report: &mut SyncReport,
) -> Result<(), BotFileError> {
    let actor = format!("bot-file:{}", file.path.display());
    let workspace = Workspace::ensure(conn, &file.workspace).await?;
    let spec = BotSpec {
        workspace_id: workspace.id.clone(),
        ..file.spec.clone()
    };
    let bot = Bot::upsert(conn, &spec).await?;
    if let Some((action, before)) = describe(&bot) {
        report.bots_changed += 1;
        tracing::info!(bot = %spec.name, workspace = %file.workspace, action, "bot file applied");
        let after = serde_json::to_value(bot.row()).ok();
        audit(
            conn,
            &workspace.id,
            &actor,
            &format!("bot.{action}"),
            "bot",
            &bot.row().id,
            before,
            after,
        )
        .await?;
    }
    let bot_id = bot.row().id.clone();
    // Disable first: a channel renamed in the file frees its platform
    // identity before the new id claims it.
    let keep: Vec<String> = file.channels.iter().map(|c| c.public_id.clone()).collect();
    for stale in ChannelAccount::disable_others(conn, &bot_id, &keep).await? {
        report.channels_disabled += 1;
        tracing::warn!(channel = %stale.public_id, "channel account no longer in its bot file: disabled");
        audit(
            conn,
            &workspace.id,
            &actor,
            "channel_account.disable",
            "channel_account",
            &stale.id,
            serde_json::to_value(&stale).ok(),
            None,
        )
        .await?;
    }
    for channel in &file.channels {
        let spec = AccountSpec {
            public_id: channel.public_id.clone(),
            bot_id: bot_id.clone(),
            kind: channel.kind,
            external_id: channel.external_id.clone(),
            credentials: channel.credentials.clone(),
        };
        let account = ChannelAccount::upsert(conn, key, &spec)
            .await
            .map_err(|e| match e {
                UpsertAccountError::Db(e) => BotFileError::Db(e),
                other => BotFileError::Apply {
                    path: file.path.clone(),
                    message: format!("channel `{}`: {other}", channel.public_id),
                },
            })?;
        if let Some((action, before)) = describe(&account) {
            report.channels_changed += 1;
            tracing::info!(channel = %channel.public_id, kind = %channel.kind, action, "channel account applied");
            let after = serde_json::to_value(account.row()).ok();
            audit(
                conn,
                &workspace.id,
                &actor,
                &format!("channel_account.{action}"),
                "channel_account",
                &account.row().id,
                before,
                after,
            )
            .await?;
        }
    }
    Ok(())
}

fn describe<T: serde::Serialize>(
    upserted: &Upserted<T>,
) -> Option<(&'static str, Option<serde_json::Value>)> {
    match upserted {
        Upserted::Created(_) => Some(("create", None)),
        Upserted::Updated { before, .. } => Some(("update", serde_json::to_value(before).ok())),
        Upserted::Unchanged(_) => None,
    }
}

fn load_dir(dir: &Path, env: &[(String, String)]) -> Result<Vec<Loaded>, BotFileError> {
    let read_err = |source| BotFileError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_err(e)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(read_err)?.path();
        if path.extension().is_some_and(|ext| ext == "toml") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    let env: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let loaded = paths
        .into_iter()
        .map(|path| load_file(path, &env))
        .collect::<Result<Vec<_>, _>>()?;
    check_duplicates(&loaded)?;
    Ok(loaded)
}

fn check_duplicates(loaded: &[Loaded]) -> Result<(), BotFileError> {
    let mut bots: BTreeMap<(&str, &str), &Path> = BTreeMap::new();
    let mut ids: BTreeMap<&str, &Path> = BTreeMap::new();
    let mut externals: BTreeMap<(ChannelKind, &str), &Path> = BTreeMap::new();
    for file in loaded {
        if let Some(other) = bots.insert((&file.workspace, &file.spec.name), &file.path) {
            return Err(BotFileError::Duplicate {
                path: file.path.clone(),
                other: other.to_path_buf(),
                what: format!("bot `{}` of workspace `{}`", file.spec.name, file.workspace),
            });
        }
        for channel in &file.channels {
            if let Some(other) = ids.insert(&channel.public_id, &file.path) {
                return Err(BotFileError::Duplicate {
                    path: file.path.clone(),
                    other: other.to_path_buf(),
                    what: format!("channel id `{}`", channel.public_id),
                });
            }
            if let Some(external) = &channel.external_id
                && let Some(other) = externals.insert((channel.kind, external), &file.path)
            {
                return Err(BotFileError::Duplicate {
                    path: file.path.clone(),
                    other: other.to_path_buf(),
                    what: format!("{} `{external}`", channel.kind),
                });
            }
        }
    }
    Ok(())
}

fn load_file(path: PathBuf, env: &HashMap<&str, &str>) -> Result<Loaded, BotFileError> {
    let text = std::fs::read_to_string(&path).map_err(|source| BotFileError::Read {
        path: path.clone(),
        source,
    })?;
    let value: toml::Value = toml::from_str(&text).map_err(|e| BotFileError::Format {
        path: path.clone(),
        message: e.message().to_owned() + &crate::config::location(&text, e.span()),
    })?;
    let mut unknown = None;
    let parsed: Result<BotFile, _> = serde_ignored::deserialize(value.clone(), |key| {
        unknown.get_or_insert_with(|| key.to_string());
    });
    if let Some(key) = unknown {
        return Err(BotFileError::UnknownKey { path, key });
    }
    let file = match parsed {
        Ok(file) => file,
        // Again, to learn which key is wrong.
        Err(plain) => {
            let message = match serde_path_to_error::deserialize::<_, BotFile>(value) {
                Err(e) if !matches!(e.path().to_string().as_str(), "" | ".") => {
                    let key = e.path().to_string();
                    format!("`{key}`: {}", without_values(&e.into_inner().to_string()))
                }
                _ => plain.to_string(),
            };
            return Err(BotFileError::Format { path, message });
        }
    };
    let invalid = |key: &str, message: String| BotFileError::Invalid {
        path: path.clone(),
        key: key.to_owned(),
        message,
    };

    check_slug(&file.workspace).map_err(|m| invalid("workspace", m))?;
    if file.name.trim().is_empty() || file.name.contains('/') {
        return Err(invalid(
            "name",
            "must be non-empty and contain no `/`".into(),
        ));
    }
    let language: Language = file
        .language
        .parse()
        .map_err(|e: knowledge::UnsupportedLanguage| invalid("language", e.to_string()))?;
    if !(0.0..=1.0).contains(&file.handoff.min_confidence) {
        return Err(invalid(
            "handoff.min_confidence",
            "must be between 0 and 1".into(),
        ));
    }
    if file.handoff.on_unknown == HandoffPolicy::FallbackMessage
        && file.handoff.fallback_message.trim().is_empty()
    {
        return Err(invalid(
            "handoff.fallback_message",
            "must not be empty with on_unknown = \"fallback_message\"".into(),
        ));
    }
    if let Some(t) = file.llm.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(invalid("llm.temperature", "must be between 0 and 2".into()));
    }
    for (i, origin) in file.widget_origins.iter().enumerate() {
        if let Some(problem) = WidgetOrigins::problem(origin) {
            return Err(invalid(&format!("widget_origins[{i}]"), problem));
        }
    }
    for (i, source) in file.knowledge.iter().enumerate() {
        if crate::kb::is_url(source) {
            if let Err(e) = reqwest::Url::parse(source) {
                return Err(invalid(
                    &format!("knowledge[{i}]"),
                    format!("`{source}` is not a valid URL: {e}"),
                ));
            }
        } else if !Path::new(source).exists() {
            return Err(invalid(
                &format!("knowledge[{i}]"),
                format!(
                    "`{source}` does not exist (relative paths start at the working directory)"
                ),
            ));
        }
    }

    let mut channels = Vec::with_capacity(file.channels.len());
    for (i, channel) in file.channels.into_iter().enumerate() {
        let at = |key: &str| format!("channels[{i}].{key}");
        let loaded = channel_spec(
            channel,
            &|key, raw| resolve_secret(raw, env).map_err(|m| (key.to_owned(), m)),
            Some(&path),
        )
        .map_err(|(key, m)| invalid(&at(&key), m))?;
        check_channel_id(&loaded.public_id).map_err(|m| invalid(&at("id"), m))?;
        channels.push(loaded);
    }

    let source_file = path.display().to_string();
    Ok(Loaded {
        spec: BotSpec {
            workspace_id: String::new(),
            name: file.name,
            system_prompt: file.system_prompt,
            language,
            llm_settings: file.llm,
            handoff_policy: file.handoff.on_unknown,
            min_confidence: file.handoff.min_confidence,
            fallback_message: file.handoff.fallback_message,
            disclosure: file.disclosure,
            knowledge_paths: KnowledgePaths(file.knowledge),
            source_file: Some(source_file),
            widget_origins: WidgetOrigins(file.widget_origins),
        },
        workspace: file.workspace,
        path,
        channels,
    })
}

/// serde quotes the offending value (`invalid type: integer `123`, expected
/// a string`); a value may be a secret, so it is dropped from the message.
pub(crate) fn without_values(message: &str) -> String {
    match (message.find("invalid type: "), message.find(", expected")) {
        (Some(start), Some(end)) if start < end => {
            let kind = message[start + 14..end]
                .split_whitespace()
                .next()
                .unwrap_or("value");
            format!(
                "{}invalid type: {kind}{}",
                &message[..start],
                &message[end..]
            )
        }
        _ => message.to_owned(),
    }
}

/// `env:NAME` reads the variable; anything else is the secret itself.
fn resolve_secret(raw: String, env: &HashMap<&str, &str>) -> Result<Secret, String> {
    let value = match raw.strip_prefix("env:") {
        Some(var) => match env.get(var) {
            Some(value) if !value.is_empty() => (*value).to_owned(),
            Some(_) => return Err(format!("environment variable {var} is empty")),
            None => return Err(format!("environment variable {var} is not set")),
        },
        None => raw,
    };
    if value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(Secret::new(value))
}

fn check_slug(slug: &str) -> Result<(), String> {
    let ok = !slug.is_empty()
        && slug.len() <= 64
        && slug.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(
            "must be 1-64 characters of a-z, 0-9, `-` and `_`, starting with a letter or digit"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join(name), text).expect("write");
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const TELEGRAM: &str = r#"
workspace = "acme"
name = "support"
system_prompt = "You help."
[[channels]]
kind = "telegram"
id = "acme-tg"
bot_token = "env:TG_TOKEN"
secret_token = "s3cret-token"
"#;

    #[test]
    fn missing_directory_means_no_bots() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(
            load_dir(&dir.path().join("nope"), &[])
                .expect("ok")
                .is_empty()
        );
    }

    #[test]
    fn env_secrets_are_resolved_and_missing_ones_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "acme.toml", TELEGRAM);
        let loaded = load_dir(dir.path(), &env(&[("TG_TOKEN", "123:abc")])).expect("load");
        let channel = &loaded[0].channels[0];
        assert_eq!(channel.external_id.as_deref(), Some("123"));
        assert_eq!(channel.credentials["bot_token"].expose(), "123:abc");

        let err = load_dir(dir.path(), &[]).expect_err("missing var");
        let msg = err.to_string();
        assert!(
            msg.ends_with(
                "acme.toml: `channels[0].bot_token`: environment variable TG_TOKEN is not set"
            ),
            "{msg}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "a.toml",
            "workspace = \"acme\"\nname = \"b\"\nsystem_prompt = \"x\"\n[handoff]\nmin_confidance = 0.5\n",
        );
        let err = load_dir(dir.path(), &[]).expect_err("typo");
        assert!(
            err.to_string()
                .ends_with("a.toml: unknown key `handoff.min_confidance`"),
            "{err}"
        );

        write(
            dir.path(),
            "a.toml",
            "workspace = \"acme\"\nname = \"b\"\nsystem_prompt = \"x\"\nlanguage = \"xx\"\n",
        );
        let err = load_dir(dir.path(), &[]).expect_err("language");
        assert!(
            err.to_string()
                .contains("a.toml: `language`: unsupported language `xx`"),
            "{err}"
        );

        write(
            dir.path(),
            "a.toml",
            "workspace = \"acme\"\nname = \"b\"\nsystem_prompt = \"x\"\n[handoff]\non_unknown = \"shrug\"\n",
        );
        let err = load_dir(dir.path(), &[]).expect_err("policy");
        assert!(
            err.to_string()
                .contains("a.toml: `handoff.on_unknown`: unknown variant `shrug`"),
            "{err}"
        );

        write(
            dir.path(),
            "a.toml",
            "workspace = \"acme\"\nname = \"b\"\nsystem_prompt = \"x\"\n[handoff]\nmin_confidence = \"high\"\n",
        );
        let err = load_dir(dir.path(), &[]).expect_err("type");
        assert!(
            err.to_string()
                .contains("a.toml: `handoff.min_confidence`: invalid type"),
            "{err}"
        );

        write(dir.path(), "a.toml", "workspace = \"acme\"\nname = \n");
        let err = load_dir(dir.path(), &[]).expect_err("syntax");
        assert!(err.to_string().contains("(line 2, column"), "{err}");
    }

    #[test]
    fn channel_typos_are_caught_and_values_never_echoed() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "a.toml",
            &TELEGRAM.replace("secret_token = ", "page_id = \"1\"\nsecret_token = "),
        );
        let err = load_dir(dir.path(), &env(&[("TG_TOKEN", "123:abc")])).expect_err("unknown key");
        assert!(err.to_string().contains("page_id"), "{err}");

        write(
            dir.path(),
            "a.toml",
            &TELEGRAM.replace("\"s3cret-token\"", "123456789"),
        );
        let err = load_dir(dir.path(), &env(&[("TG_TOKEN", "123:abc")])).expect_err("type");
        let msg = err.to_string();
        assert!(msg.contains("invalid type: integer"), "{msg}");
        assert!(!msg.contains("123456789"), "{msg}");
    }

    #[test]
    fn duplicate_channel_ids_across_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "a.toml", TELEGRAM);
        write(
            dir.path(),
            "b.toml",
            &TELEGRAM
                .replace("\"support\"", "\"sales\"")
                .replace("123", "456"),
        );
        let err = load_dir(dir.path(), &env(&[("TG_TOKEN", "123:abc")])).expect_err("dup");
        assert!(
            err.to_string()
                .contains("channel id `acme-tg` is already declared in"),
            "{err}"
        );
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "acme.toml", TELEGRAM);
        let loaded = load_dir(dir.path(), &env(&[("TG_TOKEN", "123:very-secret")])).expect("load");
        let debug = format!("{loaded:?}");
        assert!(
            !debug.contains("very-secret") && !debug.contains("s3cret-token"),
            "{debug}"
        );
    }
}
