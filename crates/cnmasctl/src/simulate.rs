//! `cnmasctl simulate-agents`: N agents working a campaign through the same AgentService API as
//! people do (lease, talk, record), with a mix of outcomes and talk times, for demos and load
//! tests. Runs until Ctrl-C or `--calls` outcomes, printing a running summary.

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use cnmas_proto::common::{AttemptOutcome, FollowUpKind, FollowUpRequest, OfferDecision};
use cnmas_proto::dialer::{
    self as dialer, agent_service_client::AgentServiceClient,
    dialer_admin_service_client::DialerAdminServiceClient, disposition::Kind, next_call_response,
    AgentState,
};
use cnmas_proto::support::timestamp;
use cnmas_runtime::auth::{Authenticator, Bearer, Role};
use cnmas_runtime::config::{var, var_or};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// The campaign the simulated agents work (they are registered and assigned to it).
    #[arg(long)]
    campaign: String,
    /// How many agents.
    #[arg(long, default_value_t = 5)]
    agents: usize,
    /// Agent ids are `<prefix>-001`, `<prefix>-002`…
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// Outcome weights: no_answer, busy, voicemail, wrong_number, not_in_service, refused
    /// (the interview), accepted, declined (the offer), thinking, callback.
    #[arg(
        long,
        default_value = "no_answer=35,busy=10,voicemail=10,wrong_number=5,refused=10,accepted=20,declined=5,thinking=5"
    )]
    mix: String,
    /// Mean talk time of a call in milliseconds (each call takes 50 % to 150 % of it).
    #[arg(long, default_value_t = 3000)]
    talk_ms: u64,
    /// Stop after this many recorded outcomes (default: until Ctrl-C).
    #[arg(long)]
    calls: Option<u64>,
    /// Seconds between two summary lines.
    #[arg(long, default_value_t = 2)]
    report_seconds: u64,
}

/// What a simulated agent records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simulated {
    NoAnswer,
    Busy,
    Voicemail,
    WrongNumber,
    NotInService,
    Refused,
    Accepted,
    Declined,
    Thinking,
    Callback,
}

impl Simulated {
    const ALL: [Simulated; 10] = [
        Simulated::NoAnswer,
        Simulated::Busy,
        Simulated::Voicemail,
        Simulated::WrongNumber,
        Simulated::NotInService,
        Simulated::Refused,
        Simulated::Accepted,
        Simulated::Declined,
        Simulated::Thinking,
        Simulated::Callback,
    ];

    fn code(self) -> &'static str {
        match self {
            Simulated::NoAnswer => "no_answer",
            Simulated::Busy => "busy",
            Simulated::Voicemail => "voicemail",
            Simulated::WrongNumber => "wrong_number",
            Simulated::NotInService => "not_in_service",
            Simulated::Refused => "refused",
            Simulated::Accepted => "accepted",
            Simulated::Declined => "declined",
            Simulated::Thinking => "thinking",
            Simulated::Callback => "callback",
        }
    }

    fn disposition(self, now: chrono::DateTime<chrono::Utc>) -> Kind {
        let not_reached =
            |o: AttemptOutcome| Kind::NotReached(dialer::NotReached { reason: o as i32 });
        let interview = |d: OfferDecision, follow_ups: Vec<FollowUpRequest>| {
            Kind::Interview(dialer::Interview {
                offer_decision: d as i32,
                follow_ups,
                contact_detail_changes: Vec::new(),
                consent_changes: Vec::new(),
            })
        };
        match self {
            Simulated::NoAnswer => not_reached(AttemptOutcome::NoAnswer),
            Simulated::Busy => not_reached(AttemptOutcome::Busy),
            Simulated::Voicemail => not_reached(AttemptOutcome::Voicemail),
            Simulated::WrongNumber => not_reached(AttemptOutcome::WrongNumber),
            Simulated::NotInService => not_reached(AttemptOutcome::NotInService),
            Simulated::Refused => Kind::RefusedInterview(dialer::RefusedInterview {}),
            Simulated::Accepted => interview(
                OfferDecision::Accepted,
                vec![FollowUpRequest {
                    kind: FollowUpKind::SendDocumentation as i32,
                    note: "documentation demandée (simulation)".into(),
                }],
            ),
            Simulated::Declined => interview(OfferDecision::Refused, Vec::new()),
            Simulated::Thinking => interview(OfferDecision::ToThinkAbout, Vec::new()),
            Simulated::Callback => Kind::Callback(dialer::Callback {
                at: Some(timestamp(now + chrono::Duration::hours(2))),
                with_same_agent: false,
            }),
        }
    }
}

/// Weighted outcomes from `no_answer=40,accepted=30,…`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix(Vec<(Simulated, u32)>);

impl Mix {
    pub fn parse(spec: &str) -> Result<Self> {
        let mut weights = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, weight) = part
                .split_once('=')
                .with_context(|| format!("--mix: {part:?} is not outcome=weight"))?;
            let outcome = Simulated::ALL
                .into_iter()
                .find(|o| o.code() == key.trim())
                .with_context(|| {
                    format!(
                        "--mix: unknown outcome {key:?} (one of {})",
                        Simulated::ALL.map(Simulated::code).join(", ")
                    )
                })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .with_context(|| format!("--mix: the weight of {key} must be a whole number"))?;
            weights.push((outcome, weight));
        }
        ensure!(
            weights.iter().map(|(_, w)| u64::from(*w)).sum::<u64>() > 0,
            "--mix: at least one outcome needs a positive weight"
        );
        Ok(Mix(weights))
    }

    /// The outcome whose cumulative weight covers `roll` (0 ≤ roll < total).
    fn pick(&self, roll: u64) -> Simulated {
        let total: u64 = self.0.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut roll = roll % total;
        for (o, w) in &self.0 {
            if roll < u64::from(*w) {
                return *o;
            }
            roll -= u64::from(*w);
        }
        self.0[0].0
    }
}

/// A small xorshift generator per agent: the simulation needs variety, not cryptography.
struct Dice(u64);

impl Dice {
    fn new() -> Self {
        Dice((uuid::Uuid::new_v4().as_u128() as u64) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<Simulated, u64>,
    nothing_due: u64,
    errors: u64,
    callbacks_refused: u64,
}

struct Shared {
    tally: Mutex<Tally>,
    claimed: AtomicU64,
    limit: Option<u64>,
}

impl Shared {
    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn dialer_url() -> String {
    var_or("CNMAS_DIALER_URL", "http://127.0.0.1:50054")
}

pub async fn run(token: &str, a: SimulateArgs) -> Result<()> {
    let mix = Mix::parse(&a.mix)?;
    ensure!((1..=1000).contains(&a.agents), "--agents: 1 to 1000 agents");
    if token.is_empty() {
        bail!("a supervisor or admin token is required (--token or CNMAS_TOKEN) to register the simulated agents");
    }
    let secret = var("CNMAS_JWT_SECRET")
        .context("CNMAS_JWT_SECRET is required to sign the simulated agents' tokens")?;
    let auth = Authenticator::new(&secret);
    let url = dialer_url();
    let channel = Channel::from_shared(url.clone())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot reach the dialer API at {url}"))?;
    let mut admin =
        DialerAdminServiceClient::with_interceptor(channel.clone(), Bearer(token.to_string()));
    let ids: Vec<String> = (1..=a.agents)
        .map(|i| format!("{}-{i:03}", a.prefix))
        .collect();
    for id in &ids {
        admin
            .upsert_agent(dialer::UpsertAgentRequest {
                agent_id: id.clone(),
                display_name: format!("Agent simulé {id}"),
                team: "simulation".into(),
                supervisor: false,
            })
            .await
            .map_err(|e| anyhow::anyhow!("registering {id}: {:?}: {}", e.code(), e.message()))?;
        admin
            .assign_campaign(dialer::AssignCampaignRequest {
                agent_id: id.clone(),
                campaign_id: a.campaign.clone(),
                revoke: false,
            })
            .await
            .map_err(|e| anyhow::anyhow!("assigning {id}: {:?}: {}", e.code(), e.message()))?;
    }

    let shared = Arc::new(Shared {
        tally: Mutex::new(Tally::default()),
        claimed: AtomicU64::new(0),
        limit: a.calls,
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut agents = tokio::task::JoinSet::new();
    for id in ids {
        let token = auth.issue(
            Role::Agent,
            &id,
            None,
            Some(&id),
            chrono::Duration::hours(24),
        )?;
        let client = AgentServiceClient::with_interceptor(channel.clone(), Bearer(token));
        agents.spawn(agent_loop(
            client,
            mix.clone(),
            Duration::from_millis(a.talk_ms),
            shared.clone(),
            stop_rx.clone(),
        ));
    }
    println!(
        "{} simulated agents on campaign {} (talk ≈ {} ms, mix {}); Ctrl-C to stop",
        a.agents, a.campaign, a.talk_ms, a.mix
    );
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(a.report_seconds.max(1)));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => println!("{}", summary(&shared, started.elapsed())),
            _ = tokio::signal::ctrl_c() => {
                println!("stopping: the agents finish their call in progress");
                let _ = stop_tx.send(true);
                break;
            }
            done = agents.join_next() => {
                if done.is_none() { break; }
                // One agent reached the limit: the others stop at their next call.
                if let Some(Err(e)) = done { eprintln!("a simulated agent stopped: {e}"); }
            }
        }
    }
    while let Some(done) = agents.join_next().await {
        if let Err(e) = done {
            eprintln!("a simulated agent stopped: {e}");
        }
    }
    println!("{}", summary(&shared, started.elapsed()));
    let t = shared.tally();
    let outcomes: serde_json::Map<String, serde_json::Value> = t
        .outcomes
        .iter()
        .map(|(o, n)| (o.code().to_string(), (*n).into()))
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "calls": t.outcomes.values().sum::<u64>(), "outcomes": outcomes,
            "nothing_due": t.nothing_due, "errors": t.errors,
            "callbacks_refused": t.callbacks_refused,
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}

fn summary(shared: &Shared, elapsed: Duration) -> String {
    let t = shared.tally();
    let calls: u64 = t.outcomes.values().sum();
    let secs = elapsed.as_secs_f64().max(0.001);
    let per: Vec<String> = t
        .outcomes
        .iter()
        .map(|(o, n)| format!("{} {n}", o.code()))
        .collect();
    format!(
        "[{:>6.1} s] calls {calls} ({:.1}/s) | {} | nothing due {} | errors {}",
        secs,
        calls as f64 / secs,
        if per.is_empty() {
            "-".to_string()
        } else {
            per.join(" ")
        },
        t.nothing_due,
        t.errors
    )
}

type AgentClient =
    AgentServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

async fn pause(stop: &mut tokio::sync::watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.changed() => true,
    }
}

async fn agent_loop(
    mut agent: AgentClient,
    mix: Mix,
    talk: Duration,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut dice = Dice::new();
    loop {
        if *stop.borrow() {
            break;
        }
        // Claim one of the `--calls` before leasing, so the total is exact.
        if let Some(limit) = shared.limit {
            if shared.claimed.fetch_add(1, Ordering::SeqCst) >= limit {
                break;
            }
        }
        let release = || {
            if shared.limit.is_some() {
                shared.claimed.fetch_sub(1, Ordering::SeqCst);
            }
        };
        let call = match agent.next_call(dialer::NextCallRequest {}).await {
            Ok(r) => match r.into_inner().result {
                Some(next_call_response::Result::Call(c)) => c,
                _ => {
                    release();
                    shared.tally().nothing_due += 1;
                    if pause(&mut stop, Duration::from_secs(1)).await {
                        break;
                    }
                    continue;
                }
            },
            Err(_) => {
                release();
                shared.tally().errors += 1;
                if pause(&mut stop, Duration::from_secs(1)).await {
                    break;
                }
                continue;
            }
        };
        // Talk: 50 % to 150 % of the mean (a stop request still lets the call end properly).
        let ms = talk.as_millis() as u64;
        let talk_ms = ms / 2 + if ms == 0 { 0 } else { dice.next() % (ms + 1) };
        tokio::time::sleep(Duration::from_millis(talk_ms)).await;
        let lease_id = call.lease.map(|l| l.lease_id).unwrap_or_default();
        let mut chosen = mix.pick(dice.next());
        let mut result = record(&mut agent, &lease_id, chosen).await;
        if chosen == Simulated::Callback
            && matches!(&result, Err(e) if e.code() == tonic::Code::InvalidArgument)
        {
            // Two hours from now may fall outside the callee's calling hours.
            shared.tally().callbacks_refused += 1;
            chosen = Simulated::NoAnswer;
            result = record(&mut agent, &lease_id, chosen).await;
        }
        match result {
            Ok(()) => *shared.tally().outcomes.entry(chosen).or_default() += 1,
            Err(_) => {
                release();
                shared.tally().errors += 1;
            }
        }
    }
    let _ = agent
        .set_agent_state(dialer::SetAgentStateRequest {
            state: AgentState::SignedOut as i32,
            pause_reason: String::new(),
        })
        .await;
}

async fn record(
    agent: &mut AgentClient,
    lease_id: &str,
    outcome: Simulated,
) -> Result<(), tonic::Status> {
    agent
        .record_outcome(dialer::RecordOutcomeRequest {
            lease_id: lease_id.to_string(),
            disposition: Some(dialer::Disposition {
                kind: Some(outcome.disposition(chrono::Utc::now())),
            }),
        })
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_pick_by_weight() {
        let m = Mix::parse("no_answer=40, accepted=60").unwrap();
        assert_eq!(m.pick(0), Simulated::NoAnswer);
        assert_eq!(m.pick(39), Simulated::NoAnswer);
        assert_eq!(m.pick(40), Simulated::Accepted);
        assert_eq!(m.pick(99), Simulated::Accepted);
        assert_eq!(m.pick(100), Simulated::NoAnswer);
        assert!(Mix::parse("hung_up=3").is_err());
        assert!(Mix::parse("busy=x").is_err());
        assert!(Mix::parse("busy=0").is_err());
        assert!(Mix::parse("busy").is_err());
    }

    #[test]
    fn every_outcome_maps_to_its_disposition() {
        let now = chrono::Utc::now();
        for o in Simulated::ALL {
            let kind = o.disposition(now);
            match (o, kind) {
                (Simulated::Callback, Kind::Callback(c)) => assert!(c.at.is_some()),
                (Simulated::Refused, Kind::RefusedInterview(_)) => {}
                (
                    Simulated::Accepted | Simulated::Declined | Simulated::Thinking,
                    Kind::Interview(i),
                ) => {
                    assert_ne!(i.offer_decision, OfferDecision::Unspecified as i32)
                }
                (_, Kind::NotReached(n)) => assert_ne!(n.reason, 0),
                (o, k) => panic!("{o:?} gave {k:?}"),
            }
        }
    }
}
