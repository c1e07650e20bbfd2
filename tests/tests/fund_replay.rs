//! A fund's side of delivery: a fund that was down replays from where it stopped with its
//! durable consumer, and what it receives twice (a delivery it did not acknowledge before
//! crashing) carries the same result id, so its own dedupe keeps exactly one per contact.

use anyhow::{Context, Result};
use async_nats::jetstream::consumer::{pull, AckPolicy, Consumer};
use cnmas_bus::subjects;
use cnmas_proto::common::{AttemptOutcome, FinalStatus, Theme};
use cnmas_proto::dialer::{disposition::Kind, NotReached, RefusedInterview};
use cnmas_proto::results::ContactResult;
use cnmas_system_tests::{lease, people, record, take, System};
use futures::StreamExt;
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const FUND: &str = "972";
const WAIT: Duration = Duration::from_secs(30);
const CONSUMER: &str = "cgss_martinique_results";

/// The consumer configuration the README recommends to funds, with a short `ack_wait` so the
/// test does not wait thirty seconds for a redelivery.
async fn fund_results(system: &System) -> Result<Consumer<pull::Config>> {
    let stream = system.js.get_stream(system.ns.stream("OUT")).await?;
    Ok(stream
        .get_or_create_consumer(
            CONSUMER,
            pull::Config {
                durable_name: Some(CONSUMER.into()),
                filter_subject: system.ns.subject(&subjects::fund_out(FUND, "result")),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(2),
                max_ack_pending: 10_000,
                ..Default::default()
            },
        )
        .await?)
}

/// One message fetched and deliberately not acknowledged: the fund crashed while storing it.
async fn fetch_without_ack(consumer: &Consumer<pull::Config>) -> Result<(String, ContactResult)> {
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(WAIT)
        .messages()
        .await?;
    let msg = batch
        .next()
        .await
        .context("a result is waiting")?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let id = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_string())
        .context("every result carries Nats-Msg-Id")?;
    Ok((id, ContactResult::decode(msg.payload.clone())?))
}

async fn complete_calls(system: &System, n: usize) -> Result<()> {
    let mut agent = system.agent("agent-972").await?;
    for i in 0..n {
        let call = lease(&mut agent).await?;
        let kind = if i % 2 == 0 {
            Kind::RefusedInterview(RefusedInterview {})
        } else {
            Kind::NotReached(NotReached {
                reason: AttemptOutcome::WrongNumber as i32,
            })
        };
        record(&mut agent, &call, kind).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_fund_that_was_down_replays_from_where_it_stopped_without_duplicates() -> Result<()> {
    let mut system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &["agent-972"])
        .await?;
    system
        .submit(FUND, &campaign, "replay", (0..6).map(people::flu).collect())
        .await?;

    // The fund is up: two results arrive and are acknowledged.
    let consumer = fund_results(&system).await?;
    complete_calls(&system, 2).await?;
    let first: Vec<(String, ContactResult)> = take(&consumer, 2, WAIT).await?;

    // The next calls end while the fund reads one result and crashes before acknowledging it.
    complete_calls(&system, 1).await?;
    let unacked = fetch_without_ack(&consumer).await?;
    drop(consumer);

    // The fund stays down while the rest of the campaign is called, and the results service
    // restarts meanwhile.
    complete_calls(&system, 3).await?;
    system.stop_service("results").await;
    system.start_service("results").await?;

    // Back up: the same durable consumer resumes after the last acknowledged result.
    let consumer = fund_results(&system).await?;
    let rest: Vec<(String, ContactResult)> = take(&consumer, 4, WAIT).await?;

    let mut by_id: HashMap<String, ContactResult> = HashMap::new();
    for (msg_id, result) in first.iter().chain(rest.iter()) {
        assert_eq!(msg_id, &result.result_id, "Nats-Msg-Id is the result id");
        let earlier = by_id.insert(msg_id.clone(), result.clone());
        assert!(earlier.is_none(), "no acknowledged result comes back");
    }
    assert_eq!(by_id.len(), 6, "one result per contact");
    let redelivered = by_id
        .get(&unacked.0)
        .context("the unacknowledged result is delivered again")?;
    assert_eq!(
        redelivered, &unacked.1,
        "a redelivery is the same result, byte for byte"
    );
    let refs: HashSet<&str> = by_id.values().map(|r| r.submission_ref.as_str()).collect();
    assert_eq!(refs.len(), 6, "six different contacts");
    assert!(by_id.values().all(|r| {
        r.attempts.len() == 1
            && (r.final_status == FinalStatus::InterviewRefused as i32
                || r.final_status == FinalStatus::WrongNumber as i32)
    }));

    // Nothing else is waiting once everything is acknowledged.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut consumer = consumer;
    let info = consumer.info().await?;
    assert_eq!(info.num_pending, 0);
    assert_eq!(info.num_ack_pending, 0);
    system.stop().await;
    Ok(())
}
