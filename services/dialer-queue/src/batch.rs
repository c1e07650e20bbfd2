//! The batches of the dialer's writers (leases, outcomes).

use std::time::Duration;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

/// Requests waiting as a writer becomes free from which it counts as busy. One request that
/// came during the previous batch is not load yet: at 20 agents, gathering for it measured
/// slower (decision 0020).
const BUSY: usize = 2;

/// The next batch, up to `max` arrivals (decision 0020). A writer that becomes free with fewer
/// than [`BUSY`] requests waiting handles the first at once, with whatever else already waits.
/// A busy one also gathers what arrives within `gather`: one transaction and one commit serve
/// every agent that asked in that time. `None` once the service stops or every sender is gone.
pub async fn next_batch<T>(
    arrivals: &mut mpsc::Receiver<T>,
    max: usize,
    gather: Duration,
    shutdown: &CancellationToken,
) -> Option<Vec<T>> {
    if shutdown.is_cancelled() {
        return None;
    }
    let gather = if arrivals.len() >= BUSY {
        gather
    } else {
        Duration::ZERO
    };
    let first = tokio::select! {
        p = arrivals.recv() => p?,
        _ = shutdown.cancelled() => return None,
    };
    let until = Instant::now() + gather;
    let mut batch = vec![first];
    while batch.len() < max {
        match arrivals.try_recv() {
            Ok(p) => batch.push(p),
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) if gather.is_zero() => break,
            Err(TryRecvError::Empty) => match timeout_at(until, arrivals.recv()).await {
                Ok(Some(p)) => batch.push(p),
                Ok(None) | Err(_) => break,
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The batches of arrivals at 0, 3 and 13 ms (tokio's clock is paused, so the times are
    /// exact), with `waiting` arrivals already in the channel at 0.
    async fn batches(waiting: &[u32], gather: Duration) -> Vec<Vec<u32>> {
        let (send, mut arrivals) = mpsc::channel(8);
        for n in waiting {
            send.send(*n).await.expect("room in the channel");
        }
        tokio::spawn(async move {
            for (n, pause) in [(1, 3), (2, 10), (3, 0)] {
                send.send(n).await.expect("the writer listens");
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        });
        let shutdown = CancellationToken::new();
        let mut got = Vec::new();
        while let Some(batch) = next_batch(&mut arrivals, 8, gather, &shutdown).await {
            got.push(batch);
        }
        got
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_writer_handles_each_arrival_at_once() {
        let gather = Duration::from_millis(5);
        assert_eq!(batches(&[], gather).await, [vec![1], vec![2], vec![3]]);
        // One request waiting is not load yet.
        assert_eq!(
            batches(&[0], gather).await,
            [vec![0], vec![1], vec![2], vec![3]]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_writer_gathers_what_arrives_within_its_gather() {
        let gather = |ms| Duration::from_millis(ms);
        // 0 and 9 wait; 1 comes at once and 2 3 ms later, within 5 ms; 3 comes 13 ms later.
        let waiting = [0, 9];
        assert_eq!(
            batches(&waiting, gather(5)).await,
            [vec![0, 9, 1, 2], vec![3]]
        );
        assert_eq!(batches(&waiting, gather(20)).await, [vec![0, 9, 1, 2, 3]]);
        // Without a gather, only what already waits.
        assert_eq!(
            batches(&waiting, Duration::ZERO).await,
            [vec![0, 9], vec![1], vec![2], vec![3]]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_stops_at_its_size_and_none_comes_after_the_last() {
        let (send, mut arrivals) = mpsc::channel(8);
        for n in 0..5 {
            send.send(n).await.expect("room in the channel");
        }
        drop(send);
        let shutdown = CancellationToken::new();
        let gather = Duration::from_secs(1);
        for expected in [Some(vec![0, 1, 2]), Some(vec![3, 4]), None] {
            assert_eq!(
                next_batch(&mut arrivals, 3, gather, &shutdown).await,
                expected
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_writer_takes_nothing_more() {
        let (send, mut arrivals) = mpsc::channel(8);
        send.send(0).await.expect("room in the channel");
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        assert_eq!(
            next_batch(&mut arrivals, 3, Duration::ZERO, &shutdown).await,
            None
        );
    }
}
