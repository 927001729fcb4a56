//! A one-member store in this process, on loopback ports, for the tests of
//! what is built on the store (the scheduler, the sidekicks). Test
//! support: it panics on what would be a broken test environment.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use ferrite_etcd_client::{Client, SetOptions};

use crate::config::{ClusterState, InitialMember, Settings};
use crate::server::{start, Embed, Started};

/// A running one-member cluster; stopped when dropped.
#[derive(Debug)]
pub struct OneMember {
    started: Option<Started>,
    url: String,
    _dir: tempfile::TempDir,
}

impl OneMember {
    /// Starts a member on ports of its own and returns once it serves writes.
    pub async fn start() -> OneMember {
        OneMember::start_on(TcpListener::bind("127.0.0.1:0").expect("bind a loopback port")).await
    }

    /// Starts a member serving clients on a listener the test bound
    /// beforehand (to know the address before the store runs).
    pub async fn start_on(client: TcpListener) -> OneMember {
        let dir = tempfile::tempdir().expect("create a temporary data directory");
        let peer = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let url = |l: &TcpListener| format!("http://{}", l.local_addr().expect("a bound listener's address"));
        let settings = Settings {
            name: "solo".into(),
            data_dir: dir.path().join("solo"),
            listen_client: vec![client.local_addr().expect("a bound listener's address")],
            advertise_client_urls: vec![url(&client)],
            listen_peer: vec![peer.local_addr().expect("a bound listener's address")],
            advertise_peer_urls: vec![url(&peer)],
            initial_cluster: vec![InitialMember { name: "solo".into(), peer_urls: vec![url(&peer)] }],
            cluster_state: ClusterState::New,
            cluster_token: "testing".into(),
            discovery: None,
            heartbeat: Duration::from_millis(50),
            election_timeout: Duration::from_millis(300),
            snapshot_count: 10_000,
            log_segment_bytes: 16 << 20,
        };
        let client_url = url(&client);
        let embed = Embed { listeners: Some((vec![client], vec![peer])), ..Embed::default() };
        let started = start(settings, embed).await.expect("start a one-member store");
        let member = OneMember { started: Some(started), url: client_url, _dir: dir };
        // Ready once it has elected itself and commits a write.
        let client = member.client();
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.set("/ready", "1", &SetOptions::default()).await.is_err() {
            assert!(Instant::now() < deadline, "the one-member store never served a write");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        member
    }

    /// The client URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// An etcd client of this member.
    pub fn client(&self) -> Client {
        Client::new([self.url.as_str()]).expect("a client of a loopback URL")
    }
}

impl Drop for OneMember {
    fn drop(&mut self) {
        if let Some(started) = self.started.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(started.stop());
            }
        }
    }
}
