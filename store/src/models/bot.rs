//! Bots: an assistant of a workspace, with its prompt, language, generation
//! settings and handoff policy.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use knowledge::Language;
use serde::{Deserialize, Serialize};

use super::text_enum;
use crate::db::{DbConn, DbError, new_id, now};
use crate::db_run;
use crate::schema::bots;

/// Answer generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmProvider {
    /// Composes answers from the best passages, offline.
    Extractive,
    /// An OpenAI-compatible `/v1/chat/completions` server.
    Openai,
}

text_enum! {
    /// What the bot does when it does not know enough to answer.
    pub enum HandoffPolicy {
        /// Send the bot's fallback message, then hand off.
        FallbackMessage = "fallback_message",
        /// Answer anyway, flagged low-confidence.
        AiGenerate = "ai_generate",
        /// Send nothing, hand off.
        SilentHandoff = "silent_handoff",
    }
}

/// Per-bot generation settings; unset fields fall back to `[llm]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotLlm {
    /// `extractive` or `openai`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<LlmProvider>,
    /// Model name for `openai`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Sampling temperature, 0 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Longest answer, in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

impl TryFrom<String> for BotLlm {
    type Error = serde_json::Error;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        serde_json::from_str(&s)
    }
}

/// Files and folders a bot's knowledge is ingested from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KnowledgePaths(pub Vec<String>);

impl TryFrom<String> for KnowledgePaths {
    type Error = serde_json::Error;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        serde_json::from_str(&s)
    }
}

/// The web origins (`https://shop.example`) whose pages may open a bot's
/// chat widget; empty: any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WidgetOrigins(pub Vec<String>);

impl TryFrom<String> for WidgetOrigins {
    type Error = serde_json::Error;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        serde_json::from_str(&s)
    }
}

impl WidgetOrigins {
    /// Whether a page of `origin` (the `Origin` header) may open the widget.
    pub fn allow(&self, origin: Option<&str>) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let Some(origin) = origin else {
            return false;
        };
        let origin = origin.trim().trim_end_matches('/');
        self.0
            .iter()
            .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }

    /// Why `origin` is not a web origin, if it is not.
    pub fn problem(origin: &str) -> Option<String> {
        let Some((scheme, host)) = origin.split_once("://") else {
            return Some(format!(
                "`{origin}` is not an origin like https://shop.example"
            ));
        };
        let host = host.trim_end_matches('/');
        if !matches!(scheme, "http" | "https") {
            return Some(format!("`{origin}`: the scheme must be http or https"));
        }
        if host.is_empty() || host.contains(['/', '?', '#', ' ', '@']) {
            return Some(format!(
                "`{origin}`: an origin is scheme://host[:port], without a path"
            ));
        }
        None
    }
}

/// A bot.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize)]
#[diesel(table_name = bots)]
pub struct Bot {
    /// UUID.
    pub id: String,
    /// Owning workspace.
    pub workspace_id: String,
    /// Unique within the workspace.
    pub name: String,
    /// Instructions for the model.
    pub system_prompt: String,
    /// Language of the bot's knowledge (selects the full-text analyzer).
    #[diesel(deserialize_as = String)]
    #[serde(serialize_with = "serialize_display")]
    pub language: Language,
    /// Generation settings.
    #[diesel(deserialize_as = String)]
    pub llm_settings: BotLlm,
    /// What to do when the bot does not know.
    pub handoff_policy: HandoffPolicy,
    /// Below this retrieval confidence the bot does not answer on its own.
    pub min_confidence: f64,
    /// Sent by the `fallback_message` policy.
    pub fallback_message: String,
    /// Opens the bot's first reply in a conversation; `None`: the server's
    /// `answer.disclosure`, empty: none.
    pub disclosure: Option<String>,
    /// Knowledge sources ingested at start.
    #[diesel(deserialize_as = String)]
    pub knowledge_paths: KnowledgePaths,
    /// The bot file that manages this bot; `None` when managed by the API.
    pub source_file: Option<String>,
    /// Pages that may open the chat widget; empty: any.
    #[diesel(deserialize_as = String)]
    pub widget_origins: WidgetOrigins,
    /// Created.
    pub created_at: NaiveDateTime,
    /// Last changed.
    pub updated_at: NaiveDateTime,
}

fn to_json(value: &impl Serialize) -> Result<String, DbError> {
    serde_json::to_string(value)
        .map_err(|e| DbError::Query(diesel::result::Error::SerializationError(Box::new(e))))
}

fn serialize_display<S: serde::Serializer>(
    value: &Language,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Everything that defines a bot, as a bot file or the API gives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BotSpec {
    /// Owning workspace.
    pub workspace_id: String,
    /// Name, unique in the workspace.
    pub name: String,
    /// Instructions for the model.
    pub system_prompt: String,
    /// Knowledge language.
    #[serde(serialize_with = "serialize_display")]
    pub language: Language,
    /// Generation settings.
    pub llm_settings: BotLlm,
    /// Handoff policy.
    pub handoff_policy: HandoffPolicy,
    /// Confidence threshold, 0 to 1.
    pub min_confidence: f64,
    /// Fallback text.
    pub fallback_message: String,
    /// The bot's own disclosure; `None`: the server's.
    pub disclosure: Option<String>,
    /// Knowledge sources.
    pub knowledge_paths: KnowledgePaths,
    /// Managing bot file.
    pub source_file: Option<String>,
    /// Pages that may open the chat widget; empty: any.
    pub widget_origins: WidgetOrigins,
}

/// What an upsert did.
#[derive(Debug, Clone, PartialEq)]
pub enum Upserted<T> {
    /// Inserted.
    Created(T),
    /// Changed; holds the row before.
    Updated {
        /// Before.
        before: T,
        /// After.
        after: T,
    },
    /// Already as specified.
    Unchanged(T),
}

impl<T> Upserted<T> {
    /// The row as it is now.
    pub fn row(&self) -> &T {
        match self {
            Self::Created(row) | Self::Unchanged(row) => row,
            Self::Updated { after, .. } => after,
        }
    }
}

impl Bot {
    fn matches(&self, spec: &BotSpec) -> bool {
        self.system_prompt == spec.system_prompt
            && self.language == spec.language
            && self.llm_settings == spec.llm_settings
            && self.handoff_policy == spec.handoff_policy
            && self.min_confidence == spec.min_confidence
            && self.fallback_message == spec.fallback_message
            && self.disclosure == spec.disclosure
            && self.knowledge_paths == spec.knowledge_paths
            && self.source_file == spec.source_file
            && self.widget_origins == spec.widget_origins
    }

    /// Creates the bot `(workspace, name)` or brings it in line with `spec`.
    pub async fn upsert(conn: &mut DbConn, spec: &BotSpec) -> Result<Upserted<Bot>, DbError> {
        let llm = to_json(&spec.llm_settings)?;
        let paths = to_json(&spec.knowledge_paths)?;
        let origins = to_json(&spec.widget_origins)?;
        let at = now();
        let fresh_id = new_id();
        let existing = db_run!(conn: {
            let inserted = diesel::insert_into(bots::table)
                .values((
                    bots::id.eq(&fresh_id),
                    bots::workspace_id.eq(&spec.workspace_id),
                    bots::name.eq(&spec.name),
                    bots::system_prompt.eq(&spec.system_prompt),
                    bots::language.eq(spec.language.code()),
                    bots::llm_settings.eq(&llm),
                    bots::handoff_policy.eq(spec.handoff_policy),
                    bots::min_confidence.eq(spec.min_confidence),
                    bots::fallback_message.eq(&spec.fallback_message),
                    bots::disclosure.eq(&spec.disclosure),
                    bots::knowledge_paths.eq(&paths),
                    bots::source_file.eq(&spec.source_file),
                    bots::widget_origins.eq(&origins),
                    bots::created_at.eq(at),
                    bots::updated_at.eq(at),
                ))
                .on_conflict((bots::workspace_id, bots::name))
                .do_nothing()
                .execute(conn)
                .await?;
            let row = bots::table
                .filter(bots::workspace_id.eq(&spec.workspace_id))
                .filter(bots::name.eq(&spec.name))
                .select(Bot::as_select())
                .first(conn)
                .await?;
            (inserted, row)
        });
        match existing {
            (1, row) if row.id == fresh_id => Ok(Upserted::Created(row)),
            (_, row) if row.matches(spec) => Ok(Upserted::Unchanged(row)),
            (_, before) => {
                let after = db_run!(conn: {
                    diesel::update(bots::table.find(&before.id))
                        .set((
                            bots::system_prompt.eq(&spec.system_prompt),
                            bots::language.eq(spec.language.code()),
                            bots::llm_settings.eq(&llm),
                            bots::handoff_policy.eq(spec.handoff_policy),
                            bots::min_confidence.eq(spec.min_confidence),
                            bots::fallback_message.eq(&spec.fallback_message),
                            bots::disclosure.eq(&spec.disclosure),
                            bots::knowledge_paths.eq(&paths),
                            bots::source_file.eq(&spec.source_file),
                            bots::widget_origins.eq(&origins),
                            bots::updated_at.eq(at),
                        ))
                        .returning(Bot::as_returning())
                        .get_result(conn)
                        .await?
                });
                Ok(Upserted::Updated { before, after })
            }
        }
    }

    /// Bots managed by a bot file.
    pub async fn file_managed(conn: &mut DbConn) -> Result<Vec<Bot>, DbError> {
        Ok(db_run!(conn: {
            bots::table
                .filter(bots::source_file.is_not_null())
                .select(Bot::as_select())
                .load(conn)
                .await?
        }))
    }

    /// By id.
    pub async fn find_by_id(conn: &mut DbConn, id: &str) -> Result<Option<Bot>, DbError> {
        Ok(db_run!(conn: {
            bots::table
                .find(id)
                .select(Bot::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }

    /// By workspace and name.
    pub async fn find(
        conn: &mut DbConn,
        workspace_id: &str,
        name: &str,
    ) -> Result<Option<Bot>, DbError> {
        Ok(db_run!(conn: {
            bots::table
                .filter(bots::workspace_id.eq(workspace_id))
                .filter(bots::name.eq(name))
                .select(Bot::as_select())
                .first(conn)
                .await
                .optional()?
        }))
    }

    /// Every bot, by name.
    pub async fn all(conn: &mut DbConn) -> Result<Vec<Bot>, DbError> {
        Ok(db_run!(conn: {
            bots::table
                .order(bots::name)
                .select(Bot::as_select())
                .load(conn)
                .await?
        }))
    }

    /// Bots whose name is `name`, across workspaces (for commands that take
    /// `--bot NAME`; the caller resolves ambiguity).
    pub async fn find_by_name(conn: &mut DbConn, name: &str) -> Result<Vec<Bot>, DbError> {
        Ok(db_run!(conn: {
            bots::table
                .filter(bots::name.eq(name))
                .order(bots::created_at)
                .select(Bot::as_select())
                .load(conn)
                .await?
        }))
    }
}

impl Bot {
    /// The workspace's bots, by name.
    pub async fn in_workspace(conn: &mut DbConn, workspace_id: &str) -> Result<Vec<Bot>, DbError> {
        Ok(db_run!(conn: {
            bots::table
                .filter(bots::workspace_id.eq(workspace_id))
                .order(bots::name)
                .select(Bot::as_select())
                .load(conn)
                .await?
        }))
    }
}
