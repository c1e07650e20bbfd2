//! Consent pushed by funds, campaign pause, and bad messages from funds.

use anyhow::Result;
use chrono::Utc;
use cnmas_bus::subjects;
use cnmas_proto::common::{Channel, ConsentChange, FinalStatus, Theme};
use cnmas_proto::consent::{person_consent::Identifier, PersonConsent, UpdateConsents};
use cnmas_proto::dialer::{next_call_response, NextCallRequest};
use cnmas_proto::intake::{contact_submission::Person, ContactRejected};
use cnmas_proto::results::ContactResult;
use cnmas_proto::scheduler::CampaignTransitionRequest;
use cnmas_proto::support::envelope;
use cnmas_runtime::auth::Role;
use cnmas_system_tests::{eventually, people, take, wait_for_count, System};
use std::time::Duration;

const FUND: &str = "751";
const WAIT: Duration = Duration::from_secs(30);

fn nir_of(i: usize) -> String {
    match people::flu(i).person {
        Some(Person::Insured(p)) => p.nir,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn a_person_who_opted_out_with_the_fund_is_never_called() -> Result<()> {
    let system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &["agent-1"])
        .await?;
    let results = system.fund_consumer(FUND, "result", "fund_751").await?;
    // The fund learned (by letter) that person 4 refuses phone calls for every theme; the
    // NIR is typed with spaces and without its key.
    let nir = nir_of(4);
    let spaced = format!("{} {} {}", &nir[..1], &nir[1..7], &nir[7..13]);
    let update = fund_opt_out("optout-1", spaced, "courrier 2026-11-02");
    system
        .publisher
        .publish(&subjects::fund_in(FUND, "consent"), "optout-1", &update)
        .await?;
    let pool = sqlx::PgPool::connect(system.database_url("consent")).await?;
    wait_for_count(
        WAIT,
        &pool,
        "SELECT count(*) FROM register WHERE opted_out",
        1,
        "the opt-out registered",
    )
    .await?;
    // The consent register holds no identifier, only the person key.
    let stored: Vec<String> = sqlx::query_scalar("SELECT person_key FROM register")
        .fetch_all(&pool)
        .await?;
    assert!(stored
        .iter()
        .all(|k| k.len() == 64 && !k.contains(&nir[..13])));

    system
        .submit(FUND, &campaign, "s", vec![people::flu(4), people::flu(5)])
        .await?;
    let got: Vec<(String, ContactResult)> = take(&results, 1, WAIT).await?;
    assert_eq!(got[0].1.submission_ref, "ref-4");
    assert_eq!(
        got[0].1.final_status,
        FinalStatus::SuppressedByConsent as i32
    );
    // Only person 5 is called.
    let mut agent = system.agent("agent-1").await?;
    let call = eventually(WAIT, "a call", || {
        let mut a = agent.clone();
        async move {
            Ok(
                match a.next_call(NextCallRequest {}).await?.into_inner().result {
                    Some(next_call_response::Result::Call(c)) => Some(c),
                    _ => None,
                },
            )
        }
    })
    .await?;
    assert_eq!(call.card.unwrap_or_default().display_name, "Camille Nom5");
    let again = agent.next_call(NextCallRequest {}).await?.into_inner();
    // Asking again returns the call already held, never another one.
    match again.result {
        Some(next_call_response::Result::Call(c)) => assert_eq!(c.call_id, call.call_id),
        other => panic!("expected the held call, got {other:?}"),
    }
    pool.close().await;
    system.stop().await;
    Ok(())
}

/// The fund's opt-out for a person, as it publishes it on its consent subject.
fn fund_opt_out(id: &str, nir: String, evidence: &str) -> UpdateConsents {
    UpdateConsents {
        envelope: Some(envelope(id.into(), FUND, "", id, Utc::now())),
        consents: vec![PersonConsent {
            identifier: Some(Identifier::Nir(nir)),
            change: Some(ConsentChange {
                channel: Channel::Phone as i32,
                opted_out: true,
                all_themes: true,
            }),
            theme: 0,
            evidence: evidence.into(),
        }],
    }
}

#[tokio::test]
async fn an_opt_out_from_the_fund_withdraws_a_call_already_queued() -> Result<()> {
    let system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &["agent-1"])
        .await?;
    let results = system.fund_consumer(FUND, "result", "fund_751").await?;
    system
        .submit(FUND, &campaign, "queued", vec![people::flu(7)])
        .await?;
    let dialer = sqlx::PgPool::connect(system.database_url("dialer-queue")).await?;
    wait_for_count(
        WAIT,
        &dialer,
        "SELECT count(*) FROM queue",
        1,
        "the call queued",
    )
    .await?;

    // The person calls the fund and refuses phone calls; the fund passes it on.
    system
        .publisher
        .publish(
            &subjects::fund_in(FUND, "consent"),
            "optout-queued",
            &fund_opt_out("optout-queued", nir_of(7), "appel de l'assuré à la caisse"),
        )
        .await?;
    let got: Vec<(String, ContactResult)> = take(&results, 1, WAIT).await?;
    assert_eq!(got[0].1.submission_ref, "ref-7");
    assert_eq!(
        got[0].1.final_status,
        FinalStatus::SuppressedByConsent as i32
    );
    // The dialer withdraws the call on the same closure as the results service reports it,
    // each on its own consumer: either may come first.
    wait_for_count(
        WAIT,
        &dialer,
        "SELECT count(*) FROM queue",
        0,
        "the queued call withdrawn",
    )
    .await?;
    let mut agent = system.agent("agent-1").await?;
    let next = agent.next_call(NextCallRequest {}).await?.into_inner();
    assert!(
        !matches!(next.result, Some(next_call_response::Result::Call(_))),
        "nobody is called: {next:?}"
    );
    dialer.close().await;
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn pausing_a_campaign_stops_new_calls_and_resuming_restores_them() -> Result<()> {
    let system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &["agent-1"])
        .await?;
    system
        .submit(FUND, &campaign, "s", (0..3).map(people::flu).collect())
        .await?;
    let pool = sqlx::PgPool::connect(system.database_url("dialer-queue")).await?;
    wait_for_count(WAIT, &pool, "SELECT count(*) FROM queue", 3, "calls queued").await?;
    let mut fund = system
        .campaigns(system.token(Role::Fund, Some(FUND), None))
        .await?;
    fund.pause_campaign(CampaignTransitionRequest {
        campaign_id: campaign.clone(),
        reason: "agents in training".into(),
    })
    .await?;
    // The pause reaches the dialer within moments; a call leased before it would stay with its
    // agent, so look only once the dialer knows.
    eventually(WAIT, "the dialer to learn of the pause", || {
        let pool = pool.clone();
        async move {
            let state: String = sqlx::query_scalar("SELECT state FROM campaigns")
                .fetch_one(&pool)
                .await?;
            Ok((state == "paused").then_some(()))
        }
    })
    .await?;
    let agent = system.agent("agent-1").await?;
    eventually(WAIT, "no call while paused", || {
        let mut a = agent.clone();
        async move {
            let r = a.next_call(NextCallRequest {}).await?.into_inner();
            Ok(matches!(r.result, Some(next_call_response::Result::NothingDue(_))).then_some(()))
        }
    })
    .await?;
    // Pausing twice is refused with the reason.
    let err = fund
        .pause_campaign(CampaignTransitionRequest {
            campaign_id: campaign.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    fund.activate_campaign(CampaignTransitionRequest {
        campaign_id: campaign.clone(),
        reason: "training over".into(),
    })
    .await?;
    eventually(WAIT, "calls again after resuming", || {
        let mut a = agent.clone();
        async move {
            let r = a.next_call(NextCallRequest {}).await?.into_inner();
            Ok(matches!(r.result, Some(next_call_response::Result::Call(_))).then_some(()))
        }
    })
    .await?;
    // Every change is audited: who, when, what.
    let scheduler = sqlx::PgPool::connect(system.database_url("scheduler")).await?;
    let actions: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, action FROM campaign_audit ORDER BY id")
            .fetch_all(&scheduler)
            .await?;
    let actions: Vec<&str> = actions.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(actions, vec!["create", "activate", "pause", "activate"]);
    scheduler.close().await;
    pool.close().await;
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn bad_messages_from_a_fund_are_answered_and_never_stop_the_good_ones() -> Result<()> {
    let system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &[])
        .await?;
    let rejections = system
        .fund_consumer(FUND, "rejection", "fund_751_rej")
        .await?;
    let subject = subjects::fund_in(FUND, "contact");
    // Not protobuf at all.
    system
        .publisher
        .publish_all([(
            subject.clone(),
            "garbage".to_string(),
            None,
            bytes::Bytes::from_static(b"\xff\xff not a message"),
        )])
        .await?;
    // Another fund's code in the envelope.
    let mut wrong_fund = cnmas_proto::intake::SubmitContacts {
        envelope: Some(envelope("wf".into(), "971", &campaign, "wf", Utc::now())),
        contacts: vec![people::flu(1)],
    };
    system
        .publisher
        .publish(&subject, "wf", &wrong_fund)
        .await?;
    // A campaign that does not exist (retried a few times, then refused).
    wrong_fund.envelope = Some(envelope(
        "nc".into(),
        FUND,
        "00000000-0000-4000-8000-000000000000",
        "nc",
        Utc::now(),
    ));
    system
        .publisher
        .publish(&subject, "nc", &wrong_fund)
        .await?;
    // And a good one, after them.
    system
        .submit(FUND, &campaign, "good", vec![people::flu(2)])
        .await?;

    let got: Vec<(String, ContactRejected)> = take(&rejections, 3, WAIT).await?;
    let mut rules: Vec<String> = got.iter().map(|(_, r)| r.reasons[0].rule.clone()).collect();
    rules.sort();
    assert_eq!(
        rules,
        vec![
            "campaign.unknown",
            "fund.subject_mismatch",
            "message.undecodable"
        ]
    );
    let intake = sqlx::PgPool::connect(system.database_url("intake")).await?;
    wait_for_count(
        WAIT,
        &intake,
        "SELECT count(*) FROM contacts",
        1,
        "the good contact stored",
    )
    .await?;
    // The vault holds no identifier or name in clear.
    let sealed: Vec<Vec<u8>> = sqlx::query_scalar("SELECT sealed FROM contacts")
        .fetch_all(&intake)
        .await?;
    assert!(sealed.iter().all(|s| !s.windows(5).any(|w| w == b"Nom2\"")));
    intake.close().await;
    system.stop().await;
    Ok(())
}
