//! The web console of CNMAS: agents sign in, take calls, read the card and the theme's script,
//! dial and record outcomes; supervisors watch each campaign live and pause or resume it.
//!
//! Plain HTML rendered on the server (French, accessible), a small script of our own for the
//! live refresh, the lease renewal and keyboard shortcuts. The console owns no business data:
//! it talks to the dialer, the scheduler and results through their gRPC APIs with short-lived
//! tokens it mints for the signed-in person. Sessions live in memory (see
//! docs/decisions/0006-web-console.md).

mod agent;
mod backend;
mod labels;
mod outcome;
mod page;
mod scripts;
mod session;
mod supervisor;

use anyhow::{Context, Result};
use axum::routing::{get, post};
use axum::Router;
use cnmas_runtime::config::{parse_var, var, var_or};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use outcome::{form_to_disposition, FormError};

pub const SERVICE: &str = "console";

#[derive(Debug, Clone)]
pub struct Config {
    /// `CNMAS_HTTP_ADDR`: where the console (and its probes) listen.
    pub http_addr: SocketAddr,
    /// `CNMAS_JWT_SECRET`: signs the short-lived tokens the console presents to the APIs.
    pub jwt_secret: String,
    /// `CNMAS_DIALER_URL`, `CNMAS_SCHEDULER_URL`, `CNMAS_RESULTS_URL`: the APIs used.
    pub dialer_url: String,
    pub scheduler_url: String,
    pub results_url: String,
    /// `CNMAS_CONSOLE_SECURE_COOKIE`: mark the session cookie `Secure` (behind HTTPS).
    pub secure_cookie: bool,
    /// `CNMAS_CONSOLE_SESSION_IDLE_MINUTES`: a session unused this long ends.
    pub session_idle: Duration,
    /// `CNMAS_CONSOLE_SESSION_MAX_HOURS`: a session ends this long after sign-in in any case.
    pub session_max: Duration,
    /// `CNMAS_TELEPHONY_URL_TEMPLATE`: the dial link, `{phone}` replaced by the E.164 number
    /// (default `tel:{phone}`).
    pub telephony_url_template: String,
    /// `CNMAS_CONSOLE_LEASE_RENEW_SECONDS`: how often an open card renews its lease.
    pub lease_renew_every: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self> {
        let jwt_secret = var("CNMAS_JWT_SECRET").context("CNMAS_JWT_SECRET is required")?;
        if jwt_secret.len() < 32 {
            anyhow::bail!("CNMAS_JWT_SECRET must be at least 32 bytes");
        }
        let config = Config {
            http_addr: parse_var("CNMAS_HTTP_ADDR", "127.0.0.1:8080".parse()?)?,
            jwt_secret,
            dialer_url: var_or("CNMAS_DIALER_URL", "http://127.0.0.1:50054"),
            scheduler_url: var_or("CNMAS_SCHEDULER_URL", "http://127.0.0.1:50053"),
            results_url: var_or("CNMAS_RESULTS_URL", "http://127.0.0.1:50055"),
            secure_cookie: parse_var("CNMAS_CONSOLE_SECURE_COOKIE", false)?,
            session_idle: Duration::from_secs(
                60 * parse_var::<u64>("CNMAS_CONSOLE_SESSION_IDLE_MINUTES", 30)?,
            ),
            session_max: Duration::from_secs(
                3600 * parse_var::<u64>("CNMAS_CONSOLE_SESSION_MAX_HOURS", 10)?,
            ),
            telephony_url_template: var_or("CNMAS_TELEPHONY_URL_TEMPLATE", "tel:{phone}"),
            lease_renew_every: Duration::from_secs(parse_var(
                "CNMAS_CONSOLE_LEASE_RENEW_SECONDS",
                60,
            )?),
        };
        config.check()?;
        Ok(config)
    }

    /// Rules on values that would otherwise fail at the first page.
    pub fn check(&self) -> Result<()> {
        let t = &self.telephony_url_template;
        if !t.contains("{phone}") {
            anyhow::bail!("CNMAS_TELEPHONY_URL_TEMPLATE must contain {{phone}}");
        }
        if !["tel:", "sip:", "https://", "http://"]
            .iter()
            .any(|p| t.starts_with(p))
        {
            anyhow::bail!(
                "CNMAS_TELEPHONY_URL_TEMPLATE must start with tel:, sip:, https:// or http://"
            );
        }
        if self.session_idle.is_zero() || self.session_max.is_zero() {
            anyhow::bail!("console session durations must be positive");
        }
        if self.lease_renew_every.is_zero() {
            anyhow::bail!("CNMAS_CONSOLE_LEASE_RENEW_SECONDS must be positive");
        }
        Ok(())
    }
}

/// Everything a request handler needs.
pub struct Console {
    pub(crate) config: Config,
    pub(crate) backend: backend::Backend,
    pub(crate) sessions: session::Sessions,
    pub(crate) pages: page::Pages,
}

impl Console {
    pub fn new(config: Config) -> Result<Arc<Self>> {
        config.check()?;
        Ok(Arc::new(Console {
            backend: backend::Backend::new(&config)?,
            sessions: session::Sessions::new(config.session_idle, config.session_max),
            pages: page::Pages::new()?,
            config,
        }))
    }
}

/// Every route of the console.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(session::home))
        .route(
            "/connexion",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/deconnexion", post(session::sign_out))
        .route("/agent", get(agent::screen))
        .route("/agent/etat", post(agent::set_state))
        .route("/agent/appel-suivant", post(agent::next_call))
        .route("/agent/renouveler", post(agent::renew))
        .route("/agent/reveler", post(agent::reveal))
        .route("/agent/resultat", post(agent::record))
        .route("/supervision", get(supervisor::campaigns))
        .route("/supervision/campagnes/:id", get(supervisor::campaign))
        .route("/supervision/campagnes/:id/direct", get(supervisor::live))
        .route("/supervision/campagnes/:id/pause", post(supervisor::pause))
        .route(
            "/supervision/campagnes/:id/reprise",
            post(supervisor::resume),
        )
        .route("/static/console.js", get(page::script))
        .route("/static/console.css", get(page::stylesheet))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(backend::readyz))
        .route(
            "/metrics",
            get(|| async { cnmas_runtime::telemetry::metrics_handle().render() }),
        )
        .layer(axum::middleware::from_fn(page::security_headers))
        .with_state(console)
}

/// A started console: where it listens, and a handle to wait for it to stop.
pub struct Running {
    pub http_addr: SocketAddr,
    tasks: TaskTracker,
}

impl Running {
    pub async fn stopped(self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    // Install the recorder before anything is measured.
    cnmas_runtime::telemetry::metrics_handle();
    let console = Console::new(config)?;
    let listener = tokio::net::TcpListener::bind(console.config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", console.config.http_addr))?;
    let http_addr = listener.local_addr()?;
    let tasks = TaskTracker::new();
    let app = router(console.clone());
    let stop = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "console HTTP server failed");
        }
    });
    let sweeper = console.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(60)) => sweeper.sessions.purge(),
                _ = shutdown.cancelled() => return,
            }
        }
    });
    tracing::info!(service = SERVICE, %http_addr, "console started");
    Ok(Running { http_addr, tasks })
}
