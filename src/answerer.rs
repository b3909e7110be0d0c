//! The answer pipeline in the gateway: the `answer` crate's decision over
//! this process's bots, knowledge and conversations.
//!
//! [`Answerer::answer`] loads what the core needs — the bot (cached for
//! 30 s, dropped when any node announces a change on
//! [`BOT_CHANGES_TOPIC`]), the passages of a hybrid search over the bot's
//! knowledge — runs [`answer::Pipeline::answer`], and counts the outcome.
//! The same function serves the worker ([`Answerer`] is its
//! [`Responder`]) and `frontdesk ask`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use answer::llm::{ClientOptions, LlmClient};
use answer::phrases::HumanPhrases;
use answer::prompt::Past;
pub use answer::{Answer, Paragraph};
use answer::{BotProfile, Choice, Generator, OnUnknown, Options, Passage, Pipeline, Retrieval};
use broker::Broker;
use channels::choices::{self, Offer};
use knowledge::index::Retriever;
use serde_json::{Value, json};
use store::models::bot::{Bot, HandoffPolicy, LlmProvider};
use store::models::knowledge::ChunkRow;
use store::models::message::{AuthorKind, Direction, Message};

use crate::context::{ALL_BOTS, App, BOT_CHANGES_TOPIC};
use crate::kb::Found;
use crate::turn::{BoxFuture, Replies, Responder, TurnInput, Verdict};

/// How long a cached bot is trusted without an announcement.
const BOT_TTL: Duration = Duration::from_secs(30);

/// One question to answer.
#[derive(Debug, Clone)]
pub struct Question<'a> {
    /// The bot answering.
    pub bot: &'a Bot,
    /// The customer's new text (a burst of messages, joined).
    pub text: String,
    /// The conversation before it, oldest first, within the token budget.
    pub history: Vec<Past>,
    /// The bot's first reply in the conversation: opens with the disclosure.
    pub first_reply: bool,
}

/// The answer pipeline of one process.
pub struct Answerer {
    app: App,
    pipeline: Pipeline,
    bots: Mutex<HashMap<String, (Instant, Bot)>>,
}

impl std::fmt::Debug for Answerer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answerer")
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}

impl Answerer {
    /// The pipeline over `app`; the model's API key is read from `env` (the
    /// variable `llm.api_key_env` names).
    pub fn new(app: App, env: &[(String, String)]) -> Answerer {
        let s = &app.settings.llm;
        let llm = match s.base_url.as_deref() {
            None => Err("llm.base_url is not set".to_owned()),
            Some(base_url) => {
                let api_key = s.api_key_env.as_deref().and_then(|var| {
                    env.iter()
                        .find(|(k, _)| k == var)
                        .map(|(_, v)| v.trim().to_owned())
                });
                if let (Some(var), None) = (s.api_key_env.as_deref(), &api_key) {
                    tracing::warn!(
                        variable = var,
                        "llm.api_key_env names a variable that is not set; calling the model without a key"
                    );
                }
                let options = ClientOptions {
                    base_url: base_url.to_owned(),
                    api_key,
                    first_token_timeout: Duration::from_secs(s.first_token_timeout_secs),
                    idle_timeout: Duration::from_secs(s.idle_timeout_secs),
                    total_timeout: Duration::from_secs(s.timeout_secs),
                    retries: s.retries,
                    breaker_failures: s.breaker_failures,
                    breaker_cooldown: Duration::from_secs(s.breaker_cooldown_secs),
                    ..ClientOptions::default()
                };
                LlmClient::new(options).map_err(|e| {
                    tracing::error!(error = %e, "the language model client cannot be built");
                    e.to_string()
                })
            }
        };
        let phrases = HumanPhrases::new(&app.settings.answer.human_phrases);
        let options = Options {
            disclosure: app.settings.answer.disclosure.clone(),
            handoff_message: app.settings.answer.handoff_message.clone(),
            max_paragraph_chars: app.settings.answer.max_paragraph_chars,
            triage_timeout: Duration::from_secs(s.first_token_timeout_secs.clamp(1, 15)),
            choices_message: app.settings.answer.choices_message.clone(),
            none_of_these: app.settings.answer.none_of_these.clone(),
        };
        let pipeline = Pipeline::new(llm, phrases, options);
        Answerer {
            app,
            pipeline,
            bots: Mutex::new(HashMap::new()),
        }
    }

    /// Drops cached bots when any node announces a change.
    pub async fn watch_bot_changes(self: &Arc<Self>) {
        let mut changes = match self.app.broker.subscribe(BOT_CHANGES_TOPIC).await {
            Ok(changes) => changes,
            Err(error) => {
                tracing::warn!(%error, "cannot watch bot changes; cached bots expire after 30 s");
                return;
            }
        };
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(bot_id) = changes.recv().await {
                let Some(me) = me.upgrade() else { break };
                me.forget_bot(&bot_id);
            }
        });
    }

    /// Drops the cached copy of a bot ([`ALL_BOTS`]: of every bot).
    pub fn forget_bot(&self, bot_id: &str) {
        if let Ok(mut bots) = self.bots.lock() {
            if bot_id == ALL_BOTS {
                bots.clear();
            } else {
                bots.remove(bot_id);
            }
        }
    }

    /// The bot, from the cache when fresh.
    pub async fn bot(&self, bot_id: &str) -> Result<Option<Bot>, String> {
        if let Ok(bots) = self.bots.lock()
            && let Some((at, bot)) = bots.get(bot_id)
            && at.elapsed() < BOT_TTL
        {
            return Ok(Some(bot.clone()));
        }
        let mut conn = self.app.db.get().await.map_err(|e| e.to_string())?;
        let bot = Bot::find_by_id(&mut conn, bot_id)
            .await
            .map_err(|e| e.to_string())?;
        if let (Some(bot), Ok(mut bots)) = (&bot, self.bots.lock()) {
            bots.insert(bot_id.to_owned(), (Instant::now(), bot.clone()));
        }
        Ok(bot)
    }

    /// The bot as the core sees it: its own settings over `[llm]`.
    fn profile(&self, bot: &Bot) -> BotProfile {
        let llm = &self.app.settings.llm;
        BotProfile {
            name: bot.name.clone(),
            system_prompt: bot.system_prompt.clone(),
            min_confidence: bot.min_confidence,
            on_unknown: match bot.handoff_policy {
                HandoffPolicy::FallbackMessage => OnUnknown::FallbackMessage,
                HandoffPolicy::AiGenerate => OnUnknown::AiGenerate,
                HandoffPolicy::SilentHandoff => OnUnknown::SilentHandoff,
            },
            fallback_message: bot.fallback_message.clone(),
            disclosure: bot.disclosure.clone(),
            generator: match bot.llm_settings.provider.unwrap_or(llm.provider) {
                LlmProvider::Extractive => Generator::Extractive,
                LlmProvider::Openai => Generator::Model,
            },
            model: bot.llm_settings.model.clone().or_else(|| llm.model.clone()),
            temperature: bot.llm_settings.temperature.unwrap_or(llm.temperature),
            max_tokens: bot.llm_settings.max_tokens.unwrap_or(llm.max_tokens),
        }
    }

    /// Answers `question`, sending paragraphs into `out` as they are ready.
    /// Failures of the model or the index are not errors: the bot's policy
    /// applies and the answer carries a handoff.
    pub async fn answer(&self, question: Question<'_>, out: &Replies) -> Answer {
        let question = self.bounded(question);
        let found = self.retrieve(question.bot, question.text.trim()).await;
        self.answer_from(question, found, out).await
    }

    /// `question` with its text cut to `answer.max_question_chars`: a huge
    /// message costs no more retrieval or model time than a long one.
    fn bounded<'q>(&self, mut question: Question<'q>) -> Question<'q> {
        let max = self.app.settings.answer.max_question_chars.max(1);
        if let Some((cut, _)) = question.text.char_indices().nth(max) {
            tracing::info!(
                chars = question.text.chars().count(),
                max,
                "question cut to answer.max_question_chars"
            );
            question.text.truncate(cut);
        }
        question
    }

    /// Answers `question` from passages already chosen.
    async fn answer_from(&self, question: Question<'_>, found: Retrieval, out: &Replies) -> Answer {
        let question = self.bounded(question);
        let profile = self.profile(question.bot);
        let answer = self
            .pipeline
            .answer(
                answer::Question {
                    bot: &profile,
                    text: question.text,
                    history: question.history,
                    first_reply: question.first_reply,
                },
                found,
                &out.0,
            )
            .await;
        let outcome = if out.is_closed() {
            // Cut short (an agent took over, the turn lost its lock).
            "interrupted"
        } else if answer.handoff.is_some() {
            "handoff"
        } else if answer.offer.is_some() {
            "choices"
        } else if answer.low_confidence {
            "low_confidence"
        } else {
            "answered"
        };
        self.app
            .metrics
            .answers
            .with_label_values(&[answer.provider, outcome])
            .inc();
        if let Some(first) = answer.first_paragraph {
            self.app
                .metrics
                .first_paragraph_seconds
                .observe(first.as_secs_f64());
        }
        answer
    }

    /// Retrieval; a failing index is logged and answers nothing (the
    /// policy for unknown applies).
    async fn retrieve(&self, bot: &Bot, text: &str) -> Retrieval {
        if text.is_empty() {
            return Retrieval {
                retriever: "none".into(),
                ..Retrieval::default()
            };
        }
        let limit = self.app.settings.answer.passages.max(1);
        match self
            .app
            .knowledge
            .search(&self.app.db, bot, text, limit, Retriever::Hybrid)
            .await
        {
            Ok(found) => Retrieval {
                passages: found.hits.into_iter().map(passage).collect(),
                confidence: found.confidence,
                retriever: found.retriever.as_str().to_owned(),
                choice: Choice::Asked,
            },
            Err(error) => {
                tracing::error!(bot = %bot.name, %error, "knowledge search failed; the bot cannot answer");
                Retrieval {
                    retriever: "failed".into(),
                    ..Retrieval::default()
                }
            }
        }
    }
}

/// What a customer's button press or typed number picks.
enum Pick {
    /// An option of an offer made in this conversation.
    Made {
        /// The question the offer answered.
        question: String,
        /// Picked one, or none fits.
        choice: Choice,
        /// The picked passage, or every offered one when none fits.
        passages: Vec<Passage>,
    },
    /// Not an option this conversation was offered: an old offer whose
    /// knowledge changed, a number out of range, or a forged payload.
    Stale,
}

impl Answerer {
    /// Whether the turn's newest message picks from an offer: a button of
    /// ours (payload `fd:…`), or a bare number right after an offer.
    async fn pick(&self, bot: &Bot, turn: &TurnInput) -> Result<Option<Pick>, String> {
        let Some(last) = turn.messages.last() else {
            return Ok(None);
        };
        let origin: Value = last
            .metadata
            .as_deref()
            .and_then(|m| serde_json::from_str::<Value>(m).ok())
            .map(|m| m["origin"].clone())
            .unwrap_or_default();
        // What the message would pick, decided from the message alone: most
        // turns are questions and never read the conversation for this.
        enum Wanted<'a> {
            Token(&'a str, usize),
            Position(usize),
        }
        let wanted = match origin["payload"].as_str() {
            Some(payload) => match choices::parse_payload(payload) {
                Some((token, n)) => Wanted::Token(token, n),
                // A button we never made: only Telegram's keyboard buttons
                // are surely ours; other payloads may be a page's own menu.
                None if origin["type"] == "callback" => return Ok(Some(Pick::Stale)),
                None => return Ok(None),
            },
            None => match choices::parse_number(&last.body) {
                Some(position) => Wanted::Position(position),
                None => return Ok(None),
            },
        };
        let mut conn = self.app.db.get().await.map_err(|e| e.to_string())?;
        let earlier = Message::before(&mut conn, &turn.conversation.id, last.seq, 40)
            .await
            .map_err(|e| e.to_string())?;
        let mut bot_messages = earlier
            .iter()
            .rev()
            .filter(|m| m.direction == Direction::Outbound);
        let picked = match wanted {
            Wanted::Token(token, n) => bot_messages
                .filter_map(|m| Offer::from_metadata(m.metadata.as_deref()))
                .find(|o| o.token == token)
                .and_then(|offer| offer.by_number(n).cloned().map(|o| (offer, o))),
            // A number answers only the bot's latest message, and only when
            // that message was an offer.
            Wanted::Position(position) => {
                match bot_messages
                    .next()
                    .and_then(|m| Offer::from_metadata(m.metadata.as_deref()))
                {
                    Some(offer) => offer.at_position(position).cloned().map(|o| (offer, o)),
                    None => return Ok(None),
                }
            }
        };
        let Some((offer, option)) = picked else {
            return Ok(Some(Pick::Stale));
        };
        let wanted: Vec<String> = match &option.chunk_id {
            Some(id) => vec![id.clone()],
            None => offer
                .options
                .iter()
                .filter_map(|o| o.chunk_id.clone())
                .collect(),
        };
        let rows = ChunkRow::texts_by_ids(&mut conn, &bot.id, &wanted)
            .await
            .map_err(|e| e.to_string())?;
        let passages: Vec<Passage> = wanted
            .iter()
            .filter_map(|id| rows.iter().find(|r| &r.id == id))
            .map(|row| {
                passage(Found {
                    chunk: row.clone(),
                    score: 1.0,
                    bm25: None,
                    cosine: None,
                    rerank: None,
                    probability: 1.0,
                })
            })
            .collect();
        if option.chunk_id.is_some() && passages.is_empty() {
            // The knowledge changed since the offer.
            return Ok(Some(Pick::Stale));
        }
        Ok(Some(Pick::Made {
            question: offer.question,
            choice: if option.chunk_id.is_some() {
                Choice::Picked
            } else {
                Choice::NoneFit
            },
            passages,
        }))
    }
}

/// A search hit as the core takes it (moved, not copied: bodies can be long).
fn passage(hit: Found) -> Passage {
    let chunk = hit.chunk;
    Passage {
        faq: chunk.kind == "faq",
        chunk_id: chunk.id,
        doc_ref: chunk.doc_ref,
        title: chunk.title,
        heading_path: chunk.heading_path,
        body: chunk.body,
        score: hit.score,
        probability: hit.probability,
    }
}

/// The conversation before `seq` as the model sees it: the newest messages
/// that fit in `budget` tokens (about four characters each), oldest first.
pub async fn history(
    app: &App,
    conversation_id: &str,
    before_seq: i64,
    budget: usize,
) -> Result<Vec<Past>, String> {
    let mut conn = app.db.get().await.map_err(|e| e.to_string())?;
    let messages = Message::before(&mut conn, conversation_id, before_seq, 40)
        .await
        .map_err(|e| e.to_string())?;
    let mut kept = Vec::new();
    let mut used = 0;
    for m in messages.iter().rev() {
        if m.body.trim().is_empty() || m.author_kind == AuthorKind::System {
            continue;
        }
        let cost = m.body.chars().count() / 4 + 4;
        if used + cost > budget {
            break;
        }
        used += cost;
        kept.push(Past {
            from_customer: m.direction == Direction::Inbound,
            text: m.body.clone(),
        });
    }
    kept.reverse();
    Ok(kept)
}

/// Whether the customer's message is kept without an answer (its origin is
/// [`channels::Origin::Unanswered`]).
fn unanswered(message: &Message) -> bool {
    message
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
        .is_some_and(|m| m["origin"]["type"] == "unanswered")
}

impl Responder for Answerer {
    fn respond<'a>(
        &'a self,
        turn: &'a TurnInput,
        out: Replies,
    ) -> BoxFuture<'a, Result<Verdict, String>> {
        Box::pin(async move {
            let Some(bot) = self.bot(&turn.conversation.bot_id).await? else {
                return Err(format!("bot {} is gone", turn.conversation.bot_id));
            };
            // Stickers and unsupported types are kept for agents, not
            // answered: a turn of only those sends nothing.
            if turn.messages.iter().all(unanswered) {
                tracing::info!(conversation = %turn.conversation.id, "nothing to answer: the customer's messages are kept without an answer");
                return Ok(Verdict::default());
            }
            let first_seq = turn.messages.first().map_or(i64::MAX, |m| m.seq);
            let history = history(
                &self.app,
                &turn.conversation.id,
                first_seq,
                self.app.settings.answer.history_tokens,
            )
            .await?;
            let text = turn
                .messages
                .iter()
                .map(|m| m.body.trim())
                .filter(|b| !b.is_empty())
                .collect::<Vec<_>>()
                .join("\n");
            let question = |text: String| Question {
                bot: &bot,
                text,
                history: history.clone(),
                first_reply: turn.first_reply,
            };
            let answer = match self.pick(&bot, turn).await? {
                None => self.answer(question(text), &out).await,
                Some(Pick::Stale) => {
                    let notice = json!({ "notice": "stale_choice" }).to_string();
                    out.send(Paragraph {
                        text: self.app.settings.answer.stale_choice_message.clone(),
                        metadata: Some(notice),
                    })
                    .await;
                    return Ok(Verdict::default());
                }
                Some(Pick::Made {
                    question: asked,
                    choice,
                    passages,
                }) => {
                    let found = Retrieval {
                        confidence: passages.first().map_or(0.0, |p| p.probability),
                        passages,
                        retriever: "choice".into(),
                        choice,
                    };
                    self.answer_from(question(asked), found, &out).await
                }
            };
            crate::usage::record(&self.app, turn, self.profile(&bot).model, &answer);
            Ok(Verdict {
                handoff: answer.handoff,
            })
        })
    }
}
