//! What every CNMAS service needs around its own logic: configuration from the environment,
//! tracing and OpenTelemetry, the database pool and migrations, NATS, health and metrics over
//! HTTP, bearer-token authentication, and graceful shutdown.

pub mod auth;
pub mod config;
pub mod db;
pub mod http;
pub mod rights;
pub mod service;
pub mod shutdown;
pub mod telemetry;

pub use config::CommonConfig;
