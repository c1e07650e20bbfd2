//! JetStream conventions shared by every CNMAS service.
//!
//! - [`Namespace`] prefixes every subject and stream, so environments and parallel tests share
//!   one NATS server without seeing each other.
//! - [`subjects`] builds the subject names of the contract (README subject table).
//! - [`topology`] declares the streams and creates them idempotently.
//! - [`publish`] publishes typed messages with `Nats-Msg-Id` and a window of outstanding acks.
//! - [`consume`] runs the batch loop: fetch a batch → one transaction (inbox dedupe + state +
//!   outbox) → commit → ack, with a dead-letter subject after a bounded number of deliveries.
//! - [`outbox`] writes events in the caller's transaction and relays them to JetStream.
//! - [`trace`] carries W3C trace context in message headers.

pub mod consume;
pub mod outbox;
pub mod publish;
pub mod subjects;
pub mod topology;
pub mod trace;

pub use consume::{
    run_consumer, BatchHandler, ConsumerContext, ConsumerSpec, HandlerError, Incoming, Verdict,
};
pub use outbox::{Outbox, OutboxRelay};
pub use publish::Publisher;
pub use subjects::Namespace;

/// The migrations of the bus tables (`bus_inbox`, `bus_outbox`). Run them alongside a
/// service's own; versions below 1000 are reserved for them.
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut m = sqlx::migrate!("./migrations");
    m.set_ignore_missing(true);
    m
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("NATS: {0}")]
    Nats(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl BusError {
    pub fn nats(e: impl std::fmt::Display) -> Self {
        BusError::Nats(e.to_string())
    }
}
