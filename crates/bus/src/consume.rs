//! The batch consume loop every service uses: fetch a batch → one transaction (inbox dedupe +
//! state + outbox) → commit → ack.

use crate::{outbox::Outbox, topology, BusError, Namespace, OutboxRelay, Publisher};
use async_nats::jetstream::{self, consumer::pull, AckKind};
use bytes::Bytes;
use futures::StreamExt;
use sqlx::{PgConnection, PgPool};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Which messages a durable consumer takes, and how.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// The service that owns the consumer (dead-letter subject, metrics).
    pub service: &'static str,
    /// The durable consumer's name, unique within its stream.
    pub name: &'static str,
    /// A contract subject filter, e.g. `cnmas.in.v1.*.contact`.
    pub filter: &'static str,
    /// The most messages handled in one transaction.
    pub max_batch: usize,
    /// Stop adding messages to a batch past this many payload bytes (a fund's message may
    /// carry thousands of contacts).
    pub max_batch_bytes: usize,
    /// After this many deliveries a message that still fails goes to the dead-letter subject.
    pub max_deliveries: i64,
}

impl ConsumerSpec {
    pub fn new(service: &'static str, name: &'static str, filter: &'static str) -> Self {
        ConsumerSpec {
            service,
            name,
            filter,
            max_batch: 500,
            max_batch_bytes: 2 * 1024 * 1024,
            max_deliveries: 5,
        }
    }
}

/// A received message, as handlers see it.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// `Nats-Msg-Id`, or `<stream>:<sequence>` when the publisher set none.
    pub event_id: String,
    /// The contract subject (namespace removed).
    pub subject: String,
    pub payload: Bytes,
    /// 1 on first delivery.
    pub delivered: i64,
}

impl Incoming {
    /// The items of a set event (decision 0015): on the set's subject, whose last token is
    /// `set_kind`, the set decoded and cut into its items by `items`; on any other (the
    /// subject of the single event the set replaced), that one event.
    pub fn items<S, T>(
        &self,
        set_kind: &str,
        items: impl FnOnce(S) -> Vec<T>,
    ) -> Result<Vec<T>, prost::DecodeError>
    where
        S: prost::Message + Default,
        T: prost::Message + Default,
    {
        if self.subject.rsplit('.').next() == Some(set_kind) {
            S::decode(self.payload.clone()).map(items)
        } else {
            T::decode(self.payload.clone()).map(|item| vec![item])
        }
    }
}

/// What to do with one message of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Applied (or deliberately ignored): recorded in the inbox and acked.
    Done,
    /// Not applied now (e.g. an event it depends on has not arrived): redelivered after the
    /// delay. The handler must not have written anything for it.
    Retry(Duration),
    /// Can never be applied (e.g. undecodable): sent to the dead-letter subject with the
    /// reason, and acked.
    DeadLetter(String),
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Not the message's fault (database unreachable…): retried without counting towards the
    /// dead-letter limit.
    #[error("transient: {0}")]
    Transient(String),
    /// The message cannot be applied as it is.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(_)
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_) => HandlerError::Permanent(e.to_string()),
            other => HandlerError::Transient(other.to_string()),
        }
    }
}

/// Applies a batch of new (deduplicated) messages inside the given transaction, returning one
/// verdict per message, in order. Events to emit go to `outbox`.
pub trait BatchHandler: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        batch: &'a [Incoming],
        outbox: &'a mut Outbox,
    ) -> impl Future<Output = Result<Vec<Verdict>, HandlerError>> + Send + 'a;
}

/// Everything a consume loop needs.
#[derive(Clone)]
pub struct ConsumerContext {
    pub pool: PgPool,
    pub publisher: Publisher,
    pub relay: OutboxRelay,
    /// A batch starts at most this long after the previous one started (decision 0019): a
    /// quiet consumer handles an event at once, a busy one gathers what arrives meanwhile.
    pub pace: Duration,
}

impl ConsumerContext {
    fn ns(&self) -> &Namespace {
        self.publisher.namespace()
    }
}

/// Creates the durable pull consumer if needed and runs the loop until `shutdown`; the batch in
/// flight is finished (committed and acked) before returning.
pub async fn run_consumer<H: BatchHandler>(
    ctx: ConsumerContext,
    spec: ConsumerSpec,
    handler: Arc<H>,
    shutdown: CancellationToken,
) -> Result<(), BusError> {
    let ns = ctx.ns().clone();
    let stream_name = topology::stream_for(&ns, spec.filter)
        .ok_or_else(|| BusError::Nats(format!("no stream captures {}", spec.filter)))?;
    let stream = ctx
        .publisher
        .jetstream()
        .get_stream(&stream_name)
        .await
        .map_err(BusError::nats)?;
    let mut consumer: jetstream::consumer::Consumer<pull::Config> = stream
        .get_or_create_consumer(
            spec.name,
            pull::Config {
                durable_name: Some(spec.name.to_string()),
                filter_subject: ns.subject(spec.filter),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 20_000,
                ..Default::default()
            },
        )
        .await
        .map_err(BusError::nats)?;

    let mut last_lag = Instant::now() - Duration::from_secs(60);
    let pace = ctx.pace;
    let mut last_start: Option<tokio::time::Instant> = None;
    'outer: loop {
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(spec.max_batch.max(1))
            .max_bytes_per_batch(spec.max_batch_bytes.max(64 * 1024))
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(consumer = spec.name, error = %e, "cannot open pull stream; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.cancelled() => break,
                }
            }
        };
        loop {
            // Wait for the first message, then take whatever is already there (bounded), so a
            // quiet system answers at once and a busy one works in large batches.
            let first = tokio::select! {
                m = messages.next() => m,
                _ = shutdown.cancelled() => break 'outer,
            };
            let mut batch = Vec::with_capacity(spec.max_batch);
            match first {
                Some(Ok(m)) => batch.push(m),
                Some(Err(e)) => {
                    tracing::debug!(consumer = spec.name, error = %e, "pull stream hiccup");
                    continue;
                }
                None => continue 'outer,
            }
            // Gather for 2 ms, or until the pace allows the next batch.
            let gather_until = (tokio::time::Instant::now() + Duration::from_millis(2))
                .max(last_start.map_or(tokio::time::Instant::now(), |at| at + pace));
            let mut bytes = batch.iter().map(|m| m.payload.len()).sum::<usize>();
            while batch.len() < spec.max_batch && bytes < spec.max_batch_bytes {
                match tokio::time::timeout_at(gather_until, messages.next()).await {
                    Ok(Some(Ok(m))) => {
                        bytes += m.payload.len();
                        batch.push(m)
                    }
                    Ok(Some(Err(_))) | Err(_) => break,
                    Ok(None) => break,
                }
            }
            last_start = Some(tokio::time::Instant::now());
            process_batch(&ctx, &spec, handler.as_ref(), batch).await;
            if last_lag.elapsed() > Duration::from_secs(10) {
                last_lag = Instant::now();
                if let Ok(info) = consumer.info().await {
                    metrics::gauge!("cnmas_consumer_pending", "consumer" => spec.name)
                        .set(info.num_pending as f64);
                }
            }
        }
    }
    Ok(())
}

fn to_incoming(ns: &Namespace, m: &jetstream::Message) -> Incoming {
    let (delivered, fallback_id) = match m.info() {
        Ok(info) => (
            info.delivered,
            format!("{}:{}", info.stream, info.stream_sequence),
        ),
        Err(_) => (1, uuid::Uuid::new_v4().to_string()),
    };
    let event_id = m
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or(fallback_id);
    Incoming {
        event_id,
        subject: ns.strip(m.subject.as_str()).to_string(),
        payload: m.payload.clone(),
        delivered,
    }
}

/// Backoff for a message redelivered after a failure: 1 s, 2 s, 4 s … capped at 60 s.
fn backoff(delivered: i64) -> Duration {
    Duration::from_secs(1u64 << delivered.clamp(1, 7).saturating_sub(1))
        .min(Duration::from_secs(60))
}

async fn process_batch<H: BatchHandler>(
    ctx: &ConsumerContext,
    spec: &ConsumerSpec,
    handler: &H,
    batch: Vec<jetstream::Message>,
) {
    let ns = ctx.ns();
    let incoming: Vec<Incoming> = batch.iter().map(|m| to_incoming(ns, m)).collect();
    let span = tracing::info_span!("consume_batch", consumer = spec.name, size = batch.len());
    crate::trace::set_parent_from(&span, batch.first().and_then(|m| m.headers.as_ref()));
    let started = Instant::now();
    // `instrument`, not `span.enter()`: an entered guard held across an await corrupts the
    // span stack of whatever task runs next on the thread.
    let outcome = apply(ctx, spec, handler, &incoming)
        .instrument(span.clone())
        .await;
    metrics::histogram!("cnmas_consumer_batch_size", "consumer" => spec.name)
        .record(batch.len() as f64);
    match outcome {
        Ok(verdicts) => {
            metrics::histogram!("cnmas_consumer_batch_seconds", "consumer" => spec.name)
                .record(started.elapsed().as_secs_f64());
            settle(ctx, spec, &batch, &incoming, verdicts).await;
        }
        Err(HandlerError::Transient(e)) => {
            tracing::warn!(consumer = spec.name, error = %e, "batch failed (transient); redelivering");
            for m in &batch {
                let _ = m.ack_with(AckKind::Nak(Some(Duration::from_secs(2)))).await;
            }
        }
        Err(HandlerError::Permanent(e)) if batch.len() > 1 => {
            // Isolate the message(s) at fault: apply one at a time.
            tracing::warn!(consumer = spec.name, error = %e, "batch failed; applying messages one by one");
            for (m, inc) in batch.into_iter().zip(incoming) {
                let single = std::slice::from_ref(&inc);
                match apply(ctx, spec, handler, single).await {
                    Ok(v) => settle(ctx, spec, std::slice::from_ref(&m), single, v).await,
                    Err(err) => fail_one(ctx, spec, &m, &inc, err).await,
                }
            }
        }
        Err(err) => {
            if let (Some(m), Some(inc)) = (batch.first(), incoming.first()) {
                fail_one(ctx, spec, m, inc, err).await;
            }
        }
    }
}

/// One transaction: claim new event ids in the inbox, apply, release the ids of messages to
/// retry, write the outbox, commit. Duplicates get `Done` without reaching the handler.
async fn apply<H: BatchHandler>(
    ctx: &ConsumerContext,
    spec: &ConsumerSpec,
    handler: &H,
    incoming: &[Incoming],
) -> Result<Vec<Verdict>, HandlerError> {
    let mut tx = ctx.pool.begin().await?;
    let ids: Vec<&str> = incoming.iter().map(|m| m.event_id.as_str()).collect();
    let claimed: Vec<String> = sqlx::query_scalar(
        "INSERT INTO bus_inbox (consumer, event_id)
         SELECT $1, id FROM UNNEST($2::text[]) AS id
         ON CONFLICT DO NOTHING RETURNING event_id",
    )
    .bind(spec.name)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let claimed: std::collections::HashSet<String> = claimed.into_iter().collect();
    // The same id twice in one batch is applied once: only its first occurrence is new.
    let mut seen = std::collections::HashSet::new();
    let fresh_idx: Vec<usize> = (0..incoming.len())
        .filter(|&i| {
            claimed.contains(&incoming[i].event_id) && seen.insert(incoming[i].event_id.as_str())
        })
        .collect();
    let mut verdicts = vec![Verdict::Done; incoming.len()];
    if fresh_idx.is_empty() {
        tx.commit().await?;
        metrics::counter!("cnmas_consumer_duplicates_total", "consumer" => spec.name)
            .increment(incoming.len() as u64);
        return Ok(verdicts);
    }
    let fresh: Vec<Incoming> = fresh_idx.iter().map(|&i| incoming[i].clone()).collect();
    let mut outbox = Outbox::new();
    let fresh_verdicts = handler.handle(&mut tx, &fresh, &mut outbox).await?;
    if fresh_verdicts.len() != fresh.len() {
        return Err(HandlerError::Permanent(format!(
            "handler returned {} verdicts for {} messages",
            fresh_verdicts.len(),
            fresh.len()
        )));
    }
    let retry_ids: Vec<&str> = fresh
        .iter()
        .zip(&fresh_verdicts)
        .filter(|(_, v)| matches!(v, Verdict::Retry(_)))
        .map(|(m, _)| m.event_id.as_str())
        .collect();
    if !retry_ids.is_empty() {
        sqlx::query("DELETE FROM bus_inbox WHERE consumer = $1 AND event_id = ANY($2)")
            .bind(spec.name)
            .bind(&retry_ids)
            .execute(&mut *tx)
            .await?;
    }
    let wrote = outbox.flush(&mut tx).await?;
    tx.commit().await?;
    if wrote > 0 {
        ctx.relay.wake();
    }
    for (i, v) in fresh_idx.into_iter().zip(fresh_verdicts) {
        verdicts[i] = v;
    }
    Ok(verdicts)
}

/// After commit: ack what was applied, nak what waits, dead-letter what never will apply.
async fn settle(
    ctx: &ConsumerContext,
    spec: &ConsumerSpec,
    batch: &[jetstream::Message],
    incoming: &[Incoming],
    verdicts: Vec<Verdict>,
) {
    for ((m, inc), verdict) in batch.iter().zip(incoming).zip(verdicts) {
        let label = match &verdict {
            Verdict::Done => {
                let _ = m.ack().await;
                "done"
            }
            Verdict::Retry(delay) => {
                let _ = m.ack_with(AckKind::Nak(Some(*delay))).await;
                "retry"
            }
            Verdict::DeadLetter(reason) => {
                dead_letter(ctx, spec, m, inc, reason).await;
                "dead_letter"
            }
        };
        metrics::counter!("cnmas_consumer_messages_total", "consumer" => spec.name, "verdict" => label)
            .increment(1);
    }
}

async fn fail_one(
    ctx: &ConsumerContext,
    spec: &ConsumerSpec,
    m: &jetstream::Message,
    inc: &Incoming,
    err: HandlerError,
) {
    match err {
        HandlerError::Permanent(reason) if inc.delivered >= spec.max_deliveries => {
            dead_letter(ctx, spec, m, inc, &reason).await;
        }
        HandlerError::Permanent(reason) => {
            tracing::warn!(consumer = spec.name, delivered = inc.delivered, error = %reason, "message failed; will retry");
            let _ = m.ack_with(AckKind::Nak(Some(backoff(inc.delivered)))).await;
        }
        HandlerError::Transient(reason) => {
            tracing::warn!(consumer = spec.name, error = %reason, "message failed (transient); will retry");
            let _ = m.ack_with(AckKind::Nak(Some(Duration::from_secs(2)))).await;
        }
    }
}

/// Copies the message to `cnmas.dlq.v1.<service>.<consumer>` with the reason in a header, then
/// terminates it. If the copy cannot be stored the message is redelivered instead.
async fn dead_letter(
    ctx: &ConsumerContext,
    spec: &ConsumerSpec,
    m: &jetstream::Message,
    inc: &Incoming,
    reason: &str,
) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("dlq:{}:{}", spec.name, inc.event_id).as_str(),
    );
    headers.insert("Cnmas-Original-Subject", inc.subject.as_str());
    headers.insert("Cnmas-Original-Event-Id", inc.event_id.as_str());
    // Reasons are written by our own handlers and never carry personal data.
    headers.insert(
        "Cnmas-Dead-Letter-Reason",
        reason.replace(['\r', '\n'], " ").as_str(),
    );
    let subject = ctx
        .ns()
        .subject(&crate::subjects::dead_letter(spec.service, spec.name));
    let stored = match ctx
        .publisher
        .jetstream()
        .publish_with_headers(subject, headers, inc.payload.clone())
        .await
    {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    if stored {
        metrics::counter!("cnmas_dead_letters_total", "consumer" => spec.name).increment(1);
        tracing::error!(consumer = spec.name, event_id = %inc.event_id, reason, "message dead-lettered");
        let _ = m.ack_with(AckKind::Term).await;
    } else {
        let _ = m.ack_with(AckKind::Nak(Some(Duration::from_secs(5)))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Item {
        #[prost(uint32, tag = "1")]
        n: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Set {
        #[prost(message, repeated, tag = "1")]
        items: Vec<Item>,
    }

    fn incoming(subject: &str, payload: Vec<u8>) -> Incoming {
        Incoming {
            event_id: "e".into(),
            subject: subject.into(),
            payload: payload.into(),
            delivered: 1,
        }
    }

    #[test]
    fn a_set_gives_its_items_and_the_single_event_it_replaced_gives_itself() {
        let set = Set {
            items: vec![Item { n: 1 }, Item { n: 2 }],
        };
        let m = incoming(
            "cnmas.evt.v1.s.items_done",
            prost::Message::encode_to_vec(&set),
        );
        let got = m.items("items_done", |s: Set| s.items);
        assert_eq!(got.ok(), Some(set.items));
        let m = incoming(
            "cnmas.evt.v1.s.item_done",
            prost::Message::encode_to_vec(&Item { n: 7 }),
        );
        let got = m.items("items_done", |s: Set| s.items);
        assert_eq!(got.ok(), Some(vec![Item { n: 7 }]));
        let m = incoming("cnmas.evt.v1.s.items_done", vec![0xff, 0xff]);
        assert!(m.items("items_done", |s: Set| s.items).is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(50), Duration::from_secs(60));
        assert_eq!(backoff(-3), Duration::from_secs(1));
    }
}
