//! Outcomes are written in batches: every outcome that waits and, when the dialer is busy, those
//! that arrive within the writers' gather (decision 0020), written by one statement. A quiet
//! dialer writes each outcome alone, as soon as it arrives; a busy one pays one round trip and
//! one commit per batch instead of per call.

use crate::batch::{next_batch, submit, BatchError};
use crate::staffing;
use chrono::{DateTime, Utc};
use cnmas_bus::{Outbox, OutboxRelay};
use cnmas_runtime::service::Base;
use sqlx::{PgPool, Row};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The most outcomes in one statement.
const MAX_BATCH: usize = 256;

// The attempts of one write travel as one set event, made by the write itself (decision
// 0015), so a batch must fit in one: an `AttemptRecorded` is well under 1 KiB.
const _: () = assert!(
    MAX_BATCH <= cnmas_bus::outbox::SET_EVENT_ITEMS
        && MAX_BATCH * 1024 <= cnmas_bus::outbox::SET_EVENT_BYTES
);

/// One outcome, checked, with the events that announce it.
pub struct Outcome {
    pub call_id: String,
    pub agent_id: String,
    pub lease_id: Uuid,
    pub attempt_id: Uuid,
    pub code: &'static str,
    pub recorded_at: DateTime<Utc>,
    pub callback_at: Option<DateTime<Utc>>,
    pub events: Outbox,
}

struct Pending {
    outcome: Outcome,
    written: oneshot::Sender<Result<bool, String>>,
}

#[derive(Clone)]
pub struct Outcomes {
    queue: mpsc::Sender<Pending>,
}

impl Outcomes {
    /// Starts the service's writer; it stops with the service.
    pub fn start(base: &Base, gather: Duration) -> Self {
        let (queue, arrivals) = mpsc::channel(4 * MAX_BATCH);
        base.tasks.spawn(run(
            base.pool.clone(),
            base.relay.clone(),
            gather,
            arrivals,
            base.shutdown.clone(),
        ));
        Outcomes { queue }
    }

    /// Writes the outcome: `true` once it is committed, `false` when its lease no longer holds
    /// the call (expired, or the same outcome sent twice), and then nothing of it is written.
    pub async fn record(&self, outcome: Outcome) -> Result<bool, BatchError> {
        submit(&self.queue, |written| Pending { outcome, written }).await
    }
}

async fn run(
    pool: PgPool,
    relay: OutboxRelay,
    gather: Duration,
    mut arrivals: mpsc::Receiver<Pending>,
    shutdown: CancellationToken,
) {
    while let Some(mut batch) = next_batch(&mut arrivals, MAX_BATCH, gather, &shutdown).await {
        metrics::histogram!("cnmas_dialer_outcome_batch_size").record(batch.len() as f64);
        let started = Instant::now();
        let written = write(&pool, &mut batch).await;
        metrics::histogram!("cnmas_dialer_outcome_write_seconds").record(started.elapsed());
        match written {
            Ok(made) => {
                if !made.is_empty() {
                    relay.wake();
                }
                for p in batch {
                    let _ = p.written.send(Ok(made.contains(&p.outcome.attempt_id)));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, outcomes = batch.len(), "writing outcomes failed");
                for p in batch {
                    let _ = p.written.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// Each call leaves the queue if its lease still holds it, and only then are its attempt, its
/// events and its agent's wrap-up written. Returns the attempts written. The call is found by
/// its id, the queue's key: a join on the lease alone, estimated without statistics on the
/// lease columns, was planned as a scan of the whole queue at every batch, 32 ms at 100,000
/// queued calls.
static WRITE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH input AS (
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::uuid[], $5::text[],
                                  $6::timestamptz[], $7::timestamptz[])
                 AS i(call_id, agent_id, lease_id, attempt_id, outcome, recorded_at, callback_at)),
         call AS (
             DELETE FROM queue q USING input i
             WHERE q.call_id = i.call_id AND q.lease_id = i.lease_id AND q.leased_by = i.agent_id
             RETURNING q.call_id, q.contact_id, q.campaign_id, q.attempt_number, q.leased_at,
                 i.agent_id, i.attempt_id, i.outcome, i.recorded_at, i.callback_at),
         attempt AS (
             INSERT INTO attempts (attempt_id, call_id, contact_id, campaign_id, agent_id,
                 attempt_number, outcome, leased_at, recorded_at, callback_at)
             SELECT attempt_id, call_id, contact_id, campaign_id, agent_id, attempt_number,
                 outcome, leased_at, recorded_at, callback_at
             FROM call),
         events AS ({}),
         {}
         SELECT attempt_id FROM call",
        Outbox::insert_announcing(8, "SELECT attempt_id FROM call"),
        staffing::transition_steps("'wrap_up'", "''", "agent_id IN (SELECT agent_id FROM call)")
    )
});

async fn write(pool: &PgPool, batch: &mut [Pending]) -> Result<HashSet<Uuid>, sqlx::Error> {
    // A lease sent twice in one batch (a double click) joins its queue row twice; PostgreSQL
    // deletes the row once, with one of the two, and the other finds it gone, as it would in
    // the next batch.
    let mut calls = Vec::with_capacity(batch.len());
    let mut agents = Vec::with_capacity(batch.len());
    let (mut lease_ids, mut attempt_ids, mut codes) = (Vec::new(), Vec::new(), Vec::new());
    let (mut recorded, mut callbacks) = (Vec::new(), Vec::new());
    let mut events = Outbox::new();
    let mut announcing = Vec::new();
    for p in batch.iter_mut() {
        let o = &mut p.outcome;
        calls.push(o.call_id.clone());
        agents.push(o.agent_id.clone());
        lease_ids.push(o.lease_id);
        attempt_ids.push(o.attempt_id);
        codes.push(o.code);
        recorded.push(o.recorded_at);
        callbacks.push(o.callback_at);
        let n = events.append(&mut o.events);
        announcing.extend(std::iter::repeat_n(o.attempt_id, n));
    }
    // Prepared: a plan cached while the queue was small would join it by a sequential scan,
    // but the dialer analyses the queue as it grows, and that makes the plan again.
    let made = events
        .bind_announcing(
            sqlx::query(&WRITE)
                .bind(calls)
                .bind(agents)
                .bind(lease_ids)
                .bind(attempt_ids)
                .bind(codes)
                .bind(recorded)
                .bind(callbacks),
            announcing,
        )
        .fetch_all(pool)
        .await?;
    made.iter().map(|row| row.try_get(0)).collect()
}
