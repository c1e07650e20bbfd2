//! Driving the running services as a fund, a supervisor and agents would.

use crate::gen;
use crate::procs::Services;
use crate::stats::Lat;
use anyhow::{bail, Context, Result};
use async_nats::jetstream;
use bytes::Bytes;
use chrono::Utc;
use cnmas_bus::{subjects, Namespace, Publisher};
use cnmas_proto::common::{AttemptOutcome, Theme};
use cnmas_proto::dialer::agent_service_client::AgentServiceClient;
use cnmas_proto::dialer::dialer_admin_service_client::DialerAdminServiceClient;
use cnmas_proto::dialer::{self as pb, disposition, next_call_response};
use cnmas_proto::intake::SubmitContacts;
use cnmas_proto::scheduler::campaign_service_client::CampaignServiceClient;
use cnmas_proto::scheduler::{CampaignTransitionRequest, CreateCampaignRequest};
use cnmas_proto::support::envelope;
use cnmas_runtime::auth::{Authenticator, Bearer, Role};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const FUND: &str = "751";

pub type Agent = AgentServiceClient<InterceptedService<Channel, Bearer>>;

#[derive(Clone)]
pub struct Ctx {
    pub ns: Namespace,
    pub js: jetstream::Context,
    pub auth: Authenticator,
    pub dialer_db: PgPool,
    pub intake_db: PgPool,
    pub consent_db: PgPool,
    pub scheduler_db: PgPool,
}

pub async fn small_pool(url: &str) -> Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await?)
}

impl Ctx {
    fn token(&self, role: Role, fund: Option<&str>, agent: Option<&str>) -> Result<String> {
        let sub = agent.or(fund).unwrap_or("bench");
        self.auth
            .issue(role, sub, fund, agent, chrono::Duration::hours(12))
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Creates and activates the benchmark campaign (audited all-hours override), and waits
    /// until intake and the dialer know it is active.
    pub async fn campaign(&self, services: &Services) -> Result<String> {
        let ch = Channel::from_shared(services.grpc_url("scheduler"))?
            .connect()
            .await?;
        let mut client = CampaignServiceClient::with_interceptor(
            ch,
            Bearer(self.token(Role::Fund, Some(FUND), None)?),
        );
        let today = Utc::now().date_naive();
        let c = client
            .create_campaign(CreateCampaignRequest {
                fund_code: FUND.into(),
                name: "Benchmark grippe".into(),
                theme: Theme::FluVaccination as i32,
                starts_on: (today - chrono::Duration::days(1)).to_string(),
                ends_on: (today + chrono::Duration::days(30)).to_string(),
                presented_number: "+33947500000".into(),
                max_attempts: 3,
                calling_policy: "all_hours".into(),
                calling_policy_override_reason: "benchmark at any hour".into(),
                // The pipeline step measures until every contact is due in the queue: no
                // pacing (a real campaign keeps only what its agents can take).
                pacing_ratio: -1.0,
                ..Default::default()
            })
            .await
            .context("CreateCampaign")?
            .into_inner();
        client
            .activate_campaign(CampaignTransitionRequest {
                campaign_id: c.campaign_id.clone(),
                reason: "benchmark".into(),
            })
            .await
            .context("ActivateCampaign")?;
        let id = uuid::Uuid::parse_str(&c.campaign_id)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let i: Option<String> =
                sqlx::query_scalar("SELECT state FROM campaigns WHERE campaign_id = $1")
                    .bind(id)
                    .fetch_optional(&self.intake_db)
                    .await?;
            let d: Option<String> =
                sqlx::query_scalar("SELECT state FROM campaigns WHERE campaign_id = $1")
                    .bind(id)
                    .fetch_optional(&self.dialer_db)
                    .await?;
            if i.as_deref() == Some("active") && d.as_deref() == Some("active") {
                return Ok(c.campaign_id);
            }
            if Instant::now() > deadline {
                bail!("campaign {id} not active in intake ({i:?}) and dialer ({d:?}) after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Publishes contacts `range` as a fund would: `SubmitContacts` of `per_msg` contacts, each
    /// with its `Nats-Msg-Id`, windowed acks. Generated lazily, message by message.
    pub async fn submit(
        &self,
        campaign: &str,
        range: std::ops::Range<usize>,
        per_msg: usize,
    ) -> Result<usize> {
        let publisher = Publisher::new(self.js.clone(), self.ns.clone());
        let campaign = campaign.to_string();
        let subject = subjects::fund_in(FUND, "contact");
        let starts = (range.start..range.end).step_by(per_msg.max(1));
        let end = range.end;
        let items = starts.map(move |s| {
            let e = (s + per_msg).min(end);
            let event_id = format!("bench-{campaign}-{s}-{e}");
            let msg = SubmitContacts {
                envelope: Some(envelope(
                    event_id.clone(),
                    FUND,
                    &campaign,
                    &event_id,
                    Utc::now(),
                )),
                contacts: (s..e).map(gen::contact).collect(),
            };
            (
                subject.clone(),
                event_id,
                None,
                Bytes::from(msg.encode_to_vec()),
            )
        });
        Ok(publisher.publish_all(items).await?)
    }

    pub async fn queued(&self, campaign: &str) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM queue WHERE campaign_id = $1")
                .bind(uuid::Uuid::parse_str(campaign)?)
                .fetch_one(&self.dialer_db)
                .await?,
        )
    }

    /// Calls that can be leased now (not leased).
    pub async fn ready(&self, campaign: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM queue WHERE campaign_id = $1 AND lease_id IS NULL",
        )
        .bind(uuid::Uuid::parse_str(campaign)?)
        .fetch_one(&self.dialer_db)
        .await?)
    }

    /// One line on where the contacts are, and the consumers' backlog.
    pub async fn stages(&self) -> String {
        let count = |pool: &PgPool, sql: &'static str| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(&pool)
                    .await
                    .unwrap_or(-1)
            }
        };
        let (i, c, s, q) = tokio::join!(
            count(&self.intake_db, "SELECT count(*) FROM contacts"),
            count(&self.consent_db, "SELECT count(*) FROM decisions"),
            count(&self.scheduler_db, "SELECT count(*) FROM plans"),
            count(&self.dialer_db, "SELECT count(*) FROM queue"),
        );
        format!(
            "intake {i} | consent {c} | plans {s} | queue {q} | {}",
            self.backlog().await
        )
    }

    /// The consumers' backlog (pending + awaiting ack), from JetStream alone: cheap enough to
    /// print while a step is measured, unlike counting the services' tables.
    pub async fn backlog(&self) -> String {
        let mut backlog = Vec::new();
        for base in [
            "IN",
            "EVT_INTAKE",
            "EVT_CONSENT",
            "EVT_SCHEDULER",
            "EVT_DIALER",
            "OUT",
        ] {
            if let Ok(stream) = self.js.get_stream(self.ns.stream(base)).await {
                let infos: Vec<_> = stream.consumers().try_collect().await.unwrap_or_default();
                for ci in infos {
                    if ci.num_pending > 0 || ci.num_ack_pending > 0 {
                        backlog.push(format!(
                            "{}:{}+{}",
                            ci.name, ci.num_pending, ci.num_ack_pending
                        ));
                    }
                }
            }
        }
        format!(
            "pending(+ack) {}",
            if backlog.is_empty() {
                "-".to_string()
            } else {
                backlog.join(" ")
            }
        )
    }

    /// Registers agents `a0000…` and assigns them to the campaign (supervisor token).
    pub async fn agents(
        &self,
        services: &Services,
        campaign: &str,
        a: usize,
    ) -> Result<Vec<String>> {
        let ch = Channel::from_shared(services.grpc_url("dialer-queue"))?
            .connect()
            .await?;
        let admin = DialerAdminServiceClient::with_interceptor(
            ch,
            Bearer(self.token(Role::Supervisor, None, None)?),
        );
        let ids: Vec<String> = (0..a).map(|i| format!("bench-agent-{i:05}")).collect();
        futures::stream::iter(ids.clone())
            .map(|id| {
                let mut admin = admin.clone();
                let campaign = campaign.to_string();
                async move {
                    admin
                        .upsert_agent(pb::UpsertAgentRequest {
                            agent_id: id.clone(),
                            display_name: format!("Agent {id}"),
                            team: "bench".into(),
                            supervisor: false,
                        })
                        .await
                        .context("UpsertAgent")?;
                    admin
                        .assign_campaign(pb::AssignCampaignRequest {
                            agent_id: id,
                            campaign_id: campaign,
                            revoke: false,
                        })
                        .await
                        .context("AssignCampaign")?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(ids)
    }

    /// The agents' clients, over `channels` connections shared in turn (at least one).
    pub fn agent_clients(
        &self,
        services: &Services,
        ids: &[String],
        channels: usize,
    ) -> Result<Vec<Agent>> {
        let url = services.grpc_url("dialer-queue");
        let channels: Vec<Channel> = (0..channels.clamp(1, ids.len().max(1)))
            .map(|_| Ok(Channel::from_shared(url.clone())?.connect_lazy()))
            .collect::<Result<_>>()?;
        ids.iter()
            .zip(channels.iter().cycle())
            .map(|(id, ch)| {
                Ok(AgentServiceClient::with_interceptor(
                    ch.clone(),
                    Bearer(self.token(Role::Agent, None, Some(id))?),
                ))
            })
            .collect()
    }
}

/// What one NextCall + RecordOutcome cycle gave.
pub enum Cycle {
    Done {
        contact_id: String,
        recorded: Instant,
        timing: Timing,
    },
    NothingDue,
}

fn wrong_number() -> pb::Disposition {
    pb::Disposition {
        kind: Some(disposition::Kind::NotReached(pb::NotReached {
            reason: AttemptOutcome::WrongNumber as i32,
        })),
    }
}

/// How long the two requests of one call took (talk time excluded), and when the call started.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub started: Instant,
    pub next_call_ms: f64,
    pub record_outcome_ms: f64,
}

impl Timing {
    /// NextCall + RecordOutcome, ms.
    pub fn pair_ms(&self) -> f64 {
        self.next_call_ms + self.record_outcome_ms
    }
}

/// NextCall, talk for `talk`, RecordOutcome(WRONG_NUMBER).
pub async fn cycle(agent: &mut Agent, talk: Duration) -> Result<Cycle> {
    let t0 = Instant::now();
    let next = agent
        .next_call(pb::NextCallRequest {})
        .await
        .context("NextCall")?
        .into_inner();
    let leased = t0.elapsed();
    let call = match next.result {
        Some(next_call_response::Result::Call(c)) => c,
        _ => return Ok(Cycle::NothingDue),
    };
    if !talk.is_zero() {
        tokio::time::sleep(talk).await;
    }
    let lease_id = call.lease.map(|l| l.lease_id).unwrap_or_default();
    let contact_id = call.card.map(|c| c.contact_id).unwrap_or_default();
    let t1 = Instant::now();
    agent
        .record_outcome(pb::RecordOutcomeRequest {
            lease_id,
            disposition: Some(wrong_number()),
        })
        .await
        .context("RecordOutcome")?;
    let recorded = Instant::now();
    Ok(Cycle::Done {
        contact_id,
        recorded,
        timing: Timing {
            started: t0,
            next_call_ms: leased.as_secs_f64() * 1000.0,
            record_outcome_ms: recorded.duration_since(t1).as_secs_f64() * 1000.0,
        },
    })
}

pub struct Completed {
    pub calls: Vec<(String, Instant)>,
    pub timings: Vec<Timing>,
    pub nothing_due: u64,
    pub errors: u64,
}

/// M calls by A agents with no think time. Each agent claims a slot before asking for a call.
pub async fn outcomes(agents: Vec<Agent>, m: usize, within: Duration) -> Result<Completed> {
    let claimed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + within;
    let mut tasks = Vec::new();
    for mut agent in agents {
        let (claimed, done, errors) = (claimed.clone(), done.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut calls = Vec::new();
            let mut timings = Vec::new();
            let mut nothing = 0u64;
            while claimed.fetch_add(1, Ordering::Relaxed) < m {
                loop {
                    if Instant::now() > deadline {
                        return (calls, timings, nothing);
                    }
                    match cycle(&mut agent, Duration::ZERO).await {
                        Ok(Cycle::Done {
                            contact_id,
                            recorded,
                            timing,
                        }) => {
                            calls.push((contact_id, recorded));
                            timings.push(timing);
                            done.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Ok(Cycle::NothingDue) => {
                            nothing += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("  agent error: {e:#}");
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
            (calls, timings, nothing)
        }));
    }
    let mut out = Completed {
        calls: Vec::with_capacity(m),
        timings: Vec::with_capacity(m),
        nothing_due: 0,
        errors: 0,
    };
    for t in tasks {
        let (c, p, n) = t.await?;
        out.calls.extend(c);
        out.timings.extend(p);
        out.nothing_due += n;
    }
    out.errors = errors.load(Ordering::Relaxed);
    if out.calls.len() < m {
        bail!(
            "outcomes: only {} of {m} calls completed within {within:?} ({} errors, {} NothingDue)",
            out.calls.len(),
            out.errors,
            out.nothing_due
        );
    }
    Ok(out)
}

/// The working day: agents sign in over `ramp`, then NextCall → talk (exponential, mean T) →
/// RecordOutcome until `day` has passed.
pub async fn day(
    agents: Vec<Agent>,
    talk_ms: f64,
    day: Duration,
    ramp: Duration,
) -> Result<Completed> {
    let deadline = Instant::now() + day;
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for mut agent in agents {
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::from_entropy();
            let mut calls = Vec::new();
            let mut timings = Vec::new();
            let mut nothing = 0u64;
            let start_in = rng.gen_range(0.0..ramp.as_secs_f64().max(0.001));
            tokio::time::sleep(Duration::from_secs_f64(start_in)).await;
            while Instant::now() < deadline {
                let talk = -(1.0 - rng.gen::<f64>()).ln() * talk_ms;
                match cycle(&mut agent, Duration::from_secs_f64(talk / 1000.0)).await {
                    Ok(Cycle::Done {
                        contact_id,
                        recorded,
                        timing,
                    }) => {
                        calls.push((contact_id, recorded));
                        timings.push(timing);
                    }
                    Ok(Cycle::NothingDue) => {
                        nothing += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("  agent error: {e:#}");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            (calls, timings, nothing)
        }));
    }
    let within = day + Duration::from_secs(120);
    let mut out = Completed {
        calls: Vec::new(),
        timings: Vec::new(),
        nothing_due: 0,
        errors: 0,
    };
    let joined = tokio::time::timeout(within, futures::future::join_all(tasks))
        .await
        .map_err(|_| anyhow::anyhow!("day: agents still running {within:?} after the start"))?;
    for r in joined {
        let (c, p, n) = r?;
        out.calls.extend(c);
        out.timings.extend(p);
        out.nothing_due += n;
    }
    out.errors = errors.load(Ordering::Relaxed);
    Ok(out)
}

/// The latencies of the pairs of requests.
pub fn pairs(v: &[Timing]) -> Lat {
    Lat::new(v.iter().map(Timing::pair_ms).collect())
}
