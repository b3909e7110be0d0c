//! The broker conformance suite: the Redis and in-process brokers must
//! behave the same. Redis tests use `TEST_REDIS_URL` with a key prefix of
//! their own.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use broker::memory::MemoryBroker;
use broker::redis::RedisBroker;
use broker::{Broker, TurnJob};

fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// Without Redis: a failure in CI, else a loud skip.
fn missing_service(what: &str, why: &str) {
    assert!(!in_ci(), "{what} is required in CI: {why}");
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n!!! SKIPPED: {what} is not reachable ({why}); start it or run .ci/run\n"
    );
}

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A Redis broker under a fresh prefix, or `None` (skip) without Redis.
pub async fn redis_broker() -> Option<RedisBroker> {
    let prefix = format!("fdtest:{}", uuid::Uuid::new_v4().simple());
    match RedisBroker::connect(&redis_url(), &prefix, 8).await {
        Ok(broker) => Some(broker),
        Err(e) => {
            missing_service("Redis", &format!("{}: {e}", redis_url()));
            None
        }
    }
}

const SHORT: Duration = Duration::from_millis(20);
const NEVER: Duration = Duration::from_secs(3600);

async fn coalesces_and_hands_out_once<B: Broker>(broker: B) {
    assert!(broker.enqueue("c1").await.expect("enqueue"));
    assert!(
        !broker.enqueue("c1").await.expect("again"),
        "a pending turn absorbs the next"
    );
    assert!(broker.enqueue("c2").await.expect("other"));
    let first = broker
        .claim("w1", SHORT, NEVER)
        .await
        .expect("claim")
        .expect("job");
    assert_eq!(first.job().expect("job").conversation_id, "c1");
    assert_eq!(first.deliveries, 1);
    // Claimed: a new message queues a new turn.
    assert!(broker.enqueue("c1").await.expect("after claim"));
    let second = broker
        .claim("w2", SHORT, NEVER)
        .await
        .expect("claim")
        .expect("job");
    assert_eq!(second.job().expect("job").conversation_id, "c2");
    let third = broker
        .claim("w2", SHORT, NEVER)
        .await
        .expect("claim")
        .expect("job");
    assert_eq!(third.job().expect("job").conversation_id, "c1");
    assert!(
        broker
            .claim("w3", SHORT, NEVER)
            .await
            .expect("claim")
            .is_none()
    );
    for c in [&first, &second, &third] {
        broker.ack(c).await.expect("ack");
    }
}

async fn unacked_turns_are_reclaimed<B: Broker>(broker: B) {
    broker.enqueue("c1").await.expect("enqueue");
    let claimed = broker
        .claim("dead", SHORT, NEVER)
        .await
        .expect("claim")
        .expect("job");
    // Not yet idle long enough.
    assert!(
        broker
            .claim("live", SHORT, Duration::from_millis(300))
            .await
            .expect("claim")
            .is_none()
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let again = broker
        .claim("live", SHORT, Duration::from_millis(300))
        .await
        .expect("claim")
        .expect("reclaimed");
    assert_eq!(again.id, claimed.id);
    assert_eq!(again.deliveries, 2);
    broker.ack(&again).await.expect("ack");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(
        broker
            .claim("live", SHORT, Duration::from_millis(300))
            .await
            .expect("claim")
            .is_none(),
        "an acked turn is gone"
    );
}

async fn scheduled_turns_wait_and_count_as_pending<B: Broker>(broker: B) {
    broker
        .schedule(
            &TurnJob {
                conversation_id: "c1".into(),
                attempt: 2,
            },
            Duration::from_millis(300),
        )
        .await
        .expect("schedule");
    assert!(
        !broker.enqueue("c1").await.expect("enqueue"),
        "a delayed turn is pending"
    );
    assert!(
        broker
            .claim("w", SHORT, NEVER)
            .await
            .expect("claim")
            .is_none(),
        "not due"
    );
    let due = broker
        .claim("w", Duration::from_millis(1500), NEVER)
        .await
        .expect("claim")
        .expect("due");
    let job = due.job().expect("job");
    assert_eq!((job.conversation_id.as_str(), job.attempt), ("c1", 2));
    broker.ack(&due).await.expect("ack");
}

async fn locks_expire_and_are_fenced<B: Broker>(broker: B) {
    let ttl = Duration::from_millis(200);
    let a = broker.lock("c1", ttl).await.expect("lock").expect("free");
    assert!(
        broker.lock("c1", ttl).await.expect("lock").is_none(),
        "held"
    );
    let other = broker
        .lock("c2", ttl)
        .await
        .expect("lock")
        .expect("other conversation");
    assert!(other.token > a.token, "tokens increase");
    assert!(broker.renew(&a, ttl).await.expect("renew"));
    let forged = broker::Lock {
        conversation_id: "c1".into(),
        token: a.token + 100,
    };
    assert!(
        !broker.unlock(&forged).await.expect("unlock"),
        "only the holder releases"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = broker
        .lock("c1", ttl)
        .await
        .expect("lock")
        .expect("expired");
    assert!(b.token > a.token);
    assert!(
        !broker.renew(&a, ttl).await.expect("renew"),
        "the old holder lost it"
    );
    assert!(!broker.unlock(&a).await.expect("unlock"));
    assert!(broker.unlock(&b).await.expect("unlock"));
    assert!(
        broker.lock("c1", ttl).await.expect("lock").is_some(),
        "released"
    );
}

async fn dead_letters_and_pubsub<B: Broker>(broker: B) {
    broker.enqueue("c1").await.expect("enqueue");
    let claimed = broker
        .claim("w", SHORT, NEVER)
        .await
        .expect("claim")
        .expect("job");
    broker
        .dead_letter(&claimed, "tried 5 times")
        .await
        .expect("dead");
    let (letters, total) = broker.dead_letters(10).await.expect("letters");
    assert_eq!(total, 1);
    assert_eq!(letters[0].reason, "tried 5 times");
    assert!(
        broker
            .claim("w", SHORT, Duration::from_millis(1))
            .await
            .expect("claim")
            .is_none()
    );

    let mut events = broker.subscribe("workspace-1").await.expect("subscribe");
    let mut other = broker.subscribe("workspace-2").await.expect("subscribe");
    // Redis subscriptions take effect asynchronously.
    tokio::time::sleep(Duration::from_millis(100)).await;
    broker
        .publish("workspace-1", "{\"type\":\"hello\"}")
        .await
        .expect("publish");
    let got = tokio::time::timeout(Duration::from_secs(2), events.recv())
        .await
        .expect("in time");
    assert_eq!(got.as_deref(), Some("{\"type\":\"hello\"}"));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), other.recv())
            .await
            .is_err()
    );
    broker.ping().await.expect("ping");
}

async fn batches_behave_like_single_calls<B: Broker>(broker: B) {
    assert!(broker.enqueue("c1").await.expect("enqueue"));
    let ids: Vec<String> = ["c1", "c2", "c3", "c2"].map(String::from).to_vec();
    assert_eq!(
        broker.enqueue_many(&ids).await.expect("enqueue many"),
        2,
        "c1 was pending, and c2 twice in one batch is one turn"
    );
    assert_eq!(broker.enqueue_many(&[]).await.expect("nothing"), 0);
    let mut claimed = Vec::new();
    while let Some(job) = broker.claim("w", SHORT, NEVER).await.expect("claim") {
        claimed.push(job.job().expect("job").conversation_id);
    }
    assert_eq!(claimed, ["c1", "c2", "c3"]);

    let mut one = broker.subscribe("ws-1").await.expect("subscribe");
    let mut two = broker.subscribe("ws-2").await.expect("subscribe");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let events: Vec<(String, String)> = [("ws-1", "a"), ("ws-2", "b"), ("ws-1", "c")]
        .map(|(t, p)| (t.to_owned(), p.to_owned()))
        .to_vec();
    broker.publish_many(&events).await.expect("publish many");
    let next = async |rx: &mut broker::Subscription| {
        tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("in time")
    };
    assert_eq!(next(&mut one).await.as_deref(), Some("a"));
    assert_eq!(next(&mut one).await.as_deref(), Some("c"), "in order");
    assert_eq!(next(&mut two).await.as_deref(), Some("b"));
}

async fn rate_limits_count_every_admitted_attempt<B: Broker>(broker: B) {
    use broker::Limit;
    let window = Duration::from_secs(60);
    let limits = [Limit::new("email:a", 2), Limit::new("ip:1", 3)];
    assert_eq!(
        broker.admit(&limits, "1", window).await.expect("admit"),
        None
    );
    assert_eq!(
        broker.admit(&limits, "2", window).await.expect("admit"),
        None
    );
    let wait = broker
        .admit(&limits, "3", window)
        .await
        .expect("admit")
        .expect("the email is full");
    assert!(wait > Duration::from_secs(50) && wait <= window, "{wait:?}");
    // The refused attempt did not count against the address.
    let other = [Limit::new("email:b", 5), Limit::new("ip:1", 3)];
    assert_eq!(
        broker.admit(&other, "4", window).await.expect("admit"),
        None
    );
    assert!(
        broker
            .admit(&other, "5", window)
            .await
            .expect("admit")
            .is_some()
    );
    // A success is taken back.
    broker
        .forgive(&["email:a".into(), "ip:1".into()], "2")
        .await
        .expect("forgive");
    assert_eq!(
        broker.admit(&limits, "6", window).await.expect("admit"),
        None
    );
    // Concurrent attempts cannot all slip past a limit.
    let burst = [Limit::new("burst", 5)];
    let tries = (0..40).map(|i| {
        let id = format!("b{i}");
        let broker = &broker;
        let burst = &burst;
        async move { broker.admit(burst, &id, window).await.expect("admit") }
    });
    let waits = futures_util::future::join_all(tries).await;
    assert_eq!(waits.iter().filter(|w| w.is_none()).count(), 5);
    // A short window lets attempts in again.
    let short = [Limit::new("short", 1)];
    let window = Duration::from_millis(200);
    assert_eq!(
        broker.admit(&short, "s1", window).await.expect("admit"),
        None
    );
    assert!(
        broker
            .admit(&short, "s2", window)
            .await
            .expect("admit")
            .is_some()
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        broker.admit(&short, "s3", window).await.expect("admit"),
        None
    );
}

macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    super::$name(MemoryBroker::new()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    if let Some(broker) = redis_broker().await {
                        super::$name(broker).await;
                    }
                }
            }
        )+
    };
}

conformance!(
    coalesces_and_hands_out_once,
    unacked_turns_are_reclaimed,
    scheduled_turns_wait_and_count_as_pending,
    locks_expire_and_are_fenced,
    dead_letters_and_pubsub,
    batches_behave_like_single_calls,
    rate_limits_count_every_admitted_attempt,
);
