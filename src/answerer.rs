//! Answering: from a customer's question to streamed paragraphs, or a
//! handoff to a person.
//!
//! [`Answerer::answer`] runs one question: the customer asked for a person?
//! → hybrid retrieval over the bot's knowledge → below `min_confidence`, the
//! bot's `on_unknown` policy → otherwise generation ([`extractive`] or an
//! OpenAI-compatible server through [`llm`]) → the model's output cleaned
//! ([`stream::MarkupFilter`]) and cut into paragraphs
//! ([`stream::ParagraphBuffer`]), each sent as soon as it is complete. The
//! [`Answer`] says what happened: sources, confidence, draft, handoff.
//!
//! The same function serves the worker ([`Answerer`] is its
//! [`Responder`](crate::worker::Responder)) and `frontdesk ask`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use knowledge::index::Retriever;
use serde_json::json;
use tokio::sync::mpsc;

use crate::app::App;
use crate::config::LlmProvider;
use crate::handoff::{Reason, Request, Source};
use crate::kb::Found;
use crate::worker::{BoxFuture, Replies, Reply, Responder, TurnInput, Verdict};
use answer::llm::{ChatMessage, ChatRequest, ClientOptions, LlmClient, LlmError};
use answer::phrases::HumanPhrases;
use answer::prompt::{Past, Reference};
use answer::stream::{InfoStatus, MarkupFilter, ParagraphBuffer};
use answer::triage::{self, Triage};
use broker::Broker;
use store::models::bot::{Bot, HandoffPolicy};
use store::models::message::{AuthorKind, Direction, Message};

/// Topic on which bot changes are announced, so every node drops its copy.
pub const BOT_CHANGES_TOPIC: &str = "bots.changed";

/// Announced on [`BOT_CHANGES_TOPIC`] when any number of bots changed.
pub const ALL_BOTS: &str = "*";

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

/// What answering did.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The question.
    pub question: String,
    /// Retrieved passages, best first (`cited`: used by the answer).
    pub sources: Vec<Source>,
    /// Retrieval confidence, 0 to 1.
    pub confidence: f32,
    /// `hybrid` or `bm25_only`.
    pub retriever: String,
    /// `extractive` or `openai`.
    pub provider: &'static str,
    /// The answer as generated, even when it was not sent.
    pub draft: String,
    /// Answer paragraphs went to the customer.
    pub answered: bool,
    /// Answered although retrieval confidence was low (`ai_generate`).
    pub low_confidence: bool,
    /// Hand the conversation to people.
    pub handoff: Option<Request>,
    /// From the start to the first paragraph sent.
    pub first_paragraph: Option<Duration>,
}

/// The answer pipeline of one process.
pub struct Answerer {
    app: App,
    llm: Option<LlmClient>,
    llm_problem: Option<String>,
    phrases: HumanPhrases,
    bots: Mutex<HashMap<String, (Instant, Bot)>>,
}

impl std::fmt::Debug for Answerer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answerer")
            .field("llm", &self.llm)
            .finish_non_exhaustive()
    }
}

impl Answerer {
    /// The pipeline over `app`; the model's API key is read from `env` (the
    /// variable `llm.api_key_env` names).
    pub fn new(app: App, env: &[(String, String)]) -> Answerer {
        let s = &app.settings.llm;
        let (llm, llm_problem) = match s.base_url.as_deref() {
            None => (None, Some("llm.base_url is not set".to_owned())),
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
                match LlmClient::new(options) {
                    Ok(client) => (Some(client), None),
                    Err(e) => {
                        tracing::error!(error = %e, "the language model client cannot be built");
                        (None, Some(e.to_string()))
                    }
                }
            }
        };
        let phrases = HumanPhrases::new(&app.settings.answer.human_phrases);
        Answerer {
            app,
            llm,
            llm_problem,
            phrases,
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

    fn provider(&self, bot: &Bot) -> LlmProvider {
        bot.llm_settings
            .provider
            .unwrap_or(self.app.settings.llm.provider)
    }

    /// Answers `question`, sending paragraphs into `out` as they are ready.
    /// Failures of the model are not errors: the bot's policy applies and
    /// the answer carries a handoff. An error means our own storage failed.
    pub async fn answer(&self, question: Question<'_>, out: &Replies) -> Result<Answer, String> {
        let started = Instant::now();
        let bot = question.bot;
        let settings = &self.app.settings.answer;
        let provider = self.provider(bot);
        let text = question.text.trim().to_owned();
        let asked_for_person = self.phrases.find(&text);
        let (hits, confidence, retriever) = self.retrieve(bot, &text).await;
        let mut sources: Vec<Source> = hits
            .iter()
            .enumerate()
            .map(|(i, h)| Source {
                n: i + 1,
                chunk_id: h.chunk.id.clone(),
                doc_ref: h.chunk.doc_ref.clone(),
                label: label(h),
                score: h.score,
                cited: false,
            })
            .collect();
        let mut answer = Answer {
            question: text.clone(),
            sources: Vec::new(),
            confidence,
            retriever,
            provider: match provider {
                LlmProvider::Extractive => "extractive",
                LlmProvider::Openai => "openai",
            },
            draft: String::new(),
            answered: false,
            low_confidence: false,
            handoff: None,
            first_paragraph: None,
        };
        let metadata = json!({
            "answer": {
                "provider": answer.provider,
                "confidence": confidence,
                "sources": sources.iter().take(3).map(|s| json!({
                    "doc_ref": s.doc_ref, "label": s.label, "score": s.score,
                })).collect::<Vec<_>>(),
            }
        });
        let mut emitter = Emitter {
            out,
            disclosure: (question.first_reply && !settings.disclosure.trim().is_empty())
                .then(|| settings.disclosure.trim().to_owned()),
            metadata: metadata.to_string(),
            started,
            first: None,
            sent: 0,
        };

        let low = hits.is_empty() || f64::from(confidence) < bot.min_confidence;
        let mut reason;
        if let Some(phrase) = asked_for_person {
            reason = Some((
                Reason::CustomerAsked,
                Some(format!("the customer wrote “{phrase}”")),
            ));
            answer.draft = self.extractive_draft(&text, &hits, &mut sources);
        } else if low && bot.handoff_policy != HandoffPolicy::AiGenerate {
            reason = Some((
                Reason::LowConfidence,
                Some(format!(
                    "retrieval confidence {confidence:.2} is below the bot's min_confidence {:.2}",
                    bot.min_confidence
                )),
            ));
            answer.draft = self.extractive_draft(&text, &hits, &mut sources);
        } else {
            answer.low_confidence = low;
            if low {
                emitter.tag_low_confidence();
            }
            let generated = match provider {
                LlmProvider::Extractive => {
                    self.generate_extractive(&text, &hits, &mut sources, &mut emitter)
                        .await
                }
                LlmProvider::Openai => {
                    self.generate_llm(&question, &text, &hits, &mut sources, &mut emitter)
                        .await
                }
            };
            answer.draft = generated.draft;
            answer.answered = emitter.sent > 0;
            reason = generated.problem;
        }
        if out.is_closed() {
            // The worker stopped taking replies (an agent took over).
            reason = None;
        }
        if let Some((reason, detail)) = reason {
            if bot.handoff_policy != HandoffPolicy::SilentHandoff {
                let notice = match reason {
                    Reason::CustomerAsked => settings.handoff_message.trim(),
                    _ if bot.fallback_message.trim().is_empty() => settings.handoff_message.trim(),
                    _ => bot.fallback_message.trim(),
                };
                emitter.metadata = json!({ "notice": reason.as_str() }).to_string();
                emitter.emit(notice.to_owned()).await;
            }
            // The best passage's document section names the topic (an FAQ
            // question does not).
            let topic = hits
                .first()
                .and_then(|h| h.chunk.heading_path.split('›').next())
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            let triage = self
                .triage(bot, &question.history, &text, topic.as_deref())
                .await;
            answer.handoff = Some(Request {
                reason,
                detail,
                question: text.clone(),
                draft: answer.draft.clone(),
                sources: sources.clone(),
                confidence,
                triage,
                requested_by: None,
            });
        }
        let outcome = if out.is_closed() {
            // Cut short (an agent took over, the turn lost its lock).
            "interrupted"
        } else if answer.handoff.is_some() {
            "handoff"
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
        if let Some(first) = emitter.first {
            self.app
                .metrics
                .first_paragraph_seconds
                .observe(first.as_secs_f64());
        }
        answer.first_paragraph = emitter.first;
        answer.sources = sources;
        Ok(answer)
    }

    /// Retrieval; a failing index is logged and answers nothing (the
    /// policy for unknown applies).
    async fn retrieve(&self, bot: &Bot, text: &str) -> (Vec<Found>, f32, String) {
        if text.is_empty() {
            return (Vec::new(), 0.0, "none".into());
        }
        let limit = self.app.settings.answer.passages.max(1);
        match self
            .app
            .knowledge
            .search(&self.app.db, bot, text, limit, Retriever::Hybrid)
            .await
        {
            Ok(found) => (
                found.hits,
                found.confidence,
                found.retriever.as_str().to_owned(),
            ),
            Err(error) => {
                tracing::error!(bot = %bot.name, %error, "knowledge search failed; the bot cannot answer");
                (Vec::new(), 0.0, "failed".into())
            }
        }
    }

    /// What the extractive answerer would say, for an agent's draft.
    fn extractive_draft(&self, text: &str, hits: &[Found], sources: &mut [Source]) -> String {
        let passages: Vec<answer::extractive::Passage<'_>> = hits.iter().map(passage).collect();
        match answer::extractive::compose(text, &passages) {
            Some(composed) => {
                for i in composed.used {
                    if let Some(s) = sources.get_mut(i) {
                        s.cited = true;
                    }
                }
                composed.text
            }
            None => String::new(),
        }
    }

    async fn generate_extractive(
        &self,
        text: &str,
        hits: &[Found],
        sources: &mut [Source],
        emitter: &mut Emitter<'_>,
    ) -> Generated {
        let draft = self.extractive_draft(text, hits, sources);
        if draft.is_empty() {
            return Generated {
                draft,
                problem: Some((
                    Reason::NoInformation,
                    Some("no passage to answer from".into()),
                )),
            };
        }
        let max = self.app.settings.answer.max_paragraph_chars;
        let mut paragraphs = answer::stream::paragraphs_of(&draft, max);
        if let Some(last) = paragraphs.last_mut() {
            last.push_str(&citation_line(sources));
        }
        for paragraph in paragraphs {
            if !emitter.emit(paragraph).await {
                break;
            }
        }
        Generated {
            draft,
            problem: None,
        }
    }

    async fn generate_llm(
        &self,
        question: &Question<'_>,
        text: &str,
        hits: &[Found],
        sources: &mut [Source],
        emitter: &mut Emitter<'_>,
    ) -> Generated {
        let failed = |detail: String| Generated {
            draft: String::new(),
            problem: Some((Reason::GenerationFailed, Some(detail))),
        };
        let Some(client) = self.llm.clone() else {
            return failed(format!(
                "the bot uses the openai provider but {}",
                self.llm_problem
                    .as_deref()
                    .unwrap_or("no model server is configured")
            ));
        };
        let bot = question.bot;
        let llm = &self.app.settings.llm;
        let Some(model) = bot.llm_settings.model.clone().or_else(|| llm.model.clone()) else {
            return failed("no model name: set llm.model or the bot's [llm] model".into());
        };
        let references: Vec<Reference> = hits
            .iter()
            .map(|h| Reference {
                label: label(h),
                text: h.chunk.body.clone(),
            })
            .collect();
        let system = answer::prompt::system(&bot.system_prompt);
        let request = ChatRequest {
            model,
            messages: answer::prompt::messages(
                &bot.system_prompt,
                &question.history,
                &references,
                text,
            ),
            temperature: Some(bot.llm_settings.temperature.unwrap_or(llm.temperature)),
            max_tokens: Some(bot.llm_settings.max_tokens.unwrap_or(llm.max_tokens)),
        };
        let (tx, mut rx) = mpsc::channel::<String>(64);
        let call = tokio::spawn(async move { client.stream(&request, tx).await });
        let mut filter = MarkupFilter::new();
        let mut buffer = ParagraphBuffer::new(self.app.settings.answer.max_paragraph_chars);
        let mut draft = String::new();
        let mut problem: Option<(Reason, Option<String>)> = None;
        let check = |paragraph: &str, filter: &MarkupFilter| -> Option<(Reason, Option<String>)> {
            if answer::prompt::leaks(&system, paragraph) {
                Some((
                    Reason::UnsafeOutput,
                    Some("the model's answer quoted its instructions; not sent".into()),
                ))
            } else if filter.status() == Some(InfoStatus::Lacking) {
                Some((
                    Reason::NoInformation,
                    Some("the model said the documents do not hold the answer".into()),
                ))
            } else {
                None
            }
        };
        while let Some(token) = rx.recv().await {
            let clean = filter.push(&token);
            draft.push_str(&clean);
            for paragraph in buffer.push(&clean) {
                if problem.is_some() {
                    continue;
                }
                problem = check(&paragraph, &filter);
                if problem.is_none() && !emitter.emit(paragraph).await {
                    // No one takes replies any more: stop the model.
                    drop(rx);
                    let _ = call.await;
                    return Generated {
                        draft,
                        problem: None,
                    };
                }
            }
            if problem.is_some() {
                // Stop reading: nothing more will be sent.
                break;
            }
        }
        drop(rx);
        let ended = call
            .await
            .unwrap_or_else(|e| Err(LlmError::Connect(format!("the model call stopped: {e}"))));
        let rest = filter.finish();
        draft.push_str(&rest);
        if problem.is_none() {
            match ended {
                Err(error) => {
                    tracing::warn!(bot = %bot.name, %error, "the model failed; the handoff policy applies");
                    problem = Some((Reason::GenerationFailed, Some(error.to_string())));
                }
                Ok(_) => {
                    let mut tail: Vec<String> = buffer.push(&rest);
                    tail.extend(buffer.finish());
                    for s in sources.iter_mut() {
                        s.cited = filter.citations().contains(&s.n);
                    }
                    if !sources.iter().any(|s| s.cited)
                        && let Some(top) = sources.first_mut()
                    {
                        top.cited = true;
                    }
                    if !filter.saw_output() && filter.status() != Some(InfoStatus::Lacking) {
                        problem =
                            Some((Reason::GenerationFailed, Some(LlmError::Empty.to_string())));
                    }
                    let count = tail.len();
                    for (i, mut paragraph) in tail.into_iter().enumerate() {
                        if problem.is_some() {
                            break;
                        }
                        problem = check(&paragraph, &filter);
                        if problem.is_some() {
                            break;
                        }
                        if i + 1 == count {
                            paragraph.push_str(&citation_line(sources));
                        }
                        if !emitter.emit(paragraph).await {
                            break;
                        }
                    }
                    if count == 0 && problem.is_none() && emitter.sent > 0 {
                        // The last paragraph went out before the stream
                        // ended (a trailing blank line): the sources follow
                        // on their own.
                        let line = citation_line(sources);
                        emitter.emit(line.trim().to_owned()).await;
                    }
                    if problem.is_none() && filter.status() == Some(InfoStatus::Lacking) {
                        problem = check("", &filter);
                    }
                }
            }
        }
        Generated {
            draft: draft.trim().to_owned(),
            problem,
        }
    }

    /// Triage for a handoff: the model's when one is configured and up,
    /// else the rules'.
    async fn triage(&self, bot: &Bot, history: &[Past], text: &str, topic: Option<&str>) -> Triage {
        let rules = || triage::by_rules(text, topic);
        let (LlmProvider::Openai, Some(client)) = (self.provider(bot), &self.llm) else {
            return rules();
        };
        if client.breaker_open() {
            return rules();
        }
        let Some(model) = bot
            .llm_settings
            .model
            .clone()
            .or_else(|| self.app.settings.llm.model.clone())
        else {
            return rules();
        };
        let mut conversation = String::new();
        for past in history.iter().rev().take(6).rev() {
            let who = if past.from_customer {
                "Customer"
            } else {
                "Support"
            };
            conversation.push_str(&format!("{who}: {}\n", answer::prompt::quote(&past.text)));
        }
        conversation.push_str(&format!("Customer: {}", answer::prompt::quote(text)));
        let request = ChatRequest {
            model,
            messages: vec![
                ChatMessage::system(triage::PROMPT),
                ChatMessage::user(format!("<conversation>\n{conversation}\n</conversation>")),
            ],
            temperature: Some(0.0),
            max_tokens: Some(80),
        };
        let timeout =
            Duration::from_secs(self.app.settings.llm.first_token_timeout_secs.clamp(1, 15));
        match tokio::time::timeout(timeout, client.complete(&request)).await {
            Ok(Ok(reply)) => triage::parse_model(&reply).unwrap_or_else(rules),
            _ => rules(),
        }
    }
}

/// What generation produced.
struct Generated {
    draft: String,
    problem: Option<(Reason, Option<String>)>,
}

/// Sends paragraphs, opening the first with the disclosure.
struct Emitter<'a> {
    out: &'a Replies,
    disclosure: Option<String>,
    metadata: String,
    started: Instant,
    first: Option<Duration>,
    sent: usize,
}

impl Emitter<'_> {
    /// Sends one paragraph; `false` when no one takes replies any more.
    async fn emit(&mut self, text: String) -> bool {
        let text = text.trim();
        if text.is_empty() {
            return true;
        }
        let text = match self.disclosure.take() {
            Some(disclosure) => format!("{disclosure}\n\n{text}"),
            None => text.to_owned(),
        };
        let ok = self
            .out
            .send(Reply {
                text,
                metadata: Some(self.metadata.clone()),
            })
            .await;
        if ok {
            self.sent += 1;
            self.first.get_or_insert_with(|| self.started.elapsed());
        }
        ok
    }

    fn tag_low_confidence(&mut self) {
        if let Ok(mut value) = serde_json::from_str::<serde_json::Value>(&self.metadata) {
            value["answer"]["low_confidence"] = json!(true);
            self.metadata = value.to_string();
        }
    }
}

fn passage(hit: &Found) -> answer::extractive::Passage<'_> {
    answer::extractive::Passage {
        faq: hit.chunk.kind == "faq",
        body: &hit.chunk.body,
    }
}

/// Where a passage comes from, for people: the FAQ question, else the
/// section headings, else the document.
fn label(hit: &Found) -> String {
    let chunk = &hit.chunk;
    match (&chunk.title, chunk.heading_path.trim()) {
        (Some(question), _) if chunk.kind == "faq" => question.clone(),
        (_, headings) if !headings.is_empty() => headings.to_owned(),
        _ => chunk.doc_ref.clone(),
    }
}

/// `\n\nSource: …` naming the cited passages (at most two), or nothing.
fn citation_line(sources: &[Source]) -> String {
    let mut labels: Vec<&str> = Vec::new();
    for s in sources.iter().filter(|s| s.cited) {
        if !labels.contains(&s.label.as_str()) {
            labels.push(&s.label);
        }
    }
    labels.truncate(2);
    match labels.len() {
        0 => String::new(),
        1 => format!("\n\nSource: {}", labels[0]),
        _ => format!("\n\nSources: {}", labels.join("; ")),
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
            let answer = self
                .answer(
                    Question {
                        bot: &bot,
                        text,
                        history,
                        first_reply: turn.first_reply,
                    },
                    &out,
                )
                .await?;
            Ok(Verdict {
                handoff: answer.handoff,
            })
        })
    }
}
