//! Results: gathers each contact's attempts, interview and closure, and delivers exactly one
//! final `ContactResult` to the fund that asked, on `cnmas.out.v1.<fund>.result`, with a stable
//! result id as `Nats-Msg-Id`. Also serves campaign reports.

mod collect;
mod report;
mod rights;

use anyhow::Result;
use cnmas_bus::ConsumerSpec;
use cnmas_proto::results::results_service_server::ResultsServiceServer;
use cnmas_runtime::service::{Base, Running};
use cnmas_runtime::CommonConfig;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "results";

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// Retention periods and purge schedule (`CNMAS_RETENTION_*`, `CNMAS_PURGE_INTERVAL_SECONDS`).
    pub retention: cnmas_runtime::rights::Retention,
}

impl Config {
    pub fn from_env() -> Result<Self> {
        Ok(Config {
            common: CommonConfig::from_env()?,
            retention: cnmas_runtime::rights::Retention::from_env()?,
        })
    }
}

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let base = Base::boot(
        SERVICE,
        &config.common,
        sqlx::migrate!("./migrations"),
        shutdown,
    )
    .await?;
    let collector = Arc::new(collect::Collector);
    for (name, filter) in [
        ("results_accepted", "cnmas.evt.v1.intake.contacts_accepted"),
        ("results_consent", "cnmas.evt.v1.consent.contact_suppressed"),
        ("results_dialer", "cnmas.evt.v1.dialer.>"),
        (
            "results_contacts_closed",
            "cnmas.evt.v1.scheduler.contacts_closed",
        ),
        // Closures published one by one by schedulers before decision 0015: what an upgrade
        // finds in the stream is still applied.
        ("results_scheduler", "cnmas.evt.v1.scheduler.contact_closed"),
        ("results_rejections", "cnmas.out.v1.*.rejection"),
    ] {
        base.spawn_consumer(ConsumerSpec::new(SERVICE, name, filter), collector.clone());
    }
    base.tasks.spawn(collect::run_sweeper(base.clone()));
    let person_data = cnmas_runtime::rights::start(
        &base,
        Arc::new(rights::ResultsData),
        config.retention,
        "results_closures",
    );
    let router = tonic::transport::Server::builder()
        .add_service(ResultsServiceServer::with_interceptor(
            report::ReportApi { base: base.clone() },
            base.auth.interceptor(),
        ))
        .add_service(person_data);
    let grpc = base.serve_grpc(config.common.grpc_addr, router).await?;
    let http = base.serve_http(config.common.http_addr, None).await?;
    Ok(base.running(Some(grpc), http))
}
