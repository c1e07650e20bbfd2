//! The raw floors: JetStream publish → durable pull consume → COPY into PostgreSQL, and bare
//! `FOR UPDATE SKIP LOCKED` lease-then-complete cycles on a plain table.

use crate::gen;
use crate::stats::Lat;
use anyhow::{bail, Context, Result};
use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use chrono::Utc;
use cnmas_bus::{Namespace, Publisher};
use cnmas_proto::intake::SubmitContacts;
use cnmas_proto::support::envelope;
use futures::StreamExt;
use prost::Message;
use rand::{Rng, SeedableRng};
use sqlx::{Connection, PgConnection, PgPool};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn floor_record(i: usize) -> Bytes {
    let id = format!("floor-{i}");
    Bytes::from(
        SubmitContacts {
            envelope: Some(envelope(
                id.clone(),
                "751",
                "0190f5c2-0000-7000-8000-000000000000",
                &id,
                Utc::now(),
            )),
            contacts: vec![gen::contact(i)],
        }
        .encode_to_vec(),
    )
}

pub struct FloorResult {
    pub total_s: f64,
    pub publish_s: f64,
    pub record_bytes: usize,
}

fn hex(data: &[u8], out: &mut Vec<u8>) {
    const H: &[u8; 16] = b"0123456789abcdef";
    for b in data {
        out.push(H[(b >> 4) as usize]);
        out.push(H[(b & 15) as usize]);
    }
}

/// N records published (acks awaited in a window, by the bus Publisher) while a durable pull
/// consumer takes them in batches, COPYs each batch into a table and acks it. Publisher and
/// consumer run concurrently on separate connections, as two processes would.
pub async fn jetstream_copy(
    nats_url: &str,
    ns: &Namespace,
    db_url: &str,
    n: usize,
    within: Duration,
) -> Result<FloorResult> {
    let pub_client = async_nats::connect(nats_url).await?;
    let sub_client = async_nats::connect(nats_url).await?;
    let js = jetstream::new(pub_client.clone());
    let stream_name = ns.stream("BENCH_FLOOR");
    let _ = js.delete_stream(&stream_name).await;
    js.create_stream(stream::Config {
        name: stream_name.clone(),
        subjects: vec![ns.subject("bench.floor")],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .context("creating the floor stream")?;
    let mut conn = PgConnection::connect(db_url).await?;
    sqlx::query("DROP TABLE IF EXISTS floor_records")
        .execute(&mut conn)
        .await?;
    sqlx::query("CREATE TABLE floor_records (seq bigint PRIMARY KEY, payload bytea NOT NULL)")
        .execute(&mut conn)
        .await?;
    let record_bytes = floor_record(0).len();

    let sjs = jetstream::new(sub_client);
    let consumer: jetstream::consumer::Consumer<pull::Config> = sjs
        .get_stream(&stream_name)
        .await?
        .get_or_create_consumer(
            "floor",
            pull::Config {
                durable_name: Some("floor".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: 20_000,
                ..Default::default()
            },
        )
        .await?;
    let copied = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let publisher = Publisher::new(js.clone(), ns.clone());
    let pub_task = tokio::spawn(async move {
        let items = (0..n).map(|i| {
            (
                "bench.floor".to_string(),
                format!("floor-{i}"),
                None,
                floor_record(i),
            )
        });
        let r = publisher.publish_all(items).await;
        (r, started.elapsed().as_secs_f64())
    });
    let c2 = copied.clone();
    let consume = async move {
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(1000)
            .messages()
            .await?;
        let mut line = Vec::with_capacity(1 << 20);
        while c2.load(Ordering::Relaxed) < n {
            let Some(first) = messages.next().await else {
                bail!("floor consumer stream ended");
            };
            let mut batch = vec![first?];
            let until = tokio::time::Instant::now() + Duration::from_millis(2);
            while batch.len() < 1000 {
                match tokio::time::timeout_at(until, messages.next()).await {
                    Ok(Some(Ok(m))) => batch.push(m),
                    _ => break,
                }
            }
            line.clear();
            for m in &batch {
                let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
                line.extend_from_slice(seq.to_string().as_bytes());
                line.extend_from_slice(b"\t\\\\x");
                hex(&m.payload, &mut line);
                line.push(b'\n');
            }
            let mut copy = conn
                .copy_in_raw("COPY floor_records (seq, payload) FROM STDIN")
                .await?;
            copy.send(line.as_slice()).await?;
            copy.finish().await?;
            for m in &batch {
                m.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
            }
            c2.fetch_add(batch.len(), Ordering::Relaxed);
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(within, consume).await {
        Ok(r) => r?,
        Err(_) => bail!(
            "floor: timed out after {within:?} with {} of {n} records copied",
            copied.load(Ordering::Relaxed)
        ),
    }
    let total_s = started.elapsed().as_secs_f64();
    let (r, publish_s) = pub_task.await?;
    r.context("floor publish")?;
    let _ = js.delete_stream(&stream_name).await;
    Ok(FloorResult {
        total_s,
        publish_s,
        record_bytes,
    })
}

/// (Re)creates the bare lease table with `rows` ready rows.
pub async fn lease_table(pool: &PgPool, rows: usize) -> Result<()> {
    sqlx::query("DROP TABLE IF EXISTS lease_floor")
        .execute(pool)
        .await?;
    sqlx::query(
        "CREATE TABLE lease_floor (id bigint PRIMARY KEY, status text NOT NULL,
             leased_by text, leased_at timestamptz)",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO lease_floor (id, status) SELECT g, 'ready' FROM generate_series(1, $1) g",
    )
    .bind(rows as i64)
    .execute(pool)
    .await?;
    sqlx::query("CREATE INDEX lease_floor_ready ON lease_floor (id) WHERE status = 'ready'")
        .execute(pool)
        .await?;
    sqlx::query("VACUUM ANALYZE lease_floor")
        .execute(pool)
        .await?;
    Ok(())
}

async fn lease(pool: &PgPool, worker: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE lease_floor SET status = 'leased', leased_by = $1, leased_at = now()
         WHERE id = (SELECT id FROM lease_floor WHERE status = 'ready' ORDER BY id LIMIT 1
                     FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind(worker)
    .fetch_optional(pool)
    .await
}

async fn complete(pool: &PgPool, id: i64, worker: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE lease_floor SET status = 'done' WHERE id = $1 AND leased_by = $2")
        .bind(id)
        .bind(worker)
        .execute(pool)
        .await?;
    Ok(())
}

/// M lease-then-complete cycles by A workers, no think time. Returns seconds.
pub async fn lease_saturated(pool: &PgPool, m: usize, a: usize, within: Duration) -> Result<f64> {
    lease_table(pool, m).await?;
    crate::settle(pool).await;
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..a {
        let pool = pool.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("w{w}");
            while let Some(id) = lease(&pool, &worker).await? {
                complete(&pool, id, &worker).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let all = futures::future::join_all(tasks);
    match tokio::time::timeout(within, all).await {
        Ok(rs) => {
            for r in rs {
                r??;
            }
        }
        Err(_) => bail!(
            "lease floor: timed out after {within:?} with {} of {m} cycles done",
            done.load(Ordering::Relaxed)
        ),
    }
    let secs = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    if n != m {
        bail!("lease floor: {n} cycles instead of {m}");
    }
    Ok(secs)
}

/// The working-day pattern on the bare table: A workers signing in over `ramp`, each lease →
/// talk (exponential, mean T) → complete, until `day`. Returns the pair latencies (lease +
/// complete, ms) and how often the table was empty.
pub async fn lease_day(
    pool: &PgPool,
    a: usize,
    talk_ms: f64,
    day: Duration,
    ramp: Duration,
    rows: usize,
) -> Result<(Lat, u64)> {
    lease_table(pool, rows).await?;
    crate::settle(pool).await;
    let deadline = Instant::now() + day;
    let mut tasks = Vec::new();
    for w in 0..a {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::from_entropy();
            let worker = format!("w{w}");
            let mut lat = Vec::new();
            let mut empty = 0u64;
            let start_in = rng.gen_range(0.0..ramp.as_secs_f64().max(0.001));
            tokio::time::sleep(Duration::from_secs_f64(start_in)).await;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let Some(id) = lease(&pool, &worker).await? else {
                    empty += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let leased = t0.elapsed();
                let talk = -(1.0 - rng.gen::<f64>()).ln() * talk_ms;
                tokio::time::sleep(Duration::from_secs_f64(talk / 1000.0)).await;
                let t1 = Instant::now();
                complete(&pool, id, &worker).await?;
                lat.push((leased + t1.elapsed()).as_secs_f64() * 1000.0);
            }
            anyhow::Ok((lat, empty))
        }));
    }
    let mut all = Vec::new();
    let mut empty = 0;
    let within = day + Duration::from_secs(120);
    match tokio::time::timeout(within, futures::future::join_all(tasks)).await {
        Ok(rs) => {
            for r in rs {
                let (l, e) = r??;
                all.extend(l);
                empty += e;
            }
        }
        Err(_) => bail!("lease floor day: workers still running {within:?} after the start"),
    }
    Ok((Lat::new(all), empty))
}
