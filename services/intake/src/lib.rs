//! Intake: receives the funds' contacts, validates them against their campaign's theme, keeps
//! the personal data in an encrypted vault, and announces accepted contacts (without personal
//! data) or sends the fund the reasons of each rejection.

mod api;
mod erasure;
mod import;
mod intake;
mod reveal;
pub mod rights;
pub mod submission;
pub mod vault;

use anyhow::{Context, Result};
use cnmas_bus::ConsumerSpec;
use cnmas_proto::intake::file_import_service_server::FileImportServiceServer;
use cnmas_proto::intake::intake_service_server::IntakeServiceServer;
use cnmas_runtime::config::var;
use cnmas_runtime::service::{Base, Running};
use cnmas_runtime::CommonConfig;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "intake";
pub use import::Limits as ImportLimits;

#[derive(Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `CNMAS_VAULT_KEYS`: `id:base64(32 bytes)[,id:base64…]`, the AEAD keys of the vault.
    pub vault_keys: String,
    /// `CNMAS_VAULT_ACTIVE_KEY`: the key id sealing new records.
    pub vault_active_key: String,
    /// `CNMAS_PERSON_KEY_SECRET`: HMAC key of the pseudonymous person key (≥ 32 bytes).
    pub person_key_secret: String,
    /// Retention periods and purge schedule (`CNMAS_RETENTION_*`, `CNMAS_PURGE_INTERVAL_SECONDS`).
    pub retention: cnmas_runtime::rights::Retention,
    /// The other services' gRPC endpoints, for subject access and the purge across services.
    pub peers: rights::Peers,
    /// File and message sizes (`CNMAS_IMPORT_*`, `CNMAS_INTAKE_MAX_CONTACTS_PER_MESSAGE`).
    pub limits: ImportLimits,
}

impl Config {
    pub fn from_env() -> Result<Self> {
        Ok(Config {
            common: CommonConfig::from_env()?,
            vault_keys: var("CNMAS_VAULT_KEYS").context("CNMAS_VAULT_KEYS is required")?,
            vault_active_key: var("CNMAS_VAULT_ACTIVE_KEY")
                .context("CNMAS_VAULT_ACTIVE_KEY is required")?,
            person_key_secret: var("CNMAS_PERSON_KEY_SECRET")
                .context("CNMAS_PERSON_KEY_SECRET is required")?,
            retention: cnmas_runtime::rights::Retention::from_env()?,
            peers: rights::Peers::from_env(),
            limits: ImportLimits::from_env()?,
        })
    }
}

pub(crate) struct State {
    pub base: Base,
    pub vault: vault::Vault,
    pub keyer: cnmas_domain::person::PersonKeyer,
    pub funds: cnmas_domain::fund::Funds,
    pub limits: ImportLimits,
}

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let vault = vault::Vault::new(&config.vault_keys, &config.vault_active_key)?;
    let keyer = cnmas_domain::person::PersonKeyer::new(&config.person_key_secret)?;
    let base = Base::boot(
        SERVICE,
        &config.common,
        sqlx::migrate!("./migrations"),
        shutdown,
    )
    .await?;
    let state = Arc::new(State {
        base: base.clone(),
        vault,
        keyer,
        funds: cnmas_domain::fund::Funds::builtin(),
        limits: config.limits,
    });
    base.tasks
        .spawn(erasure::run(state.clone(), base.shutdown.clone()));
    base.spawn_consumer(
        ConsumerSpec::new(
            SERVICE,
            "intake_campaigns",
            "cnmas.evt.v1.scheduler.campaign_changed",
        ),
        Arc::new(intake::CampaignProjection),
    );
    base.spawn_consumer(
        ConsumerSpec {
            // A batch of contacts is decoded, validated and sealed in memory at once: half a
            // megabyte of messages (about 2,000 contacts) keeps intake's memory small.
            max_batch_bytes: 512 * 1024,
            ..ConsumerSpec::new(SERVICE, "intake_contacts", "cnmas.in.v1.*.contact")
        },
        Arc::new(intake::ContactIntake {
            state: state.clone(),
        }),
    );
    let intake_data = Arc::new(rights::IntakeData {
        vault: state.vault.clone(),
    });
    let person_data = cnmas_runtime::rights::start(
        &base,
        intake_data.clone(),
        config.retention,
        "intake_closures",
    );
    let rights_api =
        cnmas_proto::rights::rights_service_server::RightsServiceServer::with_interceptor(
            rights::RightsApi {
                state: state.clone(),
                data: intake_data,
                peers: config.peers.channels()?,
                retention: config.retention,
            },
            base.auth.interceptor(),
        );
    let router = tonic::transport::Server::builder()
        .add_service(person_data)
        .add_service(rights_api)
        .add_service(IntakeServiceServer::with_interceptor(
            api::IntakeApi {
                state: state.clone(),
            },
            base.auth.interceptor(),
        ))
        .add_service(FileImportServiceServer::with_interceptor(
            import::FileImportApi { state },
            base.auth.interceptor(),
        ));
    let grpc = base.serve_grpc(config.common.grpc_addr, router).await?;
    let http = base.serve_http(config.common.http_addr, None).await?;
    Ok(base.running(Some(grpc), http))
}
