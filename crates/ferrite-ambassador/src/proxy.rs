//! The TCP side: accept, pick a backend round-robin, connect (the next one
//! when a connect fails), copy both ways until either side closes.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::Error;

/// The current backends. Replacing the list affects only connections
/// accepted afterwards: an open connection owns its backend stream.
#[derive(Debug)]
pub struct Pool {
    backends: tokio::sync::watch::Sender<Arc<Vec<String>>>,
    next: AtomicUsize,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool { backends: tokio::sync::watch::Sender::new(Arc::new(Vec::new())), next: AtomicUsize::new(0) }
    }
}

impl Pool {
    pub fn replace(&self, backends: Vec<String>) {
        self.backends.send_replace(Arc::new(backends));
    }

    pub fn backends(&self) -> Arc<Vec<String>> {
        self.backends.borrow().clone()
    }

    /// [`Pool::candidates`], waiting up to `wait` for a backend when there
    /// is none (a backend that moves is deregistered before its successor
    /// is registered; a connection arriving in between waits for it).
    pub async fn candidates_within(&self, wait: Duration) -> Vec<String> {
        let mut changes = self.backends.subscribe();
        if self.backends().is_empty() && !wait.is_zero() {
            let _ = tokio::time::timeout(wait, changes.wait_for(|b| !b.is_empty())).await;
        }
        self.candidates()
    }

    /// The backends to try for one connection, in order: round-robin's
    /// pick first, then the others after it.
    pub fn candidates(&self) -> Vec<String> {
        let list = self.backends();
        if list.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % list.len();
        list.iter().cycle().skip(start).take(list.len()).cloned().collect()
    }
}

/// Accepts on `listener` until `shutdown` resolves; every connection is
/// proxied on its own task (and outlives the shutdown of the listener
/// only as long as the runtime does).
pub async fn serve(
    listener: TcpListener,
    pool: Arc<Pool>,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let addr = listener.local_addr().map_err(|source| Error::Accept { addr: ([0, 0, 0, 0], 0).into(), source })?;
    tracing::info!(%addr, "proxying");
    tokio::pin!(shutdown);
    loop {
        let (client, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                // Out of file descriptors or a connection reset before
                // accept: the listener itself is fine.
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "accept failed; going on");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(source) => return Err(Error::Accept { addr, source }),
            },
        };
        let pool = pool.clone();
        tokio::spawn(async move {
            let candidates = pool.candidates_within(timeouts.backend_wait).await;
            proxy(client, peer, candidates, timeouts.connect).await;
        });
    }
}

/// How long a connection waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For one backend to accept, before trying the next.
    pub connect: Duration,
    /// For a backend to appear in the store when there is none.
    pub backend_wait: Duration,
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock) || e.raw_os_error() == Some(24)
}

async fn proxy(mut client: TcpStream, peer: std::net::SocketAddr, candidates: Vec<String>, connect_timeout: Duration) {
    if candidates.is_empty() {
        tracing::warn!(%peer, "no backend in the store; closing the connection");
        return;
    }
    for backend in &candidates {
        let connected = match tokio::time::timeout(connect_timeout, TcpStream::connect(backend.as_str())).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::warn!(%peer, %backend, error = %e, "cannot connect to backend; trying the next");
                continue;
            }
            Err(_) => {
                tracing::warn!(%peer, %backend, timeout = ?connect_timeout, "connecting to backend timed out; trying the next");
                continue;
            }
        };
        let mut upstream = connected;
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        tracing::debug!(%peer, %backend, "connected");
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((sent, received)) => tracing::debug!(%peer, %backend, sent, received, "closed"),
            Err(e) => tracing::debug!(%peer, %backend, error = %e, "connection ended with an error"),
        }
        return;
    }
    tracing::warn!(%peer, tried = candidates.len(), "no backend accepted a connection; closing the connection");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_rotate_and_cover_every_backend() {
        let pool = Pool::default();
        assert!(pool.candidates().is_empty());
        pool.replace(vec!["a:1".into(), "b:1".into(), "c:1".into()]);
        assert_eq!(pool.candidates(), ["a:1", "b:1", "c:1"]);
        assert_eq!(pool.candidates(), ["b:1", "c:1", "a:1"]);
        assert_eq!(pool.candidates(), ["c:1", "a:1", "b:1"]);
        assert_eq!(pool.candidates(), ["a:1", "b:1", "c:1"]);
    }

    #[tokio::test]
    async fn a_connection_waits_for_a_backend_to_appear() {
        let pool = Arc::new(Pool::default());
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.candidates_within(Duration::from_secs(30)).await }
        });
        tokio::task::yield_now().await;
        pool.replace(vec!["a:1".into()]);
        assert_eq!(waiting.await.unwrap(), ["a:1"]);
        // Nothing appears: empty once the wait is over.
        pool.replace(Vec::new());
        assert!(pool.candidates_within(Duration::from_millis(10)).await.is_empty());
    }
}
