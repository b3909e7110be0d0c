//! Loading the settings: defaults in code, then `config/frontdesk.toml`,
//! then `--config FILE`, then `FRONTDESK__SECTION__KEY` variables; unknown
//! keys and ill-typed values are errors that name the key and where it came
//! from.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Settings {
    /// The built-in defaults. `env` supplies `XDG_CACHE_HOME` and `HOME` for
    /// the model directory.
    pub fn defaults(env: &[(String, String)]) -> Self {
        let var = |name: &str| {
            env.iter()
                .find(|(k, v)| k == name && !v.is_empty())
                .map(|(_, v)| PathBuf::from(v))
        };
        let cache = var("XDG_CACHE_HOME")
            .or_else(|| var("HOME").map(|home| home.join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"));
        Self {
            data_dir: PathBuf::from("data"),
            server: ServerSettings {
                bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
                workers: 0,
                max_body_bytes: 2 * 1024 * 1024,
                shutdown_timeout_secs: 30,
                trusted_proxies: Vec::new(),
                webhook_queue: 4096,
                public_url: None,
            },
            database: DatabaseSettings {
                url: DatabaseUrl::Sqlite(PathBuf::from("data/frontdesk.db")),
                pool_size: 8,
                connect_timeout_secs: 5,
                sqlite_busy_timeout_ms: 5000,
            },
            redis: RedisSettings {
                url: None,
                key_prefix: "frontdesk".into(),
            },
            security: SecuritySettings::default(),
            bots: BotsSettings {
                dir: PathBuf::from("config/bots"),
            },
            channels: ChannelsSettings {
                telegram: TelegramSettings {
                    api_base: "https://api.telegram.org".into(),
                },
                messenger: MessengerSettings {
                    graph_api_base: "https://graph.facebook.com/v21.0".into(),
                },
                whatsapp: MessengerSettings {
                    graph_api_base: "https://graph.facebook.com/v21.0".into(),
                },
                instagram: MessengerSettings {
                    graph_api_base: "https://graph.facebook.com/v21.0".into(),
                },
                email: EmailSettings {
                    smtp_url: None,
                    max_body_bytes: 32 * 1024 * 1024,
                    max_replies_per_hour: 5,
                },
            },
            embedding: EmbeddingSettings {
                model_dir: cache.join("frontdesk").join("models"),
                auto_install: true,
                rerank: false,
                model: None,
            },
            knowledge: KnowledgeSettings {
                refresh_hours: 24,
                allow_private_urls: false,
                approximate_from: knowledge::index::APPROXIMATE_FROM,
            },
            llm: LlmSettings {
                provider: LlmProvider::Extractive,
                base_url: None,
                model: None,
                api_key_env: None,
                temperature: 0.2,
                max_tokens: 600,
                first_token_timeout_secs: 30,
                idle_timeout_secs: 30,
                timeout_secs: 120,
                retries: 2,
                breaker_failures: 5,
                breaker_cooldown_secs: 30,
                prices: Prices::default(),
            },
            answer: AnswerSettings {
                disclosure: "Hi! I'm an automated assistant: I answer from our help documents, \
                    and a person can take over at any time."
                    .into(),
                handoff_message: "I'm passing your conversation to a colleague, who will reply \
                    here as soon as possible."
                    .into(),
                human_phrases: answer::phrases::DEFAULT_HUMAN_PHRASES
                    .iter()
                    .map(|p| (*p).to_owned())
                    .collect(),
                history_tokens: 1200,
                passages: 4,
                max_paragraph_chars: 1200,
                choices_message: "I found a few answers that might fit. Which one do you mean?"
                    .into(),
                none_of_these: "None of these".into(),
                stale_choice_message: "Sorry, that option is no longer available. Could you \
                    ask your question again in your own words?"
                    .into(),
                max_question_chars: 2000,
            },
            auth: AuthSettings {
                session_ttl_hours: 12,
                login_attempts: 10,
                login_window_secs: 300,
                secure_cookie: false,
                password_checks: 0,
                login_queue: 64,
            },
            realtime: RealtimeSettings {
                replay_limit: 1000,
                retention_days: 7,
                heartbeat_secs: 15,
                max_frame_bytes: 4096,
                chat_messages_per_minute: 20,
                chat_sessions_per_ip_per_minute: 20,
                chat_sessions_per_bot_per_minute: 600,
                chat_messages_per_ip_per_minute: 60,
                chat_messages_per_bot_per_minute: 1200,
            },
            log: LogSettings {
                format: LogFormat::Text,
                filter: "info".into(),
            },
            worker: WorkerSettings {
                concurrency: 4,
                debounce_ms: 800,
                lock_ttl_ms: 30_000,
                reclaim_idle_ms: 60_000,
                max_attempts: 5,
                retry_base_ms: 1000,
                sweep_interval_secs: 30,
            },
        }
    }

    /// Loads the layers: defaults, `config/frontdesk.toml` if it exists
    /// (relative to `cwd`), `explicit` (`--config`, which must exist), then
    /// `FRONTDESK__*` variables from `env`.
    pub fn load(
        cwd: &Path,
        explicit: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let mut layers = Layers::new(&Self::defaults(env))?;
        let default_file = cwd.join(DEFAULT_CONFIG_FILE);
        if default_file.is_file() {
            layers.add_file(
                &default_file,
                &Source::File(PathBuf::from(DEFAULT_CONFIG_FILE)),
            )?;
        }
        if let Some(path) = explicit {
            let resolved = if path.is_absolute() {
                path.to_path_buf()
            } else {
                cwd.join(path)
            };
            if !resolved.is_file() {
                return Err(ConfigError::Missing(path.to_path_buf()));
            }
            layers.add_file(&resolved, &Source::File(path.to_path_buf()))?;
        }
        layers.add_env(env);
        layers.finish()
    }

    /// `data_dir/master.key`, where a generated master key lives.
    pub fn master_key_file(&self) -> PathBuf {
        self.data_dir.join("master.key")
    }
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// A TOML file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("the built-in defaults"),
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

/// Why the configuration could not be loaded. Each names the key and its source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--config` names a file that does not exist.
    #[error("config file {} does not exist", .0.display())]
    Missing(PathBuf),
    /// A file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not valid TOML.
    #[error("{} is not valid TOML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key that Frontdesk does not know.
    #[error("unknown config key `{key}` in {origin}")]
    UnknownKey {
        /// Dotted key path.
        key: String,
        /// Where it was set.
        origin: Source,
    },
    /// A key whose value has the wrong type or form.
    #[error("invalid value for config key `{key}` in {origin}: {message}")]
    Invalid {
        /// Dotted key path.
        key: String,
        /// Where it was set.
        origin: Source,
        /// What is wrong.
        message: String,
    },
}

/// The merged TOML tree plus the origin of every leaf.
struct Layers {
    root: toml::Table,
    origins: BTreeMap<String, Source>,
    /// Raw text of environment values, by variable, for the string retry.
    env_raw: BTreeMap<String, String>,
}

impl Layers {
    fn new(defaults: &Settings) -> Result<Self, ConfigError> {
        let root = toml::Table::try_from(defaults).map_err(|e| ConfigError::Invalid {
            key: String::new(),
            origin: Source::Default,
            message: e.to_string(),
        })?;
        Ok(Self {
            root,
            origins: BTreeMap::new(),
            env_raw: BTreeMap::new(),
        })
    }

    fn add_file(&mut self, path: &Path, source: &Source) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.message().to_owned() + &location(&text, e.span()),
        })?;
        merge(&mut self.root, table, "", source, &mut self.origins);
        Ok(())
    }

    /// `FRONTDESK__A__B=v` sets `a.b`. Values are read as TOML scalars where
    /// they parse as one (`8`, `true`), else as strings; `finish` retries a
    /// value as a string where the key wants one.
    fn add_env(&mut self, env: &[(String, String)]) {
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            self.env_raw.insert(name.clone(), value.clone());
            let value = scalar(value);
            let mut table = toml::Table::new();
            let mut leaf = value;
            for segment in path.iter().skip(1).rev() {
                let mut t = toml::Table::new();
                t.insert(segment.clone(), leaf);
                leaf = toml::Value::Table(t);
            }
            table.insert(path[0].clone(), leaf);
            merge(
                &mut self.root,
                table,
                "",
                &Source::Env(name.clone()),
                &mut self.origins,
            );
        }
    }

    fn source_of(&self, key: &str) -> Source {
        // The longest recorded prefix: a value may have replaced a whole table.
        let mut probe = key;
        loop {
            if let Some(source) = self.origins.get(probe) {
                return source.clone();
            }
            match probe.rfind('.') {
                Some(dot) => probe = &probe[..dot],
                None => break,
            }
        }
        // Or a recorded key below it (a table set where a value belongs).
        self.origins
            .iter()
            .find(|(k, _)| k.starts_with(&format!("{key}.")))
            .map(|(_, s)| s.clone())
            .unwrap_or(Source::Default)
    }

    fn finish(mut self) -> Result<Settings, ConfigError> {
        loop {
            let value = toml::Value::Table(self.root.clone());
            let mut unknown = Vec::new();
            let result: Result<Settings, _> = serde_ignored::deserialize(value, |path| {
                unknown.push(path.to_string());
            });
            if let Some(key) = unknown.into_iter().next() {
                let origin = self.source_of(&key);
                return Err(ConfigError::UnknownKey { key, origin });
            }
            let error = match result {
                Ok(settings) => return self.validated(settings),
                Err(_) => {
                    let value = toml::Value::Table(self.root.clone());
                    match serde_path_to_error::deserialize::<_, Settings>(value) {
                        Ok(settings) => return self.validated(settings),
                        Err(error) => error,
                    }
                }
            };
            let key = error.path().to_string();
            let origin = self.source_of(&key);
            // An env value like `FRONTDESK__LLM__MODEL=7` was read as a number;
            // give it one more chance as the string it was.
            if let Source::Env(var) = &origin
                && self.retry_env_as_string(&key, var)
            {
                continue;
            }
            return Err(ConfigError::Invalid {
                key,
                origin,
                message: error.into_inner().to_string(),
            });
        }
    }

    /// Checks what types alone cannot.
    fn validated(&self, settings: Settings) -> Result<Settings, ConfigError> {
        let w = &settings.worker;
        if w.reclaim_idle_ms <= w.lock_ttl_ms {
            return Err(ConfigError::Invalid {
                key: "worker.reclaim_idle_ms".into(),
                origin: self.source_of("worker.reclaim_idle_ms"),
                message: format!(
                    "must be above worker.lock_ttl_ms ({}), or live turns would be taken over",
                    w.lock_ttl_ms
                ),
            });
        }
        if w.concurrency == 0 || w.max_attempts == 0 {
            let key = if w.concurrency == 0 {
                "worker.concurrency"
            } else {
                "worker.max_attempts"
            };
            return Err(ConfigError::Invalid {
                key: key.into(),
                origin: self.source_of(key),
                message: "must be at least 1".into(),
            });
        }
        if settings.llm.provider == LlmProvider::Openai {
            for (key, value) in [
                ("llm.base_url", &settings.llm.base_url),
                ("llm.model", &settings.llm.model),
            ] {
                if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                    return Err(ConfigError::Invalid {
                        key: key.into(),
                        origin: self.source_of("llm.provider"),
                        message: "must be set when llm.provider is \"openai\"".into(),
                    });
                }
            }
        }
        if let Err((price, message)) = settings.llm.prices.check() {
            let key = format!("llm.prices.{price}");
            return Err(ConfigError::Invalid {
                origin: self.source_of(&key),
                key,
                message,
            });
        }
        if let Some(model) = &settings.embedding.model
            && knowledge::models::embedding_model(model).is_none()
        {
            let known: Vec<&str> = knowledge::models::EMBEDDING_MODELS
                .iter()
                .map(|m| m.id)
                .collect();
            return Err(ConfigError::Invalid {
                key: "embedding.model".into(),
                origin: self.source_of("embedding.model"),
                message: format!(
                    "unknown model `{model}`; known: {}, or leave it out to choose by each bot's language",
                    known.join(", ")
                ),
            });
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&settings.log.filter) {
            return Err(ConfigError::Invalid {
                key: "log.filter".into(),
                origin: self.source_of("log.filter"),
                message: e.to_string(),
            });
        }
        Ok(settings)
    }

    fn retry_env_as_string(&mut self, key: &str, var: &str) -> bool {
        let env_raw = &self.env_raw;
        let mut node = &mut self.root;
        let segments: Vec<&str> = key.split('.').collect();
        let Some((last, parents)) = segments.split_last() else {
            return false;
        };
        for segment in parents {
            match node.get_mut(*segment) {
                Some(toml::Value::Table(t)) => node = t,
                _ => return false,
            }
        }
        match node.get_mut(*last) {
            Some(value) if !value.is_str() && !value.is_table() => {
                // The variable's own text: `1e3` stays `1e3`, not `1000.0`.
                let Some(raw) = env_raw.get(var) else {
                    return false;
                };
                *value = toml::Value::String(raw.clone());
                true
            }
            _ => false,
        }
    }
}

fn scalar(raw: &str) -> toml::Value {
    let parsed: Result<toml::Table, _> = toml::from_str(&format!("v = {raw}"));
    match parsed.ok().and_then(|mut t| t.remove("v")) {
        Some(v @ (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_))) => v,
        _ => toml::Value::String(raw.to_owned()),
    }
}

fn merge(
    into: &mut toml::Table,
    from: toml::Table,
    prefix: &str,
    source: &Source,
    origins: &mut BTreeMap<String, Source>,
) {
    for (key, value) in from {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(incoming)) => {
                merge(existing, incoming, &path, source, origins);
            }
            (_, toml::Value::Table(incoming)) => {
                let mut fresh = toml::Table::new();
                merge(&mut fresh, incoming, &path, source, origins);
                into.insert(key, toml::Value::Table(fresh));
            }
            (_, value) => {
                origins.insert(path, source.clone());
                into.insert(key, value);
            }
        }
    }
}

/// ` (line L, column C)` of a TOML parse error, for messages.
pub(crate) fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return String::new();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!(" (line {line}, column {column})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn dir_with(config: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        if let Some(text) = config {
            std::fs::create_dir_all(dir.path().join("config")).expect("mkdir");
            std::fs::write(dir.path().join(DEFAULT_CONFIG_FILE), text).expect("write");
        }
        dir
    }

    #[test]
    fn defaults_match_the_design() {
        let dir = dir_with(None);
        let s = Settings::load(dir.path(), None, &env(&[("HOME", "/home/ann")])).expect("load");
        assert_eq!(s.server.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(s.database.url.to_string(), "sqlite://data/frontdesk.db");
        assert!(s.redis.url.is_none());
        assert_eq!(s.data_dir, PathBuf::from("data"));
        assert!(s.security.master_key.is_none());
        assert_eq!(s.channels.telegram.api_base, "https://api.telegram.org");
        for graph in [
            &s.channels.messenger,
            &s.channels.whatsapp,
            &s.channels.instagram,
        ] {
            assert_eq!(graph.graph_api_base, "https://graph.facebook.com/v21.0");
        }
        assert!(s.channels.email.smtp_url.is_none());
        assert_eq!(
            s.embedding.model_dir,
            PathBuf::from("/home/ann/.cache/frontdesk/models")
        );
        assert_eq!(s.llm.provider, LlmProvider::Extractive);
        assert_eq!(s.knowledge.refresh_hours, 24);
        assert!(!s.knowledge.allow_private_urls);
        assert_eq!(s.knowledge.approximate_from, 200_000);
    }

    #[test]
    fn xdg_cache_home_is_honoured() {
        let dir = dir_with(None);
        let s = Settings::load(
            dir.path(),
            None,
            &env(&[("HOME", "/home/ann"), ("XDG_CACHE_HOME", "/var/cache/ann")]),
        )
        .expect("load");
        assert_eq!(
            s.embedding.model_dir,
            PathBuf::from("/var/cache/ann/frontdesk/models")
        );
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = dir_with(Some(
            "data_dir = \"from-file\"\n[server]\nbind = \"127.0.0.1:9000\"\nworkers = 3\n",
        ));
        let extra = dir.path().join("extra.toml");
        std::fs::write(&extra, "[server]\nbind = \"127.0.0.1:9001\"\n").expect("write");
        let s = Settings::load(
            dir.path(),
            Some(&extra),
            &env(&[
                ("FRONTDESK__SERVER__WORKERS", "5"),
                ("FRONTDESK__REDIS__URL", "redis://127.0.0.1:6379/2"),
                ("UNRELATED", "x"),
            ]),
        )
        .expect("load");
        assert_eq!(s.data_dir, PathBuf::from("from-file"));
        assert_eq!(s.server.bind.port(), 9001);
        assert_eq!(s.server.workers, 5);
        assert_eq!(
            s.redis.url.map(|u| u.expose().to_owned()),
            Some("redis://127.0.0.1:6379/2".to_owned())
        );
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let dir = dir_with(Some("[server]\nbnd = \"127.0.0.1:1\"\n"));
        let err = Settings::load(dir.path(), None, &[]).expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "unknown config key `server.bnd` in config/frontdesk.toml"
        );
    }

    #[test]
    fn unknown_key_names_the_variable() {
        let dir = dir_with(None);
        let err = Settings::load(dir.path(), None, &env(&[("FRONTDESK__SERVR__BIND", "x")]))
            .expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "unknown config key `servr` in environment variable FRONTDESK__SERVR__BIND"
        );
    }

    #[test]
    fn ill_typed_key_names_key_and_source() {
        let dir = dir_with(Some("[server]\nworkers = \"many\"\n"));
        let err = Settings::load(dir.path(), None, &[]).expect_err("must fail");
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "invalid value for config key `server.workers` in config/frontdesk.toml"
            ),
            "{msg}"
        );

        let err = Settings::load(
            dir.path(),
            None,
            &env(&[("FRONTDESK__DATABASE__URL", "mysql://x")]),
        )
        .expect_err("must fail");
        assert!(
            err.to_string().starts_with(
                "invalid value for config key `database.url` in environment variable FRONTDESK__DATABASE__URL"
            ),
            "{err}"
        );
    }

    #[test]
    fn env_number_is_kept_as_string_where_a_string_is_wanted() {
        let dir = dir_with(None);
        let s = Settings::load(dir.path(), None, &env(&[("FRONTDESK__LLM__MODEL", "7")]))
            .expect("load");
        assert_eq!(s.llm.model.as_deref(), Some("7"));
        let s = Settings::load(dir.path(), None, &env(&[("FRONTDESK__LLM__MODEL", "1e3")]))
            .expect("load");
        assert_eq!(
            s.llm.model.as_deref(),
            Some("1e3"),
            "the variable's own text"
        );
    }

    #[test]
    fn invalid_log_filter_is_refused() {
        let dir = dir_with(Some("[log]\nfilter = \"frontdesk=loud\"\n"));
        let err = Settings::load(dir.path(), None, &[]).expect_err("bad filter");
        assert!(
            err.to_string()
                .starts_with("invalid value for config key `log.filter` in config/frontdesk.toml"),
            "{err}"
        );
    }

    #[test]
    fn public_url_is_checked_and_trimmed() {
        let dir = dir_with(None);
        let load = |value: &str| {
            Settings::load(
                dir.path(),
                None,
                &env(&[("FRONTDESK__SERVER__PUBLIC_URL", value)]),
            )
        };
        let s = load("https://support.example.com/").expect("load");
        assert_eq!(
            s.server.public_url.map(String::from).as_deref(),
            Some("https://support.example.com")
        );
        let s = load("http://10.0.0.5:8080/desk/").expect("load");
        assert_eq!(
            s.server.public_url.map(String::from).as_deref(),
            Some("http://10.0.0.5:8080/desk")
        );
        for bad in [
            "support.example.com",
            "ftp://support.example.com",
            "https://support.example.com/?a=1",
            "https://support.example.com/#top",
            "https://ann:pw@support.example.com",
        ] {
            let err = load(bad).expect_err(bad).to_string();
            assert!(
                err.starts_with(
                    "invalid value for config key `server.public_url` in environment variable FRONTDESK__SERVER__PUBLIC_URL"
                ),
                "{bad}: {err}"
            );
        }
        let s = Settings::load(dir.path(), None, &[]).expect("load");
        assert!(s.server.public_url.is_none(), "unset by default");
    }

    #[test]
    fn model_prices_are_read_and_checked() {
        let dir = dir_with(Some(
            "[llm.prices.\"gpt-4o-mini\"]\nprompt_per_million = 0.15\ncompletion_per_million = 0.6\n\
             [llm.prices.\"llama3.1:8b\"]\nprompt_per_million = 0\ncompletion_per_million = 0\n",
        ));
        let s = Settings::load(dir.path(), None, &[]).expect("load");
        assert_eq!(
            s.llm.prices.0.get("gpt-4o-mini"),
            Some(&ModelPrice {
                prompt_per_million: 0.15,
                completion_per_million: 0.6
            })
        );
        assert_eq!(s.llm.prices.cost("llama3.1:8b", 100, 100), Some(0.0));

        // An environment variable sets one price (names are lowercased).
        let s = Settings::load(
            dir.path(),
            None,
            &env(&[(
                "FRONTDESK__LLM__PRICES__GPT-4O-MINI__COMPLETION_PER_MILLION",
                "0.8",
            )]),
        )
        .expect("load");
        assert_eq!(s.llm.prices.0["gpt-4o-mini"].completion_per_million, 0.8);

        let negative = dir_with(Some(
            "[llm.prices.m]\nprompt_per_million = -0.1\ncompletion_per_million = 0.6\n",
        ));
        let err = Settings::load(negative.path(), None, &[]).expect_err("negative price");
        assert!(
            err.to_string().starts_with(
                "invalid value for config key `llm.prices.m.prompt_per_million` in config/frontdesk.toml"
            ),
            "{err}"
        );
        let typo = dir_with(Some(
            "[llm.prices.m]\nprompt_per_million = 1\ncompletion_per_million = 1\ninput = 2\n",
        ));
        let err = Settings::load(typo.path(), None, &[]).expect_err("unknown key");
        assert_eq!(
            err.to_string(),
            "unknown config key `llm.prices.m.input` in config/frontdesk.toml"
        );
        let half = dir_with(Some("[llm.prices.m]\nprompt_per_million = 1\n"));
        let err = Settings::load(half.path(), None, &[]).expect_err("missing price");
        assert!(err.to_string().contains("completion_per_million"), "{err}");
    }

    #[test]
    fn syntax_error_has_a_location() {
        let dir = dir_with(Some("[server]\nbind = \n"));
        let err = Settings::load(dir.path(), None, &[]).expect_err("must fail");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let dir = dir_with(None);
        let err =
            Settings::load(dir.path(), Some(Path::new("nope.toml")), &[]).expect_err("must fail");
        assert_eq!(err.to_string(), "config file nope.toml does not exist");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/fd"),
            "postgres://app:***@db:5432/fd"
        );
        assert_eq!(redact_url("postgres://app@db/fd"), "postgres://app@db/fd");
        assert_eq!(redact_url("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(
            redact_url("postgres://db/fd?user=app&password=s3cret&sslmode=require"),
            "postgres://db/fd?user=app&password=***&sslmode=require"
        );
        let url = DatabaseUrl::Postgres("postgres://a:s3cret@h/d".into());
        assert!(!format!("{url:?}").contains("s3cret"));
    }

    #[test]
    fn shipped_config_file_loads_and_documents_every_key() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let s = Settings::load(root, None, &[]).expect("shipped config loads");
        assert_eq!(s.server.bind.to_string(), "127.0.0.1:8080");
        let shipped = std::fs::read_to_string(root.join(DEFAULT_CONFIG_FILE)).expect("read");
        let defaults = toml::Table::try_from(Settings::defaults(&[])).expect("table");
        let mut keys = Vec::new();
        collect_keys(&defaults, "", &mut keys);
        keys.extend(
            [
                "redis.url",
                "server.public_url",
                "security.master_key",
                "channels.email.smtp_url",
                "llm.base_url",
                "llm.model",
                "llm.api_key_env",
            ]
            .map(String::from),
        );
        for key in keys {
            let leaf = key.rsplit('.').next().unwrap_or(&key);
            assert!(
                shipped.contains(&format!("{leaf} =")),
                "config/frontdesk.toml does not document `{key}`"
            );
        }
    }

    fn collect_keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (k, v) in table {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) => collect_keys(t, &path, out),
                _ => out.push(path),
            }
        }
    }
}
