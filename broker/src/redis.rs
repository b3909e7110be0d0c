//! The Redis broker: turns in a stream with a consumer group, delayed turns
//! in a sorted set, fenced locks, a dead-letter list and pub/sub — every key
//! under one prefix, so deployments (and tests) can share a Redis.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:turns` | stream, group `workers` | turn jobs (`job` field) |
//! | `P:delayed` | sorted set | turn jobs by due time (ms) |
//! | `P:pending:{conversation}` | string | "a turn is queued or delayed" (coalescing) |
//! | `P:lock:{conversation}` | string | the holder's fencing token |
//! | `P:fence` | counter | the last fencing token handed out |
//! | `P:dead` | list | dead letters, newest first (capped) |
//! | `P:events:{topic}` | pub/sub channel | realtime events |
//!
//! Multi-key steps that must not interleave run as Lua scripts.

use std::time::Duration;

use deadpool_redis::redis::streams::{StreamAutoClaimReply, StreamReadReply};
use deadpool_redis::redis::{self, AsyncCommands, Script, Value};
use deadpool_redis::{Connection, Pool};

use super::{
    Broker, BrokerError, BrokerResult, Claimed, DeadLetter, Lock, Subscription, TurnJob, now_ms,
};

const GROUP: &str = "workers";
/// Most dead letters kept.
const DEAD_LETTER_CAP: isize = 1000;
/// How long a pending marker lives at most: a safety net (claims, reclaims
/// and acks clear it); past it, the worst case is one extra, empty turn.
const PENDING_TTL_SECS: u64 = 300;

/// The Redis broker. Cheap to clone.
#[derive(Clone)]
pub struct RedisBroker {
    pool: Pool,
    client: redis::Client,
    prefix: String,
    /// Where the next `XAUTOCLAIM` scan starts, so turns deep in the
    /// pending list are reached too.
    reclaim_cursor: std::sync::Arc<std::sync::Mutex<String>>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisBroker({})", self.prefix)
    }
}

/// A pooled connection, failing as a Redis I/O error.
async fn pooled(pool: &Pool) -> redis::RedisResult<Connection> {
    pool.get().await.map_err(|e| {
        redis::RedisError::from((redis::ErrorKind::Io, "connection pool", e.to_string()))
    })
}

fn err(e: impl std::fmt::Display) -> BrokerError {
    BrokerError(e.to_string())
}

/// Queues a turn unless one is pending: `KEYS` pending marker and stream,
/// `ARGV` job and the marker's lifetime.
const ENQUEUE_SCRIPT: &str = r"
    if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
        redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
        return 1
    end
    return 0";

/// Admits an attempt on sliding windows (sorted sets scored by Redis's own
/// clock, so every node agrees): `KEYS` the windows, `ARGV` the window in
/// ms, the attempt's id, then each key's limit. Returns 0, or the ms to wait.
const ADMIT_SCRIPT: &str = r"
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local window = tonumber(ARGV[1])
    local wait = 0
    for i, key in ipairs(KEYS) do
        redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
        local limit = tonumber(ARGV[2 + i])
        if redis.call('ZCARD', key) >= limit then
            local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
            local room = window
            if oldest[2] then room = tonumber(oldest[2]) + window - now end
            if room < 1 then room = 1 end
            if room > wait then wait = room end
        end
    end
    if wait > 0 then return wait end
    for _, key in ipairs(KEYS) do
        redis.call('ZADD', key, now, ARGV[2])
        redis.call('PEXPIRE', key, window)
    end
    return 0";

impl RedisBroker {
    /// Connects to `url` (checking it answers) with keys under `prefix`.
    pub async fn connect(url: &str, prefix: &str, pool_size: usize) -> BrokerResult<Self> {
        let mut config = deadpool_redis::Config::from_url(url);
        config.pool = Some(deadpool_redis::PoolConfig::new(pool_size.max(2)));
        let pool = config
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .map_err(err)?;
        let client = redis::Client::open(url).map_err(err)?;
        let broker = Self {
            pool,
            client,
            prefix: prefix.trim_end_matches(':').to_owned(),
            reclaim_cursor: std::sync::Arc::new(std::sync::Mutex::new("0-0".into())),
        };
        broker.ping().await?;
        broker.ensure_group().await?;
        Ok(broker)
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    async fn conn(&self) -> BrokerResult<Connection> {
        self.pool.get().await.map_err(err)
    }

    /// Creates the stream and its group (again, after Redis lost its data).
    async fn ensure_group(&self) -> BrokerResult<()> {
        let mut conn = self.conn().await?;
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.key("turns"))
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    /// Moves due delayed turns into the stream.
    async fn promote_due(&self, conn: &mut Connection) -> BrokerResult<()> {
        let script = Script::new(
            r"
            local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
            for _, job in ipairs(due) do
                redis.call('ZREM', KEYS[1], job)
                redis.call('XADD', KEYS[2], '*', 'job', job)
            end
            return #due",
        );
        let _: i64 = script
            .key(self.key("delayed"))
            .key(self.key("turns"))
            .arg(now_ms())
            .invoke_async(conn)
            .await
            .map_err(err)?;
        Ok(())
    }

    fn claimed_from(
        &self,
        id: String,
        map: &std::collections::HashMap<String, Value>,
        deliveries: u64,
    ) -> Claimed {
        let payload = match map.get("job") {
            Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => String::new(),
        };
        Claimed {
            id,
            payload,
            deliveries,
        }
    }

    async fn clear_pending(&self, conn: &mut Connection, claimed: &Claimed) -> BrokerResult<()> {
        if let Ok(job) = claimed.job() {
            let _: () = conn
                .del(self.key(&format!("pending:{}", job.conversation_id)))
                .await
                .map_err(err)?;
        }
        Ok(())
    }

    /// One round of [`Broker::claim`]: promote due turns, reclaim a dead
    /// worker's turn, or read a new one (blocking at most 200 ms).
    async fn claim_once(
        &self,
        consumer: &str,
        reclaim_idle: Duration,
        deadline: std::time::Instant,
    ) -> BrokerResult<Option<Claimed>> {
        let mut conn = self.conn().await?;
        self.promote_due(&mut conn).await?;
        let stream = self.key("turns");
        let cursor = self
            .reclaim_cursor
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|_| "0-0".into());
        let reclaimed: StreamAutoClaimReply = self
            .with_group(|| {
                let pool = self.pool.clone();
                let stream = stream.clone();
                let cursor = cursor.clone();
                async move {
                    let mut conn = pooled(&pool).await?;
                    redis::cmd("XAUTOCLAIM")
                        .arg(&stream)
                        .arg(GROUP)
                        .arg(consumer)
                        .arg(reclaim_idle.as_millis() as u64)
                        .arg(&cursor)
                        .arg("COUNT")
                        .arg(1)
                        .query_async(&mut conn)
                        .await
                }
            })
            .await?;
        if let Ok(mut c) = self.reclaim_cursor.lock() {
            *c = reclaimed.next_stream_id.clone();
        }
        if let Some(entry) = reclaimed.claimed.into_iter().next() {
            // XAUTOCLAIM does not say how often the entry was handed out.
            let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                .arg(&stream)
                .arg(GROUP)
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1)
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            let deliveries = pending.first().map_or(2, |p| p.3);
            let claimed = self.claimed_from(entry.id, &entry.map, deliveries);
            self.clear_pending(&mut conn, &claimed).await?;
            return Ok(Some(claimed));
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let block_ms = left.min(Duration::from_millis(200)).as_millis().max(1) as u64;
        let read: Option<StreamReadReply> = self
            .with_group(|| {
                let pool = self.pool.clone();
                let stream = stream.clone();
                async move {
                    let mut conn = pooled(&pool).await?;
                    redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg(GROUP)
                        .arg(consumer)
                        .arg("COUNT")
                        .arg(1)
                        .arg("BLOCK")
                        .arg(block_ms)
                        .arg("STREAMS")
                        .arg(&stream)
                        .arg(">")
                        .query_async(&mut conn)
                        .await
                }
            })
            .await?;
        let entry = read
            .and_then(|r| r.keys.into_iter().next())
            .and_then(|k| k.ids.into_iter().next());
        let Some(entry) = entry else {
            return Ok(None);
        };
        let claimed = self.claimed_from(entry.id, &entry.map, 1);
        self.clear_pending(&mut conn, &claimed).await?;
        Ok(Some(claimed))
    }

    /// Runs `f`; if the stream's group vanished (Redis restarted empty),
    /// recreates it and runs `f` once more.
    async fn with_group<T, F, Fut>(&self, f: F) -> BrokerResult<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match f().await {
            Err(e) if e.to_string().contains("NOGROUP") => {
                self.ensure_group().await?;
                f().await.map_err(err)
            }
            other => other.map_err(err),
        }
    }
}

impl Broker for RedisBroker {
    async fn enqueue(&self, conversation_id: &str) -> BrokerResult<bool> {
        let script = Script::new(ENQUEUE_SCRIPT);
        let mut conn = self.conn().await?;
        let queued: i64 = script
            .key(self.key(&format!("pending:{conversation_id}")))
            .key(self.key("turns"))
            .arg(TurnJob::new(conversation_id).encode())
            .arg(PENDING_TTL_SECS)
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(queued == 1)
    }

    async fn enqueue_many(&self, conversation_ids: &[String]) -> BrokerResult<usize> {
        if conversation_ids.is_empty() {
            return Ok(0);
        }
        // The script of `enqueue`, once per conversation, in one round trip.
        let mut pipe = redis::pipe();
        for id in conversation_ids {
            pipe.cmd("EVAL")
                .arg(ENQUEUE_SCRIPT)
                .arg(2)
                .arg(self.key(&format!("pending:{id}")))
                .arg(self.key("turns"))
                .arg(TurnJob::new(id).encode())
                .arg(PENDING_TTL_SECS);
        }
        let mut conn = self.conn().await?;
        let queued: Vec<i64> = pipe.query_async(&mut conn).await.map_err(err)?;
        Ok(queued.into_iter().filter(|q| *q == 1).count())
    }

    async fn schedule(&self, job: &TurnJob, delay: Duration) -> BrokerResult<()> {
        let mut conn = self.conn().await?;
        let due = now_ms() + delay.as_millis() as i64;
        // A unique member per scheduling: the same job may be delayed twice.
        let member = serde_json::json!({
            "conversation_id": job.conversation_id,
            "attempt": job.attempt,
            "nonce": format!("{due}-{}", uuid::Uuid::new_v4().simple()),
        })
        .to_string();
        redis::pipe()
            .atomic()
            .set_ex(
                self.key(&format!("pending:{}", job.conversation_id)),
                "1",
                PENDING_TTL_SECS,
            )
            .zadd(self.key("delayed"), member, due)
            .query_async::<()>(&mut conn)
            .await
            .map_err(err)
    }

    async fn claim(
        &self,
        consumer: &str,
        wait: Duration,
        reclaim_idle: Duration,
    ) -> BrokerResult<Option<Claimed>> {
        // Short blocking reads in a loop: delayed turns falling due during
        // the wait are promoted, and no read outlives the client's timeout.
        let deadline = std::time::Instant::now() + wait;
        loop {
            if let Some(claimed) = self.claim_once(consumer, reclaim_idle, deadline).await? {
                return Ok(Some(claimed));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    async fn ack(&self, claimed: &Claimed) -> BrokerResult<()> {
        let mut conn = self.conn().await?;
        redis::pipe()
            .cmd("XACK")
            .arg(self.key("turns"))
            .arg(GROUP)
            .arg(&claimed.id)
            .ignore()
            .cmd("XDEL")
            .arg(self.key("turns"))
            .arg(&claimed.id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(err)
    }

    async fn dead_letter(&self, claimed: &Claimed, reason: &str) -> BrokerResult<()> {
        let letter = serde_json::to_string(&DeadLetter {
            payload: claimed.payload.clone(),
            reason: reason.to_owned(),
            at_ms: now_ms(),
        })
        .map_err(err)?;
        let mut conn = self.conn().await?;
        redis::pipe()
            .lpush(self.key("dead"), letter)
            .ignore()
            .ltrim(self.key("dead"), 0, DEAD_LETTER_CAP - 1)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(err)?;
        self.ack(claimed).await
    }

    async fn dead_letters(&self, limit: usize) -> BrokerResult<(Vec<DeadLetter>, u64)> {
        let mut conn = self.conn().await?;
        let (raw, total): (Vec<String>, u64) = redis::pipe()
            .lrange(self.key("dead"), 0, limit as isize - 1)
            .llen(self.key("dead"))
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        let letters = raw
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect();
        Ok((letters, total))
    }

    async fn lock(&self, conversation_id: &str, ttl: Duration) -> BrokerResult<Option<Lock>> {
        let script = Script::new(
            r"
            if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
            local token = redis.call('INCR', KEYS[2])
            redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
            return token",
        );
        let mut conn = self.conn().await?;
        let token: u64 = script
            .key(self.key(&format!("lock:{conversation_id}")))
            .key(self.key("fence"))
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        Ok((token > 0).then(|| Lock {
            conversation_id: conversation_id.to_owned(),
            token,
        }))
    }

    async fn renew(&self, lock: &Lock, ttl: Duration) -> BrokerResult<bool> {
        let script = Script::new(
            r"
            if redis.call('GET', KEYS[1]) == ARGV[1] then
                return redis.call('PEXPIRE', KEYS[1], ARGV[2])
            end
            return 0",
        );
        let mut conn = self.conn().await?;
        let renewed: i64 = script
            .key(self.key(&format!("lock:{}", lock.conversation_id)))
            .arg(lock.token.to_string())
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(renewed == 1)
    }

    async fn unlock(&self, lock: &Lock) -> BrokerResult<bool> {
        let script = Script::new(
            r"
            if redis.call('GET', KEYS[1]) == ARGV[1] then
                return redis.call('DEL', KEYS[1])
            end
            return 0",
        );
        let mut conn = self.conn().await?;
        let released: i64 = script
            .key(self.key(&format!("lock:{}", lock.conversation_id)))
            .arg(lock.token.to_string())
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(released == 1)
    }

    async fn publish(&self, topic: &str, payload: &str) -> BrokerResult<()> {
        let mut conn = self.conn().await?;
        let _: i64 = conn
            .publish(self.key(&format!("events:{topic}")), payload)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn publish_many(&self, events: &[(String, String)]) -> BrokerResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (topic, payload) in events {
            pipe.cmd("PUBLISH")
                .arg(self.key(&format!("events:{topic}")))
                .arg(payload)
                .ignore();
        }
        let mut conn = self.conn().await?;
        let () = pipe.query_async(&mut conn).await.map_err(err)?;
        Ok(())
    }

    async fn subscribe(&self, topic: &str) -> BrokerResult<Subscription> {
        use futures_util::StreamExt;
        let mut pubsub = self.client.get_async_pubsub().await.map_err(err)?;
        pubsub
            .subscribe(self.key(&format!("events:{topic}")))
            .await
            .map_err(err)?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                if tx.send(payload).await.is_err() {
                    break;
                }
            }
        });
        Ok(rx)
    }

    async fn admit(
        &self,
        limits: &[crate::Limit],
        id: &str,
        window: Duration,
    ) -> BrokerResult<Option<Duration>> {
        if limits.is_empty() {
            return Ok(None);
        }
        let script = Script::new(ADMIT_SCRIPT);
        let mut call = script.prepare_invoke();
        for limit in limits {
            call.key(self.key(&format!("limit:{}", limit.key)));
        }
        call.arg(window.as_millis().max(1) as u64).arg(id);
        for limit in limits {
            call.arg(limit.max);
        }
        let mut conn = self.conn().await?;
        let wait_ms: u64 = call.invoke_async(&mut conn).await.map_err(err)?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms)))
    }

    async fn forgive(&self, keys: &[String], id: &str) -> BrokerResult<()> {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.zrem(self.key(&format!("limit:{key}")), id).ignore();
        }
        let mut conn = self.conn().await?;
        pipe.query_async::<()>(&mut conn).await.map_err(err)
    }

    async fn ping(&self) -> BrokerResult<()> {
        let mut conn = self.conn().await?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(BrokerError(format!("unexpected PING answer {pong}")))
        }
    }
}
