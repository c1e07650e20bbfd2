//! Boots what every service shares: NATS and the stream topology, its database with migrations,
//! the outbox relay, the probes, and a task tracker for graceful shutdown.

use crate::auth::Authenticator;
use crate::config::CommonConfig;
use anyhow::{Context, Result};
use cnmas_bus::{BatchHandler, ConsumerContext, ConsumerSpec, OutboxRelay, Publisher};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The shared parts of a running service.
#[derive(Clone)]
pub struct Base {
    pub service: &'static str,
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub publisher: Publisher,
    pub relay: OutboxRelay,
    pub auth: Authenticator,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
    consumer_pace: std::time::Duration,
}

/// A started service: where it listens, and a handle to wait for it to stop.
pub struct Running {
    pub service: &'static str,
    pub grpc_addr: Option<SocketAddr>,
    pub http_addr: SocketAddr,
    tasks: TaskTracker,
}

impl Running {
    /// Waits until every task of the service has finished (after its shutdown token fired).
    pub async fn stopped(self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Base {
    pub async fn boot(
        service: &'static str,
        common: &CommonConfig,
        migrator: sqlx::migrate::Migrator,
        shutdown: CancellationToken,
    ) -> Result<Self> {
        // Install the recorder before anything is measured (it would drop earlier samples).
        crate::telemetry::metrics_handle();
        let nats = async_nats::ConnectOptions::new()
            .name(service)
            .retry_on_initial_connect()
            .connect(&common.nats_url)
            .await
            .with_context(|| format!("cannot connect to NATS at {}", common.nats_url))?;
        let js = async_nats::jetstream::new(nats.clone());
        cnmas_bus::topology::ensure(&js, &common.namespace, common.nats_memory_storage)
            .await
            .context("cannot create the JetStream streams")?;
        let pool = crate::db::connect(
            &common.database_url,
            common.database_max_connections,
            migrator,
        )
        .await?;
        let publisher = Publisher::new(js, common.namespace.clone());
        let relay = OutboxRelay::new(pool.clone(), publisher.clone());
        let tasks = TaskTracker::new();
        tasks.spawn(relay.clone().run(shutdown.clone()));
        tasks.spawn(purge_inbox(pool.clone(), shutdown.clone()));
        Ok(Base {
            service,
            pool,
            nats,
            publisher,
            relay,
            auth: Authenticator::new(&common.jwt_secret),
            tasks,
            shutdown,
            consumer_pace: common.consumer_pace,
        })
    }

    pub fn consumer_context(&self) -> ConsumerContext {
        ConsumerContext {
            pool: self.pool.clone(),
            publisher: self.publisher.clone(),
            relay: self.relay.clone(),
            pace: self.consumer_pace,
        }
    }

    /// Runs a durable consumer until shutdown. A consumer that cannot start stops the service.
    pub fn spawn_consumer<H: BatchHandler>(&self, spec: ConsumerSpec, handler: Arc<H>) {
        let ctx = self.consumer_context();
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            let name = spec.name;
            if let Err(e) = cnmas_bus::run_consumer(ctx, spec, handler, shutdown.clone()).await {
                tracing::error!(consumer = name, error = %e, "consumer stopped; stopping the service");
                shutdown.cancel();
            }
        });
    }

    /// Serves the probes (and any extra routes) on `addr`.
    pub async fn serve_http(
        &self,
        addr: SocketAddr,
        extra: Option<axum::Router>,
    ) -> Result<SocketAddr> {
        let (bound, handle) = crate::http::serve(
            self.service,
            addr,
            self.pool.clone(),
            self.nats.clone(),
            extra,
            self.shutdown.clone(),
        )
        .await?;
        self.tasks.spawn(async move {
            let _ = handle.await;
        });
        Ok(bound)
    }

    /// Serves a gRPC router on `addr` until shutdown.
    pub async fn serve_grpc(
        &self,
        addr: SocketAddr,
        router: tonic::transport::server::Router,
    ) -> Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let incoming = tonic::transport::server::TcpIncoming::from_listener(listener, true, None)
            .map_err(|e| anyhow::anyhow!("gRPC listener: {e}"))?;
        let shutdown = self.shutdown.clone();
        let service = self.service;
        self.tasks.spawn(async move {
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
                .await
            {
                tracing::error!(service, error = %e, "gRPC server failed");
                shutdown.cancel();
            }
        });
        Ok(bound)
    }

    pub fn running(&self, grpc_addr: Option<SocketAddr>, http_addr: SocketAddr) -> Running {
        tracing::info!(service = self.service, ?grpc_addr, %http_addr, "service started");
        Running {
            service: self.service,
            grpc_addr,
            http_addr,
            tasks: self.tasks.clone(),
        }
    }
}

/// Event ids are kept longer than any stream keeps its messages (30 days at most), so a replay
/// still finds them; older ones are deleted hourly.
async fn purge_inbox(pool: PgPool, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(e) =
            sqlx::query("DELETE FROM bus_inbox WHERE processed_at < now() - interval '31 days'")
                .execute(&pool)
                .await
        {
            tracing::warn!(error = %e, "purging the inbox failed; will retry");
        }
    }
}

/// The thin `main` of every service binary.
pub async fn main_with<F, Fut>(service: &'static str, start: F) -> Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<Running>>,
{
    let _telemetry = crate::telemetry::init(service);
    let shutdown = crate::shutdown::on_signal();
    let running = start(shutdown.clone()).await?;
    shutdown.cancelled().await;
    running.stopped().await;
    tracing::info!(service, "stopped");
    Ok(())
}
