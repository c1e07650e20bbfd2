//! `/healthz` (the process runs), `/readyz` (its database and NATS answer) and `/metrics`
//! (Prometheus text format).

use axum::{extract::State, http::StatusCode, routing::get, Router};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct Probe {
    service: &'static str,
    pool: sqlx::PgPool,
    nats: async_nats::Client,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(p): State<Probe>) -> (StatusCode, String) {
    let db = sqlx::query("SELECT 1").execute(&p.pool).await.is_ok();
    let nats = p.nats.connection_state() == async_nats::connection::State::Connected;
    let status = if db && nats {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        format!(
            "{{\"service\":\"{}\",\"database\":{db},\"nats\":{nats}}}",
            p.service
        ),
    )
}

async fn metrics_text() -> String {
    crate::telemetry::metrics_handle().render()
}

/// Binds `addr` and serves the probes until `shutdown`. Returns the bound address.
pub async fn serve(
    service: &'static str,
    addr: SocketAddr,
    pool: sqlx::PgPool,
    nats: async_nats::Client,
    extra: Option<Router>,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Probe {
            service,
            pool,
            nats,
        });
    if let Some(extra) = extra {
        app = app.merge(extra);
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok((bound, handle))
}
