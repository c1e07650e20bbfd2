//! The dialer queue: holds the calls that are due, leases the best one to an agent of its
//! campaign while the callee's window is open, and records each attempt's outcome.

mod admin;
mod agent;
mod batch;
mod credentials;
pub mod disposition;
mod floor;
mod intake;
mod leases;
mod leasing;
mod outcomes;
mod queue;
mod rights;
mod staffing;

use anyhow::{Context, Result};
use cnmas_bus::ConsumerSpec;
use cnmas_proto::dialer::agent_service_server::AgentServiceServer;
use cnmas_proto::dialer::dialer_admin_service_server::DialerAdminServiceServer;
use cnmas_runtime::config::{parse_var, var_or};
use cnmas_runtime::service::{Base, Running};
use cnmas_runtime::CommonConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "dialer-queue";

/// The tables the lease and the outcome read, analysed as they grow so that the prepared
/// statements' plans follow their sizes (`cnmas_runtime::db::analyse_grown`).
const STATISTICS_OF: &[&str] = &["queue", "agents", "agent_campaigns", "campaigns"];

/// The writers' gather by default, in milliseconds (decision 0020).
pub const DEFAULT_GATHER_MS: u64 = 4;

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `CNMAS_INTAKE_URL`: intake's gRPC endpoint, for call cards.
    pub intake_url: String,
    /// `CNMAS_LEASE_SECONDS`: how long a leased call stays with its agent without renewal.
    pub lease: Duration,
    /// `CNMAS_DIALER_GATHER_MS`: how long a busy lease or outcome writer gathers requests for
    /// its batch (decision 0020); 0 never gathers.
    pub gather: Duration,
    /// Retention periods and purge schedule (`CNMAS_RETENTION_*`, `CNMAS_PURGE_INTERVAL_SECONDS`).
    pub retention: cnmas_runtime::rights::Retention,
}

impl Config {
    pub fn from_env() -> Result<Self> {
        Ok(Config {
            common: CommonConfig::from_env()?,
            intake_url: var_or("CNMAS_INTAKE_URL", "http://127.0.0.1:50051"),
            lease: Duration::from_secs(parse_var("CNMAS_LEASE_SECONDS", 300)?),
            gather: Duration::from_millis(parse_var("CNMAS_DIALER_GATHER_MS", DEFAULT_GATHER_MS)?),
            retention: cnmas_runtime::rights::Retention::from_env()?,
        })
    }
}

pub(crate) struct State {
    pub base: Base,
    pub intake: intake::Intake,
    pub lease: Duration,
    /// The facts of the calls this replica leased, for their outcomes.
    pub leases: leases::Leases,
    pub leasing: leasing::Leasing,
    pub outcomes: outcomes::Outcomes,
}

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let channel = tonic::transport::Endpoint::from_shared(config.intake_url.clone())
        .context("CNMAS_INTAKE_URL")?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    let base = Base::boot(
        SERVICE,
        &config.common,
        sqlx::migrate!("./migrations"),
        shutdown,
    )
    .await?;
    let intake = intake::Intake::new(channel, base.auth.clone());
    let state = Arc::new(State {
        base: base.clone(),
        intake: intake.clone(),
        lease: config.lease,
        leases: leases::Leases::default(),
        leasing: leasing::Leasing::start(&base, config.lease, config.gather, intake),
        outcomes: outcomes::Outcomes::start(&base, config.gather),
    });
    base.spawn_consumer(
        ConsumerSpec::new(SERVICE, "dialer_scheduler", "cnmas.evt.v1.scheduler.>"),
        Arc::new(queue::QueueFeed),
    );
    base.spawn_consumer(
        ConsumerSpec::new(
            SERVICE,
            "dialer_replans",
            "cnmas.evt.v1.scheduler.call_replanned",
        ),
        Arc::new(rights::Replans),
    );
    let person_data = cnmas_runtime::rights::start(
        &base,
        Arc::new(rights::DialerData),
        config.retention,
        "dialer_closures",
    );
    base.tasks.spawn(queue::run_sweeper(state.clone()));
    base.tasks.spawn(cnmas_runtime::db::keep_statistics(
        base.pool.clone(),
        STATISTICS_OF,
        Duration::from_secs(5),
        base.shutdown.clone(),
    ));
    base.tasks.spawn(staffing::run_publisher(state.clone()));
    let router = tonic::transport::Server::builder()
        .add_service(person_data)
        .add_service(AgentServiceServer::with_interceptor(
            agent::AgentApi {
                state: state.clone(),
            },
            base.auth.interceptor(),
        ))
        .add_service(DialerAdminServiceServer::with_interceptor(
            admin::AdminApi {
                state: state.clone(),
            },
            base.auth.interceptor(),
        ));
    let grpc = base.serve_grpc(config.common.grpc_addr, router).await?;
    let http = base.serve_http(config.common.http_addr, None).await?;
    Ok(base.running(Some(grpc), http))
}
