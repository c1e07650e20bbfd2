//! The transactional outbox: events are written in the same transaction as the state change
//! that caused them, and a relay publishes them afterwards with `Nats-Msg-Id` = event id.

use crate::{BusError, Publisher};
use bytes::Bytes;
use sqlx::{PgConnection, PgPool, Row};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The most items in one set event (see [`Outbox::push_set`]).
pub const SET_EVENT_ITEMS: usize = 1000;
/// About the most bytes of one set event: well under NATS's default 1 MiB payload limit.
pub const SET_EVENT_BYTES: usize = 256 * 1024;

/// The event id that marks a set item ([`Outbox::push_item`]) until its set is made.
const SET_ITEM: &str = "";

/// Events gathered while handling a batch or a request; [`Outbox::flush`] writes them with one
/// statement into the caller's transaction.
#[derive(Default)]
pub struct Outbox {
    event_ids: Vec<String>,
    subjects: Vec<String>,
    payloads: Vec<Vec<u8>>,
    traceparents: Vec<Option<String>>,
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues an event for a contract subject (the namespace is added by the relay).
    pub fn push<M: prost::Message>(&mut self, subject: String, event_id: &str, message: &M) {
        self.event_ids.push(event_id.to_string());
        self.subjects.push(subject);
        self.payloads.push(message.encode_to_vec());
        self.traceparents.push(crate::trace::current_traceparent());
    }

    /// Queues `items` as set events: messages of at most [`SET_EVENT_ITEMS`] items and about
    /// [`SET_EVENT_BYTES`] bytes, each built by `wrap`. Hot paths (contacts accepted, cleared,
    /// calls due) publish sets so that each hop pays one message, one inbox row and one outbox
    /// row per set instead of per contact (decision 0008).
    ///
    /// Each message gets a random event id: its outbox row is written once, in the transaction
    /// that produced the items, so a relay that publishes it again reuses the same id.
    pub fn push_set<T, M>(&mut self, subject: &str, items: Vec<T>, wrap: impl Fn(Vec<T>) -> M)
    where
        T: prost::Message,
        M: prost::Message,
    {
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for item in items {
            let size = item.encoded_len() + 4;
            if !chunk.is_empty()
                && (chunk.len() >= SET_EVENT_ITEMS || bytes + size > SET_EVENT_BYTES)
            {
                self.push_chunk(subject, wrap(std::mem::take(&mut chunk)));
                bytes = 0;
            }
            bytes += size;
            chunk.push(item);
        }
        if !chunk.is_empty() {
            self.push_chunk(subject, wrap(chunk));
        }
    }

    fn push_chunk<M: prost::Message>(&mut self, subject: &str, message: M) {
        let event_id = uuid::Uuid::new_v4().to_string();
        self.push(subject.to_string(), &event_id, &message);
    }

    /// Queues `item` into a set event on `subject`, for events that come one per call but
    /// many per transaction (attempts, closures: decision 0015). The set's message must have
    /// the items as its only field, number 1 (`repeated T items = 1`): it is then the
    /// concatenation of its items, each encoded as that field, which is how the items of
    /// several changes become one message when they are written ([`Outbox::flush`] in the
    /// service, [`Outbox::insert_announcing`] in PostgreSQL for the changes that were made).
    pub fn push_item<T: prost::Message>(&mut self, subject: String, item: &T) {
        let mut element = Vec::with_capacity(item.encoded_len() + 6);
        prost::encoding::message::encode(1, item, &mut element);
        self.event_ids.push(SET_ITEM.to_string());
        self.subjects.push(subject);
        self.payloads.push(element);
        self.traceparents.push(crate::trace::current_traceparent());
    }

    /// Turns the queued set items into set events, where the first item of each was: per
    /// subject, messages of at most [`SET_EVENT_ITEMS`] items and about [`SET_EVENT_BYTES`]
    /// bytes, each with a random event id, as [`Outbox::push_set`] makes them.
    fn gather_sets(&mut self) {
        if !self.event_ids.iter().any(|id| id == SET_ITEM) {
            return;
        }
        let rows = std::mem::take(self);
        // Per subject, the row of its set being filled and how many items it holds.
        let mut filling: HashMap<String, (usize, usize)> = HashMap::new();
        for (((event_id, subject), payload), traceparent) in rows
            .event_ids
            .into_iter()
            .zip(rows.subjects)
            .zip(rows.payloads)
            .zip(rows.traceparents)
        {
            if event_id != SET_ITEM {
                self.event_ids.push(event_id);
                self.subjects.push(subject);
                self.payloads.push(payload);
                self.traceparents.push(traceparent);
                continue;
            }
            match filling.get_mut(&subject) {
                Some((row, items))
                    if *items < SET_EVENT_ITEMS
                        && self.payloads[*row].len() + payload.len() <= SET_EVENT_BYTES =>
                {
                    self.payloads[*row].extend_from_slice(&payload);
                    *items += 1;
                }
                _ => {
                    filling.insert(subject.clone(), (self.event_ids.len(), 1));
                    self.event_ids.push(uuid::Uuid::new_v4().to_string());
                    self.subjects.push(subject);
                    self.payloads.push(payload);
                    self.traceparents.push(traceparent);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.event_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.event_ids.is_empty()
    }

    /// Writes the queued events into the transaction and empties the outbox.
    pub async fn flush(&mut self, conn: &mut PgConnection) -> Result<usize, sqlx::Error> {
        self.gather_sets();
        let n = self.len();
        if n == 0 {
            return Ok(0);
        }
        self.bind_rows(sqlx::query(Self::INSERT))
            .execute(conn)
            .await?;
        Ok(n)
    }

    /// The statement of [`Outbox::flush`]: the four arrays of `bind_rows`, from `$1`.
    const INSERT: &'static str = "INSERT INTO bus_outbox (event_id, subject, payload, traceparent)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::text[])";

    /// The outbox as one step of a larger statement that makes several state changes, each
    /// announced by its own events: one round trip instead of a transaction of several. The
    /// caller binds with [`Outbox::bind_announcing`] the id
    /// of the change each event announces (see [`Outbox::append`]), and only the events of the
    /// changes that `made` (a SQL set, e.g. `SELECT id FROM done`) returns are written. The set
    /// items of those changes ([`Outbox::push_item`]) become one set event per subject, at the
    /// place of its first item, with the trace of that item. The caller's batch bounds its size:
    /// keep it within [`SET_EVENT_ITEMS`] and [`SET_EVENT_BYTES`].
    pub fn insert_announcing(first: usize, made: &str) -> String {
        let [a, b, c, d, e] = [first, first + 1, first + 2, first + 3, first + 4];
        format!(
            "INSERT INTO bus_outbox (event_id, subject, payload, traceparent)
             SELECT CASE WHEN event_id = '{SET_ITEM}' THEN gen_random_uuid()::text
                         ELSE event_id END,
                    subject, payload, traceparent
             FROM (SELECT min(event_id) AS event_id, subject,
                          string_agg(payload, ''::bytea ORDER BY n) AS payload,
                          (array_agg(traceparent ORDER BY n))[1] AS traceparent,
                          min(n) AS first
                   FROM UNNEST(${a}::text[], ${b}::text[], ${c}::bytea[], ${d}::text[],
                               ${e}::uuid[]) WITH ORDINALITY
                       AS e(event_id, subject, payload, traceparent, change_id, n)
                   WHERE change_id IN ({made})
                   GROUP BY subject, CASE WHEN event_id = '{SET_ITEM}' THEN 0 ELSE n END) g
             ORDER BY first"
        )
    }

    /// Moves the events of `other` to the end of this outbox, returning how many moved.
    pub fn append(&mut self, other: &mut Outbox) -> usize {
        let n = other.len();
        self.event_ids.append(&mut other.event_ids);
        self.subjects.append(&mut other.subjects);
        self.payloads.append(&mut other.payloads);
        self.traceparents.append(&mut other.traceparents);
        n
    }

    /// Binds the queued events and the change each announces, in the order
    /// [`Outbox::insert_announcing`] expects, and empties the outbox. Set items stay items:
    /// the statement gathers those of the changes it made.
    pub fn bind_announcing<'q>(
        &mut self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
        changes: Vec<uuid::Uuid>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        self.bind_rows(query).bind(changes)
    }

    fn bind_rows<'q>(
        &mut self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(std::mem::take(&mut self.event_ids))
            .bind(std::mem::take(&mut self.subjects))
            .bind(std::mem::take(&mut self.payloads))
            .bind(std::mem::take(&mut self.traceparents))
    }
}

/// Publishes the outbox. Several replicas may run it: rows are claimed with
/// `FOR UPDATE SKIP LOCKED`, so each event is relayed by one of them (and deduplicated by
/// JetStream and by consumers if a relay dies between publish and delete).
#[derive(Clone)]
pub struct OutboxRelay {
    pool: PgPool,
    publisher: Publisher,
    wake: Arc<Notify>,
}

const RELAY_BATCH: i64 = 2000;
const IDLE_POLL: Duration = Duration::from_millis(200);

impl OutboxRelay {
    pub fn new(pool: PgPool, publisher: Publisher) -> Self {
        OutboxRelay {
            pool,
            publisher,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Call after committing a transaction that wrote to the outbox, to relay without delay.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Relays until cancelled, then drains what is left.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures = 0u32;
        loop {
            match self.drain().await {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    metrics::counter!("cnmas_outbox_relay_errors_total").increment(1);
                    tracing::warn!(error = %e, "outbox relay failed; will retry");
                    let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => continue,
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = shutdown.cancelled() => {
                    let _ = self.drain().await;
                    return;
                }
            }
        }
    }

    /// Publishes every pending event, a batch per transaction. Returns how many were relayed.
    pub async fn drain(&self) -> Result<usize, BusError> {
        let mut total = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let rows = sqlx::query(
                "SELECT id, event_id, subject, payload, traceparent FROM bus_outbox
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
            )
            .bind(RELAY_BATCH)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                return Ok(total);
            }
            let mut ids = Vec::with_capacity(rows.len());
            let mut items = Vec::with_capacity(rows.len());
            for row in rows {
                ids.push(row.get::<i64, _>("id"));
                items.push((
                    row.get::<String, _>("subject"),
                    row.get::<String, _>("event_id"),
                    row.get::<Option<String>, _>("traceparent"),
                    Bytes::from(row.get::<Vec<u8>, _>("payload")),
                ));
            }
            let n = self.publisher.publish_all(items).await?;
            sqlx::query("DELETE FROM bus_outbox WHERE id = ANY($1)")
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            metrics::counter!("cnmas_outbox_relayed_total").increment(n as u64);
            total += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Item {
        #[prost(bytes = "vec", tag = "1")]
        data: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Set {
        #[prost(message, repeated, tag = "1")]
        items: Vec<Item>,
    }

    fn sets(outbox: &Outbox) -> Vec<Set> {
        outbox
            .payloads
            .iter()
            .map(|p| <Set as prost::Message>::decode(p.as_slice()).expect("a set"))
            .collect()
    }

    #[test]
    fn sets_are_bounded_by_count_and_keep_every_item_in_order() {
        let mut outbox = Outbox::new();
        let items: Vec<Item> = (0..2500u32)
            .map(|i| Item {
                data: i.to_be_bytes().to_vec(),
            })
            .collect();
        outbox.push_set("s", items.clone(), |items| Set { items });
        let sets = sets(&outbox);
        assert_eq!(
            sets.iter().map(|s| s.items.len()).collect::<Vec<_>>(),
            vec![1000, 1000, 500]
        );
        assert_eq!(flatten(&sets), items);
        let ids: std::collections::HashSet<_> = outbox.event_ids.iter().collect();
        assert_eq!(ids.len(), 3, "each set has its own event id");
    }

    #[test]
    fn sets_are_bounded_by_bytes_and_an_oversized_item_travels_alone() {
        let mut outbox = Outbox::new();
        let big = |n: usize| Item { data: vec![7; n] };
        let items = vec![
            big(100_000),
            big(100_000),
            big(100_000),
            big(300_000),
            big(10),
        ];
        outbox.push_set("s", items.clone(), |items| Set { items });
        let sets = sets(&outbox);
        assert_eq!(
            sets.iter().map(|s| s.items.len()).collect::<Vec<_>>(),
            vec![2, 1, 1, 1]
        );
        assert!(outbox.payloads[..2]
            .iter()
            .all(|p| p.len() <= SET_EVENT_BYTES));
        assert_eq!(flatten(&sets), items);
    }

    #[test]
    fn no_items_no_event() {
        let mut outbox = Outbox::new();
        outbox.push_set("s", Vec::<Item>::new(), |items| Set { items });
        assert!(outbox.is_empty());
    }

    #[test]
    fn items_become_sets_per_subject_where_their_first_item_was() {
        let mut outbox = Outbox::new();
        let item = |i: u32| Item {
            data: i.to_be_bytes().to_vec(),
        };
        outbox.push_item("a".into(), &item(1));
        outbox.push("single".into(), "id-1", &item(2));
        outbox.push_item("b".into(), &item(3));
        outbox.push_item("a".into(), &item(4));
        outbox.gather_sets();
        assert_eq!(outbox.subjects, ["a", "single", "b"]);
        assert_eq!(outbox.event_ids[1], "id-1");
        assert!(outbox.event_ids.iter().all(|id| id != SET_ITEM));
        let set = |p: &Vec<u8>| <Set as prost::Message>::decode(p.as_slice()).expect("a set");
        assert_eq!(set(&outbox.payloads[0]).items, [item(1), item(4)]);
        assert_eq!(set(&outbox.payloads[2]).items, [item(3)]);
        assert_eq!(
            <Item as prost::Message>::decode(outbox.payloads[1].as_slice()).expect("an item"),
            item(2)
        );
    }

    #[test]
    fn items_fill_sets_up_to_their_bounds() {
        let mut outbox = Outbox::new();
        let items: Vec<Item> = (0..2500u32)
            .map(|i| Item {
                data: i.to_be_bytes().to_vec(),
            })
            .collect();
        for i in &items {
            outbox.push_item("s".into(), i);
        }
        outbox.push_item(
            "big".into(),
            &Item {
                data: vec![1; 200_000],
            },
        );
        outbox.push_item(
            "big".into(),
            &Item {
                data: vec![2; 200_000],
            },
        );
        outbox.gather_sets();
        let sets = sets(&outbox);
        assert_eq!(
            sets.iter().map(|s| s.items.len()).collect::<Vec<_>>(),
            vec![1000, 1000, 500, 1, 1]
        );
        assert_eq!(flatten(&sets[..3]), items);
        let ids: std::collections::HashSet<_> = outbox.event_ids.iter().collect();
        assert_eq!(ids.len(), 5, "each set has its own event id");
    }

    fn flatten(sets: &[Set]) -> Vec<Item> {
        sets.iter().flat_map(|s| s.items.clone()).collect()
    }
}
