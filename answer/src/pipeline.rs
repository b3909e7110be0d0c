//! One question, answered or handed off.
//!
//! [`Pipeline::answer`] runs the decision: the customer asked for a person?
//! → retrieval confidence below the bot's `min_confidence`? → the bot's
//! `on_unknown` policy → otherwise generation ([`extractive`] or a model
//! through [`llm`](crate::llm)) → the model's output cleaned
//! ([`MarkupFilter`]) and cut into paragraphs ([`ParagraphBuffer`]), each
//! sent as soon as it is complete. The [`Answer`] says what happened:
//! sources, confidence, draft, handoff. Retrieval itself is the caller's:
//! it hands in the passages it found.

use std::time::{Duration, Instant};

use channels::choices::{Offer, Offered};
use serde_json::json;
use tokio::sync::mpsc;

use crate::decision::{self, Decision};
use crate::extractive;
use crate::handoff::{Reason, Request, Source};
use crate::input::{BotProfile, Choice, Generator, OnUnknown, Options, Passage, Retrieval};
use crate::llm::{ChatMessage, ChatRequest, LlmClient, LlmError, StreamEnd};
use crate::phrases::HumanPhrases;
use crate::prompt::{self, Past, Reference};
use crate::stream::{self, InfoStatus, MarkupFilter, ParagraphBuffer};
use crate::triage::{self, Triage};
use crate::usage::{ModelCall, Purpose};

/// One message of an answer: a paragraph, with JSON metadata to store
/// beside it (provider, confidence, sources; or the handoff notice).
#[derive(Debug, Clone, PartialEq)]
pub struct Paragraph {
    /// Text.
    pub text: String,
    /// JSON metadata.
    pub metadata: Option<String>,
}

/// One question to answer.
#[derive(Debug, Clone)]
pub struct Question<'a> {
    /// The bot answering.
    pub bot: &'a BotProfile,
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
    /// The "did you mean…" options sent instead of an answer.
    pub offer: Option<Offer>,
    /// Hand the conversation to people.
    pub handoff: Option<Request>,
    /// From the start to the first paragraph sent.
    pub first_paragraph: Option<Duration>,
    /// The requests made to the model, in order (none for extractive
    /// bots).
    pub calls: Vec<ModelCall>,
}

/// The answering core of one process: the model client (when one is
/// configured), the handoff phrases and the options.
pub struct Pipeline {
    llm: Option<LlmClient>,
    llm_problem: Option<String>,
    phrases: HumanPhrases,
    options: Options,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("llm", &self.llm)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// The core over `llm` (or why there is none: said in the handoff of
    /// a bot that needs a model).
    pub fn new(llm: Result<LlmClient, String>, phrases: HumanPhrases, options: Options) -> Self {
        let (llm, llm_problem) = match llm {
            Ok(client) => (Some(client), None),
            Err(problem) => (None, Some(problem)),
        };
        Pipeline {
            llm,
            llm_problem,
            phrases,
            options,
        }
    }

    /// Answers `question` from `found`, sending paragraphs into `out` as
    /// they are ready. Failures of the model are not errors: the bot's
    /// policy applies and the answer carries a handoff.
    pub async fn answer(
        &self,
        question: Question<'_>,
        found: Retrieval,
        out: &mpsc::Sender<Paragraph>,
    ) -> Answer {
        let started = Instant::now();
        let bot = question.bot;
        let settings = &self.options;
        let text = question.text.trim().to_owned();
        let asked_for_person = self.phrases.find(&text);
        let Retrieval {
            passages,
            confidence,
            retriever,
            choice,
        } = found;
        let passages = crate::input::merge_same_answers(passages);
        let mut sources: Vec<Source> = passages
            .iter()
            .enumerate()
            .map(|(i, p)| Source {
                n: i + 1,
                chunk_id: p.chunk_id.clone(),
                doc_ref: p.doc_ref.clone(),
                label: p.label(),
                score: p.score,
                probability: p.probability,
                cited: false,
            })
            .collect();
        let mut answer = Answer {
            question: text.clone(),
            sources: Vec::new(),
            confidence,
            retriever,
            provider: bot.generator.as_str(),
            draft: String::new(),
            answered: false,
            low_confidence: false,
            offer: None,
            handoff: None,
            first_paragraph: None,
            calls: Vec::new(),
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
            disclosure: Some(
                bot.disclosure
                    .as_deref()
                    .unwrap_or(&settings.disclosure)
                    .trim(),
            )
            .filter(|d| question.first_reply && !d.is_empty())
            .map(str::to_owned),
            metadata: metadata.to_string(),
            started,
            first: None,
            sent: 0,
        };

        let probabilities: Vec<f32> = passages.iter().map(|p| p.probability).collect();
        let decided = match choice {
            Choice::Picked if !passages.is_empty() => Decision::Answer,
            Choice::NoneFit => Decision::HandOff,
            _ => decision::decide(&probabilities, bot.min_confidence),
        };
        let low = passages.is_empty() || decided == Decision::HandOff;
        let mut reason;
        if let Some(phrase) = asked_for_person {
            reason = Some((
                Reason::CustomerAsked,
                Some(format!("the customer wrote “{phrase}”")),
            ));
            answer.draft = self.extractive_draft(&text, &passages, &mut sources);
        } else if let Decision::Choose(picks) = &decided {
            reason = None;
            answer.draft = self.extractive_draft(&text, &passages, &mut sources);
            let offer = self.offer(&text, &passages, picks);
            emitter.metadata = json!({
                "answer": { "provider": answer.provider, "confidence": confidence, "decision": "choices" },
                "choices": offer,
            })
            .to_string();
            answer.answered = emitter.emit(settings.choices_message.clone()).await;
            answer.offer = Some(offer);
        } else if choice == Choice::NoneFit {
            reason = Some((
                Reason::LowConfidence,
                Some("the customer said none of the offered answers fits".into()),
            ));
            answer.draft = self.extractive_draft(&text, &passages, &mut sources);
        } else if low && bot.on_unknown != OnUnknown::AiGenerate {
            reason = Some((
                Reason::LowConfidence,
                Some(format!(
                    "retrieval confidence {confidence:.2} is below the bot's min_confidence {:.2}",
                    bot.min_confidence
                )),
            ));
            answer.draft = self.extractive_draft(&text, &passages, &mut sources);
        } else {
            answer.low_confidence = low;
            if low {
                emitter.tag_low_confidence();
            }
            let generated = match bot.generator {
                Generator::Extractive => {
                    self.generate_extractive(&text, &passages, &mut sources, &mut emitter)
                        .await
                }
                Generator::Model => {
                    self.generate_llm(&question, &text, &passages, &mut sources, &mut emitter)
                        .await
                }
            };
            answer.draft = generated.draft;
            answer.answered = emitter.sent > 0;
            answer.calls.extend(generated.call);
            reason = generated.problem;
        }
        if out.is_closed() {
            // The worker stopped taking replies (an agent took over).
            reason = None;
        }
        if let Some((reason, detail)) = reason {
            if bot.on_unknown != OnUnknown::SilentHandoff {
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
            let topic = passages
                .first()
                .and_then(|p| p.heading_path.split('›').next())
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            let (triage, call) = self
                .triage(bot, &question.history, &text, topic.as_deref())
                .await;
            answer.calls.extend(call);
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
        answer.first_paragraph = emitter.first;
        answer.sources = sources;
        answer
    }

    /// The "did you mean…" offer of `picks` (indexes into `passages`),
    /// with "none of these" last. Options with the same label are offered
    /// once.
    fn offer(&self, question: &str, passages: &[Passage], picks: &[usize]) -> Offer {
        let mut options: Vec<Offered> = Vec::new();
        for &i in picks {
            let Some(p) = passages.get(i) else { continue };
            let label = p.choice_label();
            if options.iter().any(|o| o.label == label) {
                continue;
            }
            options.push(Offered {
                n: options.len() + 1,
                label,
                chunk_id: Some(p.chunk_id.clone()),
                doc_ref: Some(p.doc_ref.clone()),
            });
        }
        options.push(Offered {
            n: 0,
            label: self.options.none_of_these.clone(),
            chunk_id: None,
            doc_ref: None,
        });
        Offer {
            token: offer_token(question),
            question: question.to_owned(),
            options,
        }
    }

    /// What the extractive answerer would say, for an agent's draft.
    fn extractive_draft(&self, text: &str, passages: &[Passage], sources: &mut [Source]) -> String {
        let passages: Vec<extractive::Passage<'_>> = passages
            .iter()
            .map(|p| extractive::Passage {
                faq: p.faq,
                body: &p.body,
            })
            .collect();
        match extractive::compose(text, &passages) {
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
        passages: &[Passage],
        sources: &mut [Source],
        emitter: &mut Emitter<'_>,
    ) -> Generated {
        let draft = self.extractive_draft(text, passages, sources);
        if draft.is_empty() {
            return Generated {
                draft,
                problem: Some((
                    Reason::NoInformation,
                    Some("no passage to answer from".into()),
                )),
                call: None,
            };
        }
        let max = self.options.max_paragraph_chars;
        let mut paragraphs = stream::paragraphs_of(&draft, max);
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
            call: None,
        }
    }

    async fn generate_llm(
        &self,
        question: &Question<'_>,
        text: &str,
        passages: &[Passage],
        sources: &mut [Source],
        emitter: &mut Emitter<'_>,
    ) -> Generated {
        let failed = |detail: String| Generated {
            draft: String::new(),
            problem: Some((Reason::GenerationFailed, Some(detail))),
            call: None,
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
        let Some(model) = bot.model.clone() else {
            return failed("no model name: set llm.model or the bot's [llm] model".into());
        };
        // The model sees the plausible candidates only: the best, and those
        // after it until the first the calibration rules out (a prefix, so
        // its citation numbers stay the sources' numbers).
        let references: Vec<Reference> = passages
            .iter()
            .enumerate()
            .take_while(|(i, p)| *i == 0 || p.probability >= decision::FLOOR)
            .map(|(_, p)| Reference {
                label: p.label(),
                text: p.body.clone(),
            })
            .collect();
        let system = prompt::system(&bot.system_prompt);
        let request = ChatRequest {
            model,
            messages: prompt::messages(&bot.system_prompt, &question.history, &references, text),
            temperature: Some(bot.temperature),
            max_tokens: Some(bot.max_tokens),
        };
        let (tx, mut rx) = mpsc::channel::<String>(64);
        // Kept to count the prompt if the server does not.
        let sent = request.messages.clone();
        let model = request.model.clone();
        let started = Instant::now();
        let call = tokio::spawn(async move { client.stream(&request, tx).await });
        let called = |ended: &Result<StreamEnd, LlmError>, received: &str| {
            let ended = ended.as_ref().map(|end| end.usage);
            ModelCall::ended(Purpose::Answer, &model, &sent, started, ended, received)
        };
        let mut received = String::new();
        let mut filter = MarkupFilter::new();
        let mut buffer = ParagraphBuffer::new(self.options.max_paragraph_chars);
        let mut draft = String::new();
        let mut problem: Option<(Reason, Option<String>)> = None;
        let check = |paragraph: &str, filter: &MarkupFilter| -> Option<(Reason, Option<String>)> {
            if prompt::leaks(&system, paragraph) {
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
            received.push_str(&token);
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
                    let ended = call.await.unwrap_or_else(|e| {
                        Err(LlmError::Connect(format!("the model call stopped: {e}")))
                    });
                    return Generated {
                        draft,
                        problem: None,
                        call: Some(called(&ended, &received)),
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
        let model_call = called(&ended, &received);
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
            call: Some(model_call),
        }
    }

    /// Triage for a handoff: the model's when one is configured and up,
    /// else the rules'; with the model call, if one was made.
    async fn triage(
        &self,
        bot: &BotProfile,
        history: &[Past],
        text: &str,
        topic: Option<&str>,
    ) -> (Triage, Option<ModelCall>) {
        let rules = || triage::by_rules(text, topic);
        let (Generator::Model, Some(client)) = (bot.generator, &self.llm) else {
            return (rules(), None);
        };
        if client.breaker_open() {
            return (rules(), None);
        }
        let Some(model) = bot.model.clone() else {
            return (rules(), None);
        };
        let mut conversation = String::new();
        for past in history.iter().rev().take(6).rev() {
            let who = if past.from_customer {
                "Customer"
            } else {
                "Support"
            };
            conversation.push_str(&format!("{who}: {}\n", prompt::quote(&past.text)));
        }
        conversation.push_str(&format!("Customer: {}", prompt::quote(text)));
        let request = ChatRequest {
            model,
            messages: vec![
                ChatMessage::system(triage::PROMPT),
                ChatMessage::user(format!("<conversation>\n{conversation}\n</conversation>")),
            ],
            temperature: Some(0.0),
            max_tokens: Some(80),
        };
        let started = Instant::now();
        let called = |ended, received: &str| {
            let call = ModelCall::ended(
                Purpose::Triage,
                &request.model,
                &request.messages,
                started,
                ended,
                received,
            );
            Some(call)
        };
        match tokio::time::timeout(self.options.triage_timeout, client.complete(&request)).await {
            Ok(Ok(reply)) => (
                triage::parse_model(&reply.text).unwrap_or_else(rules),
                called(Ok(reply.usage), &reply.text),
            ),
            Ok(Err(error)) => (rules(), called(Err(&error), "")),
            // Given up on: the server may still have read the prompt.
            Err(_) => (rules(), called(Ok(None), "")),
        }
    }
}

/// What generation produced.
struct Generated {
    draft: String,
    problem: Option<(Reason, Option<String>)>,
    /// The model call, when one was made.
    call: Option<ModelCall>,
}

/// Sends paragraphs, opening the first with the disclosure.
struct Emitter<'a> {
    out: &'a mpsc::Sender<Paragraph>,
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
            .send(Paragraph {
                text,
                metadata: Some(self.metadata.clone()),
            })
            .await
            .is_ok();
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

/// A fresh token for an offer: 16 hex digits, unique enough to tell the
/// offers of one conversation apart (a tap is only ever matched against its
/// own conversation's offers).
fn offer_token(question: &str) -> String {
    use std::hash::BuildHasher;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let hash = std::collections::hash_map::RandomState::new().hash_one((question, nanos));
    format!("{hash:016x}")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phrases::DEFAULT_HUMAN_PHRASES;

    fn bot(on_unknown: OnUnknown, generator: Generator) -> BotProfile {
        BotProfile {
            name: "shop".into(),
            system_prompt: "You are the shop's assistant.".into(),
            min_confidence: 0.35,
            on_unknown,
            fallback_message: "Let me get a colleague.".into(),
            disclosure: None,
            generator,
            model: Some("m".into()),
            temperature: 0.2,
            max_tokens: 200,
        }
    }

    fn pipeline(llm: Result<LlmClient, String>) -> Pipeline {
        Pipeline::new(
            llm,
            HumanPhrases::new(DEFAULT_HUMAN_PHRASES),
            Options {
                disclosure: "I am a bot.".into(),
                handoff_message: "A person will reply here.".into(),
                max_paragraph_chars: 600,
                triage_timeout: Duration::from_secs(1),
                choices_message: "Which of these do you mean?".into(),
                none_of_these: "None of these".into(),
            },
        )
    }

    fn returns(confidence: f32) -> Retrieval {
        Retrieval {
            passages: vec![Passage {
                chunk_id: "c1".into(),
                doc_ref: "policies.md".into(),
                faq: false,
                title: None,
                heading_path: "Returns › Bikes".into(),
                body: "You can return a bike within 30 days of delivery. Refunds take five days."
                    .into(),
                score: 0.8,
                probability: confidence,
            }],
            confidence,
            retriever: "hybrid".into(),
            choice: Choice::Asked,
        }
    }

    #[tokio::test]
    async fn close_candidates_are_offered_as_choices_and_a_pick_is_answered() {
        let p = pipeline(Err("no model".into()));
        let bot = bot(OnUnknown::FallbackMessage, Generator::Extractive);
        let mut found = returns(0.4);
        found.passages.push(Passage {
            chunk_id: "c2".into(),
            doc_ref: "faq.csv#7".into(),
            faq: true,
            title: Some("Can I exchange a bike for another size?".into()),
            body: "Yes, exchanges are free within 30 days.".into(),
            score: 0.78,
            probability: 0.35,
            ..Passage::default()
        });
        let (answer, sent) = ask(&p, &bot, "Can I bring my bike back?", found.clone()).await;
        assert!(answer.handoff.is_none(), "{answer:?}");
        let offer = answer.offer.expect("an offer");
        let labels: Vec<&str> = offer.options.iter().map(|o| o.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "Bikes",
                "Can I exchange a bike for another size?",
                "None of these"
            ]
        );
        assert_eq!(offer.question, "Can I bring my bike back?");
        assert_eq!(sent.len(), 1);
        assert!(
            sent[0].text.ends_with("Which of these do you mean?"),
            "{sent:?}"
        );
        let stored = Offer::from_metadata(sent[0].metadata.as_deref()).expect("stored offer");
        assert_eq!(stored, offer);

        // The customer picks the second: answered from it alone.
        let picked = Retrieval {
            passages: vec![found.passages[1].clone()],
            choice: Choice::Picked,
            ..found.clone()
        };
        let (answer, sent) = ask(&p, &bot, &offer.question, picked).await;
        assert!(answer.answered && answer.offer.is_none() && answer.handoff.is_none());
        let text = &sent.last().expect("answer").text;
        assert!(text.contains("exchanges are free"), "{text}");
        assert!(
            text.ends_with("Source: Can I exchange a bike for another size?"),
            "{text}"
        );

        // "None of these": handed off with the offered answers as the draft.
        let declined = Retrieval {
            choice: Choice::NoneFit,
            ..found
        };
        let (answer, sent) = ask(&p, &bot, &offer.question, declined).await;
        let handoff = answer.handoff.expect("a handoff");
        assert_eq!(handoff.reason, Reason::LowConfidence);
        assert!(
            handoff
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("none of the offered"))
        );
        assert!(
            sent[0].text.ends_with("Let me get a colleague."),
            "{sent:?}"
        );
    }

    async fn ask(
        pipeline: &Pipeline,
        bot: &BotProfile,
        text: &str,
        found: Retrieval,
    ) -> (Answer, Vec<Paragraph>) {
        let (tx, mut rx) = mpsc::channel(16);
        let question = Question {
            bot,
            text: text.into(),
            history: Vec::new(),
            first_reply: true,
        };
        let answer = pipeline.answer(question, found, &tx).await;
        drop(tx);
        let mut sent = Vec::new();
        while let Some(p) = rx.recv().await {
            sent.push(p);
        }
        (answer, sent)
    }

    #[tokio::test]
    async fn a_confident_extractive_answer_opens_with_the_disclosure_and_cites() {
        let p = pipeline(Err("no model".into()));
        let bot = bot(OnUnknown::FallbackMessage, Generator::Extractive);
        let (answer, sent) = ask(
            &p,
            &bot,
            "How long do I have to return a bike?",
            returns(0.8),
        )
        .await;
        assert!(answer.answered && answer.handoff.is_none(), "{answer:?}");
        assert!(sent[0].text.starts_with("I am a bot.\n\n"), "{sent:?}");
        assert!(sent[0].text.contains("30 days"));
        assert!(
            sent.last()
                .is_some_and(|p| p.text.ends_with("Source: Returns › Bikes"))
        );
        assert!(answer.sources[0].cited);

        // A bot's own disclosure wins; an empty one says nothing.
        let mut own = bot.clone();
        own.disclosure = Some("Bonjour, je suis un robot.".into());
        let (_, sent) = ask(
            &p,
            &own,
            "How long do I have to return a bike?",
            returns(0.8),
        )
        .await;
        assert!(
            sent[0].text.starts_with("Bonjour, je suis un robot.\n\n"),
            "{sent:?}"
        );
        own.disclosure = Some(String::new());
        let (_, sent) = ask(
            &p,
            &own,
            "How long do I have to return a bike?",
            returns(0.8),
        )
        .await;
        assert!(
            sent[0].text.contains("30 days") && !sent[0].text.contains("bot"),
            "{sent:?}"
        );
    }

    #[tokio::test]
    async fn low_confidence_follows_the_bots_policy() {
        let p = pipeline(Err("no model".into()));
        let fallback = bot(OnUnknown::FallbackMessage, Generator::Extractive);
        let (answer, sent) = ask(&p, &fallback, "Do you sell pizza?", returns(0.1)).await;
        let handoff = answer.handoff.expect("a handoff");
        assert_eq!(handoff.reason, Reason::LowConfidence);
        assert_eq!(handoff.triage.source, "rules");
        assert_eq!(sent.len(), 1);
        assert!(
            sent[0].text.ends_with("Let me get a colleague."),
            "{sent:?}"
        );

        let silent = bot(OnUnknown::SilentHandoff, Generator::Extractive);
        let (answer, sent) = ask(&p, &silent, "Do you sell pizza?", returns(0.1)).await;
        assert!(answer.handoff.is_some() && sent.is_empty());

        let anyway = bot(OnUnknown::AiGenerate, Generator::Extractive);
        let (answer, sent) = ask(
            &p,
            &anyway,
            "How long do I have to return a bike?",
            returns(0.1),
        )
        .await;
        assert!(answer.low_confidence && answer.handoff.is_none() && !sent.is_empty());
    }

    #[tokio::test]
    async fn asking_for_a_person_hands_off_with_a_draft() {
        let p = pipeline(Err("no model".into()));
        let bot = bot(OnUnknown::FallbackMessage, Generator::Extractive);
        let (answer, sent) = ask(
            &p,
            &bot,
            "returns? I want to talk to a person",
            returns(0.8),
        )
        .await;
        let handoff = answer.handoff.expect("a handoff");
        assert_eq!(handoff.reason, Reason::CustomerAsked);
        assert!(handoff.draft.contains("30 days"), "the agent gets a draft");
        assert!(
            sent[0].text.ends_with("A person will reply here."),
            "{sent:?}"
        );
    }

    #[tokio::test]
    async fn a_bot_on_a_model_without_one_hands_off_and_says_why() {
        let p = pipeline(Err("llm.base_url is not set".into()));
        let bot = bot(OnUnknown::FallbackMessage, Generator::Model);
        let (answer, _) = ask(
            &p,
            &bot,
            "How long do I have to return a bike?",
            returns(0.8),
        )
        .await;
        let handoff = answer.handoff.expect("a handoff");
        assert_eq!(handoff.reason, Reason::GenerationFailed);
        assert!(handoff.detail.is_some_and(|d| d.contains("llm.base_url")));
        assert_eq!(answer.provider, "openai");
    }
}
