//! End to end: the five services in-process against the real PostgreSQL and NATS.

use anyhow::Result;
use cnmas_proto::common::{
    contact_detail_change::Change, AttemptOutcome, ConsentChange, ContactDetailChange, FinalStatus,
    FollowUpKind, FollowUpRequest, OfferDecision, Theme,
};
use cnmas_proto::dialer::{
    disposition::Kind, Interview, NextCallRequest, NotReached, RefusedInterview,
};
use cnmas_proto::intake::contact_submission::Person;
use cnmas_proto::intake::ContactRejected;
use cnmas_proto::results::{ContactChangeNotice, ContactResult, FollowUpNotice};
use cnmas_runtime::auth::Role;
use cnmas_system_tests::{
    eventually, lease, next_call, outcome_request, people, record, take, wait_for_count, System,
};
use std::collections::HashSet;
use std::time::Duration;
use tonic::Code;

const FUND: &str = "751";
const WAIT: Duration = Duration::from_secs(30);

fn display_name_of(i: usize) -> String {
    format!("Camille Nom{i}")
}

/// `agents` agents on one flu campaign whose `contacts` calls are all queued: the setting of the
/// tests of agents working at once. Returns the agents' ids and the dialer's database.
async fn crowd(
    system: &System,
    agents: usize,
    contacts: usize,
    event_id: &str,
) -> Result<(Vec<String>, sqlx::PgPool)> {
    let ids: Vec<String> = (0..agents).map(|i| format!("agent-{i}")).collect();
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &names)
        .await?;
    system
        .submit(
            FUND,
            &campaign,
            event_id,
            (0..contacts).map(people::flu).collect(),
        )
        .await?;
    let pool = sqlx::PgPool::connect(system.database_url("dialer-queue")).await?;
    wait_for_count(
        WAIT,
        &pool,
        "SELECT count(*) FROM queue",
        contacts as i64,
        "every call queued",
    )
    .await?;
    Ok((ids, pool))
}

#[tokio::test]
async fn contacts_flow_from_fund_to_agent_and_back_as_results_once() -> Result<()> {
    let system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &["agent-1"])
        .await?;
    let mut results = system.fund_consumer(FUND, "result", "fund_751").await?;
    let follow_ups = system
        .fund_consumer(FUND, "follow_up", "fund_751_fu")
        .await?;
    let changes = system
        .fund_consumer(FUND, "contact_change", "fund_751_cc")
        .await?;
    system
        .submit(FUND, &campaign, "sub-1", (0..3).map(people::flu).collect())
        .await?;

    let mut agent = system.agent("agent-1").await?;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let call = lease(&mut agent).await?;
        let card = call.card.clone().expect("a call card");
        // Only what the theme needs: no NIR on the card.
        assert!(card.fields.iter().all(|f| f.field != "nir"));
        assert!(card.phone.starts_with("+336"));
        let kind = if card.display_name == display_name_of(0) {
            Kind::Interview(Interview {
                offer_decision: OfferDecision::Accepted as i32,
                follow_ups: vec![FollowUpRequest {
                    kind: FollowUpKind::AppointmentRequest as i32,
                    note: "rendez-vous en pharmacie".into(),
                }],
                contact_detail_changes: vec![ContactDetailChange {
                    change: Some(Change::Phone("07 81 23 45 67".into())),
                }],
                ..Default::default()
            })
        } else if card.display_name == display_name_of(1) {
            Kind::RefusedInterview(RefusedInterview {})
        } else {
            Kind::NotReached(NotReached {
                reason: AttemptOutcome::WrongNumber as i32,
            })
        };
        record(&mut agent, &call, kind).await?;
        seen.push(card.display_name);
    }
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        3,
        "three different people"
    );
    // Each step of the three calls is timed, for operators to see where an agent waits; each
    // timing is read from the service that exports it in production.
    for (service, histogram, at_least) in [
        ("dialer-queue", "cnmas_dialer_next_call_seconds", 3.0),
        ("dialer-queue", "cnmas_dialer_record_outcome_seconds", 3.0),
        ("dialer-queue", "cnmas_dialer_lease_batch_seconds", 1.0),
        ("dialer-queue", "cnmas_dialer_cards_seconds", 1.0),
        ("dialer-queue", "cnmas_dialer_outcome_write_seconds", 1.0),
        ("intake", "cnmas_intake_call_cards_seconds", 1.0),
    ] {
        let page = system.metrics(service).await?;
        let count = page
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{histogram}_count ")))
            .and_then(|v| v.trim().parse::<f64>().ok());
        assert!(
            count.is_some_and(|c| c >= at_least),
            "{service} {histogram}: {count:?} timings, at least {at_least} expected"
        );
    }

    let got: Vec<(String, ContactResult)> = take(&results, 3, WAIT).await?;
    let mut by_ref: Vec<(String, i32, i32, usize)> = got
        .iter()
        .map(|(msg_id, r)| {
            assert_eq!(msg_id, &r.result_id, "Nats-Msg-Id is the stable result id");
            (
                r.submission_ref.clone(),
                r.final_status,
                r.offer_decision,
                r.attempts.len(),
            )
        })
        .collect();
    by_ref.sort();
    assert_eq!(
        by_ref,
        vec![
            (
                "ref-0".into(),
                FinalStatus::InterviewHeld as i32,
                OfferDecision::Accepted as i32,
                1
            ),
            ("ref-1".into(), FinalStatus::InterviewRefused as i32, 0, 1),
            ("ref-2".into(), FinalStatus::WrongNumber as i32, 0, 1),
        ]
    );
    // Requests and new details also came on their own subjects, for the fund to act on.
    let fu: Vec<(String, FollowUpNotice)> = take(&follow_ups, 1, WAIT).await?;
    assert_eq!(fu[0].1.submission_ref, "ref-0");
    assert_eq!(fu[0].1.follow_ups[0].note, "rendez-vous en pharmacie");
    let cc: Vec<(String, ContactChangeNotice)> = take(&changes, 1, WAIT).await?;
    assert_eq!(
        cc[0].1.changes[0].change,
        Some(Change::Phone("+33781234567".into()))
    );
    // Exactly once: nothing more arrives.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cnmas_system_tests::pending(&mut results).await?, 0);
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_invalid_contact_is_rejected_back_to_the_fund_with_its_reason() -> Result<()> {
    let system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &[])
        .await?;
    let rejections = system
        .fund_consumer(FUND, "rejection", "fund_751_rej")
        .await?;
    let results = system.fund_consumer(FUND, "result", "fund_751").await?;
    let mut bad = people::flu(7);
    if let Some(Person::Insured(p)) = bad.person.as_mut() {
        // Wrong key.
        p.nir = format!("{}00", &p.nir[..13]);
    }
    bad.submission_ref = "bad-1".into();
    system
        .submit(FUND, &campaign, "sub-bad", vec![people::flu(1), bad])
        .await?;
    let got: Vec<(String, ContactRejected)> = take(&rejections, 1, WAIT).await?;
    let r = &got[0].1;
    assert_eq!(r.submission_ref, "bad-1");
    assert_eq!(r.index, 1);
    assert_eq!(r.reasons[0].field, "insured.nir");
    assert_eq!(r.reasons[0].rule, "nir.key_mismatch");
    assert!(!r.reasons[0]
        .message
        .contains(&people::flu(7).submission_ref));
    // Its final result says so too.
    let final_: Vec<(String, ContactResult)> = take(&results, 1, WAIT).await?;
    assert_eq!(
        final_[0].1.final_status,
        FinalStatus::RejectedAtIntake as i32
    );
    assert_eq!(final_[0].1.submission_ref, "bad-1");
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_same_submission_twice_yields_one_contact_and_one_result() -> Result<()> {
    let system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &["agent-1"])
        .await?;
    let mut results = system.fund_consumer(FUND, "result", "fund_751").await?;
    // The fund sends the same contact twice, under two different message ids (a re-sent
    // file), and the very same message twice (a retried publish).
    system
        .submit(FUND, &campaign, "first", vec![people::flu(5)])
        .await?;
    system
        .submit(FUND, &campaign, "second", vec![people::flu(5)])
        .await?;
    system
        .submit(FUND, &campaign, "second", vec![people::flu(5)])
        .await?;

    let mut agent = system.agent("agent-1").await?;
    let call = lease(&mut agent).await?;
    record(
        &mut agent,
        &call,
        Kind::NotReached(NotReached {
            reason: AttemptOutcome::NotInService as i32,
        }),
    )
    .await?;
    let got: Vec<(String, ContactResult)> = take(&results, 1, WAIT).await?;
    assert_eq!(got[0].1.submission_ref, "ref-5");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(next_call(&mut agent).await?.is_none(), "no second call");
    assert_eq!(
        cnmas_system_tests::pending(&mut results).await?,
        0,
        "one result"
    );

    let pool = sqlx::PgPool::connect(system.database_url("intake")).await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts")
        .fetch_one(&pool)
        .await?;
    assert_eq!(n, 1);
    pool.close().await;
    system.stop().await;
    Ok(())
}

/// Intake stores first and looks up only what the store refused: a person already in the
/// campaign under another reference is told apart from a message sent again.
#[tokio::test]
async fn a_person_already_in_the_campaign_under_another_reference_is_rejected() -> Result<()> {
    let system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &[])
        .await?;
    let mut rejections = system
        .fund_consumer(FUND, "rejection", "fund_751_rej")
        .await?;
    system
        .submit(FUND, &campaign, "first", vec![people::flu(3)])
        .await?;
    let pool = sqlx::PgPool::connect(system.database_url("intake")).await?;
    wait_for_count(
        WAIT,
        &pool,
        "SELECT count(*) FROM contacts",
        1,
        "the first contact stored",
    )
    .await?;
    // Later: the same person under a new reference, with a new person, and the first message's
    // contact again (already received: nothing said).
    let mut again = people::flu(3);
    again.submission_ref = "ref-3-bis".into();
    system
        .submit(
            FUND,
            &campaign,
            "second",
            vec![people::flu(4), again, people::flu(3)],
        )
        .await?;
    let got: Vec<(String, ContactRejected)> = take(&rejections, 1, WAIT).await?;
    let r = &got[0].1;
    assert_eq!(r.submission_ref, "ref-3-bis");
    assert_eq!(r.index, 1);
    assert_eq!(r.reasons[0].field, "person");
    assert_eq!(r.reasons[0].rule, "contact.duplicate_person");
    eventually(WAIT, "the new person stored", || {
        let pool = pool.clone();
        async move {
            let refs: Vec<String> =
                sqlx::query_scalar("SELECT submission_ref FROM contacts ORDER BY submission_ref")
                    .fetch_all(&pool)
                    .await?;
            Ok((refs == ["ref-3", "ref-4"]).then_some(()))
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cnmas_system_tests::pending(&mut rejections).await?,
        0,
        "one rejection"
    );
    pool.close().await;
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_service_restarted_in_the_middle_loses_nothing() -> Result<()> {
    let mut system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &["agent-1"])
        .await?;
    let results = system.fund_consumer(FUND, "result", "fund_751").await?;
    // The scheduler and results are down while contacts arrive and calls are recorded.
    system.stop_service("scheduler").await;
    system
        .submit(
            FUND,
            &campaign,
            "sub-restart",
            (0..20).map(people::flu).collect(),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    system.start_service("scheduler").await?;

    let mut agent = system.agent("agent-1").await?;
    system.stop_service("results").await;
    for i in 0..20 {
        let call = lease(&mut agent).await?;
        record(
            &mut agent,
            &call,
            Kind::NotReached(NotReached {
                reason: AttemptOutcome::WrongNumber as i32,
            }),
        )
        .await?;
        if i == 10 {
            system.stop_service("dialer-queue").await;
            system.start_service("dialer-queue").await?;
            agent = system.agent("agent-1").await?;
        }
    }
    system.start_service("results").await?;
    let got: Vec<(String, ContactResult)> = take(&results, 20, WAIT).await?;
    let refs: HashSet<String> = got.iter().map(|(_, r)| r.submission_ref.clone()).collect();
    assert_eq!(refs.len(), 20);
    system.stop().await;
    Ok(())
}

/// The calls of a campaign in the dialer's queue.
async fn queued_calls(pool: &sqlx::PgPool, campaign: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM queue WHERE campaign_id = $1::uuid")
            .bind(campaign)
            .fetch_one(pool)
            .await?,
    )
}

#[tokio::test]
async fn an_opt_out_during_the_interview_suppresses_the_persons_queued_calls() -> Result<()> {
    let system = System::start().await?;
    // The same person in two campaigns of the fund.
    let first = system
        .active_campaign(FUND, Theme::FluVaccination, &["agent-1"])
        .await?;
    let results = system.fund_consumer(FUND, "result", "fund_751").await?;
    system
        .submit(FUND, &first, "a", vec![people::flu(3)])
        .await?;
    let mut agent = system.agent("agent-1").await?;
    let call = lease(&mut agent).await?;

    let second = system
        .active_campaign(FUND, Theme::FluVaccination, &["agent-2"])
        .await?;
    system
        .submit(FUND, &second, "b", vec![people::flu(3)])
        .await?;
    // Wait until the second campaign's call is queued.
    let mut agent2 = system.agent("agent-2").await?;
    let pool = sqlx::PgPool::connect(system.database_url("dialer-queue")).await?;
    eventually(WAIT, "the second call queued", || {
        let (pool, second) = (pool.clone(), second.clone());
        async move { Ok((queued_calls(&pool, &second).await? == 1).then_some(())) }
    })
    .await?;

    record(
        &mut agent,
        &call,
        Kind::Interview(Interview {
            offer_decision: OfferDecision::Refused as i32,
            consent_changes: vec![ConsentChange {
                channel: cnmas_proto::common::Channel::Phone as i32,
                opted_out: true,
                all_themes: true,
            }],
            ..Default::default()
        }),
    )
    .await?;
    let got: Vec<(String, ContactResult)> = take(&results, 2, WAIT).await?;
    let statuses: HashSet<i32> = got.iter().map(|(_, r)| r.final_status).collect();
    assert_eq!(
        statuses,
        HashSet::from([
            FinalStatus::InterviewHeld as i32,
            FinalStatus::SuppressedByConsent as i32
        ])
    );
    // The dialer and results hear of the closure each on its own consumer: the fund's result
    // may come first, so wait for the dialer's withdrawal before asking for a call.
    eventually(WAIT, "the second call withdrawn", || {
        let (pool, second) = (pool.clone(), second.clone());
        async move { Ok((queued_calls(&pool, &second).await? == 0).then_some(())) }
    })
    .await?;
    assert!(
        next_call(&mut agent2).await?.is_none(),
        "the queued call was withdrawn"
    );
    pool.close().await;
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn apis_require_a_valid_token_and_respect_scopes() -> Result<()> {
    let system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &["agent-1"])
        .await?;
    // No token, a forged token.
    let mut anonymous = system.campaigns(String::new()).await?;
    let err = anonymous
        .get_campaign(cnmas_proto::scheduler::GetCampaignRequest {
            campaign_id: campaign.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let forged = cnmas_runtime::auth::Authenticator::new("another-secret-another-secret-xx")
        .issue(Role::Admin, "x", None, None, chrono::Duration::hours(1))?;
    let mut forger = system.campaigns(forged).await?;
    let err = forger
        .list_campaigns(cnmas_proto::scheduler::ListCampaignsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // Another fund neither sees nor creates campaigns of 751.
    let mut other = system
        .campaigns(system.token(Role::Fund, Some("971"), None))
        .await?;
    let err = other
        .get_campaign(cnmas_proto::scheduler::GetCampaignRequest {
            campaign_id: campaign.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let listed = other
        .list_campaigns(cnmas_proto::scheduler::ListCampaignsRequest::default())
        .await?
        .into_inner();
    assert!(listed.campaigns.is_empty());
    let err = other
        .list_campaigns(cnmas_proto::scheduler::ListCampaignsRequest {
            fund_code: FUND.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // An agent token cannot steer campaigns; an unregistered agent cannot lease.
    let mut as_agent = system
        .campaigns(system.token(Role::Agent, None, Some("agent-1")))
        .await?;
    let err = as_agent
        .pause_campaign(cnmas_proto::scheduler::CampaignTransitionRequest {
            campaign_id: campaign.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let mut stranger = system.agent("agent-unknown").await?;
    let err = stranger.next_call(NextCallRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Bad input gets a precise error naming the field and the rule.
    let mut fund = system
        .campaigns(system.token(Role::Fund, Some(FUND), None))
        .await?;
    let err = fund
        .create_campaign(cnmas_proto::scheduler::CreateCampaignRequest {
            fund_code: FUND.into(),
            name: "x".into(),
            theme: Theme::FluVaccination as i32,
            starts_on: "2027-01-01".into(),
            ends_on: "2027-02-01".into(),
            presented_number: "06 12 34 56 78".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err
        .message()
        .starts_with("presented_number: caller_id.mobile"));
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_call_is_never_leased_to_two_agents_at_once() -> Result<()> {
    let system = System::start().await?;
    let n = 60;
    let (agents, pool) = crowd(&system, 16, n, "many").await?;
    // Every agent leases as fast as it can, concurrently, until nothing is left.
    let mut tasks = Vec::new();
    for a in &agents {
        let mut client = system.agent(a).await?;
        tasks.push(tokio::spawn(async move {
            let mut leased = Vec::new();
            while let Some(call) = next_call(&mut client).await? {
                leased.push(call.call_id.clone());
                record(
                    &mut client,
                    &call,
                    Kind::NotReached(NotReached {
                        reason: AttemptOutcome::WrongNumber as i32,
                    }),
                )
                .await?;
            }
            anyhow::Ok(leased)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), n, "every call leased once");
    assert_eq!(unique.len(), n, "no call leased twice");
    pool.close().await;
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_expired_lease_returns_the_call_to_the_queue() -> Result<()> {
    // Leases last one second here.
    let system = System::start_with(1).await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &["slow", "quick"])
        .await?;
    system
        .submit(FUND, &campaign, "one", vec![people::flu(9)])
        .await?;
    let mut slow = system.agent("slow").await?;
    let first = lease(&mut slow).await?;
    // The slow agent keeps it past its lease; the call goes to the other agent.
    let mut quick = system.agent("quick").await?;
    let second = lease(&mut quick).await?;
    assert_eq!(first.call_id, second.call_id);
    assert_ne!(
        first.lease.clone().unwrap_or_default().lease_id,
        second.lease.clone().unwrap_or_default().lease_id
    );
    let late = slow
        .record_outcome(outcome_request(
            &first,
            Kind::RefusedInterview(RefusedInterview {}),
        ))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_agent_asking_again_keeps_its_call_and_an_outcome_counts_once() -> Result<()> {
    let system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &["agent-a"])
        .await?;
    system
        .submit(
            FUND,
            &campaign,
            "twice",
            vec![people::flu(1), people::flu(2)],
        )
        .await?;
    let pool = sqlx::PgPool::connect(system.database_url("dialer-queue")).await?;
    let agent_state = || async {
        sqlx::query_scalar::<_, String>("SELECT state FROM agents WHERE agent_id = 'agent-a'")
            .fetch_one(&pool)
            .await
    };
    let mut agent = system.agent("agent-a").await?;
    let first = lease(&mut agent).await?;
    assert_eq!(agent_state().await?, "on_call");
    // Asking again (a reloaded page) returns the same call under the same lease.
    let again = next_call(&mut agent).await?.expect("the held call");
    assert_eq!(again.call_id, first.call_id);
    assert_eq!(again.lease, first.lease);
    let refused = || Kind::RefusedInterview(RefusedInterview {});
    record(&mut agent, &first, refused()).await?;
    assert_eq!(agent_state().await?, "wrap_up");
    // The same outcome sent twice (a double click) is refused the second time, and nothing of
    // it is written.
    let twice = agent
        .record_outcome(outcome_request(&first, refused()))
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition);
    assert!(twice.message().starts_with("lease_id: lease.lost"));
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts")
        .fetch_one(&pool)
        .await?;
    assert_eq!(attempts, 1);
    // The next request leases the other contact.
    let second = lease(&mut agent).await?;
    assert_ne!(second.call_id, first.call_id);
    // With nothing left, the agent is available; the state log kept every change.
    record(&mut agent, &second, refused()).await?;
    assert!(next_call(&mut agent).await?.is_none());
    assert_eq!(agent_state().await?, "available");
    let logged: Vec<String> = sqlx::query_scalar(
        "SELECT state FROM agent_state_log WHERE agent_id = 'agent-a' ORDER BY ended_at",
    )
    .fetch_all(&pool)
    .await?;
    assert_eq!(
        logged[logged.len() - 4..],
        ["on_call", "wrap_up", "on_call", "wrap_up"]
    );
    pool.close().await;
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_auditor_sees_who_viewed_which_contact_and_when() -> Result<()> {
    use cnmas_proto::intake::{list_card_views_request::Subject, ListCardViewsRequest};
    let system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &["agent-a"])
        .await?;
    system
        .submit(FUND, &campaign, "v", vec![people::flu(6)])
        .await?;
    let mut agent = system.agent("agent-a").await?;
    let call = lease(&mut agent).await?;
    let contact = call.card.clone().unwrap_or_default().contact_id;
    let mut auditor = system
        .intake_api(system.token(Role::Auditor, None, None))
        .await?;
    let by_contact = auditor
        .list_card_views(ListCardViewsRequest {
            subject: Some(Subject::ContactId(contact.clone())),
            limit: 0,
        })
        .await?
        .into_inner();
    assert_eq!(by_contact.views.len(), 1);
    let view = &by_contact.views[0];
    assert_eq!(view.agent_id, "agent-a");
    assert_eq!(view.campaign_id, campaign);
    assert_eq!(
        view.lease_id,
        call.lease.clone().unwrap_or_default().lease_id
    );
    let by_agent = auditor
        .list_card_views(ListCardViewsRequest {
            subject: Some(Subject::AgentId("agent-a".into())),
            limit: 10,
        })
        .await?
        .into_inner();
    assert_eq!(by_agent.views.len(), 1);
    assert_eq!(by_agent.views[0].contact_id, contact);
    // Nobody else may read the audit trail; a request must name whose views.
    let mut fund = system
        .intake_api(system.token(Role::Fund, Some(FUND), None))
        .await?;
    let err = fund
        .list_card_views(ListCardViewsRequest {
            subject: Some(Subject::ContactId(contact)),
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = auditor
        .list_card_views(ListCardViewsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn intake_gives_the_cards_of_a_batch_in_order_and_audits_each() -> Result<()> {
    use cnmas_proto::intake::{
        list_card_views_request::Subject, GetCallCardRequest, GetCallCardsRequest,
        ListCardViewsRequest,
    };
    let system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &["agent-a", "agent-b"])
        .await?;
    system
        .submit(FUND, &campaign, "cards", (0..2).map(people::flu).collect())
        .await?;
    let mut contacts = Vec::new();
    for name in ["agent-a", "agent-b"] {
        let call = lease(&mut system.agent(name).await?).await?;
        contacts.push(call.card.unwrap_or_default());
    }
    let ask = |contact_id: &str| GetCallCardRequest {
        contact_id: contact_id.to_string(),
        campaign_id: campaign.clone(),
        agent_id: "agent-z".into(),
        lease_id: "lease-z".into(),
    };
    let mut intake = system
        .intake_api(system.token(Role::Service, None, None))
        .await?;
    let unknown = uuid::Uuid::new_v4().to_string();
    let cards = intake
        .get_call_cards(GetCallCardsRequest {
            cards: vec![
                ask(&contacts[1].contact_id),
                ask(&unknown),
                ask(&contacts[0].contact_id),
            ],
        })
        .await?
        .into_inner()
        .cards;
    let got: Vec<Option<(String, String)>> = cards
        .into_iter()
        .map(|c| c.card.map(|c| (c.contact_id, c.display_name)))
        .collect();
    let expected =
        |c: &cnmas_proto::intake::CallCard| Some((c.contact_id.clone(), c.display_name.clone()));
    assert_eq!(got, [expected(&contacts[1]), None, expected(&contacts[0])]);
    // Each card given is audited; the contact intake does not hold is not.
    let mut auditor = system
        .intake_api(system.token(Role::Auditor, None, None))
        .await?;
    let views = auditor
        .list_card_views(ListCardViewsRequest {
            subject: Some(Subject::AgentId("agent-z".into())),
            limit: 0,
        })
        .await?
        .into_inner()
        .views;
    let mut viewed: Vec<String> = views.into_iter().map(|v| v.contact_id).collect();
    viewed.sort();
    let mut wanted: Vec<String> = contacts.iter().map(|c| c.contact_id.clone()).collect();
    wanted.sort();
    assert_eq!(viewed, wanted);
    // Bad requests are refused whole, naming the card and the rule.
    let mut bad = ask(&contacts[0].contact_id);
    bad.contact_id = "not-a-uuid".into();
    let e = intake
        .get_call_cards(GetCallCardsRequest {
            cards: vec![ask(&contacts[0].contact_id), bad],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("cards[1].contact_id: uuid"),
        "{}",
        e.message()
    );
    let mut unaudited = ask(&contacts[0].contact_id);
    unaudited.lease_id = " ".into();
    let e = intake
        .get_call_cards(GetCallCardsRequest {
            cards: vec![unaudited],
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("cards[0].lease_id"), "{}", e.message());
    for count in [0, 257] {
        let e = intake
            .get_call_cards(GetCallCardsRequest {
                cards: vec![ask(&contacts[0].contact_id); count],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with("cards: count"), "{}", e.message());
    }
    // Cards are for the dialer only.
    let e = system
        .intake_api(system.token(Role::Fund, Some(FUND), None))
        .await?
        .get_call_cards(GetCallCardsRequest {
            cards: vec![ask(&contacts[0].contact_id)],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_call_whose_card_cannot_be_fetched_goes_back_to_the_queue() -> Result<()> {
    let mut system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &["agent-a"])
        .await?;
    system
        .submit(FUND, &campaign, "no-card", vec![people::flu(1)])
        .await?;
    let pool = sqlx::PgPool::connect(system.database_url("dialer-queue")).await?;
    wait_for_count(WAIT, &pool, "SELECT count(*) FROM queue", 1, "queued calls").await?;
    system.stop_service("intake").await;
    let mut agent = system.agent("agent-a").await?;
    let e = agent.next_call(NextCallRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    let leased: i64 = sqlx::query_scalar("SELECT count(*) FROM queue WHERE lease_id IS NOT NULL")
        .fetch_one(&pool)
        .await?;
    assert_eq!(leased, 0, "the call stays leased without its card");
    system.start_service("intake").await?;
    let call = lease(&mut agent).await?;
    assert_eq!(
        call.card.unwrap_or_default().display_name,
        display_name_of(1)
    );
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_outcome_sent_after_a_dialer_restart_is_recorded_from_the_queue() -> Result<()> {
    // The dialer keeps each lease's facts in memory for its outcome; a restarted dialer (or
    // another replica) has none and reads them from the queue.
    let mut system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &["agent-1"])
        .await?;
    let results = system.fund_consumer(FUND, "result", "fund_751").await?;
    system
        .submit(FUND, &campaign, "restart", vec![people::flu(4)])
        .await?;
    let mut agent = system.agent("agent-1").await?;
    let call = lease(&mut agent).await?;
    system.stop_service("dialer-queue").await;
    system.start_service("dialer-queue").await?;
    let mut agent = system.agent("agent-1").await?;
    record(
        &mut agent,
        &call,
        Kind::Interview(Interview {
            offer_decision: OfferDecision::Accepted as i32,
            ..Default::default()
        }),
    )
    .await?;
    let got: Vec<(String, ContactResult)> = take(&results, 1, WAIT).await?;
    let r = &got[0].1;
    assert_eq!(r.submission_ref, "ref-4");
    assert_eq!(r.final_status, FinalStatus::InterviewHeld as i32);
    assert_eq!(r.offer_decision, OfferDecision::Accepted as i32);
    assert_eq!(r.attempts.len(), 1);
    // And the lease is spent: the same outcome again is refused.
    let again = agent
        .record_outcome(outcome_request(
            &call,
            Kind::RefusedInterview(RefusedInterview {}),
        ))
        .await
        .unwrap_err();
    assert!(again.message().starts_with("lease_id: lease.lost"));
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn outcomes_sent_at_once_are_each_written_once() -> Result<()> {
    // Outcomes arriving together are written by one statement; the same outcome sent twice at
    // once (a double click) must still count once, and every other agent's outcome count.
    let system = System::start().await?;
    let (agents, pool) = crowd(&system, 6, 6, "at-once").await?;
    let subject = cnmas_bus::subjects::event("dialer", "attempts_recorded");
    let mut announced = system.nats.subscribe(system.ns.subject(&subject)).await?;
    let mut sends = Vec::new();
    for name in &agents {
        let mut agent = system.agent(name).await?;
        let call = lease(&mut agent).await?;
        let request = outcome_request(&call, Kind::RefusedInterview(RefusedInterview {}));
        for _ in 0..2 {
            let (mut agent, request) = (agent.clone(), request.clone());
            sends.push(tokio::spawn(async move {
                agent.record_outcome(request).await.map(|_| ())
            }));
        }
    }
    let (mut written, mut refused) = (0, 0);
    for send in sends {
        match send.await? {
            Ok(()) => written += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition);
                assert!(status.message().starts_with("lease_id: lease.lost"));
                refused += 1;
            }
        }
    }
    assert_eq!((written, refused), (6, 6));
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts")
        .fetch_one(&pool)
        .await?;
    assert_eq!(attempts, 6);
    // Each written attempt was announced once, in the set of its write (decision 0015), and
    // no refused one: the sets hold exactly the attempts the dialer wrote.
    let written: HashSet<String> = sqlx::query_scalar("SELECT attempt_id::text FROM attempts")
        .fetch_all(&pool)
        .await?
        .into_iter()
        .collect();
    let mut items = Vec::new();
    while items.len() < written.len() {
        let msg = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut announced))
            .await?
            .ok_or_else(|| anyhow::anyhow!("the subscription ended"))?;
        let set: cnmas_proto::dialer::AttemptsRecorded = prost::Message::decode(msg.payload)?;
        items.extend(set.attempts.into_iter().map(|a| a.attempt_id));
    }
    let more = tokio::time::timeout(
        Duration::from_millis(500),
        futures::StreamExt::next(&mut announced),
    )
    .await;
    assert!(more.is_err(), "an attempt announced beyond those written");
    assert_eq!(items.len(), written.len(), "an attempt announced twice");
    assert_eq!(items.into_iter().collect::<HashSet<_>>(), written);
    // The results service holds six.
    let results = sqlx::PgPool::connect(system.database_url("results")).await?;
    wait_for_count(
        WAIT,
        &results,
        "SELECT count(*) FROM attempts",
        6,
        "attempts at results",
    )
    .await?;
    let wrapping_up: i64 =
        sqlx::query_scalar("SELECT count(*) FROM agents WHERE state = 'wrap_up'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(wrapping_up, 6);
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn agents_asking_at_once_get_distinct_calls_and_a_double_request_one() -> Result<()> {
    // Requests waiting together are leased by one transaction (decision 0011): no call may go
    // to two agents, an agent asking twice at once gets one call, and agents beyond the due
    // calls get nothing.
    let system = System::start().await?;
    let (agents, pool) = crowd(&system, 8, 5, "at-once").await?;
    let mut asks = Vec::new();
    for name in &agents {
        let agent = system.agent(name).await?;
        for _ in 0..2 {
            let mut agent = agent.clone();
            let name = name.to_string();
            asks.push(tokio::spawn(async move {
                next_call(&mut agent).await.map(|call| (name, call))
            }));
        }
    }
    type Answer = Option<(String, String, String)>;
    let mut answers: std::collections::HashMap<String, Vec<Answer>> = Default::default();
    for ask in asks {
        let (name, call) = ask.await??;
        let call = call.map(|c| {
            let contact = c.card.unwrap_or_default().contact_id;
            (c.call_id, c.lease.unwrap_or_default().lease_id, contact)
        });
        answers.entry(name).or_default().push(call);
    }
    let mut calls = HashSet::new();
    let mut without = 0;
    for (name, got) in &answers {
        assert_eq!(got[0], got[1], "{name} asked twice and got two answers");
        match &got[0] {
            Some((call, _, contact)) => {
                assert!(calls.insert(call.clone()), "{call} leased twice");
                // The cards of a batch come from intake in one request: each its own call's.
                let queued: uuid::Uuid =
                    sqlx::query_scalar("SELECT contact_id FROM queue WHERE call_id = $1")
                        .bind(call)
                        .fetch_one(&pool)
                        .await?;
                assert_eq!(
                    contact,
                    &queued.to_string(),
                    "{call} came with another card"
                );
            }
            None => without += 1,
        }
    }
    assert_eq!((calls.len(), without), (5, 3));
    let leased: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT leased_by) FROM queue WHERE lease_id IS NOT NULL",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(leased, 5);
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM agents GROUP BY state ORDER BY state")
            .fetch_all(&pool)
            .await?;
    assert_eq!(
        states,
        [("available".to_string(), 3), ("on_call".to_string(), 5)]
    );
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_failed_batch_writes_nothing_and_the_agent_tries_again() -> Result<()> {
    // A batch that fails answers `internal` to every request in it and leaves nothing half
    // written: no lease without its agent's state, no attempt without the queue row's removal.
    let system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &["agent-1"])
        .await?;
    system
        .submit(FUND, &campaign, "failing", vec![people::flu(7)])
        .await?;
    let pool = sqlx::PgPool::connect(system.database_url("dialer-queue")).await?;
    wait_for_count(WAIT, &pool, "SELECT count(*) FROM queue", 1, "queued call").await?;
    let leased = "SELECT count(*) FROM queue WHERE leased_by = 'agent-1'";
    let mut agent = system.agent("agent-1").await?;

    // The lease's batch fails on its last write (the agent's state log).
    sqlx::query("ALTER TABLE agent_state_log RENAME TO agent_state_log_away")
        .execute(&pool)
        .await?;
    let failed = agent.next_call(NextCallRequest {}).await.unwrap_err();
    assert_eq!(failed.code(), Code::Internal);
    assert_eq!(
        sqlx::query_scalar::<_, i64>(leased)
            .fetch_one(&pool)
            .await?,
        0
    );
    sqlx::query("ALTER TABLE agent_state_log_away RENAME TO agent_state_log")
        .execute(&pool)
        .await?;
    let call = lease(&mut agent).await?;

    // The outcome's batch fails on the attempt: the call stays leased to the agent.
    sqlx::query("ALTER TABLE attempts RENAME TO attempts_away")
        .execute(&pool)
        .await?;
    let request = outcome_request(&call, Kind::RefusedInterview(RefusedInterview {}));
    let failed = agent.record_outcome(request.clone()).await.unwrap_err();
    assert_eq!(failed.code(), Code::Internal);
    assert_eq!(
        sqlx::query_scalar::<_, i64>(leased)
            .fetch_one(&pool)
            .await?,
        1
    );
    sqlx::query("ALTER TABLE attempts_away RENAME TO attempts")
        .execute(&pool)
        .await?;
    agent.record_outcome(request).await?;
    assert_eq!(
        sqlx::query_scalar::<_, i64>(leased)
            .fetch_one(&pool)
            .await?,
        0
    );
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts")
        .fetch_one(&pool)
        .await?;
    assert_eq!(attempts, 1);
    system.stop().await;
    Ok(())
}
