//! Prometheus metrics of the process: one registry per [`App`](crate::context::App),
//! so tests never share counters.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// The process's metrics. One registry per server, so tests don't share counters.
#[derive(Debug)]
pub struct Metrics {
    /// Holds every metric below.
    pub registry: Registry,
    pub(crate) http_requests: IntCounterVec,
    pub(crate) http_duration: HistogramVec,
    webhooks: IntCounterVec,
    webhook_events: IntCounterVec,
    /// Turns by outcome.
    pub turns: IntCounterVec,
    /// Turn durations.
    pub turn_seconds: Histogram,
    /// Dead-lettered turns (as the broker counts them).
    pub dead_letters: IntGauge,
    /// Handoffs by reason.
    pub handoffs: IntCounterVec,
    /// Answers by provider and outcome.
    pub answers: IntCounterVec,
    /// Time from the start of answering to the first paragraph.
    pub first_paragraph_seconds: Histogram,
    /// Open websockets by kind (agent, chat).
    pub ws_connections: prometheus::IntGaugeVec,
    /// Customer messages per batch the door stored.
    pub door_batch_messages: Histogram,
    /// Time to store one batch (commit included).
    pub door_batch_seconds: Histogram,
    /// Webhooks refused because too many were waiting.
    pub door_refused: prometheus::IntCounter,
    /// Time a webhook waits for its messages to be stored and committed.
    pub door_wait_seconds: Histogram,
}

impl Metrics {
    /// Registers the HTTP metrics.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered"),
            &["method", "route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to answer an HTTP request",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["method", "route", "status"],
        )?;
        let build_info = prometheus::IntGaugeVec::new(
            Opts::new("frontdesk_build_info", "Version of the running binary"),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        let webhooks = IntCounterVec::new(
            Opts::new(
                "webhook_requests_total",
                "Webhook requests by channel and outcome (accepted, unauthorized, bad_request, unknown_account)",
            ),
            &["channel", "outcome"],
        )?;
        let webhook_events = IntCounterVec::new(
            Opts::new(
                "webhook_events_total",
                "Webhook events by channel and result (stored, duplicate, edit, receipt, skipped)",
            ),
            &["channel", "result"],
        )?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(webhooks.clone()))?;
        registry.register(Box::new(webhook_events.clone()))?;
        let turns = IntCounterVec::new(
            Opts::new(
                "worker_turns_total",
                "Conversation turns by outcome (answered, silent, nothing_to_do, deferred, retrying, dead_lettered, fenced)",
            ),
            &["outcome"],
        )?;
        let turn_seconds = Histogram::with_opts(
            HistogramOpts::new("worker_turn_seconds", "Time to process one turn").buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )?;
        let dead_letters = IntGauge::new(
            "worker_dead_letters",
            "Turns given up after their retries (see the worker log for reasons)",
        )?;
        registry.register(Box::new(turns.clone()))?;
        registry.register(Box::new(turn_seconds.clone()))?;
        registry.register(Box::new(dead_letters.clone()))?;
        let handoffs = IntCounterVec::new(
            Opts::new(
                "handoffs_total",
                "Conversations handed to people, by reason (low_confidence, no_information, customer_asked, generation_failed, unsafe_output, requested)",
            ),
            &["reason"],
        )?;
        let answers = IntCounterVec::new(
            Opts::new(
                "answers_total",
                "Answers by provider (extractive, openai) and outcome (answered, low_confidence, handoff, interrupted)",
            ),
            &["provider", "outcome"],
        )?;
        let first_paragraph_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "answer_first_paragraph_seconds",
                "From the start of answering (retrieval included) to the first paragraph",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )?;
        registry.register(Box::new(handoffs.clone()))?;
        registry.register(Box::new(answers.clone()))?;
        registry.register(Box::new(first_paragraph_seconds.clone()))?;
        let ws_connections = prometheus::IntGaugeVec::new(
            Opts::new("ws_connections", "Open websockets by kind (agent, chat)"),
            &["kind"],
        )?;
        registry.register(Box::new(ws_connections.clone()))?;
        let door_batch_messages = Histogram::with_opts(
            HistogramOpts::new(
                "door_batch_messages",
                "Customer messages stored per batch (one transaction, one commit)",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )?;
        let door_batch_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "door_batch_seconds",
                "Time to store one batch of customer messages, commit included",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        )?;
        let door_refused = prometheus::IntCounter::new(
            "door_refused_total",
            "Webhooks answered 503 because too many were waiting to be stored",
        )?;
        registry.register(Box::new(door_batch_messages.clone()))?;
        registry.register(Box::new(door_batch_seconds.clone()))?;
        registry.register(Box::new(door_refused.clone()))?;
        let door_wait_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "door_wait_seconds",
                "Time a webhook waits for its messages to be stored and committed",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        )?;
        registry.register(Box::new(door_wait_seconds.clone()))?;
        Ok(Self {
            door_wait_seconds,
            door_batch_messages,
            door_batch_seconds,
            door_refused,
            ws_connections,
            handoffs,
            answers,
            first_paragraph_seconds,
            turns,
            turn_seconds,
            dead_letters,
            registry,
            http_requests,
            http_duration,
            webhooks,
            webhook_events,
        })
    }

    /// Counts a webhook request's outcome.
    pub fn webhook(&self, channel: channels::ChannelKind, outcome: &str) {
        self.webhooks
            .with_label_values(&[channel.as_str(), outcome])
            .inc();
    }

    /// Counts what a webhook's events did, as `(result, count)` pairs.
    pub fn events(&self, channel: channels::ChannelKind, counts: &[(&str, usize)]) {
        for &(result, count) in counts {
            if count > 0 {
                self.webhook_events
                    .with_label_values(&[channel.as_str(), result])
                    .inc_by(count as u64);
            }
        }
    }
}
