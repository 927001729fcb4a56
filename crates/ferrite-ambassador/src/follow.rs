//! Following the backends' key in the store.

use std::sync::Arc;
use std::time::Duration;

use ferrite_etcd_api::v2::ErrorCode;
use ferrite_etcd_client::{Client, GetOptions, WatchEvent, WatchOptions};
use futures::StreamExt;

use crate::backends::Leaves;
use crate::proxy::Pool;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Reads the key, then applies every change to the pool.
#[derive(Debug)]
pub struct Follower {
    client: Client,
    key: String,
    pool: Arc<Pool>,
    leaves: Leaves,
}

impl Follower {
    pub fn new(client: Client, key: &str, pool: Arc<Pool>) -> Follower {
        Follower { client, key: key.to_owned(), pool, leaves: Leaves::default() }
    }

    /// Runs until dropped. `first` is sent once the first read is done.
    pub async fn run(mut self, first: tokio::sync::oneshot::Sender<()>) {
        let index = self.read_until_it_answers().await;
        let _ = first.send(());
        let options = WatchOptions { recursive: true, wait_index: Some(index + 1) };
        let mut changes = Box::pin(self.client.watch_stream(&self.key, options));
        while let Some(item) = changes.next().await {
            match item {
                Ok(WatchEvent::Change(response)) => self.leaves.apply(response.event.action, &response.event.node),
                Ok(WatchEvent::Resync { node, .. }) => self.leaves = Leaves::from_node(node.as_ref()),
                // The stream logs and backs off itself, and resumes from
                // where it was; the pool keeps the last known backends.
                Err(_) => continue,
            }
            self.publish();
        }
    }

    /// The first read, retried with backoff while the store is unreachable.
    /// Returns the index to watch from.
    async fn read_until_it_answers(&mut self) -> u64 {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let read = GetOptions { recursive: true, sorted: true, quorum: true };
            let (node, index) = match self.client.get(&self.key, &read).await {
                Ok(response) => (Some(response.event.node), response.headers.etcd_index),
                Err(ferrite_etcd_client::Error::Api(e)) if e.code() == Some(ErrorCode::KeyNotFound) => (None, e.index),
                Err(e) => {
                    tracing::warn!(key = %self.key, error = %ferrite_daemon::error_chain(&e), retry_in = ?backoff, "cannot read the backends");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            self.leaves = Leaves::from_node(node.as_ref());
            self.publish();
            return index;
        }
    }

    fn publish(&self) {
        let (backends, rejected) = self.leaves.backends();
        for r in rejected {
            tracing::warn!(key = %r.key, entry = %r.entry, "ignoring a value that is not host:port");
        }
        if *self.pool.backends() != backends {
            if backends.is_empty() {
                tracing::warn!(key = %self.key, "no backends in the store");
            } else {
                tracing::info!(key = %self.key, backends = %backends.join(","), "backends");
            }
            self.pool.replace(backends);
        }
    }
}
