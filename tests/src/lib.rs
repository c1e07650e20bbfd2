//! A whole CNMAS system in-process, for end-to-end tests and the benchmark: the five services,
//! each with a fresh database, sharing one real NATS server under a unique namespace, so tests
//! run in parallel without seeing each other.

use anyhow::{bail, Context, Result};
use async_nats::jetstream::{self, consumer::pull};
use chrono::Utc;
use cnmas_bus::{subjects, Namespace, Publisher};
use cnmas_proto::common::Theme;
use cnmas_proto::dialer::agent_service_client::AgentServiceClient;
use cnmas_proto::dialer::dialer_admin_service_client::DialerAdminServiceClient;
use cnmas_proto::dialer::{
    disposition::Kind, next_call_response, Disposition, LeasedCall, NextCallRequest,
    RecordOutcomeRequest,
};
use cnmas_proto::intake::file_import_service_client::FileImportServiceClient;
use cnmas_proto::intake::intake_service_client::IntakeServiceClient;
use cnmas_proto::intake::{ContactSubmission, SubmitContacts};
use cnmas_proto::results::results_service_client::ResultsServiceClient;
use cnmas_proto::scheduler::campaign_service_client::CampaignServiceClient;
use cnmas_proto::support::envelope;
use cnmas_runtime::auth::{Authenticator, Bearer, Role};
use cnmas_runtime::service::Running;
use cnmas_runtime::CommonConfig;
use futures::StreamExt;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const JWT_SECRET: &str = "test-jwt-secret-test-jwt-secret-test-jwt";
pub const PERSON_KEY_SECRET: &str = "test-person-key-secret-test-person-key";
/// 32 zero-free bytes, base64.
pub const VAULT_KEYS: &str = "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

pub const SERVICES: [&str; 5] = ["intake", "consent", "scheduler", "dialer-queue", "results"];

pub fn pg_base() -> String {
    std::env::var("CNMAS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// The first port the kernel hands out for `bind(0)` and outgoing connections (Linux's
/// default when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768)
}

/// Ports for the servers a test or the benchmark starts (services, NATS, chromedriver):
/// distinct, free when picked, and below the kernel's ephemeral range. A port from `bind(0)`
/// is released before its server binds it; meanwhile an outgoing connection of a test running
/// alongside could take it as its local port, or a second pick return it again. The
/// benchmark's dialer once died so ("Address already in use"), and its readiness was answered
/// by another service on the same port.
pub fn free_ports(count: usize) -> Result<Vec<u16>> {
    let ephemeral_low = ephemeral_low();
    let low = 10_000u16;
    anyhow::ensure!(
        ephemeral_low > low + 1_000,
        "the ephemeral port range starts at {ephemeral_low}: no room below it for our servers"
    );
    let span = ephemeral_low - low;
    let start = rand::random::<u16>() % span;
    let ports: Vec<u16> = (0..span)
        .map(|i| low + (start + i) % span)
        .filter(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .take(count)
        .collect();
    anyhow::ensure!(
        ports.len() == count,
        "only {} free ports between {low} and {ephemeral_low}",
        ports.len()
    );
    Ok(ports)
}

fn nats_url() -> String {
    std::env::var("CNMAS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Logs for tests: `CNMAS_LOG=debug cargo test …` shows them.
pub fn init_test_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CNMAS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

struct ServiceSlot {
    running: Option<Running>,
    shutdown: CancellationToken,
}

pub struct System {
    pub ns: Namespace,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub publisher: Publisher,
    pub auth: Authenticator,
    db_urls: HashMap<&'static str, String>,
    slots: HashMap<&'static str, ServiceSlot>,
    /// Addresses are kept across restarts so clients keep working.
    addrs: HashMap<&'static str, (SocketAddr, SocketAddr)>,
    /// gRPC ports chosen before the services start, held until each service binds its own.
    reserved: HashMap<&'static str, std::net::TcpListener>,
    lease_seconds: u64,
    /// Intake's file and message limits (tests of the limits shrink them, then restart intake).
    pub intake_limits: cnmas_intake::ImportLimits,
    /// Retention periods every service starts with (tests of the purge shorten them).
    pub retention: cnmas_runtime::rights::Retention,
}

pub type Authed = InterceptedService<Channel, Bearer>;

impl System {
    pub async fn start() -> Result<Self> {
        Self::start_with(300).await
    }

    /// Starts every service; `lease_seconds` sets the dialer's lease time-out.
    pub async fn start_with(lease_seconds: u64) -> Result<Self> {
        Self::start_configured(lease_seconds, cnmas_runtime::rights::Retention::default()).await
    }

    /// Starts every service with the given lease time-out and retention periods.
    pub async fn start_configured(
        lease_seconds: u64,
        retention: cnmas_runtime::rights::Retention,
    ) -> Result<Self> {
        init_test_logs();
        let ns = Namespace::random();
        let nats = async_nats::connect(nats_url())
            .await
            .context("NATS must run on 127.0.0.1:4222 (deploy/local/test.sh starts it)")?;
        let js = jetstream::new(nats.clone());
        let db_urls = SERVICES
            .iter()
            .map(|s| {
                (
                    *s,
                    format!(
                        "{}/cnmas_{}_{}",
                        pg_base(),
                        ns.as_str(),
                        s.replace('-', "_")
                    ),
                )
            })
            .collect();
        let mut system = System {
            publisher: Publisher::new(js.clone(), ns.clone()),
            ns,
            nats,
            js,
            auth: Authenticator::new(JWT_SECRET),
            db_urls,
            slots: HashMap::new(),
            addrs: HashMap::new(),
            reserved: HashMap::new(),
            lease_seconds,
            intake_limits: cnmas_intake::ImportLimits::default(),
            retention,
        };
        // Every gRPC port is chosen before any service starts: intake calls the others (rights)
        // and the dialer calls intake (call cards).
        for s in SERVICES {
            let listener = reserve_port()?;
            system
                .addrs
                .insert(s, (listener.local_addr()?, ([127, 0, 0, 1], 0).into()));
            system.reserved.insert(s, listener);
        }
        // Intake first: the dialer needs its address.
        for s in SERVICES {
            system.start_service(s).await?;
        }
        Ok(system)
    }

    fn common(&self, service: &'static str) -> CommonConfig {
        let (grpc, http) = self
            .addrs
            .get(service)
            .copied()
            .unwrap_or((([127, 0, 0, 1], 0).into(), ([127, 0, 0, 1], 0).into()));
        CommonConfig {
            namespace: self.ns.clone(),
            nats_url: nats_url(),
            nats_memory_storage: true,
            database_url: self.db_urls[service].clone(),
            database_max_connections: 8,
            consumer_pace: std::time::Duration::from_millis(
                cnmas_runtime::config::DEFAULT_CONSUMER_PACE_MS,
            ),
            grpc_addr: grpc,
            http_addr: http,
            jwt_secret: JWT_SECRET.into(),
        }
    }

    /// Starts (or restarts) one service in-process.
    pub async fn start_service(&mut self, service: &'static str) -> Result<()> {
        let shutdown = CancellationToken::new();
        let common = self.common(service);
        // The service binds the port this test reserved for it.
        drop(self.reserved.remove(service));
        let running = match service {
            "intake" => {
                cnmas_intake::start(
                    cnmas_intake::Config {
                        common,
                        vault_keys: VAULT_KEYS.into(),
                        vault_active_key: "k1".into(),
                        person_key_secret: PERSON_KEY_SECRET.into(),
                        limits: self.intake_limits,
                        retention: self.retention,
                        peers: cnmas_intake::rights::Peers {
                            consent: self.grpc_url("consent"),
                            scheduler: self.grpc_url("scheduler"),
                            dialer: self.grpc_url("dialer-queue"),
                            results: self.grpc_url("results"),
                        },
                    },
                    shutdown.clone(),
                )
                .await?
            }
            "consent" => {
                cnmas_consent::start(
                    cnmas_consent::Config {
                        common,
                        person_key_secret: PERSON_KEY_SECRET.into(),
                        retention: self.retention,
                    },
                    shutdown.clone(),
                )
                .await?
            }
            "scheduler" => {
                cnmas_scheduler::start(
                    cnmas_scheduler::Config {
                        common,
                        holidays: None,
                        tick: Duration::from_millis(100),
                        retention: self.retention,
                    },
                    shutdown.clone(),
                )
                .await?
            }
            "dialer-queue" => {
                let intake = self.addrs["intake"].0;
                cnmas_dialer_queue::start(
                    cnmas_dialer_queue::Config {
                        common,
                        intake_url: format!("http://{intake}"),
                        lease: Duration::from_secs(self.lease_seconds),
                        gather: Duration::from_millis(cnmas_dialer_queue::DEFAULT_GATHER_MS),
                        retention: self.retention,
                    },
                    shutdown.clone(),
                )
                .await?
            }
            "results" => {
                cnmas_results::start(
                    cnmas_results::Config {
                        common,
                        retention: self.retention,
                    },
                    shutdown.clone(),
                )
                .await?
            }
            other => bail!("unknown service {other}"),
        };
        self.addrs.insert(
            service,
            (
                running.grpc_addr.unwrap_or(([127, 0, 0, 1], 0).into()),
                running.http_addr,
            ),
        );
        self.slots.insert(
            service,
            ServiceSlot {
                running: Some(running),
                shutdown,
            },
        );
        Ok(())
    }

    /// Stops one service gracefully (its in-flight batches finish) and waits for it.
    pub async fn stop_service(&mut self, service: &'static str) {
        if let Some(slot) = self.slots.get_mut(service) {
            slot.shutdown.cancel();
            if let Some(r) = slot.running.take() {
                r.stopped().await;
            }
        }
    }

    pub fn http_addr(&self, service: &'static str) -> SocketAddr {
        self.addrs[service].1
    }

    /// A service's `/metrics` page (one recorder per process: in-process services share it).
    pub async fn metrics(&self, service: &'static str) -> Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.http_addr(service)).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut page = String::new();
        s.read_to_string(&mut page).await?;
        anyhow::ensure!(
            page.starts_with("HTTP/1.1 200"),
            "/metrics of {service}: {page}"
        );
        Ok(page)
    }

    pub fn grpc_url(&self, service: &'static str) -> String {
        format!("http://{}", self.addrs[service].0)
    }

    pub fn database_url(&self, service: &'static str) -> &str {
        &self.db_urls[service]
    }

    /// Stops everything and removes the databases and streams.
    pub async fn stop(mut self) {
        for s in SERVICES {
            self.stop_service(s).await;
        }
        for url in self.db_urls.values() {
            let _ = cnmas_runtime::db::drop_database(url).await;
        }
        let _ = cnmas_bus::topology::delete(&self.js, &self.ns).await;
    }

    pub fn token(&self, role: Role, fund: Option<&str>, agent: Option<&str>) -> String {
        let subject = agent.or(fund).unwrap_or("test");
        self.auth
            .issue(role, subject, fund, agent, chrono::Duration::hours(1))
            .expect("test token")
    }

    async fn channel(&self, service: &'static str) -> Result<Channel> {
        Ok(Channel::from_shared(self.grpc_url(service))?
            .connect()
            .await?)
    }

    fn with_token(token: String) -> Bearer {
        Bearer(token)
    }

    pub async fn campaigns(&self, token: String) -> Result<CampaignServiceClient<Authed>> {
        Ok(CampaignServiceClient::with_interceptor(
            self.channel("scheduler").await?,
            Self::with_token(token),
        ))
    }

    pub async fn agent(&self, agent_id: &str) -> Result<AgentServiceClient<Authed>> {
        let token = self.token(Role::Agent, None, Some(agent_id));
        Ok(AgentServiceClient::with_interceptor(
            self.channel("dialer-queue").await?,
            Self::with_token(token),
        ))
    }

    pub async fn dialer_admin(&self) -> Result<DialerAdminServiceClient<Authed>> {
        let token = self.token(Role::Supervisor, None, None);
        Ok(DialerAdminServiceClient::with_interceptor(
            self.channel("dialer-queue").await?,
            Self::with_token(token),
        ))
    }

    pub async fn intake_api(&self, token: String) -> Result<IntakeServiceClient<Authed>> {
        Ok(IntakeServiceClient::with_interceptor(
            self.channel("intake").await?,
            Self::with_token(token),
        ))
    }

    /// The fund-facing rights API (subject access, rectification, purge) on intake.
    pub async fn rights_api(
        &self,
        token: String,
    ) -> Result<cnmas_proto::rights::rights_service_client::RightsServiceClient<Authed>> {
        Ok(
            cnmas_proto::rights::rights_service_client::RightsServiceClient::with_interceptor(
                self.channel("intake").await?,
                Self::with_token(token),
            ),
        )
    }

    /// A service's own `PersonDataService`.
    pub async fn person_data_api(
        &self,
        service: &'static str,
        token: String,
    ) -> Result<cnmas_proto::rights::person_data_service_client::PersonDataServiceClient<Authed>>
    {
        Ok(
            cnmas_proto::rights::person_data_service_client::PersonDataServiceClient::with_interceptor(
                self.channel(service).await?,
                Self::with_token(token),
            ),
        )
    }

    pub async fn file_imports(&self, token: String) -> Result<FileImportServiceClient<Authed>> {
        Ok(FileImportServiceClient::with_interceptor(
            self.channel("intake").await?,
            Self::with_token(token),
        ))
    }

    pub async fn results_api(&self, token: String) -> Result<ResultsServiceClient<Authed>> {
        Ok(ResultsServiceClient::with_interceptor(
            self.channel("results").await?,
            Self::with_token(token),
        ))
    }

    /// Creates and activates a campaign callable at any hour (an audited override, so tests
    /// pass at night and on holidays), without pacing, and assigns it to the given agents.
    pub async fn active_campaign(
        &self,
        fund: &str,
        theme: Theme,
        agents: &[&str],
    ) -> Result<String> {
        self.start_campaign(test_campaign(fund, theme), agents)
            .await
    }

    /// Creates `request` as its fund, activates it and assigns it to `agents`.
    pub async fn start_campaign(
        &self,
        request: cnmas_proto::scheduler::CreateCampaignRequest,
        agents: &[&str],
    ) -> Result<String> {
        let mut client = self
            .campaigns(self.token(Role::Fund, Some(&request.fund_code.clone()), None))
            .await?;
        let campaign = client.create_campaign(request).await?.into_inner();
        client
            .activate_campaign(cnmas_proto::scheduler::CampaignTransitionRequest {
                campaign_id: campaign.campaign_id.clone(),
                reason: "test".into(),
            })
            .await?;
        let mut admin = self.dialer_admin().await?;
        for a in agents {
            admin
                .upsert_agent(cnmas_proto::dialer::UpsertAgentRequest {
                    agent_id: a.to_string(),
                    display_name: format!("Agent {a}"),
                    team: "test".into(),
                    supervisor: false,
                })
                .await?;
            admin
                .assign_campaign(cnmas_proto::dialer::AssignCampaignRequest {
                    agent_id: a.to_string(),
                    campaign_id: campaign.campaign_id.clone(),
                    revoke: false,
                })
                .await?;
        }
        Ok(campaign.campaign_id)
    }

    /// Publishes contacts as a fund would, with the given event id (`Nats-Msg-Id`).
    pub async fn submit(
        &self,
        fund: &str,
        campaign_id: &str,
        event_id: &str,
        contacts: Vec<ContactSubmission>,
    ) -> Result<()> {
        let msg = SubmitContacts {
            envelope: Some(envelope(
                event_id.into(),
                fund,
                campaign_id,
                event_id,
                Utc::now(),
            )),
            contacts,
        };
        self.publisher
            .publish(&subjects::fund_in(fund, "contact"), event_id, &msg)
            .await?;
        Ok(())
    }

    /// A fund's durable consumer on its own out subject (`kind`: result, rejection…).
    pub async fn fund_consumer(
        &self,
        fund: &str,
        kind: &str,
        name: &str,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>> {
        let stream = self.js.get_stream(self.ns.stream("OUT")).await?;
        Ok(stream
            .get_or_create_consumer(
                name,
                pull::Config {
                    durable_name: Some(name.into()),
                    filter_subject: self.ns.subject(&subjects::fund_out(fund, kind)),
                    ..Default::default()
                },
            )
            .await?)
    }
}

/// The web console started against a [`System`]'s APIs.
pub struct ConsoleHandle {
    /// `http://127.0.0.1:<port>`
    pub url: String,
    running: cnmas_console::Running,
    shutdown: CancellationToken,
}

impl ConsoleHandle {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.running.stopped().await;
    }
}

impl System {
    /// The console's configuration for this system (a free port, this system's APIs and secret).
    pub fn console_config(&self) -> cnmas_console::Config {
        cnmas_console::Config {
            http_addr: ([127, 0, 0, 1], 0).into(),
            jwt_secret: JWT_SECRET.into(),
            dialer_url: self.grpc_url("dialer-queue"),
            scheduler_url: self.grpc_url("scheduler"),
            results_url: self.grpc_url("results"),
            secure_cookie: false,
            session_idle: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(10 * 3600),
            telephony_url_template: "tel:{phone}".into(),
            lease_renew_every: Duration::from_secs(60),
        }
    }

    /// Starts the web console in-process (it keeps no state of its own beyond sessions).
    pub async fn start_console(&self) -> Result<ConsoleHandle> {
        let shutdown = CancellationToken::new();
        let running = cnmas_console::start(self.console_config(), shutdown.clone()).await?;
        Ok(ConsoleHandle {
            url: format!("http://{}", running.http_addr),
            running,
            shutdown,
        })
    }
}

/// A free port below the kernel's ephemeral range (32768–60999 by default), held until its
/// service starts: no outgoing connection of any test can take it in the meantime.
fn reserve_port() -> Result<std::net::TcpListener> {
    for _ in 0..200 {
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return Ok(listener);
        }
    }
    bail!("no free port between 20000 and 32000")
}

/// Asks for the next call: `None` when nothing is due.
pub async fn next_call(agent: &mut AgentServiceClient<Authed>) -> Result<Option<LeasedCall>> {
    let r = agent.next_call(NextCallRequest {}).await?.into_inner();
    Ok(match r.result {
        Some(next_call_response::Result::Call(c)) => Some(c),
        _ => None,
    })
}

/// Waits (up to a minute) until a call is due for the agent and leases it.
pub async fn lease(agent: &mut AgentServiceClient<Authed>) -> Result<LeasedCall> {
    eventually(Duration::from_secs(60), "a due call", || {
        let mut a = agent.clone();
        async move { next_call(&mut a).await }
    })
    .await
}

/// The request recording `kind` as the outcome of a leased call.
pub fn outcome_request(call: &LeasedCall, kind: Kind) -> RecordOutcomeRequest {
    RecordOutcomeRequest {
        lease_id: call.lease.clone().unwrap_or_default().lease_id,
        disposition: Some(Disposition { kind: Some(kind) }),
    }
}

/// Records the outcome of a leased call.
pub async fn record(
    agent: &mut AgentServiceClient<Authed>,
    call: &LeasedCall,
    kind: Kind,
) -> Result<()> {
    agent.record_outcome(outcome_request(call, kind)).await?;
    Ok(())
}

/// A campaign for tests: callable at any hour (an audited override, so tests pass at night and
/// on holidays), started yesterday for 30 days, 3 attempts, no pacing (pacing has its own tests).
pub fn test_campaign(fund: &str, theme: Theme) -> cnmas_proto::scheduler::CreateCampaignRequest {
    let today = Utc::now().date_naive();
    cnmas_proto::scheduler::CreateCampaignRequest {
        fund_code: fund.into(),
        name: "Campagne de test".into(),
        theme: theme as i32,
        starts_on: (today - chrono::Duration::days(1)).to_string(),
        ends_on: (today + chrono::Duration::days(30)).to_string(),
        presented_number: "+33947500000".into(),
        max_attempts: 3,
        calling_policy: "all_hours".into(),
        calling_policy_override_reason: "automated test at any hour".into(),
        pacing_ratio: -1.0,
        priority_rule: String::new(),
        retry_policy: String::new(),
    }
}

/// Reads messages from a consumer until `n` have arrived (acking each), or fails after `within`.
pub async fn take<M: prost::Message + Default>(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    n: usize,
    within: Duration,
) -> Result<Vec<(String, M)>> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut messages = consumer.messages().await?;
    while out.len() < n {
        let next = tokio::time::timeout_at(deadline, messages.next())
            .await
            .with_context(|| format!("only {} of {n} messages arrived", out.len()))?;
        let Some(msg) = next else { break };
        let msg = msg.map_err(|e| anyhow::anyhow!("{e}"))?;
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        out.push((id, M::decode(msg.payload.clone())?));
        msg.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(out)
}

/// How many messages are waiting for a consumer (not yet delivered).
pub async fn pending(consumer: &mut jetstream::consumer::Consumer<pull::Config>) -> Result<u64> {
    Ok(consumer.info().await?.num_pending)
}

/// Polls `check` until it returns `Some`, or fails after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to `within`) until `count_sql`, a `SELECT count(*) …` without parameters, returns
/// `expected`.
pub async fn wait_for_count(
    within: Duration,
    pool: &sqlx::PgPool,
    count_sql: &str,
    expected: i64,
    what: &str,
) -> Result<()> {
    eventually(within, what, || async {
        let n: i64 = sqlx::query_scalar(count_sql).fetch_one(pool).await?;
        Ok((n == expected).then_some(()))
    })
    .await
}

/// Fictitious insured people for the flu theme, with valid NIRs.
pub mod people {
    use cnmas_proto::common::PostalAddress;
    use cnmas_proto::intake::{
        contact_submission::{Person, ThemeFields},
        ContactDetails, ContactSubmission, FluVaccinationFields, InsuredPerson,
    };

    /// The NIR key of a 13-digit body.
    pub fn nir_with_key(body: &str) -> String {
        let n: u64 = body.parse().expect("13 digits");
        format!("{body}{:02}", 97 - n % 97)
    }

    /// The `i`-th test person: born in 1950 + i % 40, in Paris, with a metropolitan mobile.
    pub fn flu(i: usize) -> ContactSubmission {
        let year = 50 + (i % 40);
        let month = 1 + (i % 12);
        let order = i % 1000;
        let commune = 100 + (i / 1000) % 900;
        let body = format!("1{year:02}{month:02}75{commune:03}{order:03}");
        ContactSubmission {
            submission_ref: format!("ref-{i}"),
            person: Some(Person::Insured(InsuredPerson {
                nir: nir_with_key(&body),
                last_name: format!("Nom{i}"),
                first_name: "Camille".into(),
                birth_date: format!("19{year:02}-{month:02}-15"),
            })),
            contact_details: Some(ContactDetails {
                phone: format!(
                    "06 12 {:02} {:02} {:02}",
                    (i / 10000) % 100,
                    (i / 100) % 100,
                    i % 100
                ),
                email: String::new(),
                postal_address: Some(PostalAddress {
                    lines: vec![],
                    postcode: "75011".into(),
                    city: String::new(),
                }),
            }),
            theme_fields: Some(ThemeFields::FluVaccination(FluVaccinationFields {
                flu_vaccinated: Some(false),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_free_and_below_the_ephemeral_range() {
        let ports = free_ports(10).expect("free ports");
        assert_eq!(ports.len(), 10);
        let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for p in ports {
            assert!(p < ephemeral_low(), "{p} is in the ephemeral range");
            assert!(
                std::net::TcpListener::bind(("127.0.0.1", p)).is_ok(),
                "{p} was given but is taken"
            );
        }
    }
}
