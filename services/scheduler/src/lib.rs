//! The campaign scheduler: campaigns and their lifecycle, and the plan of every contact —
//! when it is due, in which open window, after which retries — releasing `CallsDue` to the
//! dialer and `ContactsClosed` when contacts are finished.

mod campaigns;
pub(crate) mod planning;
mod rights;

use anyhow::Result;
use cnmas_bus::ConsumerSpec;
use cnmas_domain::calendar::HolidayCalendar;
use cnmas_domain::clock::{self, Clock};
use cnmas_proto::scheduler::campaign_service_server::CampaignServiceServer;
use cnmas_runtime::config::{parse_var, var};
use cnmas_runtime::service::{Base, Running};
use cnmas_runtime::CommonConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "scheduler";

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `CNMAS_HOLIDAYS_FILE`: an amended public-holiday calendar (JSON); default built in.
    pub holidays: Option<String>,
    /// `CNMAS_SCHEDULER_TICK_MS`: how often due contacts are released, default 200.
    pub tick: Duration,
    /// Retention periods and purge schedule (`CNMAS_RETENTION_*`, `CNMAS_PURGE_INTERVAL_SECONDS`).
    pub retention: cnmas_runtime::rights::Retention,
}

impl Config {
    pub fn from_env() -> Result<Self> {
        let holidays = match var("CNMAS_HOLIDAYS_FILE") {
            Some(path) => Some(std::fs::read_to_string(&path)?),
            None => None,
        };
        Ok(Config {
            common: CommonConfig::from_env()?,
            holidays,
            tick: Duration::from_millis(parse_var("CNMAS_SCHEDULER_TICK_MS", 200)?),
            retention: cnmas_runtime::rights::Retention::from_env()?,
        })
    }
}

pub(crate) struct State {
    pub base: Base,
    pub calendar: HolidayCalendar,
    /// The time every rule uses (the ticker, retries, the end of campaigns).
    pub clock: Arc<dyn Clock>,
}

/// Starts the scheduler on the system clock.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    start_with_clock(config, clock::system(), shutdown).await
}

/// Starts the scheduler on the given clock (tests move time with a
/// [`cnmas_domain::clock::FixedClock`]).
pub async fn start_with_clock(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<Running> {
    let base = Base::boot(
        SERVICE,
        &config.common,
        sqlx::migrate!("./migrations"),
        shutdown,
    )
    .await?;
    let calendar = match &config.holidays {
        Some(json) => HolidayCalendar::from_json(json)?,
        None => HolidayCalendar::built_in().clone(),
    };
    let state = Arc::new(State {
        base: base.clone(),
        calendar,
        clock: clock.clone(),
    });

    let planner = Arc::new(planning::Planner {
        state: state.clone(),
    });
    base.spawn_consumer(
        ConsumerSpec::new(SERVICE, "scheduler_consent", "cnmas.evt.v1.consent.>"),
        planner.clone(),
    );
    base.spawn_consumer(
        ConsumerSpec::new(SERVICE, "scheduler_dialer", "cnmas.evt.v1.dialer.>"),
        planner.clone(),
    );
    base.tasks
        .spawn(planning::run_ticker(state.clone(), config.tick));

    base.spawn_consumer(
        ConsumerSpec::new(
            SERVICE,
            "scheduler_rectifications",
            "cnmas.evt.v1.intake.contact_rectified",
        ),
        Arc::new(rights::Rectifications {
            state: state.clone(),
        }),
    );
    let person_data = cnmas_runtime::rights::start(
        &base,
        Arc::new(rights::SchedulerData),
        config.retention,
        "scheduler_closures",
    );

    let api = campaigns::CampaignApi {
        state: state.clone(),
    };
    let router = tonic::transport::Server::builder()
        .add_service(CampaignServiceServer::with_interceptor(
            api,
            base.auth.interceptor(),
        ))
        .add_service(person_data);
    let grpc = base.serve_grpc(config.common.grpc_addr, router).await?;
    let http = base.serve_http(config.common.http_addr, None).await?;
    Ok(base.running(Some(grpc), http))
}
