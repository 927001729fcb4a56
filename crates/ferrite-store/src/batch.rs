//! A queue that hands requests on in batches, with a bounded number of
//! batches outstanding: the shape of both the leader's [`Proposer`] and a
//! follower's [`Forwarder`].
//!
//! A request that finds a free slot goes at once, alone: no timer, no added
//! latency when idle. While every slot is taken, requests pile up and the
//! next free slot takes all of them (up to a limit) as one batch.
//!
//! [`Proposer`]: crate::proposer::Proposer
//! [`Forwarder`]: crate::forwarder::Forwarder

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

/// A queued request and where its answer goes.
pub struct Pending<Req, Out> {
    pub request: Req,
    pub reply: oneshot::Sender<Out>,
}

impl<Req: std::fmt::Debug, Out> std::fmt::Debug for Pending<Req, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("request", &self.request).finish_non_exhaustive()
    }
}

/// What a batch still has to do once handed on; its slot frees when it ends.
pub type Completion = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The sending side of a batching queue. Cheap to share; the queue's task
/// ends when the last sender is dropped.
#[derive(Debug)]
pub struct Batcher<Req, Out> {
    tx: mpsc::UnboundedSender<Pending<Req, Out>>,
}

impl<Req: Send + 'static, Out: Send + 'static> Batcher<Req, Out> {
    /// Starts the queue's task. `dispatch` runs in queue order, one batch at
    /// a time (so what it does before returning keeps that order); the
    /// [`Completion`] it returns runs on its own, holding one of the
    /// `in_flight` slots until it ends.
    pub fn spawn<D, F>(in_flight: usize, max_batch: usize, mut dispatch: D) -> Batcher<Req, Out>
    where
        D: FnMut(Vec<Pending<Req, Out>>) -> F + Send + 'static,
        F: Future<Output = Completion> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Pending<Req, Out>>();
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(in_flight));
            loop {
                // Take a slot before looking at the queue: while every slot
                // is taken, requests pile up there and make the next batch.
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
                let Some(first) = rx.recv().await else { return };
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(pending) => batch.push(pending),
                        Err(_) => break,
                    }
                }
                // Callers that went away need nothing done.
                batch.retain(|p| !p.reply.is_closed());
                if batch.is_empty() {
                    continue;
                }
                let completion = dispatch(batch).await;
                tokio::spawn(async move {
                    completion.await;
                    drop(slot);
                });
            }
        });
        Batcher { tx }
    }

    /// Queues `request` and waits for its answer; `None` if the queue's
    /// task is gone or dropped the request unanswered.
    pub async fn submit(&self, request: Req) -> Option<Out> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Pending { request, reply }).ok()?;
        rx.await.ok()
    }
}

/// Sends every caller in `replies` its own copy of `outcome`.
pub fn answer_all<Out>(replies: impl IntoIterator<Item = oneshot::Sender<Out>>, outcome: impl Fn() -> Out) {
    for reply in replies {
        // The caller may have gone away; nobody else needs the answer.
        let _ = reply.send(outcome());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn a_lone_request_goes_alone_and_queued_ones_share_the_next_slot() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let seen = Arc::clone(&sizes);
        let batcher: Batcher<u32, u32> = Batcher::spawn(1, 100, move |batch: Vec<Pending<u32, u32>>| {
            seen.lock().unwrap().push(batch.len());
            let mut release = release_rx.clone();
            std::future::ready(Box::pin(async move {
                // The first batch holds the only slot until released.
                let _ = release.wait_for(|go| *go).await;
                for p in batch {
                    let _ = p.reply.send(p.request * 10);
                }
            }) as Completion)
        });
        let batcher = Arc::new(batcher);
        let first = tokio::spawn({
            let b = Arc::clone(&batcher);
            async move { b.submit(1).await }
        });
        while sizes.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let rest: Vec<_> = (2..=5)
            .map(|n| {
                let b = Arc::clone(&batcher);
                tokio::spawn(async move { b.submit(n).await })
            })
            .collect();
        // Let all four queue behind the held slot.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        release_tx.send(true).unwrap();
        assert_eq!(first.await.unwrap(), Some(10));
        for (n, handle) in (2..=5).zip(rest) {
            assert_eq!(handle.await.unwrap(), Some(n * 10));
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1, 4]);
    }
}
