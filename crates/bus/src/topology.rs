//! The streams of the system. Every service declares the whole topology at start (idempotent),
//! so services can start in any order.

use crate::{BusError, Namespace};
use async_nats::jetstream::{self, stream};
use std::time::Duration;

/// One stream: a base name and the contract subjects it captures.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub base: &'static str,
    pub subjects: &'static [&'static str],
    pub max_age: Duration,
}

const DAY: u64 = 24 * 3600;

pub fn streams() -> Vec<StreamSpec> {
    vec![
        // Fund submissions: kept long enough to replay after a service outage.
        StreamSpec {
            base: "IN",
            subjects: &["cnmas.in.v1.>"],
            max_age: Duration::from_secs(14 * DAY),
        },
        // To the funds: a fund down for days replays from its durable consumer.
        StreamSpec {
            base: "OUT",
            subjects: &["cnmas.out.v1.>"],
            max_age: Duration::from_secs(30 * DAY),
        },
        StreamSpec {
            base: "EVT_INTAKE",
            subjects: &["cnmas.evt.v1.intake.>"],
            max_age: Duration::from_secs(7 * DAY),
        },
        StreamSpec {
            base: "EVT_CONSENT",
            subjects: &["cnmas.evt.v1.consent.>"],
            max_age: Duration::from_secs(7 * DAY),
        },
        StreamSpec {
            base: "EVT_SCHEDULER",
            subjects: &["cnmas.evt.v1.scheduler.>"],
            max_age: Duration::from_secs(7 * DAY),
        },
        StreamSpec {
            base: "EVT_DIALER",
            subjects: &["cnmas.evt.v1.dialer.>"],
            max_age: Duration::from_secs(7 * DAY),
        },
        StreamSpec {
            base: "DLQ",
            subjects: &["cnmas.dlq.v1.>"],
            max_age: Duration::from_secs(30 * DAY),
        },
    ]
}

/// Creates every stream that does not exist yet. Storage is file (durable) unless `memory`.
pub async fn ensure(js: &jetstream::Context, ns: &Namespace, memory: bool) -> Result<(), BusError> {
    for spec in streams() {
        let config = stream::Config {
            name: ns.stream(spec.base),
            subjects: spec.subjects.iter().map(|s| ns.subject(s)).collect(),
            max_age: spec.max_age,
            storage: if memory {
                stream::StorageType::Memory
            } else {
                stream::StorageType::File
            },
            duplicate_window: Duration::from_secs(120),
            // Nobody may purge a stream or delete its messages: a client can aim a server
            // reply at the JetStream API (see deploy/nats/README.md), and results must survive.
            deny_purge: true,
            deny_delete: true,
            ..Default::default()
        };
        let mut stream = js
            .get_or_create_stream(config.clone())
            .await
            .map_err(BusError::nats)?;
        let current = stream.info().await.map_err(BusError::nats)?.config.clone();
        if !current.deny_purge || !current.deny_delete {
            js.update_stream(stream::Config {
                deny_purge: true,
                deny_delete: true,
                ..current
            })
            .await
            .map_err(BusError::nats)?;
        }
    }
    Ok(())
}

/// Deletes every stream of a namespace (tests clean up after themselves).
pub async fn delete(js: &jetstream::Context, ns: &Namespace) -> Result<(), BusError> {
    for spec in streams() {
        // A stream that is already gone is fine.
        let _ = js.delete_stream(ns.stream(spec.base)).await;
    }
    Ok(())
}

/// The name of the stream that captures a contract subject.
pub fn stream_for(ns: &Namespace, subject: &str) -> Option<String> {
    streams().into_iter().find_map(|s| {
        s.subjects
            .iter()
            .any(|p| subject.starts_with(p.trim_end_matches('>')))
            .then(|| ns.stream(s.base))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subject_kind_has_one_stream() {
        let ns = Namespace::default();
        assert_eq!(
            stream_for(&ns, "cnmas.in.v1.751.contact").as_deref(),
            Some("CNMAS_IN")
        );
        assert_eq!(
            stream_for(&ns, "cnmas.evt.v1.dialer.attempts_recorded").as_deref(),
            Some("CNMAS_EVT_DIALER")
        );
        assert_eq!(stream_for(&ns, "other.subject"), None);
    }
}
