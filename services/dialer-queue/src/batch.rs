//! The batches of the dialer's writers (leases, outcomes): whatever waits when a batch starts.

use tokio::sync::mpsc;
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
