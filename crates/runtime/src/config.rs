//! Configuration from environment variables (the README's configuration table).

use anyhow::{Context, Result};
use cnmas_bus::Namespace;
use std::net::SocketAddr;

/// Settings every service shares. Each service adds its own (see its `Config`).
#[derive(Debug, Clone)]
pub struct CommonConfig {
    /// `CNMAS_NAMESPACE`: prefix of every subject, stream and consumer (empty in production).
    pub namespace: Namespace,
    /// `CNMAS_NATS_URL`, default `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// `CNMAS_NATS_MEMORY_STORAGE`: `true` keeps streams in memory (tests, benchmarks).
    pub nats_memory_storage: bool,
    /// `CNMAS_DATABASE_URL`: this service's own database.
    pub database_url: String,
    /// `CNMAS_DATABASE_MAX_CONNECTIONS`, default 10.
    pub database_max_connections: u32,
    /// `CNMAS_CONSUMER_PACE_MS`, default 50: a consumer starts a batch at most this often, so
    /// that under load each transaction carries more events (decision 0019); 0 turns it off.
    pub consumer_pace: std::time::Duration,
    /// `CNMAS_GRPC_ADDR`, default `127.0.0.1:0` (a free port).
    pub grpc_addr: SocketAddr,
    /// `CNMAS_HTTP_ADDR` (health, readiness, metrics), default `127.0.0.1:0`.
    pub http_addr: SocketAddr,
    /// `CNMAS_JWT_SECRET`: HMAC key that signs and verifies bearer tokens (at least 32 bytes).
    pub jwt_secret: String,
}

/// How often a consumer may start a batch, by default (decision 0019).
pub const DEFAULT_CONSUMER_PACE_MS: u64 = 50;

pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

pub fn var_or(name: &str, default: &str) -> String {
    var(name).unwrap_or_else(|| default.to_string())
}

pub fn parse_var<T: std::str::FromStr>(name: &str, default: T) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}: cannot parse {v:?}: {e}")),
    }
}

impl CommonConfig {
    pub fn from_env() -> Result<Self> {
        let jwt_secret = var("CNMAS_JWT_SECRET").context("CNMAS_JWT_SECRET is required")?;
        if jwt_secret.len() < 32 {
            anyhow::bail!("CNMAS_JWT_SECRET must be at least 32 bytes");
        }
        Ok(CommonConfig {
            namespace: Namespace::new(&var_or("CNMAS_NAMESPACE", "")).context("CNMAS_NAMESPACE")?,
            nats_url: var_or("CNMAS_NATS_URL", "nats://127.0.0.1:4222"),
            nats_memory_storage: parse_var("CNMAS_NATS_MEMORY_STORAGE", false)?,
            database_url: var("CNMAS_DATABASE_URL").context("CNMAS_DATABASE_URL is required")?,
            database_max_connections: parse_var("CNMAS_DATABASE_MAX_CONNECTIONS", 10)?,
            consumer_pace: std::time::Duration::from_millis(parse_var(
                "CNMAS_CONSUMER_PACE_MS",
                DEFAULT_CONSUMER_PACE_MS,
            )?),
            grpc_addr: parse_var("CNMAS_GRPC_ADDR", "127.0.0.1:0".parse()?)?,
            http_addr: parse_var("CNMAS_HTTP_ADDR", "127.0.0.1:0".parse()?)?,
            jwt_secret,
        })
    }
}
