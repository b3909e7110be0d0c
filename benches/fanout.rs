//! Websocket fan-out benchmark: `cargo bench --bench fanout`.
//!
//! Starts the real `frontdesk serve --no-worker` binary (SQLite, in-process
//! broker) as its own process, logs an agent in, and connects 1,000 and
//! then 10,000 agent sockets (`/ws/agent`) to it from this process. Each
//! round an agent adds a note over the API; the `note.created` event fans
//! out to every socket. Latency: from sending the API request to each
//! socket receiving the event, p50/p99 over every (socket, event). Memory:
//! the server process's resident set (VmRSS) before the sockets and with
//! them connected.
//!
//! Needs one file descriptor per socket in each process: `ulimit -n` of at
//! least 10,500 (20,000 on the machines this ran on).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const BOT: &str = r#"
workspace = "bench"
name = "b"
system_prompt = "x"

[[channels]]
kind = "telegram"
id = "bench-tg"
bot_token = "1:t"
secret_token = "bench-secret"
"#;

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The soft limit on open files (`ulimit -n`), from /proc.
fn fd_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(0)
}

fn start(dir: &std::path::Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::create_dir_all(dir.join("config/bots")).unwrap();
    std::fs::write(dir.join("config/bots/b.toml"), BOT).unwrap();
    let exe = env!("CARGO_BIN_EXE_frontdesk");
    let envs = [
        ("FRONTDESK__SERVER__BIND", format!("127.0.0.1:{port}")),
        ("FRONTDESK__SERVER__WORKERS", "2".to_owned()),
        ("FRONTDESK__LOG__FILTER", "warn".to_owned()),
        ("FRONTDESK__EMBEDDING__AUTO_INSTALL", "false".to_owned()),
        ("BENCH_PASSWORD", "bench password 1".to_owned()),
    ];
    let status = Command::new(exe)
        .args([
            "user",
            "create",
            "--workspace",
            "bench",
            "--email",
            "a@bench.test",
            "--role",
            "agent",
            "--password-env",
            "BENCH_PASSWORD",
        ])
        .current_dir(dir)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "user create");
    let child = Command::new(exe)
        .args(["serve", "--no-worker"])
        .current_dir(dir)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Server {
        child,
        addr: format!("127.0.0.1:{port}"),
    }
}

async fn connect(addr: &str, token: &str, tx: mpsc::UnboundedSender<(usize, Instant)>, id: usize) {
    let mut request = format!("ws://{addr}/ws/agent")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    // The hello frame.
    let _ = socket.next().await;
    tokio::spawn(async move {
        while let Some(Ok(frame)) = socket.next().await {
            if let Ws::Text(text) = frame
                && text.contains("\"note.created\"")
            {
                let _ = tx.send((id, Instant::now()));
            }
        }
    });
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let limit = fd_limit();
    assert!(
        limit >= 10_500,
        "10,000 sockets need `ulimit -n` of at least 10500 (it is {limit}): raise it and run again"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let login: Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({ "email": "a@bench.test", "password": "bench password 1" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    // A conversation to note on, from a Telegram webhook.
    let update = json!({ "update_id": 1, "message": { "message_id": 1, "date": 1,
        "chat": { "id": 7, "type": "private" }, "from": { "id": 7, "is_bot": false, "first_name": "C" },
        "text": "hello" } });
    let res = http
        .post(format!("{base}/webhooks/telegram/bench-tg"))
        .header("x-telegram-bot-api-secret-token", "bench-secret")
        .json(&update)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "webhook: {}", res.status());
    let list: Value = http
        .get(format!("{base}/api/v1/conversations"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conversation = list["items"][0]["id"].as_str().unwrap().to_owned();
    let pid = server.child.id();
    let idle = rss_kib(pid);
    println!(
        "websocket fan-out, server `frontdesk serve --no-worker` (2 HTTP workers, SQLite, in-process broker); fd limit {limit}"
    );
    println!("server RSS with no socket: {:.1} MiB", idle as f64 / 1024.0);

    let (tx, mut rx) = mpsc::unbounded_channel();
    let token = Arc::new(token);
    let mut connected = 0;
    for (clients, rounds) in [(1_000usize, 30usize), (10_000, 10)] {
        let started = Instant::now();
        let mut batch = Vec::new();
        for id in connected..clients {
            let (addr, token, tx) = (server.addr.clone(), token.clone(), tx.clone());
            batch.push(tokio::spawn(
                async move { connect(&addr, &token, tx, id).await },
            ));
            if batch.len() == 200 {
                for task in batch.drain(..) {
                    task.await.unwrap();
                }
            }
        }
        for task in batch {
            task.await.unwrap();
        }
        connected = clients;
        let connect_time = started.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = rss_kib(pid);
        let mut latencies = Vec::with_capacity(clients * rounds);
        let mut worst_round = Duration::ZERO;
        for round in 0..rounds {
            while rx.try_recv().is_ok() {}
            let sent = Instant::now();
            let res = http
                .post(format!("{base}/api/v1/conversations/{conversation}/notes"))
                .bearer_auth(token.as_str())
                .json(&json!({ "text": format!("round {round}") }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201);
            let mut got = 0;
            let wait = Instant::now() + Duration::from_secs(60);
            while got < clients {
                let left = wait.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, rx.recv()).await {
                    Ok(Some((_, at))) => {
                        latencies.push(at - sent);
                        got += 1;
                    }
                    _ => panic!("round {round}: {got} of {clients} sockets got the event"),
                }
            }
            worst_round = worst_round.max(sent.elapsed());
        }
        latencies.sort();
        println!(
            "{clients:>6} sockets: connected in {:.1} s; server RSS {:.1} MiB (+{:.1} KiB per socket); \
             {rounds} events: p50 {}, p99 {}, max {}, last socket of the slowest event {}",
            connect_time.as_secs_f64(),
            rss as f64 / 1024.0,
            (rss.saturating_sub(idle)) as f64 / clients as f64,
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            ms(*latencies.last().unwrap()),
            ms(worst_round),
        );
    }
    drop(server);
}
