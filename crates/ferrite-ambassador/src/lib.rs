//! `ferrite-ambassador`: a TCP proxy whose backends come from the store.
//!
//! The CoreOS walkthrough's ambassador pattern: a consumer links to a local
//! ambassador as if it were the service; the ambassador proxies every
//! connection to one of the backends the store lists under a key (the
//! `ip:port` values a registrator writes, or one comma-separated value),
//! round-robin, and follows the key through a watch so a backend that moves
//! is picked up without restarting anything.
//!
//! - [`backends`]: store state → backend list (pure).
//! - [`proxy`]: the listener, the [`proxy::Pool`] of backends and the copy
//!   loop. A swap replaces the list for *new* connections only: open ones
//!   keep their streams.
//! - [`follow`]: reads the key, then follows it with the client's
//!   `watch_stream`, feeding the pool.

pub mod backends;
pub mod follow;
pub mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrite_etcd_client::Client;

/// Default port, as ambassadord listens on.
pub const DEFAULT_PORT: u16 = 10000;

/// What the ambassador needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The store's client URLs.
    pub etcd_endpoints: Vec<String>,
    /// The key whose children (or comma-separated value) are the backends.
    pub key: String,
    /// Time limit for connecting to one backend before trying the next.
    pub connect_timeout: Duration,
    /// How long a connection waits for a backend when the store lists
    /// none (a move: the old one deregistered, the new one not yet
    /// registered) before it is closed.
    pub backend_wait: Duration,
}

/// Errors that stop the ambassador.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid store configuration")]
    Store(#[from] ferrite_etcd_client::Error),
    #[error("cannot accept connections on {addr}")]
    Accept {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Follows `config.key` and proxies connections accepted on `listener`
/// until `shutdown` resolves. `ready` is called once the first backend list
/// has been read (or the store found unreachable and the proxy started with
/// none, still retrying).
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
    ready: impl FnOnce() + Send,
) -> Result<(), Error> {
    let client = Client::new(&config.etcd_endpoints)?;
    let pool = Arc::new(proxy::Pool::default());
    let follower = follow::Follower::new(client, &config.key, pool.clone());
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let following = tokio::spawn(follower.run(first_tx));
    // The first read: the proxy starts with what the store says, not empty.
    let _ = first_rx.await;
    ready();
    let timeouts = proxy::Timeouts { connect: config.connect_timeout, backend_wait: config.backend_wait };
    let result = proxy::serve(listener, pool, timeouts, shutdown).await;
    following.abort();
    result
}
