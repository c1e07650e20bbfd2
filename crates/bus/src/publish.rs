//! Typed publishing with `Nats-Msg-Id` and a window of outstanding acks.

use crate::{BusError, Namespace};
use async_nats::jetstream::{self, context::PublishAckFuture};
use async_nats::HeaderMap;
use bytes::Bytes;
use std::collections::VecDeque;

/// Publishes contract subjects under a namespace.
#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    ns: Namespace,
}

/// How many publishes may await their JetStream ack at once.
const WINDOW: usize = 1024;

impl Publisher {
    pub fn new(js: jetstream::Context, ns: Namespace) -> Self {
        Publisher { js, ns }
    }

    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    fn headers(event_id: &str, traceparent: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, event_id);
        match traceparent {
            Some(tp) => headers.insert("traceparent", tp),
            None => crate::trace::inject_current(&mut headers),
        }
        headers
    }

    async fn send(
        &self,
        subject: &str,
        event_id: &str,
        traceparent: Option<&str>,
        payload: Bytes,
    ) -> Result<PublishAckFuture, BusError> {
        self.js
            .publish_with_headers(
                self.ns.subject(subject),
                Self::headers(event_id, traceparent),
                payload,
            )
            .await
            .map_err(BusError::nats)
    }

    /// Publishes one message and waits for JetStream to store it.
    pub async fn publish<M: prost::Message>(
        &self,
        subject: &str,
        event_id: &str,
        message: &M,
    ) -> Result<(), BusError> {
        self.send(
            subject,
            event_id,
            None,
            Bytes::from(message.encode_to_vec()),
        )
        .await?
        .await
        .map_err(BusError::nats)?;
        Ok(())
    }

    /// Publishes many messages keeping up to a window of acks outstanding, never one await per
    /// message. Each item is (contract subject, event id, traceparent, payload).
    pub async fn publish_all<I>(&self, items: I) -> Result<usize, BusError>
    where
        I: IntoIterator<Item = (String, String, Option<String>, Bytes)>,
    {
        let mut pending: VecDeque<PublishAckFuture> = VecDeque::new();
        let mut count = 0;
        for (subject, event_id, traceparent, payload) in items {
            if pending.len() >= WINDOW {
                if let Some(ack) = pending.pop_front() {
                    ack.await.map_err(BusError::nats)?;
                }
            }
            pending.push_back(
                self.send(&subject, &event_id, traceparent.as_deref(), payload)
                    .await?,
            );
            count += 1;
        }
        for ack in pending {
            ack.await.map_err(BusError::nats)?;
        }
        Ok(count)
    }
}
