//! `cnmasctl simulate-agents` against the real services: the simulated agents register, work
//! the campaign through the agent API and every call they record reaches the fund.

use anyhow::{Context, Result};
use cnmas_proto::common::{FinalStatus, Theme};
use cnmas_proto::results::ContactResult;
use cnmas_runtime::auth::Role;
use cnmas_system_tests::{people, take, System, JWT_SECRET};
use std::collections::HashSet;
use std::time::Duration;

const FUND: &str = "595";

#[tokio::test]
async fn simulated_agents_work_a_campaign_through_the_agent_api() -> Result<()> {
    let system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &[])
        .await?;
    let results = system.fund_consumer(FUND, "result", "cpam_595").await?;
    system
        .submit(
            FUND,
            &campaign,
            "simulated",
            (0..8).map(people::flu).collect(),
        )
        .await?;

    let admin = system.token(Role::Admin, None, None);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_cnmasctl"))
        .args([
            "--token",
            &admin,
            "simulate-agents",
            "--campaign",
            &campaign,
        ])
        .args(["--agents", "3", "--calls", "8", "--talk-ms", "20"])
        .args(["--mix", "accepted=1,refused=1", "--report-seconds", "1"])
        .env("CNMAS_DIALER_URL", system.grpc_url("dialer-queue"))
        .env("CNMAS_JWT_SECRET", JWT_SECRET)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .context("simulate-agents did not stop after --calls")??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last: serde_json::Value =
        serde_json::from_str(stdout.lines().last().context("a final summary line")?)?;
    assert_eq!(last["calls"], 8, "{last}");
    assert_eq!(last["errors"], 0, "{last}");
    let accepted = last["outcomes"]["accepted"].as_u64().unwrap_or(0);
    let refused = last["outcomes"]["refused"].as_u64().unwrap_or(0);
    assert_eq!(
        accepted + refused,
        8,
        "only the outcomes of the mix: {last}"
    );

    // Every simulated call ended its contact: the fund has one result per person.
    let got: Vec<(String, ContactResult)> = take(&results, 8, Duration::from_secs(30)).await?;
    let refs: HashSet<&str> = got.iter().map(|(_, r)| r.submission_ref.as_str()).collect();
    assert_eq!(refs.len(), 8);
    let held = got
        .iter()
        .filter(|(_, r)| r.final_status == FinalStatus::InterviewHeld as i32)
        .count() as u64;
    assert_eq!(held, accepted);
    assert!(got.iter().all(|(_, r)| {
        r.final_status == FinalStatus::InterviewHeld as i32
            || r.final_status == FinalStatus::InterviewRefused as i32
    }));
    system.stop().await;
    Ok(())
}
