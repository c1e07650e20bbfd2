//! Tokens, campaigns, agents, calls, results and reports over the services' APIs.

use crate::json;
use anyhow::{bail, Context, Result};
use async_nats::jetstream::{self, consumer::pull};
use clap::{Args, Subcommand, ValueEnum};
use cnmas_bus::{subjects, Namespace};
use cnmas_proto::common::{
    AttemptOutcome, Channel as ConsentChannel, ConsentChange, FollowUpKind, FollowUpRequest,
    OfferDecision,
};
use cnmas_proto::dialer::{
    self as dialer, agent_service_client::AgentServiceClient,
    dialer_admin_service_client::DialerAdminServiceClient, disposition::Kind,
};
use cnmas_proto::intake::ContactRejected;
use cnmas_proto::results::{
    results_service_client::ResultsServiceClient, ContactChangeNotice, ContactResult,
    FollowUpNotice,
};
use cnmas_proto::scheduler::{self as sched, campaign_service_client::CampaignServiceClient};
use cnmas_proto::support::timestamp;
use cnmas_runtime::auth::{Authenticator, Bearer, Role};
use cnmas_runtime::config::{var, var_or};
use futures::StreamExt;
use prost::Message;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Client = InterceptedService<Channel, Bearer>;

/// Where each service's API is (environment, with the local defaults of deploy/local/up.sh).
fn url(service: &str) -> String {
    match service {
        "intake" => var_or("CNMAS_INTAKE_URL", "http://127.0.0.1:50051"),
        "scheduler" => var_or("CNMAS_SCHEDULER_URL", "http://127.0.0.1:50053"),
        "dialer" => var_or("CNMAS_DIALER_URL", "http://127.0.0.1:50054"),
        _ => var_or("CNMAS_RESULTS_URL", "http://127.0.0.1:50055"),
    }
}

async fn channel(service: &str, token: &str) -> Result<(Channel, Bearer)> {
    if token.is_empty() {
        bail!("a token is required: --token or CNMAS_TOKEN (see `cnmasctl token`)");
    }
    let u = url(service);
    let channel = Channel::from_shared(u.clone())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot reach the {service} API at {u}"))?;
    Ok((channel, Bearer(token.to_string())))
}

fn print(v: serde_json::Value) {
    println!("{v}");
}

/// gRPC errors as the services word them ("field: rule: message").
fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", e.code(), e.message())
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[arg(long)]
    role: Role,
    /// The fund code, for a fund token.
    #[arg(long)]
    fund: Option<String>,
    /// The agent id, for an agent token.
    #[arg(long)]
    agent: Option<String>,
    /// Who the token is for (appears in audit trails).
    #[arg(long)]
    subject: String,
    #[arg(long, default_value_t = 12)]
    ttl_hours: i64,
}

pub fn token(a: TokenArgs) -> Result<()> {
    let secret = var("CNMAS_JWT_SECRET").context("CNMAS_JWT_SECRET is required to sign tokens")?;
    let auth = Authenticator::new(&secret);
    let t = auth.issue(
        a.role,
        &a.subject,
        a.fund.as_deref(),
        a.agent.as_deref(),
        chrono::Duration::hours(a.ttl_hours),
    )?;
    println!("{t}");
    Ok(())
}

// Parsed once per run: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum CampaignCommand {
    /// Create a campaign (draft) for a fund.
    Create {
        #[arg(long)]
        fund: String,
        #[arg(long)]
        name: String,
        /// flu_vaccination, child_dental_exam, ameli_activation, teleservices_professional,
        /// employer_offer
        #[arg(long)]
        theme: String,
        #[arg(long)]
        starts_on: String,
        #[arg(long)]
        ends_on: String,
        /// The caller id shown to the person (not a mobile number).
        #[arg(long)]
        presented_number: String,
        /// Attempts per contact (default 5).
        #[arg(long, default_value_t = 0)]
        max_attempts: u32,
        /// A JSON calling policy narrowing the legal default (see README).
        #[arg(long)]
        calling_policy: Option<String>,
        /// Call at any hour: an audited override of the legal hours, with its reason.
        #[arg(long)]
        all_hours_reason: Option<String>,
        /// The reason for a JSON policy wider than the legal default.
        #[arg(long)]
        override_reason: Option<String>,
        /// Queued calls kept per available agent (default 2); negative disables pacing.
        #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
        pacing_ratio: f64,
        /// The order of calls: the theme's default, or `fifo`.
        #[arg(long, default_value = "")]
        priority_rule: String,
        /// Retry delays, JSON (e.g. '{"no_answer_delay_minutes":120}'); defaults otherwise.
        #[arg(long, default_value = "")]
        retry_policy: String,
    },
    Get {
        #[arg(long)]
        campaign: String,
    },
    List {
        #[arg(long, default_value = "")]
        fund: String,
    },
    Activate {
        #[arg(long)]
        campaign: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    Pause {
        #[arg(long)]
        campaign: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Cancel: every open contact closes as campaign_cancelled and the fund is told.
    Cancel {
        #[arg(long)]
        campaign: String,
        #[arg(long)]
        reason: String,
    },
}

pub async fn campaign(token: &str, c: CampaignCommand) -> Result<()> {
    let (ch, auth) = channel("scheduler", token).await?;
    let mut client = CampaignServiceClient::with_interceptor(ch, auth);
    let campaign = match c {
        CampaignCommand::Create {
            fund,
            name,
            theme,
            starts_on,
            ends_on,
            presented_number,
            max_attempts,
            calling_policy,
            all_hours_reason,
            override_reason,
            pacing_ratio,
            priority_rule,
            retry_policy,
        } => {
            let theme = cnmas_domain::theme::Theme::from_code(&theme)
                .map(cnmas_proto::support::theme_to_proto)
                .with_context(|| format!("unknown theme {theme:?}"))?;
            let (policy, reason) = match (all_hours_reason, calling_policy) {
                (Some(_), Some(_)) => bail!("give either --all-hours-reason or --calling-policy"),
                (Some(r), None) => ("all_hours".to_string(), r),
                (None, Some(p)) => (p, override_reason.unwrap_or_default()),
                (None, None) => (String::new(), String::new()),
            };
            client
                .create_campaign(sched::CreateCampaignRequest {
                    fund_code: fund,
                    name,
                    theme: theme as i32,
                    starts_on,
                    ends_on,
                    presented_number,
                    max_attempts,
                    calling_policy: policy,
                    calling_policy_override_reason: reason,
                    pacing_ratio,
                    priority_rule,
                    retry_policy,
                })
                .await
        }
        CampaignCommand::Get { campaign } => {
            client
                .get_campaign(sched::GetCampaignRequest {
                    campaign_id: campaign,
                })
                .await
        }
        CampaignCommand::List { fund } => {
            let list = client
                .list_campaigns(sched::ListCampaignsRequest { fund_code: fund })
                .await
                .map_err(status)?
                .into_inner();
            for c in &list.campaigns {
                print(json::campaign(c));
            }
            return Ok(());
        }
        CampaignCommand::Activate { campaign, reason } => {
            client
                .activate_campaign(sched::CampaignTransitionRequest {
                    campaign_id: campaign,
                    reason,
                })
                .await
        }
        CampaignCommand::Pause { campaign, reason } => {
            client
                .pause_campaign(sched::CampaignTransitionRequest {
                    campaign_id: campaign,
                    reason,
                })
                .await
        }
        CampaignCommand::Cancel { campaign, reason } => {
            client
                .cancel_campaign(sched::CampaignTransitionRequest {
                    campaign_id: campaign,
                    reason,
                })
                .await
        }
    }
    .map_err(status)?
    .into_inner();
    print(json::campaign(&campaign));
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Register (or rename) an agent.
    Add {
        #[arg(long)]
        agent: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        team: String,
        /// A supervisor account (console supervisor screen); needs an admin token.
        #[arg(long)]
        supervisor: bool,
    },
    /// Set the agent's console password, read from standard input (first line), so it never
    /// appears in the shell history or the process list.
    SetPassword {
        #[arg(long)]
        agent: String,
    },
    /// Allow an agent to work a campaign (or, with --revoke, no longer).
    Assign {
        #[arg(long)]
        agent: String,
        #[arg(long)]
        campaign: String,
        #[arg(long)]
        revoke: bool,
    },
    List,
}

fn agent_json(a: &dialer::Agent) -> serde_json::Value {
    serde_json::json!({
        "agent_id": a.agent_id, "display_name": a.display_name, "team": a.team,
        "campaign_ids": a.campaign_ids, "supervisor": a.supervisor,
        "has_password": a.has_password,
    })
}

pub async fn agent(token: &str, c: AgentCommand) -> Result<()> {
    let (ch, auth) = channel("dialer", token).await?;
    let mut client = DialerAdminServiceClient::with_interceptor(ch, auth);
    let agent = match c {
        AgentCommand::Add {
            agent,
            name,
            team,
            supervisor,
        } => {
            client
                .upsert_agent(dialer::UpsertAgentRequest {
                    agent_id: agent,
                    display_name: name,
                    team,
                    supervisor,
                })
                .await
        }
        AgentCommand::Assign {
            agent,
            campaign,
            revoke,
        } => {
            client
                .assign_campaign(dialer::AssignCampaignRequest {
                    agent_id: agent,
                    campaign_id: campaign,
                    revoke,
                })
                .await
        }
        AgentCommand::SetPassword { agent } => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']).to_string();
            let r = client
                .set_agent_password(dialer::SetAgentPasswordRequest {
                    agent_id: agent,
                    password,
                })
                .await
                .map_err(status)?
                .into_inner();
            print(serde_json::json!({
                "agent_id": r.agent_id,
                "password_set_at": r.set_at.as_ref().and_then(cnmas_proto::support::from_timestamp).map(|t| t.to_rfc3339()),
            }));
            return Ok(());
        }
        AgentCommand::List => {
            let list = client
                .list_agents(dialer::ListAgentsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            for a in &list.agents {
                print(agent_json(a));
            }
            return Ok(());
        }
    }
    .map_err(status)?
    .into_inner();
    print(agent_json(&agent));
    Ok(())
}

async fn agent_client(token: &str) -> Result<AgentServiceClient<Client>> {
    let (ch, auth) = channel("dialer", token).await?;
    Ok(AgentServiceClient::with_interceptor(ch, auth))
}

pub async fn next_call(token: &str) -> Result<()> {
    let r = agent_client(token)
        .await?
        .next_call(dialer::NextCallRequest {})
        .await
        .map_err(status)?
        .into_inner();
    match r.result {
        Some(dialer::next_call_response::Result::Call(c)) => print(json::leased_call(&c)),
        Some(dialer::next_call_response::Result::NothingDue(n)) => {
            print(serde_json::json!({"nothing_due": n.message}))
        }
        None => bail!("empty answer from the dialer"),
    }
    Ok(())
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum OutcomeArg {
    NoAnswer,
    Busy,
    Voicemail,
    WrongNumber,
    NotInService,
    RefusedInterview,
    Interview,
    Callback,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum OfferArg {
    Accepted,
    Refused,
    ToThinkAbout,
}

#[derive(Args, Debug)]
pub struct OutcomeArgs {
    #[arg(long)]
    lease: String,
    #[arg(long, value_enum)]
    outcome: OutcomeArg,
    /// With `interview`: the person's answer to the offer.
    #[arg(long, value_enum)]
    offer: Option<OfferArg>,
    /// With `interview`: a request for the fund, `KIND:note` (KIND: send_documentation,
    /// appointment_request, entitlement_question, complaint, other). Repeatable.
    #[arg(long)]
    follow_up: Vec<String>,
    /// With `interview`: the person opts out of a channel (phone, sms, email, post), all themes.
    #[arg(long)]
    opt_out: Vec<String>,
    /// With `interview`: a new phone number given by the person.
    #[arg(long)]
    new_phone: Option<String>,
    /// With `interview`: a new e-mail address given by the person.
    #[arg(long)]
    new_email: Option<String>,
    /// With `callback`: when (RFC 3339, e.g. 2027-01-05T15:30:00+01:00).
    #[arg(long)]
    callback_at: Option<String>,
    /// With `callback`: the same agent calls back.
    #[arg(long)]
    same_agent: bool,
}

fn disposition(a: &OutcomeArgs) -> Result<Kind> {
    let not_reached = |o: AttemptOutcome| Kind::NotReached(dialer::NotReached { reason: o as i32 });
    Ok(match a.outcome {
        OutcomeArg::NoAnswer => not_reached(AttemptOutcome::NoAnswer),
        OutcomeArg::Busy => not_reached(AttemptOutcome::Busy),
        OutcomeArg::Voicemail => not_reached(AttemptOutcome::Voicemail),
        OutcomeArg::WrongNumber => not_reached(AttemptOutcome::WrongNumber),
        OutcomeArg::NotInService => not_reached(AttemptOutcome::NotInService),
        OutcomeArg::RefusedInterview => Kind::RefusedInterview(dialer::RefusedInterview {}),
        OutcomeArg::Callback => {
            let at = a
                .callback_at
                .as_deref()
                .context("--callback-at is required with callback")?;
            let at = chrono::DateTime::parse_from_rfc3339(at)
                .context("--callback-at: expected RFC 3339")?
                .with_timezone(&chrono::Utc);
            Kind::Callback(dialer::Callback {
                at: Some(timestamp(at)),
                with_same_agent: a.same_agent,
            })
        }
        OutcomeArg::Interview => {
            let offer = match a.offer.context("--offer is required with interview")? {
                OfferArg::Accepted => OfferDecision::Accepted,
                OfferArg::Refused => OfferDecision::Refused,
                OfferArg::ToThinkAbout => OfferDecision::ToThinkAbout,
            };
            let mut follow_ups = Vec::new();
            for f in &a.follow_up {
                let (kind, note) = f.split_once(':').unwrap_or((f.as_str(), ""));
                let kind = FollowUpKind::from_str_name(&format!(
                    "FOLLOW_UP_KIND_{}",
                    kind.to_ascii_uppercase()
                ))
                .with_context(|| format!("--follow-up: unknown kind {kind:?}"))?;
                follow_ups.push(FollowUpRequest {
                    kind: kind as i32,
                    note: note.to_string(),
                });
            }
            let mut consent_changes = Vec::new();
            for c in &a.opt_out {
                let channel =
                    ConsentChannel::from_str_name(&format!("CHANNEL_{}", c.to_ascii_uppercase()))
                        .with_context(|| format!("--opt-out: unknown channel {c:?}"))?;
                consent_changes.push(ConsentChange {
                    channel: channel as i32,
                    opted_out: true,
                    all_themes: true,
                });
            }
            use cnmas_proto::common::{contact_detail_change::Change, ContactDetailChange};
            let mut contact_detail_changes = Vec::new();
            if let Some(p) = &a.new_phone {
                contact_detail_changes.push(ContactDetailChange {
                    change: Some(Change::Phone(p.clone())),
                });
            }
            if let Some(e) = &a.new_email {
                contact_detail_changes.push(ContactDetailChange {
                    change: Some(Change::Email(e.clone())),
                });
            }
            Kind::Interview(dialer::Interview {
                offer_decision: offer as i32,
                follow_ups,
                contact_detail_changes,
                consent_changes,
            })
        }
    })
}

pub async fn record_outcome(token: &str, a: OutcomeArgs) -> Result<()> {
    let kind = disposition(&a)?;
    let r = agent_client(token)
        .await?
        .record_outcome(dialer::RecordOutcomeRequest {
            lease_id: a.lease.clone(),
            disposition: Some(dialer::Disposition { kind: Some(kind) }),
        })
        .await
        .map_err(status)?
        .into_inner();
    print(serde_json::json!({"attempt_id": r.attempt_id}));
    Ok(())
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum OutKind {
    Result,
    Rejection,
    FollowUp,
    ContactChange,
}

#[derive(Subcommand, Debug)]
pub enum ResultsCommand {
    /// Print a fund's messages as JSON lines, from where its durable consumer stopped.
    Tail {
        #[arg(long)]
        fund: String,
        #[arg(long, value_enum, default_value = "result")]
        kind: OutKind,
        /// The durable consumer's name (default `fund_<fund>_<kind>_cli`).
        #[arg(long)]
        consumer: Option<String>,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<usize>,
        /// Stop when nothing arrived for this many seconds.
        #[arg(long)]
        idle_seconds: Option<u64>,
    },
}

pub async fn results(c: ResultsCommand) -> Result<()> {
    let ResultsCommand::Tail {
        fund,
        kind,
        consumer,
        count,
        idle_seconds,
    } = c;
    let fund = cnmas_domain::fund::FundCode::parse(&fund).context("--fund")?;
    let ns = Namespace::new(&var_or("CNMAS_NAMESPACE", "")).context("CNMAS_NAMESPACE")?;
    let nats_url = var_or("CNMAS_NATS_URL", "nats://127.0.0.1:4222");
    let nats = async_nats::connect(&nats_url)
        .await
        .with_context(|| format!("cannot reach NATS at {nats_url}"))?;
    let js = jetstream::new(nats);
    let kind_name = match kind {
        OutKind::Result => "result",
        OutKind::Rejection => "rejection",
        OutKind::FollowUp => "follow_up",
        OutKind::ContactChange => "contact_change",
    };
    let name = consumer.unwrap_or_else(|| format!("fund_{fund}_{kind_name}_cli"));
    let stream = js
        .get_stream(ns.stream("OUT"))
        .await
        .map_err(|e| anyhow::anyhow!("the results stream is not there yet: {e}"))?;
    let consumer = stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: ns.subject(&subjects::fund_out(fund.as_str(), kind_name)),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut n = 0;
    loop {
        let next = match idle_seconds {
            Some(s) => match tokio::time::timeout(Duration::from_secs(s), messages.next()).await {
                Ok(m) => m,
                Err(_) => return Ok(()),
            },
            None => messages.next().await,
        };
        let Some(msg) = next else { return Ok(()) };
        let msg = msg.map_err(|e| anyhow::anyhow!("{e}"))?;
        match kind {
            OutKind::Result => print(json::result(&ContactResult::decode(msg.payload.clone())?)),
            OutKind::Rejection => print(json::rejection(&ContactRejected::decode(
                msg.payload.clone(),
            )?)),
            OutKind::FollowUp => print(json::follow_up(&FollowUpNotice::decode(
                msg.payload.clone(),
            )?)),
            OutKind::ContactChange => print(json::contact_change(&ContactChangeNotice::decode(
                msg.payload.clone(),
            )?)),
        }
        msg.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return Ok(());
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ReportFormat {
    Json,
    Csv,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[arg(long)]
    campaign: String,
    #[arg(long, value_enum, default_value = "json")]
    format: ReportFormat,
}

pub async fn report(token: &str, a: ReportArgs) -> Result<()> {
    let (ch, auth) = channel("results", token).await?;
    let r = ResultsServiceClient::with_interceptor(ch, auth)
        .get_campaign_report(cnmas_proto::results::GetCampaignReportRequest {
            campaign_id: a.campaign,
        })
        .await
        .map_err(status)?
        .into_inner();
    match a.format {
        ReportFormat::Json => print(json::report(&r)),
        ReportFormat::Csv => {
            // One row per day and final status (the whole campaign as day "total"), for a
            // spreadsheet's pivot table.
            println!("campaign_id;fund_code;date;final_status;count");
            let days = r
                .by_day
                .iter()
                .map(|d| (d.date.as_str(), &d.by_final_status))
                .chain([("total", &r.by_final_status)]);
            for (date, counts) in days {
                for s in counts {
                    println!(
                        "{};{};{};{};{}",
                        r.campaign_id,
                        r.fund_code,
                        date,
                        json::final_status(s.final_status),
                        s.count
                    );
                }
            }
            println!(
                "# contacts_closed={} attempts={} attempts_per_contact={:.2} reach_rate={:.4} acceptance_rate={:.4}",
                r.contacts_closed, r.attempts, r.attempts_per_contact, r.reach_rate, r.acceptance_rate
            );
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// The views of one contact's card.
    #[arg(long, conflicts_with = "agent")]
    contact: Option<String>,
    /// The cards one agent viewed.
    #[arg(long)]
    agent: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

pub async fn audit(token: &str, a: AuditArgs) -> Result<()> {
    use cnmas_proto::intake::{
        intake_service_client::IntakeServiceClient, list_card_views_request::Subject,
        ListCardViewsRequest,
    };
    let subject = match (a.contact, a.agent) {
        (Some(c), None) => Subject::ContactId(c),
        (None, Some(g)) => Subject::AgentId(g),
        _ => bail!("give --contact or --agent"),
    };
    let (ch, auth) = channel("intake", token).await?;
    let views = IntakeServiceClient::with_interceptor(ch, auth)
        .list_card_views(ListCardViewsRequest {
            subject: Some(subject),
            limit: a.limit,
        })
        .await
        .map_err(status)?
        .into_inner();
    for v in &views.views {
        print(serde_json::json!({
            "contact_id": v.contact_id, "campaign_id": v.campaign_id, "agent_id": v.agent_id,
            "lease_id": v.lease_id, "action": v.action, "field": v.field,
            "at": v.at.as_ref().and_then(cnmas_proto::support::from_timestamp).map(|t| t.to_rfc3339()),
        }));
    }
    Ok(())
}
