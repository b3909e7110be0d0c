//! Webhook ingress benchmark: `cargo bench --bench ingress`.
//!
//! How many verified webhooks per second the gateway's front door stores,
//! beside a bare HTTP baseline, in one run on one machine:
//!
//! - **bare actix + HMAC**: an actix-web server inside this process (two
//!   worker threads) with one POST route that reads the body, checks a hex
//!   HMAC-SHA256 of it in constant time and answers `{"status":"ok"}`. The
//!   ceiling of HTTP plus a signature check on this machine.
//! - **frontdesk SQLite**: the real `frontdesk serve --no-worker` binary as a
//!   child process (two HTTP workers, SQLite in a temporary directory,
//!   in-process broker).
//! - **frontdesk PostgreSQL+Redis**: the same binary on a database created
//!   for this run on `TEST_DATABASE_URL` (dropped at the end) and Redis at
//!   `TEST_REDIS_URL` under a key prefix of its own. Skipped, loudly, when
//!   either is unreachable.
//!
//! Every request is a distinct Telegram update (`update_id` N, chat
//! 1000 + N % 500, each chat asking one of six questions: five the demo
//! shop's knowledge answers, "Where is my order?" it does not) to
//! `POST /webhooks/telegram/bench-tg` with the secret token header; the
//! bare server gets the same bodies with its HMAC header.
//! The load generator is this file's own HTTP/1.1 keep-alive client (no
//! pipelining), on an OS thread of its own with a single-threaded runtime,
//! like `wrk -t1`. On a 2-core machine it shares the cores with the server.
//!
//! **closed 32**: 32 connections each send requests back to back for
//! `INGRESS_SECS` (default 10) after a 1 s warm-up that is not counted.
//! Latency runs from writing the request to reading the whole response.
//! `req/s` counts 2xx answers; `vs bare` is that rate against the bare
//! server's.
//!
//! **open R/s**: a constant offered rate `INGRESS_RATE` (default 2000) for
//! `INGRESS_SECS` over 64 connections. Request i is due at start + i/R and
//! its latency runs from that due time, so time spent waiting for a free
//! connection counts (no coordinated omission). When the server is slower
//! than R, requests still unsent at the end count with the wait they had
//! so far (a lower bound) and are reported. `req/s` is the achieved rate.
//!
//! **Exactly once**: after each Frontdesk system the server is stopped
//! (SIGTERM) and its inbound messages are counted; they must equal the
//! distinct update ids answered 2xx (`stored N of M acknowledged updates`),
//! else the bench exits non-zero. `INGRESS_DUPLICATES=0.2` makes that
//! fraction of requests re-send an update id already sent (a redelivery
//! storm); `INGRESS_ONLY=bare,sqlite,postgres` picks the systems.
//!
//! **Worker**: then the stored backlog (500 conversations, none answered,
//! many messages each) is answered end to end: the real extractive
//! answerer over the demo shop's knowledge (`config/knowledge/northwind`,
//! in the bot file, so the ingress server ingests it at start-up, before
//! its load), hybrid search when the embedding model is installed, else
//! BM25 (printed, as the ingress server's `/readyz` says),
//! `worker.debounce_ms = 0`, `worker.concurrency = 4`, and a fake Telegram
//! Bot API in this process (actix-web, two worker threads) that answers
//! every `/bot{token}/{method}` and counts `sendMessage`. On SQLite
//! `frontdesk serve` (embedded worker) starts anew: its in-process broker
//! is empty, so the sweeper that runs at start-up (then every
//! `worker.sweep_interval_secs`, 30 s) queues the conversations; it only
//! takes messages older than 2 s, so the bench starts it at least 2.2 s
//! after the ingress server stopped (not counted). On PostgreSQL+Redis the
//! turns are still queued in Redis and two `frontdesk worker` processes
//! take them. The clock runs from spawning the processes (their start-up
//! counts) until the database shows every conversation answered (no
//! customer message above its `answered_seq`, polled every 50 ms), at most
//! 300 s. The pending messages of one conversation (dozens to hundreds,
//! all the same question) are coalesced, so that is one turn each,
//! answered or handed off (counted). A timeout or a process that exits
//! fails the bench. `INGRESS_WORKER=0` skips this phase.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hmac::{Hmac, Mac};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type HmacSha256 = Hmac<sha2::Sha256>;

const ACCOUNT: &str = "bench-tg";
const SECRET: &str = "bench-secret";
const BARE_PATH: &str = "/webhook";
const BARE_SIGNATURE_HEADER: &str = "X-Signature";
const CLOSED_CONNECTIONS: usize = 32;
const OPEN_CONNECTIONS: usize = 64;
const WARM_UP: Duration = Duration::from_secs(1);
/// actix-web closes a connection idle for 5 s; reconnect before that.
const IDLE_RECONNECT: Duration = Duration::from_secs(4);

/// Nothing listens on the discard port: no reply can leave (and with
/// `--no-worker` none is attempted).
const NO_BOT_API: &str = "http://127.0.0.1:9";
/// Worker loops per Frontdesk process (`worker.concurrency`).
const WORKER_LOOPS: usize = 4;
/// `frontdesk worker` processes on PostgreSQL+Redis.
const WORKER_PROCESSES: usize = 2;
/// The sweeper re-queues only messages older than `debounce_ms` + 2 s.
const SWEEP_GRACE: Duration = Duration::from_millis(2200);
/// `worker.sweep_interval_secs` (the default): the sweeper runs at start-up,
/// then this often.
const SWEEP_INTERVAL_SECS: u64 = 30;
const WORKER_POLL: Duration = Duration::from_millis(50);
const WORKER_TIMEOUT: Duration = Duration::from_secs(300);
/// Conversations with a customer message no turn has handled: the seq of
/// an inbound message above `answered_seq` (`last_seq` counts the bot's
/// replies too, so `answered_seq < last_seq` stays true after an answer).
const UNANSWERED: &str = "SELECT COUNT(*) AS n FROM conversations c WHERE EXISTS (\
     SELECT 1 FROM messages m WHERE m.conversation_id = c.id \
     AND m.direction = 'inbound' AND m.seq > c.answered_seq)";
const HANDOFFS: &str = "SELECT COUNT(*) AS n FROM handoffs";

/// The bench's bot file: the Telegram account and the demo shop's knowledge.
fn bot_file() -> Result<String, String> {
    let knowledge = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/knowledge/northwind");
    if !knowledge.is_dir() {
        return Err(format!("no knowledge folder at {}", knowledge.display()));
    }
    if std::env::var("INGRESS_KNOWLEDGE").as_deref() == Ok("0") {
        return Ok(format!(
            "workspace = \"bench\"\nname = \"ingress\"\nsystem_prompt = \"x\"\n\
             [[channels]]\nkind = \"telegram\"\nid = {ACCOUNT:?}\nbot_token = \"123:abc\"\n\
             secret_token = {SECRET:?}\n"
        ));
    }
    Ok(format!(
        "workspace = \"bench\"\nname = \"ingress\"\nsystem_prompt = \"x\"\n\
         knowledge = [{:?}]\n\
         [[channels]]\nkind = \"telegram\"\nid = {ACCOUNT:?}\nbot_token = \"123:abc\"\n\
         secret_token = {SECRET:?}\n",
        knowledge.display().to_string()
    ))
}

// ---------------------------------------------------------------- options

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Bare,
    Sqlite,
    Postgres,
}

impl System {
    fn label(self) -> &'static str {
        match self {
            Self::Bare => "bare actix + HMAC",
            Self::Sqlite => "frontdesk SQLite",
            Self::Postgres => "frontdesk PostgreSQL+Redis",
        }
    }
}

struct Options {
    secs: u64,
    rate: f64,
    duplicates: f64,
    only: Vec<System>,
    worker: bool,
}

impl Options {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let secs = var("INGRESS_SECS").map_or(10, |v| v.trim().parse().expect("INGRESS_SECS"));
        let rate = var("INGRESS_RATE").map_or(2000.0, |v| v.trim().parse().expect("INGRESS_RATE"));
        let duplicates = var("INGRESS_DUPLICATES").map_or(0.0, |v| {
            v.trim().parse().expect("INGRESS_DUPLICATES is a fraction")
        });
        assert!(secs > 0, "INGRESS_SECS must be at least 1");
        assert!(rate > 0.0, "INGRESS_RATE must be positive");
        assert!(
            (0.0..1.0).contains(&duplicates),
            "INGRESS_DUPLICATES must be in [0, 1)"
        );
        let only = var("INGRESS_ONLY").map_or_else(
            || vec![System::Bare, System::Sqlite, System::Postgres],
            |v| {
                v.split(',')
                    .map(|s| match s.trim() {
                        "bare" => System::Bare,
                        "sqlite" => System::Sqlite,
                        "postgres" => System::Postgres,
                        other => panic!("INGRESS_ONLY: unknown system `{other}`"),
                    })
                    .collect()
            },
        );
        let worker = var("INGRESS_WORKER").is_none_or(|v| match v.trim() {
            "0" | "false" | "no" => false,
            "1" | "true" | "yes" => true,
            other => panic!("INGRESS_WORKER: `{other}` is not 0 or 1"),
        });
        Self {
            secs,
            rate,
            duplicates,
            only,
            worker,
        }
    }

    fn measure(&self) -> Duration {
        Duration::from_secs(self.secs)
    }
}

// ---------------------------------------------------------------- requests

/// Where the load goes and how its requests are signed.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    kind: TargetKind,
}

#[derive(Clone, Copy)]
enum TargetKind {
    /// The bare server: HMAC header.
    Bare,
    /// Frontdesk: Telegram's secret-token header.
    Frontdesk,
}

/// What the customers ask, by chat: five questions the demo shop's
/// knowledge answers, one it does not (a handoff).
const QUESTIONS: &[&str] = &[
    "How many days do I have to return a bike?",
    "How long is the warranty on a frame?",
    "Do you ship to Switzerland?",
    "Can I test-ride a bike before buying?",
    "Which payment methods do you accept?",
    "Where is my order?",
];

/// The Telegram update with id `n`: 500 private chats, one message each,
/// each chat always asking the same question.
fn update_body(n: u64) -> String {
    let chat = 1000 + n % 500;
    let text = QUESTIONS[(chat % QUESTIONS.len() as u64) as usize];
    format!(
        r#"{{"update_id":{n},"message":{{"message_id":{n},"from":{{"id":{chat},"is_bot":false,"first_name":"Ann"}},"chat":{{"id":{chat},"type":"private"}},"date":1733500000,"text":"{text}"}}}}"#
    )
}

/// The update id of a stored Telegram message (`chat:message_id`).
fn update_id_of(external_id: &str) -> Option<u64> {
    external_id.split_once(':')?.1.parse().ok()
}

fn signature(body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

impl Target {
    /// Writes the whole request for update `n` into `out`.
    fn write_request(&self, n: u64, out: &mut Vec<u8>) {
        let body = update_body(n);
        let (path, auth_header, auth_value) = match self.kind {
            TargetKind::Bare => (
                BARE_PATH.to_owned(),
                BARE_SIGNATURE_HEADER,
                signature(body.as_bytes()),
            ),
            TargetKind::Frontdesk => (
                format!("/webhooks/telegram/{ACCOUNT}"),
                "X-Telegram-Bot-Api-Secret-Token",
                SECRET.to_owned(),
            ),
        };
        let mut head = String::with_capacity(256);
        write!(
            head,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             {auth_header}: {auth_value}\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )
        .expect("writing to a String");
        out.clear();
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(body.as_bytes());
    }
}

// ---------------------------------------------------------------- HTTP client

/// One keep-alive HTTP/1.1 connection: a request, then its whole response.
struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
    last_used: Instant,
}

/// What came back: the status, and whether the server closes the connection.
struct Answer {
    status: u16,
    close: bool,
}

fn protocol_error(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

impl HttpConn {
    async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
            last_used: Instant::now(),
        })
    }

    /// Writes `request` and reads the status line, the headers and the
    /// `Content-Length` body of the answer.
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<Answer> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let head_len = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_len])
            .map_err(|_| protocol_error("response head is not UTF-8"))?;
        let (status, body_len, close) = parse_head(head)?;
        while self.buf.len() < head_len + body_len {
            self.fill().await?;
        }
        self.last_used = Instant::now();
        Ok(Answer { status, close })
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection mid-response",
            ));
        }
        Ok(())
    }
}

/// Status code, body length and `Connection: close` of a response head.
fn parse_head(head: &str) -> std::io::Result<(u16, usize, bool)> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| protocol_error(format!("bad status line `{status_line}`")))?;
    let mut body_len = None;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            body_len = Some(
                value
                    .parse()
                    .map_err(|_| protocol_error(format!("bad Content-Length `{value}`")))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(protocol_error(format!(
                "Transfer-Encoding `{value}` is not supported by this client"
            )));
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let body_len = body_len.ok_or_else(|| protocol_error("response without Content-Length"))?;
    Ok((status, body_len, close))
}

/// The door's figures from `/metrics`: batches, mean messages per batch and
/// mean time per batch, since the server started.
async fn door_figures(addr: SocketAddr) -> std::io::Result<String> {
    let mut conn = HttpConn::open(addr).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    conn.exchange(request.as_bytes()).await?;
    let text = String::from_utf8_lossy(&conn.buf);
    let value = |name: &str| {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let total = |name: &str| -> f64 {
        text.lines()
            .filter(|line| line.starts_with(name) && line.contains("method=\"POST\""))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let served = total("http_request_duration_seconds_sum") * 1000.0
        / total("http_request_duration_seconds_count").max(1.0);
    let batches = value("door_batch_messages_count");
    let messages = value("door_batch_messages_sum");
    let seconds = value("door_batch_seconds_sum");
    let refused = value("door_refused_total");
    let waited =
        value("door_wait_seconds_sum") * 1000.0 / value("door_wait_seconds_count").max(1.0);
    Ok(format!(
        "{batches:.0} batches, {:.1} messages and {:.2} ms per batch on average, {refused:.0} refused; \
         {waited:.2} ms waiting at the door and {served:.2} ms inside the server per webhook",
        messages / batches.max(1.0),
        seconds * 1000.0 / batches.max(1.0),
    ))
}

/// One GET with a fresh connection, for the readiness probe.
async fn get_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut conn = HttpConn::open(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    Ok(conn.exchange(request.as_bytes()).await?.status)
}

/// The search `/readyz` reports: `hybrid`, or `bm25_only` and why.
async fn search_mode(addr: SocketAddr) -> std::io::Result<String> {
    let mut conn = HttpConn::open(addr).await?;
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    conn.exchange(request.as_bytes()).await?;
    let text = String::from_utf8_lossy(&conn.buf);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let ready: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| protocol_error(format!("/readyz is not JSON: {e}")))?;
    let knowledge = &ready["checks"]["knowledge"];
    let search = knowledge["search"].as_str().unwrap_or("unknown").to_owned();
    Ok(match knowledge["degraded"].as_str() {
        Some(why) => format!("{search} ({why})"),
        None => search,
    })
}

// ---------------------------------------------------------------- load

/// The update ids of one system's run: which to send next, which were
/// acknowledged. Shared by every phase against one server.
struct Ledger {
    next: u64,
    duplicates: f64,
    rng: u64,
    acked: HashSet<u64>,
}

impl Ledger {
    fn new(duplicates: f64) -> Self {
        Self {
            next: 1,
            duplicates,
            rng: 0x9E37_79B9_7F4A_7C15,
            acked: HashSet::new(),
        }
    }

    /// A fresh update id, or with probability `duplicates` one already sent.
    fn next_update(&mut self) -> u64 {
        if self.next > 1 && self.duplicates > 0.0 {
            let roll = self.random();
            if (roll >> 11) as f64 / (1u64 << 53) as f64 <= self.duplicates {
                return 1 + self.random() % (self.next - 1);
            }
        }
        self.next += 1;
        self.next - 1
    }

    /// splitmix64: enough to pick duplicates, no dependency.
    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// What one measured phase saw.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    ok: u64,
    non_2xx: BTreeMap<u16, u64>,
    errors: u64,
    first_error: Option<String>,
    /// Open loop: requests due before the end but never sent.
    unsent: u64,
    last_done: Option<Instant>,
    /// The span the rate is taken over.
    window: Duration,
}

impl Tally {
    fn error(&mut self, e: &std::io::Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
    }
}

/// The state one connection task shares with the others on the load thread.
#[derive(Clone)]
struct Shared {
    target: Rc<Target>,
    ledger: Rc<RefCell<Ledger>>,
    tally: Rc<RefCell<Tally>>,
}

impl Shared {
    /// Sends update `n` on `slot` (connecting first when needed) and records
    /// the outcome; latency runs from `since`. `counted` false: warm-up.
    async fn send(
        &self,
        slot: &mut Option<HttpConn>,
        request: &mut Vec<u8>,
        since: Instant,
        counted: bool,
    ) {
        if slot
            .as_ref()
            .is_some_and(|c| c.last_used.elapsed() > IDLE_RECONNECT)
        {
            *slot = None;
        }
        if slot.is_none() {
            match HttpConn::open(self.target.addr).await {
                Ok(conn) => *slot = Some(conn),
                Err(e) => {
                    if counted {
                        self.tally.borrow_mut().error(&e);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return;
                }
            }
        }
        let conn = slot.as_mut().expect("connected above");
        let n = self.ledger.borrow_mut().next_update();
        self.target.write_request(n, request);
        let result = conn.exchange(request).await;
        let done = Instant::now();
        let mut tally = self.tally.borrow_mut();
        match result {
            Ok(answer) => {
                if (200..300).contains(&answer.status) {
                    self.ledger.borrow_mut().acked.insert(n);
                }
                if answer.close {
                    *slot = None;
                }
                if counted {
                    if (200..300).contains(&answer.status) {
                        tally.ok += 1;
                    } else {
                        *tally.non_2xx.entry(answer.status).or_default() += 1;
                    }
                    tally.latencies.push(done - since);
                    tally.last_done = Some(done);
                }
            }
            Err(e) => {
                *slot = None;
                if counted {
                    tally.error(&e);
                }
            }
        }
    }
}

/// Runs `work` on a new OS thread with a single-threaded runtime, apart
/// from the servers' threads, and returns its result.
fn on_load_thread<F, Fut, T>(work: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("load runtime");
        tokio::task::LocalSet::new().block_on(&runtime, work())
    })
    .join()
    .expect("load thread")
}

/// `connections` connections sending back to back: `warm_up`, then
/// `measure` counted.
fn closed_loop(
    target: Target,
    ledger: Ledger,
    connections: usize,
    warm_up: Duration,
    measure: Duration,
) -> (Tally, Ledger) {
    on_load_thread(move || async move {
        let shared = Shared {
            target: Rc::new(target),
            ledger: Rc::new(RefCell::new(ledger)),
            tally: Rc::default(),
        };
        let counted_from = Instant::now() + warm_up;
        let end = counted_from + measure;
        let tasks: Vec<_> = (0..connections)
            .map(|_| {
                let shared = shared.clone();
                tokio::task::spawn_local(async move {
                    let mut slot = None;
                    let mut request = Vec::new();
                    while Instant::now() < end {
                        let started = Instant::now();
                        shared
                            .send(&mut slot, &mut request, started, started >= counted_from)
                            .await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("connection task");
        }
        shared.tally.borrow_mut().window = measure;
        finish(shared)
    })
}

/// `rate` requests per second, due on a fixed schedule for `measure`, over
/// `connections` connections; latency from each request's due time.
fn open_loop(
    target: Target,
    ledger: Ledger,
    connections: usize,
    rate: f64,
    measure: Duration,
) -> (Tally, Ledger) {
    on_load_thread(move || async move {
        let shared = Shared {
            target: Rc::new(target),
            ledger: Rc::new(RefCell::new(ledger)),
            tally: Rc::default(),
        };
        let mut pool = Vec::with_capacity(connections);
        for _ in 0..connections {
            pool.push(HttpConn::open(shared.target.addr).await.ok());
        }
        let total = (rate * measure.as_secs_f64()) as u64;
        let start = Instant::now() + Duration::from_millis(100);
        let end = start + measure;
        let due = move |i: u64| start + Duration::from_secs_f64(i as f64 / rate);
        let claimed = Rc::new(Cell::new(0u64));
        let tasks: Vec<_> = pool
            .into_iter()
            .map(|mut slot| {
                let (shared, claimed) = (shared.clone(), claimed.clone());
                tokio::task::spawn_local(async move {
                    let mut request = Vec::new();
                    loop {
                        let i = claimed.get();
                        if i >= total || Instant::now() >= end {
                            break;
                        }
                        claimed.set(i + 1);
                        tokio::time::sleep_until(due(i).into()).await;
                        shared.send(&mut slot, &mut request, due(i), true).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("connection task");
        }
        {
            let mut tally = shared.tally.borrow_mut();
            for i in claimed.get()..total {
                tally.latencies.push(end.saturating_duration_since(due(i)));
                tally.unsent += 1;
            }
            // The achieved rate is over the schedule, or longer if the last
            // answers came after it.
            tally.window = tally.last_done.map_or(end, |t| t.max(end)) - start;
        }
        finish(shared)
    })
}

fn finish(shared: Shared) -> (Tally, Ledger) {
    let Shared { ledger, tally, .. } = shared;
    let tally = Rc::try_unwrap(tally).ok().expect("tasks done").into_inner();
    let ledger = Rc::try_unwrap(ledger)
        .ok()
        .expect("tasks done")
        .into_inner();
    (tally, ledger)
}

// ---------------------------------------------------------------- report

/// One line of the table.
struct Row {
    system: System,
    mode: String,
    per_sec: f64,
    tally: Tally,
    /// Only closed-loop rows compare with the bare server.
    closed: bool,
}

impl Row {
    fn new(system: System, mode: String, tally: Tally, closed: bool) -> Self {
        Self {
            system,
            mode,
            per_sec: tally.ok as f64 / tally.window.as_secs_f64().max(1e-9),
            tally,
            closed,
        }
    }

    fn closed(system: System, tally: Tally) -> Self {
        Self::new(system, format!("closed {CLOSED_CONNECTIONS}"), tally, true)
    }

    fn open(system: System, tally: Tally, rate: f64) -> Self {
        Self::new(system, format!("open {rate}/s"), tally, false)
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn print_table(rows: &mut [Row]) {
    let bare = rows
        .iter()
        .find(|r| r.system == System::Bare && r.closed)
        .map(|r| r.per_sec);
    println!();
    println!(
        "{:<28} {:<12} {:>9} {:>10} {:>10} {:>10} {:>8} {:>7} {:>8}",
        "system", "mode", "req/s", "p50", "p99", "max", "non-2xx", "errors", "vs bare"
    );
    for row in rows.iter_mut() {
        row.tally.latencies.sort_unstable();
        let lat = &row.tally.latencies;
        let versus = match bare {
            Some(bare) if row.closed && bare > 0.0 => {
                format!("{:.1}%", 100.0 * row.per_sec / bare)
            }
            _ => "-".to_owned(),
        };
        println!(
            "{:<28} {:<12} {:>9.0} {:>10} {:>10} {:>10} {:>8} {:>7} {:>8}",
            row.system.label(),
            row.mode,
            row.per_sec,
            ms(percentile(lat, 0.50)),
            ms(percentile(lat, 0.99)),
            ms(lat.last().copied().unwrap_or_default()),
            row.tally.non_2xx.values().sum::<u64>(),
            row.tally.errors,
            versus
        );
    }
    for row in rows.iter() {
        let what = format!("{} {}", row.system.label(), row.mode);
        if !row.tally.non_2xx.is_empty() {
            let codes: Vec<String> = row
                .tally
                .non_2xx
                .iter()
                .map(|(code, n)| format!("{code} ×{n}"))
                .collect();
            println!("  {what}: non-2xx {}", codes.join(", "));
        }
        if let Some(e) = &row.tally.first_error {
            println!("  {what}: first connection error: {e}");
        }
        if row.tally.unsent > 0 {
            println!(
                "  {what}: {} requests due were never sent (server slower than the offered \
                 rate); they count in p50/p99/max at the wait they had at the end",
                row.tally.unsent
            );
        }
    }
}

/// One line per worker phase, beside the system's closed-loop ingress rate.
fn print_workers(runs: &[WorkerRun], rows: &[Row]) {
    for run in runs {
        let ingress = rows
            .iter()
            .find(|r| r.system == run.system && r.closed)
            .map_or_else(String::new, |r| {
                format!("; ingress {:.0} webhooks/s", r.per_sec)
            });
        let outcome = if run.timed_out() {
            format!(
                "TIMED OUT after {:.0} s with {} of {} turns answered",
                run.elapsed.as_secs_f64(),
                run.answered,
                run.pending
            )
        } else {
            format!(
                "{} turns answered in {:.1} s",
                run.answered,
                run.elapsed.as_secs_f64()
            )
        };
        let first = run.first.map_or_else(
            || "no answer seen".to_owned(),
            |d| format!("first answer {:.1} s after start", d.as_secs_f64()),
        );
        println!(
            "{} worker: {outcome} ({:.1} turns/s{ingress}), extractive answerer, {} search, {}",
            run.system.label(),
            run.per_sec(),
            run.search,
            run.workers
        );
        println!(
            "  {first}; {} sendMessage at the fake Bot API, {} handoffs",
            run.replies, run.handoffs
        );
    }
}

fn print_machine(options: &Options) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    println!("machine: {cores} cores (nproc), {cpu}");
    println!(
        "load: {} s per phase (closed: +{} s warm-up), open rate {}/s, duplicates {:.0}%, \
         client: 1 thread; worker phase {}",
        options.secs,
        WARM_UP.as_secs(),
        options.rate,
        options.duplicates * 100.0,
        if options.worker {
            "on (INGRESS_WORKER=0 skips it)"
        } else {
            "off"
        }
    );
}

// ---------------------------------------------------------------- bare server

async fn bare_webhook(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let Some(given) = req
        .headers()
        .get(BARE_SIGNATURE_HEADER)
        .and_then(|v| hex::decode(v.as_bytes()).ok())
    else {
        return HttpResponse::Unauthorized().finish();
    };
    let mut mac = HmacSha256::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(&body);
    // `verify_slice` compares in constant time.
    match mac.verify_slice(&given) {
        Ok(()) => HttpResponse::Ok()
            .content_type("application/json")
            .body(r#"{"status":"ok"}"#),
        Err(_) => HttpResponse::Unauthorized().finish(),
    }
}

/// An actix-web server inside this process, on its own thread (actix's
/// system), two workers: the bare server and the fake Bot API.
struct LocalServer {
    addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl LocalServer {
    fn start<F>(routes: F) -> std::io::Result<Self>
    where
        F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || App::new().configure(routes.clone()))
                    .workers(2)
                    .disable_signals()
                    .listen(listener)?
                    .run();
                let _ = tx.send(server.handle());
                server.await
            })
        });
        let handle = rx
            .recv()
            .map_err(|_| std::io::Error::other("the local server did not start"))?;
        Ok(Self {
            addr,
            handle,
            thread,
        })
    }

    fn stop(self) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(self.handle.stop(true));
        let _ = self.thread.join();
    }
}

fn run_bare(options: &Options) -> std::io::Result<Row> {
    let server = LocalServer::start(|routes| {
        routes.route(BARE_PATH, web::post().to(bare_webhook));
    })?;
    println!(
        "running {} closed {CLOSED_CONNECTIONS}…",
        System::Bare.label()
    );
    let target = Target {
        addr: server.addr,
        kind: TargetKind::Bare,
    };
    let (tally, _) = closed_loop(
        target,
        Ledger::new(options.duplicates),
        CLOSED_CONNECTIONS,
        WARM_UP,
        options.measure(),
    );
    server.stop();
    Ok(Row::closed(System::Bare, tally))
}

// ---------------------------------------------------------------- fake Bot API

/// What the fake Bot API was asked.
#[derive(Default)]
struct ApiCalls {
    all: AtomicU64,
    send_message: AtomicU64,
}

/// Any `/bot{token}/{method}`: 200 with a sent message. Each gets a message
/// id of its own and the chat it was sent to: the gateway stores
/// `chat:message_id` as the reply's external id, unique per account.
async fn fake_bot_method(
    path: web::Path<(String, String)>,
    body: web::Bytes,
    calls: web::Data<ApiCalls>,
) -> HttpResponse {
    let id = calls.all.fetch_add(1, Ordering::Relaxed) + 1;
    if path.1 == "sendMessage" {
        calls.send_message.fetch_add(1, Ordering::Relaxed);
    }
    let chat = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|b| b["chat_id"].as_i64())
        .unwrap_or(1);
    HttpResponse::Ok().json(serde_json::json!({
        "ok": true,
        "result": { "message_id": id, "date": 0, "chat": { "id": chat, "type": "private" } }
    }))
}

/// The fake Telegram Bot API the workers send their replies to.
struct FakeBotApi {
    server: LocalServer,
    calls: web::Data<ApiCalls>,
}

impl FakeBotApi {
    fn start() -> std::io::Result<Self> {
        let calls = web::Data::new(ApiCalls::default());
        let shared = calls.clone();
        let server = LocalServer::start(move |routes| {
            routes
                .app_data(shared.clone())
                .route("/bot{token}/{method}", web::post().to(fake_bot_method));
        })?;
        Ok(Self { server, calls })
    }

    fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Stops the server; returns the `sendMessage` calls it answered.
    fn stop(self) -> u64 {
        self.server.stop();
        self.calls.send_message.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------- frontdesk

/// Where a Frontdesk system keeps its data.
enum Backend {
    Sqlite {
        file: PathBuf,
    },
    Postgres {
        admin: String,
        name: String,
        url: String,
        redis: String,
        prefix: String,
    },
}

/// A running `frontdesk` child process, its stderr in `log`.
struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running `frontdesk serve --no-worker`.
struct Frontdesk {
    process: Process,
    addr: SocketAddr,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Writes the bot file and `frontdesk.toml` (HTTP on `port`, replies to the
/// Bot API at `api_base`) into `dir`.
fn write_config(
    dir: &Path,
    port: u16,
    backend: &Backend,
    api_base: &str,
) -> Result<PathBuf, String> {
    let io = |e: std::io::Error| format!("config: {e}");
    std::fs::create_dir_all(dir.join("bots")).map_err(io)?;
    std::fs::write(dir.join("bots/ingress.toml"), bot_file()?).map_err(io)?;
    let (database, redis) = match backend {
        Backend::Sqlite { file } => (format!("sqlite://{}", file.display()), String::new()),
        Backend::Postgres {
            url, redis, prefix, ..
        } => (
            url.clone(),
            format!("url = {redis:?}\nkey_prefix = {prefix:?}\n"),
        ),
    };
    let config = format!(
        "data_dir = {data:?}\n\
         [server]\nbind = \"127.0.0.1:{port}\"\nworkers = 2\nshutdown_timeout_secs = 10\n\
         [database]\nurl = {database:?}\n\
         [redis]\n{redis}\
         [bots]\ndir = {bots:?}\n\
         [channels.telegram]\napi_base = {api_base:?}\n\
         [worker]\nconcurrency = {WORKER_LOOPS}\ndebounce_ms = 0\n\
         sweep_interval_secs = {SWEEP_INTERVAL_SECS}\n\
         [llm]\nprovider = \"extractive\"\n\
         [embedding]\nauto_install = false\n\
         [log]\nfilter = \"warn\"\n",
        data = dir.join("data").display().to_string(),
        bots = dir.join("bots").display().to_string(),
    );
    let path = dir.join("frontdesk.toml");
    std::fs::write(&path, config).map_err(io)?;
    Ok(path)
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl Process {
    /// Runs `frontdesk --config CONFIG ARGS…` in `dir`, stderr to
    /// `dir/LOG_NAME`.
    fn spawn(dir: &Path, config: &Path, args: &[&str], log_name: &str) -> Result<Self, String> {
        let name = format!("frontdesk {} ({log_name})", args.join(" "));
        let log = dir.join(log_name);
        let stderr = std::fs::File::create(&log).map_err(|e| format!("log file: {e}"))?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_frontdesk"));
        command
            .arg("--config")
            .arg(config)
            .args(args)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(stderr);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FRONTDESK__")) {
            command.env_remove(key);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot run {name}: {e}"))?;
        Ok(Self { name, child, log })
    }

    /// Why the process is gone, if it is.
    fn exited(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok()??;
        Some(format!(
            "{} exited ({status}):\n{}",
            self.name,
            log_tail(&self.log)
        ))
    }

    /// Sends SIGTERM (the graceful stop), without waiting.
    fn terminate(&self) -> Result<(), String> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        if sent.is_ok_and(|s| s.success()) {
            Ok(())
        } else {
            Err(format!("could not send SIGTERM to {}", self.name))
        }
    }

    /// Waits for the exit after [`terminate`](Self::terminate), until
    /// `deadline` (killed on drop after that).
    fn wait_stopped(&mut self, deadline: Instant) -> Result<(), String> {
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!(
                        "{} exited with {status}:\n{}",
                        self.name,
                        log_tail(&self.log)
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        Err(format!(
            "{} did not stop within 30 s of SIGTERM (killed)",
            self.name
        ))
    }
}

/// SIGTERM to all of `processes` at once, then waits for each to exit
/// gracefully (SIGKILL after 30 s).
fn stop_all(processes: Vec<Process>) -> Result<(), String> {
    for process in &processes {
        process.terminate()?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut outcome = Ok(());
    for mut process in processes {
        let stopped = process.wait_stopped(deadline);
        outcome = outcome.and(stopped);
    }
    outcome
}

impl Frontdesk {
    /// Starts `serve --no-worker` in `dir` and waits for `/readyz`.
    fn start(dir: &Path, backend: &Backend) -> Result<Self, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let config = write_config(dir, port, backend, NO_BOT_API)?;
        let process = Process::spawn(dir, &config, &["serve", "--no-worker"], "server.log")?;
        let mut server = Self {
            process,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(exited) = self.process.exited() {
                return Err(format!("not ready: {exited}"));
            }
            if let Ok(200) = runtime.block_on(get_status(self.addr, "/readyz")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "frontdesk not ready after 120 s:\n{}",
                    log_tail(&self.process.log)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then waits for a graceful exit (SIGKILL after 30 s).
    fn stop(self) -> Result<(), String> {
        stop_all(vec![self.process])
    }
}

/// The update ids of the stored inbound messages, one per row.
fn stored_updates(
    runtime: &tokio::runtime::Runtime,
    backend: &Backend,
) -> Result<Vec<u64>, String> {
    const QUERY: &str = "SELECT external_id FROM messages WHERE direction = 'inbound'";
    let ids: Vec<String> = match backend {
        Backend::Sqlite { file } => {
            use diesel::sql_types::{Nullable, Text};
            use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
            #[derive(QueryableByName)]
            struct Stored {
                #[diesel(sql_type = Nullable<Text>)]
                external_id: Option<String>,
            }
            let path = file.display().to_string();
            let mut conn =
                SqliteConnection::establish(&path).map_err(|e| format!("{path}: {e}"))?;
            diesel::sql_query(QUERY)
                .load::<Stored>(&mut conn)
                .map_err(|e| format!("counting messages: {e}"))?
                .into_iter()
                .filter_map(|s| s.external_id)
                .collect()
        }
        Backend::Postgres { url, .. } => runtime.block_on(async {
            let client = pg_connect(url).await?;
            let rows = client
                .query(QUERY, &[])
                .await
                .map_err(|e| format!("counting messages: {e}"))?;
            Ok::<_, String>(
                rows.iter()
                    .filter_map(|r| r.get::<_, Option<String>>(0))
                    .collect(),
            )
        })?,
    };
    ids.iter()
        .map(|id| update_id_of(id).ok_or_else(|| format!("unexpected external id `{id}`")))
        .collect()
}

/// Prints `stored N of M acknowledged updates`; true when they match.
fn exactly_once(system: System, stored: &[u64], acked: &HashSet<u64>) -> bool {
    let distinct: HashSet<u64> = stored.iter().copied().collect();
    let ok = stored.len() == acked.len();
    println!(
        "{}: stored {} of {} acknowledged updates{}",
        system.label(),
        stored.len(),
        acked.len(),
        if ok { "" } else { "  <-- MISMATCH" }
    );
    if !ok || distinct.len() != stored.len() {
        let lost = acked.difference(&distinct).count();
        let unacked = distinct.difference(acked).count();
        println!(
            "  {lost} acknowledged but not stored, {unacked} stored but never answered 2xx \
             (errors or non-2xx), {} stored more than once",
            stored.len() - distinct.len()
        );
    }
    ok
}

/// The bench's own database connection, for counting rows.
enum Probe {
    Sqlite(diesel::SqliteConnection),
    Postgres(tokio_postgres::Client),
}

impl Probe {
    fn open(runtime: &tokio::runtime::Runtime, backend: &Backend) -> Result<Self, String> {
        match backend {
            Backend::Sqlite { file } => {
                use diesel::{Connection, RunQueryDsl};
                let path = file.display().to_string();
                let mut conn = diesel::SqliteConnection::establish(&path)
                    .map_err(|e| format!("{path}: {e}"))?;
                // The worker writes meanwhile (WAL: readers are not blocked,
                // but a checkpoint may be under way).
                diesel::sql_query("PRAGMA busy_timeout = 5000")
                    .execute(&mut conn)
                    .map_err(|e| format!("{path}: {e}"))?;
                Ok(Self::Sqlite(conn))
            }
            Backend::Postgres { url, .. } => Ok(Self::Postgres(runtime.block_on(pg_connect(url))?)),
        }
    }

    /// The one number `sql` (`SELECT COUNT(*) AS n …`) answers.
    fn count(&mut self, runtime: &tokio::runtime::Runtime, sql: &str) -> Result<u64, String> {
        let n = match self {
            Self::Sqlite(conn) => {
                use diesel::sql_types::BigInt;
                use diesel::{QueryableByName, RunQueryDsl};
                #[derive(QueryableByName)]
                struct Count {
                    #[diesel(sql_type = BigInt)]
                    n: i64,
                }
                diesel::sql_query(sql)
                    .get_result::<Count>(conn)
                    .map_err(|e| format!("{sql}: {e}"))?
                    .n
            }
            Self::Postgres(client) => runtime
                .block_on(client.query_one(sql, &[]))
                .map_err(|e| format!("{sql}: {e}"))?
                .get::<_, i64>(0),
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// The turns the Redis broker holds in its stream (`None` on SQLite).
fn queued_in_redis(runtime: &tokio::runtime::Runtime, backend: &Backend) -> Option<u64> {
    let Backend::Postgres { redis, prefix, .. } = backend else {
        return None;
    };
    runtime
        .block_on(async {
            let mut conn = redis_connection(redis).await?;
            deadpool_redis::redis::cmd("XLEN")
                .arg(format!("{prefix}:turns"))
                .query_async::<u64>(&mut conn)
                .await
                .map_err(|e| format!("XLEN: {e}"))
        })
        .ok()
}

/// What one worker phase saw.
struct WorkerRun {
    system: System,
    /// Conversations waiting for an answer when the workers started.
    pending: u64,
    answered: u64,
    /// From spawning the workers to the poll that saw the last answer (or
    /// the timeout).
    elapsed: Duration,
    /// To the first poll that saw an answer: the start-up.
    first: Option<Duration>,
    /// `sendMessage` calls at the fake Bot API.
    replies: u64,
    handoffs: u64,
    workers: String,
    search: String,
}

impl WorkerRun {
    fn per_sec(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn timed_out(&self) -> bool {
        self.answered < self.pending
    }
}

/// Starts the worker side against `backend`: `serve` with its embedded
/// worker on SQLite, `WORKER_PROCESSES` × `frontdesk worker` on Redis.
fn start_workers(
    system: System,
    dir: &Path,
    backend: &Backend,
    api_base: &str,
) -> Result<(Vec<Process>, String), String> {
    let port = free_port().map_err(|e| format!("no free port: {e}"))?;
    let config = write_config(dir, port, backend, api_base)?;
    if system == System::Sqlite {
        let serve = Process::spawn(dir, &config, &["serve"], "serve.log")?;
        return Ok((vec![serve], format!("1 serve × {WORKER_LOOPS} loops")));
    }
    let workers = (1..=WORKER_PROCESSES)
        .map(|i| Process::spawn(dir, &config, &["worker"], &format!("worker-{i}.log")))
        .collect::<Result<_, _>>()?;
    Ok((
        workers,
        format!("{WORKER_PROCESSES} worker processes × {WORKER_LOOPS} loops"),
    ))
}

/// Polls every `WORKER_POLL` until none of `pending` conversations waits
/// (or `WORKER_TIMEOUT`): how many were answered, when the last and the
/// first were seen. Fails when a worker process exits meanwhile.
fn wait_answered(
    runtime: &tokio::runtime::Runtime,
    probe: &mut Probe,
    pending: u64,
    started: Instant,
    processes: &mut [Process],
) -> Result<(u64, Duration, Option<Duration>), String> {
    let mut first = None;
    let mut reported = Duration::ZERO;
    loop {
        let waiting = probe.count(runtime, UNANSWERED)?;
        let elapsed = started.elapsed();
        let answered = pending.saturating_sub(waiting);
        if answered > 0 && first.is_none() {
            first = Some(elapsed);
        }
        if waiting == 0 || elapsed >= WORKER_TIMEOUT {
            return Ok((answered, elapsed, first));
        }
        if let Some(exited) = processes.iter_mut().find_map(Process::exited) {
            return Err(exited);
        }
        if elapsed >= reported + Duration::from_secs(10) {
            reported = elapsed;
            println!(
                "  … {answered} of {pending} answered after {:.0} s",
                elapsed.as_secs_f64()
            );
        }
        std::thread::sleep(WORKER_POLL);
    }
}

/// The worker phase: answers the backlog the ingress phases stored, from
/// `SWEEP_GRACE` after `ingress_stopped`.
fn run_workers(
    system: System,
    backend: &Backend,
    dir: &Path,
    runtime: &tokio::runtime::Runtime,
    search: String,
    ingress_stopped: Instant,
) -> Result<WorkerRun, String> {
    let api = FakeBotApi::start().map_err(|e| format!("fake Bot API: {e}"))?;
    let mut probe = Probe::open(runtime, backend)?;
    let pending = probe.count(runtime, UNANSWERED)?;
    let queued = queued_in_redis(runtime, backend).map_or_else(
        || {
            format!(
                "the new process's sweeper queues them at start-up (then every \
                 {SWEEP_INTERVAL_SECS} s)"
            )
        },
        |n| format!("{n} turns queued in Redis"),
    );
    std::thread::sleep(SWEEP_GRACE.saturating_sub(ingress_stopped.elapsed()));
    println!(
        "running {} worker: {pending} conversations waiting, {queued}; search {search}…",
        system.label()
    );
    let started = Instant::now();
    let (mut processes, workers) = start_workers(system, dir, backend, &api.url())?;
    let (answered, elapsed, first) =
        wait_answered(runtime, &mut probe, pending, started, &mut processes)?;
    stop_all(processes)?;
    let replies = api.stop();
    let run = WorkerRun {
        system,
        pending,
        answered,
        elapsed,
        first,
        replies,
        handoffs: probe.count(runtime, HANDOFFS)?,
        workers,
        search,
    };
    println!(
        "{} worker: answered {} turns in {:.1} s: {:.1} turns/s{}; {} sendMessage at the \
         fake Bot API, {} handoffs",
        system.label(),
        run.answered,
        run.elapsed.as_secs_f64(),
        run.per_sec(),
        if run.timed_out() {
            format!(
                "  <-- TIMED OUT: {} of {} answered",
                run.answered, run.pending
            )
        } else {
            String::new()
        },
        run.replies,
        run.handoffs
    );
    Ok(run)
}

/// `url` without its password, for messages.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let connect = tokio_postgres::connect(url, tokio_postgres::NoTls);
    let shown = redacted(url);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(3), connect)
        .await
        .map_err(|_| format!("{shown}: no answer within 3 s"))?
        .map_err(|e| format!("{shown}: {e}"))?;
    tokio::spawn(connection);
    Ok(client)
}

async fn redis_connection(
    url: &str,
) -> Result<deadpool_redis::redis::aio::MultiplexedConnection, String> {
    let shown = redacted(url);
    let client = deadpool_redis::redis::Client::open(url).map_err(|e| format!("{shown}: {e}"))?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(3),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| format!("{shown}: no answer within 3 s"))?
    .map_err(|e| format!("{shown}: {e}"))?;
    deadpool_redis::redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map_err(|e| format!("{shown}: {e}"))?;
    Ok(conn)
}

fn skipped(what: &str, why: &str) {
    println!("\n!!! SKIPPED frontdesk PostgreSQL+Redis: {what} is not reachable ({why})\n");
}

/// Creates this run's database and checks Redis; `None` (skip) when either
/// is unreachable.
fn postgres_backend(runtime: &tokio::runtime::Runtime) -> Option<Backend> {
    let admin = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let redis = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    if let Err(e) = runtime.block_on(redis_connection(&redis)) {
        skipped("Redis", &e);
        return None;
    }
    let run = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("frontdesk_bench_{}", &run[..12]);
    let created = runtime.block_on(async {
        let client = pg_connect(&admin).await?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| format!("CREATE DATABASE {name}: {e}"))
    });
    if let Err(e) = created {
        skipped("PostgreSQL", &e);
        return None;
    }
    let mut url = url::Url::parse(&admin).expect("TEST_DATABASE_URL is a URL");
    url.set_path(&name);
    Some(Backend::Postgres {
        admin,
        name,
        url: url.to_string(),
        redis,
        prefix: format!("frontdesk_bench:{}", &run[..12]),
    })
}

/// Drops this run's database and Redis keys.
fn clean_up(runtime: &tokio::runtime::Runtime, backend: &Backend) {
    let Backend::Postgres {
        admin,
        name,
        redis,
        prefix,
        ..
    } = backend
    else {
        return;
    };
    let result = runtime.block_on(async {
        let client = pg_connect(admin).await?;
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .map_err(|e| format!("DROP DATABASE {name}: {e}"))?;
        let mut conn = redis_connection(redis).await?;
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = deadpool_redis::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| format!("SCAN: {e}"))?;
            if !keys.is_empty() {
                deadpool_redis::redis::cmd("DEL")
                    .arg(keys)
                    .query_async::<u64>(&mut conn)
                    .await
                    .map_err(|e| format!("DEL: {e}"))?;
            }
            if next == 0 {
                return Ok::<_, String>(());
            }
            cursor = next;
        }
    });
    if let Err(e) = result {
        println!("warning: clean-up after PostgreSQL+Redis failed: {e}");
    }
}

/// The closed and open runs against one Frontdesk system, then the
/// exactly-once check, then (unless `INGRESS_WORKER=0`) the worker phase.
/// `Err` for a failure of the system (not a skip).
fn run_frontdesk(
    options: &Options,
    system: System,
    backend: &Backend,
    dir: &Path,
    runtime: &tokio::runtime::Runtime,
    rows: &mut Vec<Row>,
    workers: &mut Vec<WorkerRun>,
) -> Result<bool, String> {
    let server = Frontdesk::start(dir, backend)?;
    let target = Target {
        addr: server.addr,
        kind: TargetKind::Frontdesk,
    };
    println!("running {} closed {CLOSED_CONNECTIONS}…", system.label());
    let (closed, ledger) = closed_loop(
        target.clone(),
        Ledger::new(options.duplicates),
        CLOSED_CONNECTIONS,
        WARM_UP,
        options.measure(),
    );
    rows.push(Row::closed(system, closed));
    println!("running {} open {}/s…", system.label(), options.rate);
    let (open, ledger) = open_loop(
        target,
        ledger,
        OPEN_CONNECTIONS,
        options.rate,
        options.measure(),
    );
    rows.push(Row::open(system, open, options.rate));
    match runtime.block_on(door_figures(server.addr)) {
        Ok(figures) => println!("{} door: {figures}", system.label()),
        Err(error) => println!("{} door: no figures ({error})", system.label()),
    }
    let search = runtime
        .block_on(search_mode(server.addr))
        .unwrap_or_else(|e| format!("unknown ({e})"));
    server.stop()?;
    let stopped = Instant::now();
    let stored = stored_updates(runtime, backend)?;
    let once = exactly_once(system, &stored, &ledger.acked);
    if !options.worker {
        return Ok(once);
    }
    let run = run_workers(system, backend, dir, runtime, search, stopped)?;
    let answered = !run.timed_out();
    workers.push(run);
    Ok(once && answered)
}

fn main() -> ExitCode {
    let options = Options::from_env();
    print_machine(&options);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    let mut workers = Vec::new();
    let mut failed = false;
    for &system in &options.only {
        if system == System::Bare {
            match run_bare(&options) {
                Ok(row) => rows.push(row),
                Err(e) => {
                    println!("error: bare server: {e}");
                    failed = true;
                }
            }
            continue;
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let backend = match system {
            System::Sqlite => Backend::Sqlite {
                file: dir.path().join("frontdesk.db"),
            },
            _ => match postgres_backend(&runtime) {
                Some(backend) => backend,
                None => continue,
            },
        };
        let outcome = run_frontdesk(
            &options,
            system,
            &backend,
            dir.path(),
            &runtime,
            &mut rows,
            &mut workers,
        );
        match outcome {
            Ok(true) => {}
            Ok(false) => failed = true,
            Err(e) => {
                println!("error: {}: {e}", system.label());
                failed = true;
            }
        }
        clean_up(&runtime, &backend);
    }
    print_table(&mut rows);
    print_workers(&workers, &rows);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
