//! System tier of ferrite-etcd-client: every operation against real etcd
//! 3.4 (`--enable-v2`) processes started by ferrite-testkit on loopback.
//!
//! `cargo test -p ferrite-etcd-client --features system-tests --test system`

mod discovery;
mod keys;
mod members;
mod watch;

use std::time::Duration;

use ferrite_testkit::{Cluster, ServerKind};

/// A one-member etcd and a client for it.
async fn etcd() -> (Cluster, ferrite_etcd_client::Client) {
    let cluster = Cluster::start(ServerKind::Etcd, 1).await.unwrap();
    let client = ferrite_etcd_client::Client::new([cluster.member(0).client_url()]).unwrap();
    (cluster, client)
}

/// Bounds every wait in these tests.
async fn within<T>(what: &str, limit: Duration, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: nothing within {limit:?}"),
    }
}
