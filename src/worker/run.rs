//! The loops around [`Worker::process_next`]: `worker.concurrency` of
//! them plus the sweeper that re-queues lost turns.

use std::sync::Arc;
use std::time::Duration;

use crate::context::App;
use crate::turn::Responder;
use broker::Broker;
use store::models::conversation::Conversation;

use super::{Worker, WorkerError};

/// Re-queues conversations with customer messages that no turn answered
/// (their turn was lost: the broker was down at ingest, or Redis restarted
/// empty). Returns how many were queued anew.
pub async fn sweep(app: &App) -> Result<usize, WorkerError> {
    let mut conn = app.db.get().await?;
    // A little grace so turns queued right now are not doubled.
    let cutoff = chrono::Utc::now().naive_utc()
        - chrono::Duration::milliseconds(app.settings.worker.debounce_ms as i64 + 2000);
    let waiting = Conversation::with_unanswered(&mut conn, cutoff).await?;
    drop(conn);
    let mut queued = 0;
    for id in waiting {
        if app.broker.enqueue(&id).await? {
            queued += 1;
        }
    }
    if queued > 0 {
        tracing::warn!(queued, "re-queued conversations with unanswered messages");
    }
    let (_, dead) = app.broker.dead_letters(0).await?;
    app.metrics
        .dead_letters
        .set(i64::try_from(dead).unwrap_or(i64::MAX));
    Ok(queued)
}

/// Runs `concurrency` worker loops and the sweeper until `shutdown` turns
/// true; each loop finishes its current turn first. Broker or database
/// failures back off (100 ms doubling to 5 s) and resume.
pub async fn run(
    app: App,
    responder: Arc<dyn Responder>,
    name: String,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let concurrency = app.settings.worker.concurrency;
    tracing::info!(concurrency, "workers started");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let worker = Worker::new(app.clone(), responder.clone(), format!("{name}-{i}"));
        let mut stop = shutdown.clone();
        tasks.spawn(async move {
            let mut backoff = Duration::from_millis(100);
            while !*stop.borrow() {
                match worker.process_next().await {
                    Ok(_) => backoff = Duration::from_millis(100),
                    Err(error) => {
                        tracing::warn!(%error, ?backoff, "worker cannot reach the broker or database; backing off");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            _ = stop.changed() => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }
    let sweeper_app = app.clone();
    let mut sweeper_stop = shutdown.clone();
    tasks.spawn(async move {
        let interval = Duration::from_secs(sweeper_app.settings.worker.sweep_interval_secs.max(1));
        loop {
            if let Err(error) = sweep(&sweeper_app).await {
                tracing::warn!(%error, "sweep failed");
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = sweeper_stop.changed() => break,
            }
        }
    });
    let _ = shutdown.changed().await;
    while tasks.join_next().await.is_some() {}
    tracing::info!("workers stopped");
}
