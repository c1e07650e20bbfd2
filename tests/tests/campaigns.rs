//! Campaigns (issue 4) against the real PostgreSQL and NATS: cancel and end, pacing, priority,
//! callbacks, retries and the cross-campaign pressure limits, and contacts without a territory.
//!
//! No test asserts timings: every wait is "eventually", and moving time uses the scheduler's
//! clock. Some tests publish the dialer's events (`AttemptRecorded`) themselves, with times in
//! the past, to exercise the retry and pressure rules without waiting hours.

use anyhow::{Context, Result};
use chrono::{DateTime, Duration as Days, Utc};
use cnmas_bus::subjects;
use cnmas_domain::clock::{Clock, FixedClock};
use cnmas_proto::common::{AttemptOutcome, FinalStatus, Theme};
use cnmas_proto::dialer::{disposition::Kind, AttemptRecorded, Callback, LeasedCall, NotReached};
use cnmas_proto::results::ContactResult;
use cnmas_proto::scheduler::{CampaignTransitionRequest, CreateCampaignRequest};
use cnmas_proto::support::{envelope, timestamp};
use cnmas_runtime::auth::Role;
use cnmas_runtime::CommonConfig;
use cnmas_system_tests::{
    eventually, lease, next_call, people, record, take, test_campaign, wait_for_count, System,
    JWT_SECRET,
};
use sqlx::PgPool;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const FUND: &str = "751";
const WAIT: Duration = Duration::from_secs(60);

/// A campaign callable at any hour (audited override) with the given pacing and priority rule,
/// activated and assigned to `agents`.
async fn campaign(
    system: &System,
    max_attempts: u32,
    pacing_ratio: f64,
    priority_rule: &str,
    agents: &[&str],
) -> Result<String> {
    system
        .start_campaign(
            CreateCampaignRequest {
                max_attempts,
                pacing_ratio,
                priority_rule: priority_rule.into(),
                ..test_campaign(FUND, Theme::FluVaccination)
            },
            agents,
        )
        .await
}

fn wrong_number() -> Kind {
    Kind::NotReached(NotReached {
        reason: AttemptOutcome::WrongNumber as i32,
    })
}

fn name_of(call: &LeasedCall) -> String {
    call.card.clone().unwrap_or_default().display_name
}

async fn count(pool: &PgPool, campaign: &str, status: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM plans WHERE campaign_id = $1::uuid AND status = $2",
    )
    .bind(campaign)
    .bind(status)
    .fetch_one(pool)
    .await?)
}

async fn all_plans(pool: &PgPool, campaign: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM plans WHERE campaign_id = $1::uuid")
            .bind(campaign)
            .fetch_one(pool)
            .await?,
    )
}

/// Waits until the scheduler planned `n` contacts of the campaign.
async fn planned(pool: &PgPool, campaign: &str, n: i64) -> Result<()> {
    eventually(WAIT, "contacts in the plan", || async move {
        Ok((all_plans(pool, campaign).await? >= n).then_some(()))
    })
    .await
}

/// How an attempt is published: in a set, as the dialer does, or alone, as dialers did before
/// decision 0015 (what an upgrade finds in the stream).
#[derive(Clone, Copy, PartialEq)]
enum Published {
    InASet,
    Alone,
}

/// An attempt of the person, as the dialer records it.
fn attempt(
    campaign: &str,
    contact_id: Uuid,
    person_key: &str,
    number: u32,
    outcome: AttemptOutcome,
    at: DateTime<Utc>,
) -> AttemptRecorded {
    let id = Uuid::new_v4().to_string();
    AttemptRecorded {
        envelope: Some(envelope(id.clone(), FUND, campaign, &id, at)),
        attempt_id: id,
        call_id: format!("call-{contact_id}-{number}"),
        contact_id: contact_id.to_string(),
        attempt_number: number,
        agent_id: "agent-x".into(),
        leased_at: Some(timestamp(at)),
        recorded_at: Some(timestamp(at)),
        outcome: outcome as i32,
        callback_at: None,
        callback_with_same_agent: false,
        person_key: person_key.into(),
    }
}

/// Publishes an attempt as the dialer does, or alone.
async fn publish_attempt(
    system: &System,
    attempt: AttemptRecorded,
    published: Published,
) -> Result<()> {
    match published {
        Published::InASet => {
            let set = cnmas_proto::dialer::AttemptsRecorded {
                attempts: vec![attempt],
            };
            let set_id = Uuid::new_v4().to_string();
            system
                .publisher
                .publish(
                    &subjects::event("dialer", "attempts_recorded"),
                    &set_id,
                    &set,
                )
                .await?
        }
        Published::Alone => {
            let id = attempt.attempt_id.clone();
            system
                .publisher
                .publish(
                    &subjects::event("dialer", "attempt_recorded"),
                    &id,
                    &attempt,
                )
                .await?
        }
    }
    Ok(())
}

/// The (contact, person) planned for a campaign, once there.
async fn the_plan(pool: &PgPool, campaign: &str) -> Result<(Uuid, String)> {
    eventually(WAIT, "the contact's plan", || async move {
        Ok(sqlx::query_as::<_, (Uuid, String)>(
            "SELECT contact_id, person_key FROM plans WHERE campaign_id = $1::uuid",
        )
        .bind(campaign)
        .fetch_optional(pool)
        .await?)
    })
    .await
}

#[tokio::test]
async fn cancelling_closes_every_open_contact_and_empties_the_queue() -> Result<()> {
    let system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &["agent-1"])
        .await?;
    let results = system.fund_consumer(FUND, "result", "fund_cancel").await?;
    system
        .submit(FUND, &campaign, "sub-c", (0..4).map(people::flu).collect())
        .await?;
    let dialer = PgPool::connect(system.database_url("dialer-queue")).await?;
    wait_for_count(
        WAIT,
        &dialer,
        "SELECT count(*) FROM queue",
        4,
        "four calls queued",
    )
    .await?;

    // A fund cannot cancel another fund's campaign, not even learn it exists.
    let mut other = system
        .campaigns(system.token(Role::Fund, Some("131"), None))
        .await?;
    let err = other
        .cancel_campaign(CampaignTransitionRequest {
            campaign_id: campaign.clone(),
            reason: "not mine".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    let mut client = system
        .campaigns(system.token(Role::Fund, Some(FUND), None))
        .await?;
    let cancelled = client
        .cancel_campaign(CampaignTransitionRequest {
            campaign_id: campaign.clone(),
            reason: "vaccine shortage".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        cancelled.state,
        cnmas_proto::scheduler::CampaignState::Cancelled as i32
    );
    // A cancelled campaign stays cancelled.
    let again = client
        .activate_campaign(CampaignTransitionRequest {
            campaign_id: campaign.clone(),
            reason: "oops".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);

    let got: Vec<(String, ContactResult)> = take(&results, 4, WAIT).await?;
    for (_, r) in &got {
        assert_eq!(r.final_status, FinalStatus::CampaignCancelled as i32);
    }
    wait_for_count(
        WAIT,
        &dialer,
        "SELECT count(*) FROM queue",
        0,
        "the queue emptied",
    )
    .await?;
    let scheduler = PgPool::connect(system.database_url("scheduler")).await?;
    assert_eq!(count(&scheduler, &campaign, "closed").await?, 4);
    let audit: (String, String, String) = sqlx::query_as(
        "SELECT actor, detail->>'contacts_closed', detail->>'reason' FROM campaign_audit
         WHERE campaign_id = $1::uuid AND action = 'cancel'",
    )
    .bind(&campaign)
    .fetch_one(&scheduler)
    .await?;
    assert_eq!(audit, (FUND.into(), "4".into(), "vaccine shortage".into()));
    drop(results);
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn pacing_keeps_twice_the_available_agents_queued_and_refills_as_calls_end() -> Result<()> {
    let system = System::start().await?;
    let campaign = campaign(&system, 3, 2.0, "", &["pa-1", "pa-2"]).await?;
    // Pacing disabled: everything due is released at once, with no agent at all.
    let unpaced = campaign_without_agents(&system, -1.0).await?;
    let scheduler = PgPool::connect(system.database_url("scheduler")).await?;
    system
        .submit(FUND, &campaign, "sub-p", (0..10).map(people::flu).collect())
        .await?;
    system
        .submit(FUND, &unpaced, "sub-u", (10..16).map(people::flu).collect())
        .await?;
    planned(&scheduler, &campaign, 10).await?;
    eventually(WAIT, "every unpaced call released", || {
        let s = scheduler.clone();
        let u = unpaced.clone();
        async move { Ok((count(&s, &u, "queued").await? == 6).then_some(())) }
    })
    .await?;
    // Nobody is available on the paced campaign yet: nothing of it was released.
    assert_eq!(count(&scheduler, &campaign, "queued").await?, 0);

    // Watch the queue of the paced campaign for the whole test.
    let most = Arc::new(AtomicI64::new(0));
    let stop = CancellationToken::new();
    let watcher = tokio::spawn({
        let (s, c, most, stop) = (
            scheduler.clone(),
            campaign.clone(),
            most.clone(),
            stop.clone(),
        );
        async move {
            while !stop.is_cancelled() {
                if let Ok(n) = count(&s, &c, "queued").await {
                    most.fetch_max(n, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });

    let mut a1 = system.agent("pa-1").await?;
    let mut a2 = system.agent("pa-2").await?;
    // Asking for a call makes both agents available; the dialer reports it.
    next_call(&mut a1).await?;
    next_call(&mut a2).await?;
    eventually(WAIT, "four calls queued", || {
        let s = scheduler.clone();
        let c = campaign.clone();
        async move { Ok((count(&s, &c, "queued").await? == 4).then_some(())) }
    })
    .await?;
    let mut handled = 0;
    while handled < 10 {
        for agent in [&mut a1, &mut a2] {
            if handled < 10 {
                let call = lease(agent).await?;
                record(agent, &call, wrong_number()).await?;
                handled += 1;
            }
        }
    }
    eventually(WAIT, "every contact closed", || {
        let s = scheduler.clone();
        let c = campaign.clone();
        async move { Ok((count(&s, &c, "closed").await? == 10).then_some(())) }
    })
    .await?;
    stop.cancel();
    watcher.await?;
    let most = most.load(Ordering::SeqCst);
    assert!(most <= 4, "at most 2 × 2 agents queued, saw {most}");
    assert_eq!(count(&scheduler, &unpaced, "queued").await?, 6);
    system.stop().await;
    Ok(())
}

async fn campaign_without_agents(system: &System, pacing_ratio: f64) -> Result<String> {
    campaign(system, 3, pacing_ratio, "", &[]).await
}

/// The order in which one agent receives the calls of a campaign paced to one call at a time.
async fn order_served(
    system: &System,
    rule: &str,
    agent_id: &str,
    people: &[usize],
) -> Result<Vec<String>> {
    let campaign = campaign(system, 3, 0.5, rule, &[agent_id]).await?;
    let scheduler = PgPool::connect(system.database_url("scheduler")).await?;
    system
        .submit(
            FUND,
            &campaign,
            &format!("sub-{rule}-{agent_id}"),
            people.iter().map(|i| people::flu(*i)).collect(),
        )
        .await?;
    // Everyone is planned before the agent shows up, so the order is the campaign's.
    planned(&scheduler, &campaign, people.len() as i64).await?;
    let mut agent = system.agent(agent_id).await?;
    let mut order = Vec::new();
    for _ in people {
        let call = lease(&mut agent).await?;
        order.push(name_of(&call));
        record(&mut agent, &call, wrong_number()).await?;
    }
    Ok(order)
}

#[tokio::test]
async fn a_campaign_orders_its_calls_by_its_priority_rule() -> Result<()> {
    let system = System::start().await?;
    // Born 1955, 1951, 1953, and 1951 again (same birth date as 1, arrived later).
    let people = [5, 1, 3, 121];
    let names =
        |ids: &[usize]| -> Vec<String> { ids.iter().map(|i| format!("Camille Nom{i}")).collect() };
    let flu = order_served(&system, "", "pr-1", &people).await?;
    assert_eq!(flu, names(&[1, 121, 3, 5]), "oldest first, then first come");
    let fifo = order_served(&system, "fifo", "pr-2", &people).await?;
    assert_eq!(fifo, names(&[5, 1, 3, 121]), "order of arrival");
    system.stop().await;
    Ok(())
}

/// Waits until the scheduler has the dialer's report of an available agent on the campaign.
async fn agent_known_available(scheduler: &PgPool, campaign: &str) -> Result<()> {
    eventually(
        WAIT,
        "the agent's availability reaches the scheduler",
        || async move {
            let available: Option<i32> = sqlx::query_scalar(
                "SELECT agents_available FROM campaign_staffing WHERE campaign_id = $1::uuid",
            )
            .bind(campaign)
            .fetch_optional(scheduler)
            .await?;
            Ok((available.unwrap_or(0) >= 1).then_some(()))
        },
    )
    .await
}

/// Budget is free and older contacts wait (the ticker, which would release them, sleeps for an
/// hour here): contacts arriving now must wait behind them, not take the budget on arrival.
#[tokio::test]
async fn contacts_arriving_while_older_ones_wait_are_not_released_on_arrival() -> Result<()> {
    let mut system = System::start().await?;
    let campaign = campaign(&system, 3, 0.5, "fifo", &["rw-1"]).await?;
    let scheduler = PgPool::connect(system.database_url("scheduler")).await?;
    let mut agent = system.agent("rw-1").await?;
    assert!(next_call(&mut agent).await?.is_none());
    agent_known_available(&scheduler, &campaign).await?;
    let (shutdown, running) = scheduler_on(
        &mut system,
        cnmas_domain::clock::system(),
        Duration::from_secs(3600),
    )
    .await?;
    // One call of budget: the first contact is released on arrival, two wait.
    system
        .submit(
            FUND,
            &campaign,
            "sub-rw-a",
            [5, 1, 3].map(people::flu).to_vec(),
        )
        .await?;
    planned(&scheduler, &campaign, 3).await?;
    assert_eq!(count(&scheduler, &campaign, "queued").await?, 1);
    // The call ends (a wrong number closes the contact), so the budget is free again.
    let call = lease(&mut agent).await?;
    assert_eq!(name_of(&call), "Camille Nom5");
    record(&mut agent, &call, wrong_number()).await?;
    eventually(WAIT, "the budget freed", || {
        let s = scheduler.clone();
        let c = campaign.clone();
        async move { Ok((count(&s, &c, "queued").await? == 0).then_some(())) }
    })
    .await?;
    system
        .submit(FUND, &campaign, "sub-rw-b", vec![people::flu(0)])
        .await?;
    planned(&scheduler, &campaign, 4).await?;
    assert_eq!(
        count(&scheduler, &campaign, "queued").await?,
        0,
        "the new contact did not pass the two waiting ones"
    );
    shutdown.cancel();
    running.stopped().await;
    system.stop().await;
    Ok(())
}

/// Contacts that arrive while an agent waits are released at once (decision 0008), in the
/// campaign's order within what arrived, but never ahead of older contacts still waiting.
#[tokio::test]
async fn new_contacts_are_released_on_arrival_without_passing_older_ones() -> Result<()> {
    let system = System::start().await?;
    let names =
        |ids: &[usize]| -> Vec<String> { ids.iter().map(|i| format!("Camille Nom{i}")).collect() };
    for (rule, agent_id, first_served) in [("", "ra-1", 1), ("fifo", "ra-2", 5)] {
        // Paced to one call at a time for one agent.
        let campaign = campaign(&system, 3, 0.5, rule, &[agent_id]).await?;
        let scheduler = PgPool::connect(system.database_url("scheduler")).await?;
        let mut agent = system.agent(agent_id).await?;
        // Asking for a call makes the agent available; wait until the scheduler knows it.
        assert!(next_call(&mut agent).await?.is_none());
        agent_known_available(&scheduler, &campaign).await?;
        // Born 1955, 1951, 1953: the budget (one call) goes to the first in the campaign's
        // order; the other two wait.
        system
            .submit(
                FUND,
                &campaign,
                &format!("sub-ra-a-{agent_id}"),
                [5, 1, 3].map(people::flu).to_vec(),
            )
            .await?;
        planned(&scheduler, &campaign, 3).await?;
        eventually(WAIT, "one call released", || {
            let s = scheduler.clone();
            let c = campaign.clone();
            async move { Ok((count(&s, &c, "queued").await? == 1).then_some(())) }
        })
        .await?;
        // Born 1950, arrived later: not released on arrival while older contacts wait; the
        // ticker then ranks everyone waiting by the campaign's rule.
        system
            .submit(
                FUND,
                &campaign,
                &format!("sub-ra-b-{agent_id}"),
                vec![people::flu(0)],
            )
            .await?;
        planned(&scheduler, &campaign, 4).await?;
        assert_eq!(count(&scheduler, &campaign, "queued").await?, 1);
        let mut order = Vec::new();
        for _ in 0..4 {
            let call = lease(&mut agent).await?;
            order.push(name_of(&call));
            record(&mut agent, &call, wrong_number()).await?;
        }
        let expected = if rule == "fifo" {
            names(&[5, 1, 3, 0])
        } else {
            names(&[1, 0, 3, 5])
        };
        assert_eq!(order[0], names(&[first_served])[0], "rule {rule:?}");
        assert_eq!(order, expected, "rule {rule:?}");
    }
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_callback_with_the_same_agent_comes_back_to_that_agent() -> Result<()> {
    let system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &["cb-1", "cb-2"])
        .await?;
    system
        .submit(FUND, &campaign, "sub-cb", vec![people::flu(7)])
        .await?;
    let mut first = system.agent("cb-1").await?;
    let mut second = system.agent("cb-2").await?;
    let call = lease(&mut first).await?;
    record(
        &mut first,
        &call,
        Kind::Callback(Callback {
            at: Some(timestamp(Utc::now() + Days::seconds(3))),
            with_same_agent: true,
        }),
    )
    .await?;
    let dialer = PgPool::connect(system.database_url("dialer-queue")).await?;
    eventually(WAIT, "the callback queued for its agent", || {
        let d = dialer.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM queue WHERE callback_agent_id = 'cb-1' AND due_at <= now()",
            )
            .fetch_one(&d)
            .await?;
            Ok((n == 1).then_some(()))
        }
    })
    .await?;
    assert!(
        next_call(&mut second).await?.is_none(),
        "another agent does not get an agent-owned callback"
    );
    let back = lease(&mut first).await?;
    assert_eq!(name_of(&back), name_of(&call));
    assert_eq!(back.attempt_number, 2);
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn no_answer_up_to_the_maximum_closes_as_not_reached() -> Result<()> {
    let system = System::start().await?;
    let campaign = campaign_without_agents(&system, -1.0).await?;
    let results = system.fund_consumer(FUND, "result", "fund_nr").await?;
    let scheduler = PgPool::connect(system.database_url("scheduler")).await?;
    system
        .submit(FUND, &campaign, "sub-nr", vec![people::flu(9)])
        .await?;
    let (contact, person) = the_plan(&scheduler, &campaign).await?;
    // Three attempts (the campaign's maximum), a day apart in the past: each retry is due.
    // The second comes alone, as from a dialer before decision 0015: it counts all the same.
    for n in 1..=3u32 {
        let at = Utc::now() - Days::days(i64::from(10 - n));
        let published = if n == 2 {
            Published::Alone
        } else {
            Published::InASet
        };
        let made = attempt(&campaign, contact, &person, n, AttemptOutcome::NoAnswer, at);
        publish_attempt(&system, made, published).await?;
    }
    let got: Vec<(String, ContactResult)> = take(&results, 1, WAIT).await?;
    let r = &got[0].1;
    assert_eq!(r.final_status, FinalStatus::NotReached as i32);
    assert_eq!(r.attempts.len(), 3);
    drop(results);
    system.stop().await;
    Ok(())
}

/// Publishes attempts of the person planned in `campaign`, then waits until they count.
async fn attempts_in(
    system: &System,
    scheduler: &PgPool,
    campaign: &str,
    outcomes: &[(AttemptOutcome, i64)],
) -> Result<(Uuid, String)> {
    let (contact, person) = the_plan(scheduler, campaign).await?;
    for (n, (outcome, days_ago)) in outcomes.iter().enumerate() {
        let at = Utc::now() - Days::days(*days_ago);
        let made = attempt(campaign, contact, &person, n as u32 + 1, *outcome, at);
        publish_attempt(system, made, Published::InASet).await?;
    }
    let expected = outcomes.len() as i32;
    eventually(WAIT, "the attempts counted", || {
        let s = scheduler.clone();
        async move {
            let n: i32 = sqlx::query_scalar("SELECT attempts FROM plans WHERE contact_id = $1")
                .bind(contact)
                .fetch_one(&s)
                .await?;
            Ok((n == expected).then_some(()))
        }
    })
    .await?;
    Ok((contact, person))
}

/// Waits until the plan is due no earlier than `after` (the pressure limits pushed it).
async fn pushed_beyond(scheduler: &PgPool, contact: Uuid, after: DateTime<Utc>) -> Result<()> {
    eventually(WAIT, "the plan deferred", || {
        let s = scheduler.clone();
        async move {
            let (status, due): (String, Option<DateTime<Utc>>) =
                sqlx::query_as("SELECT status, next_due_at FROM plans WHERE contact_id = $1")
                    .bind(contact)
                    .fetch_one(&s)
                    .await?;
            Ok((status == "planned" && due.is_some_and(|d| d > after)).then_some(()))
        }
    })
    .await
}

#[tokio::test]
async fn the_fifth_attempt_in_thirty_days_waits_across_campaigns() -> Result<()> {
    let system = System::start().await?;
    let first = campaign(&system, 3, -1.0, "", &[]).await?;
    let second = campaign(&system, 5, -1.0, "", &[]).await?;
    let scheduler = PgPool::connect(system.database_url("scheduler")).await?;
    system
        .submit(FUND, &first, "sub-a", vec![people::flu(11)])
        .await?;
    let no_answer = AttemptOutcome::NoAnswer;
    // Three attempts in the first campaign (it closes as not reached)…
    attempts_in(
        &system,
        &scheduler,
        &first,
        &[(no_answer, 6), (no_answer, 5), (no_answer, 4)],
    )
    .await?;
    // …one in the second: the fourth in 30 days. Its retry is due, but a fifth must wait
    // until the first attempt is 30 days old (24 days from now).
    system
        .submit(FUND, &second, "sub-b", vec![people::flu(11)])
        .await?;
    let (contact, _) = attempts_in(&system, &scheduler, &second, &[(no_answer, 2)]).await?;
    pushed_beyond(&scheduler, contact, Utc::now() + Days::days(20)).await?;
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_refusal_in_conversation_silences_the_person_for_sixty_days() -> Result<()> {
    let system = System::start().await?;
    let first = campaign(&system, 3, -1.0, "", &[]).await?;
    let second = campaign(&system, 3, -1.0, "", &[]).await?;
    let scheduler = PgPool::connect(system.database_url("scheduler")).await?;
    system
        .submit(FUND, &first, "sub-r1", vec![people::flu(13)])
        .await?;
    attempts_in(
        &system,
        &scheduler,
        &first,
        &[(AttemptOutcome::RefusedInterview, 1)],
    )
    .await?;
    system
        .submit(FUND, &second, "sub-r2", vec![people::flu(13)])
        .await?;
    let (contact, _) = the_plan(&scheduler, &second).await?;
    pushed_beyond(&scheduler, contact, Utc::now() + Days::days(50)).await?;
    system.stop().await;
    Ok(())
}

/// Replaces the harness's scheduler by one on the given clock (same database and namespace).
async fn scheduler_on(
    system: &mut System,
    clock: Arc<dyn Clock>,
    tick: Duration,
) -> Result<(CancellationToken, cnmas_runtime::service::Running)> {
    system.stop_service("scheduler").await;
    let shutdown = CancellationToken::new();
    let common = CommonConfig {
        namespace: system.ns.clone(),
        nats_url: std::env::var("CNMAS_TEST_NATS_URL")
            .unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
        nats_memory_storage: true,
        database_url: system.database_url("scheduler").to_string(),
        database_max_connections: 4,
        consumer_pace: std::time::Duration::from_millis(
            cnmas_runtime::config::DEFAULT_CONSUMER_PACE_MS,
        ),
        grpc_addr: ([127, 0, 0, 1], 0).into(),
        http_addr: ([127, 0, 0, 1], 0).into(),
        jwt_secret: JWT_SECRET.into(),
    };
    let running = cnmas_scheduler::start_with_clock(
        cnmas_scheduler::Config {
            common,
            holidays: None,
            tick,
            retention: system.retention,
        },
        clock,
        shutdown.clone(),
    )
    .await
    .context("scheduler on a test clock")?;
    Ok((shutdown, running))
}

#[tokio::test]
async fn after_the_end_date_open_contacts_close_as_campaign_ended() -> Result<()> {
    let mut system = System::start().await?;
    let campaign = campaign_without_agents(&system, 2.0).await?;
    let results = system.fund_consumer(FUND, "result", "fund_end").await?;
    let scheduler = PgPool::connect(system.database_url("scheduler")).await?;
    system
        .submit(
            FUND,
            &campaign,
            "sub-e",
            (20..23).map(people::flu).collect(),
        )
        .await?;
    planned(&scheduler, &campaign, 3).await?;
    // The campaign ends in 30 days: move the scheduler's time 32 days ahead.
    let clock = FixedClock::shifted(Days::days(32));
    let (shutdown, running) =
        scheduler_on(&mut system, Arc::new(clock), Duration::from_millis(100)).await?;
    let got: Vec<(String, ContactResult)> = take(&results, 3, WAIT).await?;
    for (_, r) in &got {
        assert_eq!(r.final_status, FinalStatus::CampaignEnded as i32);
    }
    let state: String =
        sqlx::query_scalar("SELECT state FROM campaigns WHERE campaign_id = $1::uuid")
            .bind(&campaign)
            .fetch_one(&scheduler)
            .await?;
    assert_eq!(state, "completed");
    shutdown.cancel();
    running.stopped().await;
    drop(results);
    system.stop().await;
    Ok(())
}

/// A set of calls comes from one scheduler transaction: one unusable call in it (a bug) sends
/// the whole set to the dead-letter subject, for replay, and queues none of it.
/// A subscription to the dead letters of one consumer.
async fn dead_letters(
    system: &System,
    service: &str,
    consumer: &str,
) -> Result<async_nats::Subscriber> {
    let subject = system.ns.subject(&subjects::dead_letter(service, consumer));
    Ok(system.nats.subscribe(subject).await?)
}

/// The headers of the next dead letter, which must be the event `event_id`.
async fn dead_lettered(
    dead: &mut async_nats::Subscriber,
    event_id: &str,
) -> Result<async_nats::HeaderMap> {
    let msg = tokio::time::timeout(WAIT, futures::StreamExt::next(dead))
        .await?
        .context("a dead letter")?;
    let headers = msg.headers.context("dead-letter headers")?;
    assert_eq!(
        headers.get("Cnmas-Original-Event-Id").map(|v| v.as_str()),
        Some(event_id)
    );
    Ok(headers)
}

#[tokio::test]
async fn a_set_of_calls_with_an_unusable_call_is_dead_lettered_whole() -> Result<()> {
    let system = System::start().await?;
    let campaign = campaign_without_agents(&system, -1.0).await?;
    let dialer = PgPool::connect(system.database_url("dialer-queue")).await?;
    let mut dead = dead_letters(&system, "dialer-queue", "dialer_scheduler").await?;
    let call = |contact: String| {
        let id = Uuid::new_v4().to_string();
        cnmas_proto::scheduler::CallDue {
            envelope: Some(envelope(id, FUND, &campaign, &contact, Utc::now())),
            call_id: format!("{contact}-1"),
            contact_id: contact,
            person_key: "pk-set".into(),
            attempt_number: 1,
            due_at: Some(timestamp(Utc::now())),
            window_end: Some(timestamp(Utc::now() + Days::hours(2))),
            priority_key: 1,
            time_zone: "Europe/Paris".into(),
            territory: "FR".into(),
            department: "75".into(),
            callback_agent_id: String::new(),
        }
    };
    let good = Uuid::new_v4();
    let id = Uuid::new_v4().to_string();
    system
        .publisher
        .publish(
            &subjects::event("scheduler", "calls_due"),
            &id,
            &cnmas_proto::scheduler::CallsDue {
                calls: vec![call(good.to_string()), call("not-a-uuid".into())],
            },
        )
        .await?;
    let headers = dead_lettered(&mut dead, &id).await?;
    assert!(headers
        .get("Cnmas-Dead-Letter-Reason")
        .is_some_and(|r| r.as_str().contains("bad ids")));
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM queue WHERE contact_id = $1")
        .bind(good)
        .fetch_one(&dialer)
        .await?;
    assert_eq!(queued, 0, "nothing of the set was queued");
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_set_of_attempts_skips_an_unknown_contact_and_is_refused_whole_for_an_unknown_outcome(
) -> Result<()> {
    let system = System::start().await?;
    let campaign = campaign_without_agents(&system, -1.0).await?;
    let scheduler = PgPool::connect(system.database_url("scheduler")).await?;
    let mut dead = dead_letters(&system, "scheduler", "scheduler_dialer").await?;
    system
        .submit(FUND, &campaign, "sub-set", vec![people::flu(14)])
        .await?;
    let (contact, person) = the_plan(&scheduler, &campaign).await?;
    let attempts_of = |contact: Uuid| {
        let s = scheduler.clone();
        async move {
            let n: i32 = sqlx::query_scalar("SELECT attempts FROM plans WHERE contact_id = $1")
                .bind(contact)
                .fetch_one(&s)
                .await?;
            anyhow::Ok(n)
        }
    };
    let at = Utc::now() - Days::days(3);
    let no_answer = AttemptOutcome::NoAnswer;
    // A contact the scheduler has no plan for: skipped, and the set's other attempt counts.
    let set = cnmas_proto::dialer::AttemptsRecorded {
        attempts: vec![
            attempt(&campaign, contact, &person, 1, no_answer, at),
            attempt(&campaign, Uuid::new_v4(), "pk-gone", 1, no_answer, at),
        ],
    };
    let subject = subjects::event("dialer", "attempts_recorded");
    let first = Uuid::new_v4().to_string();
    system.publisher.publish(&subject, &first, &set).await?;
    eventually(WAIT, "the known contact's attempt counted", || async {
        Ok((attempts_of(contact).await? == 1).then_some(()))
    })
    .await?;
    // An outcome this scheduler does not know: the whole set goes to the dead letters.
    let mut unknown = attempt(&campaign, contact, &person, 3, no_answer, at);
    unknown.outcome = 999;
    let set = cnmas_proto::dialer::AttemptsRecorded {
        attempts: vec![
            attempt(&campaign, contact, &person, 2, no_answer, at),
            unknown,
        ],
    };
    let second = Uuid::new_v4().to_string();
    system.publisher.publish(&subject, &second, &set).await?;
    dead_lettered(&mut dead, &second).await?;
    assert_eq!(
        attempts_of(contact).await?,
        1,
        "nothing of the refused set counted"
    );
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_closure_published_alone_by_an_older_scheduler_still_applies() -> Result<()> {
    // What an upgrade finds in the stream (decision 0015): the dialer drops the contact's
    // queued call and results records the closure, through its former consumer.
    let system = System::start().await?;
    let campaign = campaign_without_agents(&system, -1.0).await?;
    let scheduler = PgPool::connect(system.database_url("scheduler")).await?;
    let dialer = PgPool::connect(system.database_url("dialer-queue")).await?;
    let results = PgPool::connect(system.database_url("results")).await?;
    system
        .submit(FUND, &campaign, "sub-old", vec![people::flu(15)])
        .await?;
    let (contact, _) = the_plan(&scheduler, &campaign).await?;
    let queued = format!("SELECT count(*) FROM queue WHERE contact_id = '{contact}'");
    wait_for_count(WAIT, &dialer, &queued, 1, "the contact's call queued").await?;
    let id = Uuid::new_v4().to_string();
    let closed = cnmas_proto::scheduler::ContactClosed {
        envelope: Some(envelope(id.clone(), FUND, &campaign, &id, Utc::now())),
        contact_id: contact.to_string(),
        final_status: FinalStatus::NotReached as i32,
        attempts: 0,
        reason: "attempts.decided".into(),
    };
    system
        .publisher
        .publish(
            &subjects::event("scheduler", "contact_closed"),
            &id,
            &closed,
        )
        .await?;
    wait_for_count(WAIT, &dialer, &queued, 0, "the call withdrawn").await?;
    let closures = format!("SELECT count(*) FROM closures WHERE contact_id = '{contact}'");
    wait_for_count(WAIT, &results, &closures, 1, "the closure at results").await?;
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_contact_without_territory_is_closed_and_reported() -> Result<()> {
    let system = System::start().await?;
    let campaign = campaign_without_agents(&system, -1.0).await?;
    let scheduler = PgPool::connect(system.database_url("scheduler")).await?;
    let mut closed = system
        .nats
        .subscribe(
            system
                .ns
                .subject(&subjects::event("scheduler", "contacts_closed")),
        )
        .await?;
    let contact = Uuid::new_v4();
    let id = Uuid::new_v4().to_string();
    let cleared = cnmas_proto::consent::ContactCleared {
        envelope: Some(envelope(id.clone(), FUND, &campaign, &id, Utc::now())),
        contact_id: contact.to_string(),
        person_key: "pk-nowhere".into(),
        theme: Theme::FluVaccination as i32,
        territory: String::new(),
        department: String::new(),
        time_zone: String::new(),
        priority_key: 1,
    };
    system
        .publisher
        .publish(
            &subjects::event("consent", "contacts_cleared"),
            &id,
            &cnmas_proto::consent::ContactsCleared {
                contacts: vec![cleared],
            },
        )
        .await?;
    let msg = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut closed))
        .await?
        .context("a ContactsClosed")?;
    let set: cnmas_proto::scheduler::ContactsClosed = prost::Message::decode(msg.payload)?;
    let [event] = set.closures.as_slice() else {
        anyhow::bail!("one closure expected, got {}", set.closures.len());
    };
    assert_eq!(event.contact_id, contact.to_string());
    assert_eq!(event.final_status, FinalStatus::NotReached as i32);
    assert_eq!(event.reason, "territory.unknown");
    let status: String = sqlx::query_scalar("SELECT status FROM plans WHERE contact_id = $1")
        .bind(contact)
        .fetch_one(&scheduler)
        .await?;
    assert_eq!(status, "closed");
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn widening_the_legal_hours_needs_an_audited_reason() -> Result<()> {
    let system = System::start().await?;
    let mut client = system
        .campaigns(system.token(Role::Fund, Some(FUND), None))
        .await?;
    let today = Utc::now().date_naive();
    let request = |policy: &str, reason: &str| CreateCampaignRequest {
        fund_code: FUND.into(),
        name: "Samedi".into(),
        theme: Theme::FluVaccination as i32,
        starts_on: today.to_string(),
        ends_on: today.to_string(),
        presented_number: "+33947500000".into(),
        calling_policy: policy.into(),
        calling_policy_override_reason: reason.into(),
        ..Default::default()
    };
    let saturday = r#"{"weekly":{"saturday":[{"start":"10:00","end":"12:00"}]}}"#;
    let err = client
        .create_campaign(request(saturday, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err
        .message()
        .starts_with("calling_policy: policy.outside_legal_hours"));
    let narrow = r#"{"weekly":{"monday":[{"start":"10:00","end":"12:00"}]}}"#;
    client.create_campaign(request(narrow, "")).await?;
    let wide = client
        .create_campaign(request(saturday, "vaccination drive approved by the CNIL"))
        .await?
        .into_inner();
    assert_eq!(wide.pacing_ratio, 2.0);
    let scheduler = PgPool::connect(system.database_url("scheduler")).await?;
    let reason: String = sqlx::query_scalar(
        "SELECT detail->>'override_reason' FROM campaign_audit
         WHERE campaign_id = $1::uuid AND action = 'create'",
    )
    .bind(&wide.campaign_id)
    .fetch_one(&scheduler)
    .await?;
    assert_eq!(reason, "vaccination drive approved by the CNIL");
    let err = client
        .create_campaign(CreateCampaignRequest {
            priority_rule: "youngest".into(),
            ..request("", "")
        })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("priority_rule: "));
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_campaign_sets_its_own_retry_delays() -> Result<()> {
    let system = System::start().await?;
    let mut client = system
        .campaigns(system.token(Role::Fund, Some(FUND), None))
        .await?;
    let request = |retry_policy: &str| CreateCampaignRequest {
        max_attempts: 4,
        retry_policy: retry_policy.into(),
        ..test_campaign(FUND, Theme::FluVaccination)
    };
    // Out-of-range or unknown settings are refused, naming the field.
    for bad in [
        r#"{"busy_delay_minutes": 0}"#,
        r#"{"snooze": 3}"#,
        "not json",
    ] {
        let err = client.create_campaign(request(bad)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
        assert!(
            err.message().starts_with("retry_policy: "),
            "{}",
            err.message()
        );
    }
    let c = client
        .create_campaign(request(r#"{"busy_delay_minutes": 7}"#))
        .await?
        .into_inner();
    assert!(
        c.retry_policy.contains("\"busy_delay_minutes\":7"),
        "{}",
        c.retry_policy
    );
    client
        .activate_campaign(CampaignTransitionRequest {
            campaign_id: c.campaign_id.clone(),
            reason: "test".into(),
        })
        .await?;
    let scheduler = PgPool::connect(system.database_url("scheduler")).await?;
    system
        .submit(FUND, &c.campaign_id, "sub-rp", vec![people::flu(11)])
        .await?;
    let (contact, person) = the_plan(&scheduler, &c.campaign_id).await?;
    let at = Utc::now() - Days::days(2);
    let busy = attempt(
        &c.campaign_id,
        contact,
        &person,
        1,
        AttemptOutcome::Busy,
        at,
    );
    publish_attempt(&system, busy, Published::InASet).await?;
    // The retry is planned 7 minutes after the busy attempt (then released at once, as that
    // time has passed): the plan records the attempt and a due time of at + 7 min or later.
    let due: DateTime<Utc> = eventually(WAIT, "the retry planned", || {
        let s = scheduler.clone();
        async move {
            let row: (i32, Option<DateTime<Utc>>, DateTime<Utc>) = sqlx::query_as(
                "SELECT attempts, next_due_at, updated_at FROM plans WHERE contact_id = $1",
            )
            .bind(contact)
            .fetch_one(&s)
            .await?;
            Ok((row.0 == 1).then_some(row.1.unwrap_or(row.2)))
        }
    })
    .await?;
    // (PostgreSQL keeps microseconds.)
    assert!(
        due >= at + Days::minutes(7) - Days::milliseconds(1),
        "due {due}, attempt {at}"
    );
    let audit: serde_json::Value = sqlx::query_scalar(
        "SELECT detail FROM campaign_audit WHERE action = 'create' AND campaign_id = $1::uuid",
    )
    .bind(&c.campaign_id)
    .fetch_one(&scheduler)
    .await?;
    assert_eq!(audit["retry_policy"]["busy_delay_minutes"], 7);
    scheduler.close().await;
    system.stop().await;
    Ok(())
}
