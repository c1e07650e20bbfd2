//! The batches of the dialer's writers (leases, outcomes): whatever waits when a batch starts.

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Waits for the first arrival, then takes every one already waiting, up to `max`: a quiet
/// service handles each arrival alone and at once, a busy one the backlog of one batch's time.
/// `None` once the service stops or every sender is gone.
pub async fn next_batch<T>(
    arrivals: &mut mpsc::Receiver<T>,
    max: usize,
    shutdown: &CancellationToken,
) -> Option<Vec<T>> {
    let first = tokio::select! {
        p = arrivals.recv() => p?,
        _ = shutdown.cancelled() => return None,
    };
    let mut batch = vec![first];
    while batch.len() < max {
        match arrivals.try_recv() {
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
    Some(batch)
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the writer has stopped")]
    Stopped,
    #[error("the batch failed: {0}")]
    Database(String),
}

/// Hands an arrival, built around the channel of its answer, to its writer and waits for the
/// answer of its batch.
pub async fn submit<T, R>(
    writer: &mpsc::Sender<T>,
    arrival: impl FnOnce(oneshot::Sender<Result<R, String>>) -> T,
) -> Result<R, BatchError> {
    let (answer, reply) = oneshot::channel();
    writer
        .send(arrival(answer))
        .await
        .map_err(|_| BatchError::Stopped)?;
    reply
        .await
        .map_err(|_| BatchError::Stopped)?
        .map_err(BatchError::Database)
}
