//! The consume loop against the real NATS and PostgreSQL: dedupe, retries, dead letters.

use bytes::Bytes;
use cnmas_bus::{
    subjects, topology, BatchHandler, ConsumerContext, ConsumerSpec, HandlerError, Incoming,
    Namespace, Outbox, OutboxRelay, Publisher, Verdict,
};
use futures::StreamExt;
use sqlx::PgConnection;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Records payloads in a table; "poison" fails, "later" asks to be retried once.
struct Recorder;

impl BatchHandler for Recorder {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        batch: &[Incoming],
        outbox: &mut Outbox,
    ) -> Result<Vec<Verdict>, HandlerError> {
        let mut verdicts = Vec::new();
        for m in batch {
            match &m.payload[..] {
                b"poison" => return Err(HandlerError::Permanent("poison payload".into())),
                b"garbage" => {
                    verdicts.push(Verdict::DeadLetter("cannot decode".into()));
                    continue;
                }
                b"later" if m.delivered < 2 => {
                    verdicts.push(Verdict::Retry(Duration::from_millis(100)));
                    continue;
                }
                _ => {}
            }
            sqlx::query("INSERT INTO seen (payload) VALUES ($1)")
                .bind(String::from_utf8_lossy(&m.payload).to_string())
                .execute(&mut *tx)
                .await?;
            outbox.push(
                subjects::fund_out("751", "result"),
                &format!("echo-{}", m.event_id),
                &prost_types::Timestamp::default(),
            );
            verdicts.push(Verdict::Done);
        }
        Ok(verdicts)
    }
}

async fn setup() -> (Namespace, Publisher, sqlx::PgPool, String) {
    let ns = Namespace::random();
    let nats = async_nats::connect(
        std::env::var("CNMAS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
    )
    .await
    .expect("NATS");
    let js = async_nats::jetstream::new(nats);
    topology::ensure(&js, &ns, true).await.expect("streams");
    let url = format!(
        "{}/cnmas_{}_bus",
        std::env::var("CNMAS_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into()),
        ns.as_str()
    );
    let pool = cnmas_runtime::db::connect(&url, 4, sqlx::migrate::Migrator::DEFAULT)
        .await
        .expect("database");
    sqlx::query("CREATE TABLE seen (payload text NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    (ns.clone(), Publisher::new(js, ns), pool, url)
}

async fn seen(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT payload FROM seen ORDER BY payload")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn batches_are_deduplicated_retried_and_poison_is_dead_lettered() {
    let (ns, publisher, pool, url) = setup().await;
    let relay = OutboxRelay::new(pool.clone(), publisher.clone());
    let shutdown = CancellationToken::new();
    tokio::spawn(relay.clone().run(shutdown.clone()));
    let ctx = ConsumerContext {
        pool: pool.clone(),
        publisher: publisher.clone(),
        relay,
        pace: Duration::from_millis(50),
    };
    let mut spec = ConsumerSpec::new("test", "test_consumer", "cnmas.in.v1.*.contact");
    spec.max_deliveries = 3;
    let loop_ = tokio::spawn(cnmas_bus::run_consumer(
        ctx,
        spec,
        Arc::new(Recorder),
        shutdown.clone(),
    ));
    // Dead letters are watched from the start.
    let dlq = publisher
        .jetstream()
        .get_stream(ns.stream("DLQ"))
        .await
        .unwrap()
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .unwrap();

    let subject = subjects::fund_in("751", "contact");
    let items = [
        ("a", "id-a"),
        ("b", "id-b"),
        ("a", "id-a"), // the same event again: applied once
        ("poison", "id-p"),
        ("garbage", "id-g"),
        ("later", "id-l"),
        ("c", "id-c"),
    ];
    publisher
        .publish_all(items.iter().map(|(p, id)| {
            (
                subject.clone(),
                id.to_string(),
                None,
                Bytes::from(p.to_string()),
            )
        }))
        .await
        .unwrap();

    let mut dead = Vec::new();
    let mut messages = dlq.messages().await.unwrap();
    while dead.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .expect("two dead letters within 30 s")
            .unwrap()
            .unwrap();
        let reason = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Cnmas-Dead-Letter-Reason"))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        dead.push((String::from_utf8_lossy(&m.payload).to_string(), reason));
        m.ack().await.unwrap();
    }
    dead.sort();
    assert_eq!(
        dead,
        vec![
            ("garbage".to_string(), "cannot decode".to_string()),
            ("poison".to_string(), "poison payload".to_string()),
        ]
    );
    // Everything else was applied exactly once, the retried one included.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen(&pool).await.len() < 4 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen(&pool).await, vec!["a", "b", "c", "later"]);
    // The outbox was relayed and emptied.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM bus_outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        let out = publisher
            .jetstream()
            .get_stream(ns.stream("OUT"))
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages;
        if left == 0 && out == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox not relayed: {left} left, {out} out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    shutdown.cancel();
    loop_.await.unwrap().unwrap();
    pool.close().await;
    cnmas_runtime::db::drop_database(&url).await.unwrap();
    topology::delete(publisher.jetstream(), &ns).await.unwrap();
}

#[tokio::test]
async fn namespaces_do_not_see_each_other() {
    let (ns1, p1, pool1, url1) = setup().await;
    let (ns2, p2, pool2, url2) = setup().await;
    let subject = subjects::fund_in("751", "contact");
    p1.publish(&subject, "x", &prost_types::Timestamp::default())
        .await
        .unwrap();
    let n2 = p2
        .jetstream()
        .get_stream(ns2.stream("IN"))
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(n2, 0);
    let n1 = p1
        .jetstream()
        .get_stream(ns1.stream("IN"))
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(n1, 1);
    for (pool, url, p, ns) in [(pool1, url1, p1, ns1), (pool2, url2, p2, ns2)] {
        pool.close().await;
        cnmas_runtime::db::drop_database(&url).await.unwrap();
        topology::delete(p.jetstream(), &ns).await.unwrap();
    }
}

/// Counts the messages of each batch it is given.
struct BatchSizes(std::sync::Mutex<Vec<usize>>);

impl BatchHandler for BatchSizes {
    async fn handle(
        &self,
        _tx: &mut PgConnection,
        batch: &[Incoming],
        _outbox: &mut Outbox,
    ) -> Result<Vec<Verdict>, HandlerError> {
        self.0.lock().unwrap().push(batch.len());
        Ok(vec![Verdict::Done; batch.len()])
    }
}

#[tokio::test]
async fn a_busy_consumer_gathers_what_arrives_within_its_pace() {
    let (ns, publisher, pool, url) = setup().await;
    let relay = OutboxRelay::new(pool.clone(), publisher.clone());
    let shutdown = CancellationToken::new();
    let ctx = ConsumerContext {
        pool: pool.clone(),
        publisher: publisher.clone(),
        relay,
        pace: Duration::from_secs(1),
    };
    let sizes = Arc::new(BatchSizes(std::sync::Mutex::new(Vec::new())));
    let spec = ConsumerSpec::new("test", "paced_consumer", "cnmas.in.v1.*.contact");
    let loop_ = tokio::spawn(cnmas_bus::run_consumer(
        ctx,
        spec,
        sizes.clone(),
        shutdown.clone(),
    ));
    // Twenty events, one every 20 ms or more: without a pace each would be a batch of its own.
    let subject = subjects::fund_in("751", "contact");
    for i in 0..20 {
        publisher
            .publish(
                &subject,
                &format!("e{i}"),
                &prost_types::Timestamp::default(),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let handled = || sizes.0.lock().unwrap().iter().sum::<usize>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while handled() < 20 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let batches = sizes.0.lock().unwrap().clone();
    assert_eq!(batches.iter().sum::<usize>(), 20, "{batches:?}");
    // Publishing takes about half a second: the first event alone, then what the pace gathered.
    assert!(batches.len() <= 6, "{batches:?}");
    shutdown.cancel();
    loop_.await.unwrap().unwrap();
    pool.close().await;
    cnmas_runtime::db::drop_database(&url).await.unwrap();
    topology::delete(publisher.jetstream(), &ns).await.unwrap();
}

/// A set event of contacts, as large and as repetitive as the real ones.
#[derive(Clone, PartialEq, prost::Message)]
struct ContactSet {
    #[prost(string, repeated, tag = "1")]
    contacts: Vec<String>,
}

#[tokio::test]
async fn set_payloads_are_stored_compressed_with_lz4_when_the_server_has_it() {
    let (ns, publisher, pool, url) = setup().await;
    let set = ContactSet {
        contacts: (0..1000)
            .map(|i| format!("campaign 0192a3b4-0000-7000-8000-000000000001 fund 751 contact {i}"))
            .collect(),
    };
    let mut outbox = Outbox::new();
    outbox.push(
        subjects::event("intake", "contacts_accepted"),
        "set-1",
        &set,
    );
    let mut tx = pool.begin().await.unwrap();
    outbox.flush(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    let has_lz4: bool = sqlx::query_scalar(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let (method, stored, raw): (Option<String>, i32, i32) = sqlx::query_as(
        "SELECT pg_column_compression(payload), pg_column_size(payload), length(payload)
         FROM bus_outbox WHERE event_id = 'set-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    if has_lz4 {
        assert_eq!(method.as_deref(), Some("lz4"));
        assert!(stored * 2 < raw, "{stored} bytes stored for {raw}");
    } else {
        assert_eq!(method, None);
    }
    pool.close().await;
    cnmas_runtime::db::drop_database(&url).await.unwrap();
    topology::delete(publisher.jetstream(), &ns).await.unwrap();
}
