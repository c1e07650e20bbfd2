//! Campaign reports as a fund and a supervisor read them: counts by final status and by the
//! decision on the offer, reach and acceptance rates, attempts per contact, per day.

use anyhow::Result;
use cnmas_proto::common::{AttemptOutcome, FinalStatus, OfferDecision, Theme};
use cnmas_proto::dialer::{disposition::Kind, Interview, NotReached, RefusedInterview};
use cnmas_proto::results::{ContactResult, GetCampaignReportRequest};
use cnmas_runtime::auth::Role;
use cnmas_system_tests::{lease, people, record, take, System};
use std::time::Duration;
use tonic::Code;

const FUND: &str = "974";

fn interview(decision: OfferDecision) -> Kind {
    Kind::Interview(Interview {
        offer_decision: decision as i32,
        ..Default::default()
    })
}

#[tokio::test]
async fn a_campaign_report_counts_statuses_decisions_attempts_and_days() -> Result<()> {
    let system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &["agent-974"])
        .await?;
    let results = system.fund_consumer(FUND, "result", "cgss_reunion").await?;
    system
        .submit(FUND, &campaign, "report", (0..4).map(people::flu).collect())
        .await?;
    let mut agent = system.agent("agent-974").await?;
    let outcomes = [
        interview(OfferDecision::Accepted),
        interview(OfferDecision::ToThinkAbout),
        Kind::RefusedInterview(RefusedInterview {}),
        Kind::NotReached(NotReached {
            reason: AttemptOutcome::WrongNumber as i32,
        }),
    ];
    for kind in outcomes {
        let call = lease(&mut agent).await?;
        record(&mut agent, &call, kind).await?;
    }
    let _: Vec<(String, ContactResult)> = take(&results, 4, Duration::from_secs(30)).await?;

    let request = || GetCampaignReportRequest {
        campaign_id: campaign.clone(),
    };
    let mut as_fund = system
        .results_api(system.token(Role::Fund, Some(FUND), None))
        .await?;
    let r = as_fund.get_campaign_report(request()).await?.into_inner();
    assert_eq!(r.fund_code, FUND);
    assert_eq!(r.contacts_closed, 4);
    assert_eq!(r.attempts, 4);
    assert!((r.attempts_per_contact - 1.0).abs() < 1e-9);
    assert!((r.reach_rate - 0.75).abs() < 1e-9, "3 of 4 reached");
    assert!((r.acceptance_rate - 0.5).abs() < 1e-9, "1 of 2 interviews");
    let statuses: Vec<(i32, u64)> = r
        .by_final_status
        .iter()
        .map(|s| (s.final_status, s.count))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (FinalStatus::InterviewHeld as i32, 2),
            (FinalStatus::InterviewRefused as i32, 1),
            (FinalStatus::WrongNumber as i32, 1),
        ]
    );
    let decisions: Vec<(i32, u64)> = r
        .by_offer_decision
        .iter()
        .map(|o| (o.offer_decision, o.count))
        .collect();
    assert_eq!(
        decisions,
        vec![
            (OfferDecision::Accepted as i32, 1),
            (OfferDecision::ToThinkAbout as i32, 1)
        ]
    );
    assert_eq!(r.by_attempts.len(), 1);
    assert_eq!(
        (r.by_attempts[0].attempts, r.by_attempts[0].contacts),
        (1, 4)
    );
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Paris)
        .date_naive()
        .to_string();
    assert_eq!(r.by_day.len(), 1);
    assert_eq!(r.by_day[0].date, today);
    assert_eq!(r.by_day[0].contacts_closed, 4);
    assert_eq!(r.by_day[0].offers_accepted, 1);

    // A supervisor reads the same report; another fund learns nothing, not even that it exists.
    let mut as_supervisor = system
        .results_api(system.token(Role::Supervisor, None, Some("sup-1")))
        .await?;
    assert_eq!(
        as_supervisor
            .get_campaign_report(request())
            .await?
            .into_inner(),
        r
    );
    let mut other_fund = system
        .results_api(system.token(Role::Fund, Some("971"), None))
        .await?;
    let refused = other_fund
        .get_campaign_report(request())
        .await
        .expect_err("another fund's campaign");
    assert_eq!(refused.code(), Code::NotFound);
    system.stop().await;
    Ok(())
}
