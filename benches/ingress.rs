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
//! 1000 + N % 500) to `POST /webhooks/telegram/bench-tg` with the secret
//! token header; the bare server gets the same bodies with its HMAC header.
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

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::rc::Rc;
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

const BOT: &str = r#"
workspace = "bench"
name = "ingress"
system_prompt = "x"

[[channels]]
kind = "telegram"
id = "bench-tg"
bot_token = "123:abc"
secret_token = "bench-secret"
"#;

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
        Self {
            secs,
            rate,
            duplicates,
            only,
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

/// The Telegram update with id `n`: 500 private chats, one message each.
fn update_body(n: u64) -> String {
    let chat = 1000 + n % 500;
    format!(
        r#"{{"update_id":{n},"message":{{"message_id":{n},"from":{{"id":{chat},"is_bot":false,"first_name":"Ann"}},"chat":{{"id":{chat},"type":"private"}},"date":1733500000,"text":"Where is my order {n}?"}}}}"#
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
         client: 1 thread",
        options.secs,
        WARM_UP.as_secs(),
        options.rate,
        options.duplicates * 100.0
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

/// The bare server on its own thread (actix's system), two workers.
struct BareServer {
    addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl BareServer {
    fn start() -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server =
                    HttpServer::new(|| App::new().route(BARE_PATH, web::post().to(bare_webhook)))
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
            .map_err(|_| std::io::Error::other("the bare server did not start"))?;
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
    let server = BareServer::start()?;
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

/// A running `frontdesk serve --no-worker`.
struct Frontdesk {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Frontdesk {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn write_config(dir: &Path, port: u16, backend: &Backend) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("bots"))?;
    std::fs::write(dir.join("bots/ingress.toml"), BOT)?;
    let (database, redis) = match backend {
        Backend::Sqlite { file } => (format!("sqlite://{}", file.display()), String::new()),
        Backend::Postgres {
            url, redis, prefix, ..
        } => (
            url.clone(),
            format!("url = {redis:?}\nkey_prefix = {prefix:?}\n"),
        ),
    };
    // Nothing listens on the discard port: no reply can leave (and with
    // --no-worker none is attempted).
    let config = format!(
        "data_dir = {data:?}\n\
         [server]\nbind = \"127.0.0.1:{port}\"\nworkers = 2\nshutdown_timeout_secs = 10\n\
         [database]\nurl = {database:?}\n\
         [redis]\n{redis}\
         [bots]\ndir = {bots:?}\n\
         [channels.telegram]\napi_base = \"http://127.0.0.1:9\"\n\
         [embedding]\nauto_install = false\n\
         [log]\nfilter = \"warn\"\n",
        data = dir.join("data").display().to_string(),
        bots = dir.join("bots").display().to_string(),
    );
    let path = dir.join("frontdesk.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl Frontdesk {
    /// Starts the binary in `dir` and waits for `/readyz`.
    fn start(dir: &Path, backend: &Backend) -> Result<Self, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let config = write_config(dir, port, backend).map_err(|e| format!("config: {e}"))?;
        let log = dir.join("server.log");
        let stderr = std::fs::File::create(&log).map_err(|e| format!("log file: {e}"))?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_frontdesk"));
        command
            .arg("--config")
            .arg(&config)
            .args(["serve", "--no-worker"])
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(stderr);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FRONTDESK__")) {
            command.env_remove(key);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot run frontdesk: {e}"))?;
        let mut server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
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
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "frontdesk exited ({status}) before it was ready:\n{}",
                    log_tail(&self.log)
                ));
            }
            if let Ok(200) = runtime.block_on(get_status(self.addr, "/readyz")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "frontdesk not ready after 120 s:\n{}",
                    log_tail(&self.log)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then waits for a graceful exit (SIGKILL after 30 s).
    fn stop(mut self) -> Result<(), String> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        if !sent.is_ok_and(|s| s.success()) {
            return Err("could not send SIGTERM to frontdesk".into());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!(
                        "frontdesk exited with {status}:\n{}",
                        log_tail(&self.log)
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        Err("frontdesk did not stop within 30 s of SIGTERM (killed)".into())
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
/// exactly-once check. `Err` for a failure of the system (not a skip).
fn run_frontdesk(
    options: &Options,
    system: System,
    backend: &Backend,
    dir: &Path,
    runtime: &tokio::runtime::Runtime,
    rows: &mut Vec<Row>,
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
    server.stop()?;
    let stored = stored_updates(runtime, backend)?;
    Ok(exactly_once(system, &stored, &ledger.acked))
}

fn main() -> ExitCode {
    let options = Options::from_env();
    print_machine(&options);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
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
        match run_frontdesk(&options, system, &backend, dir.path(), &runtime, &mut rows) {
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
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
