//! A one-member ferrite-store in this process, on loopback ports.

use std::net::TcpListener;
use std::time::Duration;

use ferrite_etcd_client::Client;
use ferrite_store::config::{ClusterState, InitialMember, Settings};
use ferrite_store::server::{start, Embed, Started};

pub struct Store {
    pub started: Option<Started>,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Store {
    pub async fn start() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
        let url = |l: &TcpListener| format!("http://{}", l.local_addr().unwrap());
        let settings = Settings {
            name: "fleet-it".into(),
            data_dir: dir.path().join("store"),
            listen_client: vec![client.local_addr().unwrap()],
            advertise_client_urls: vec![url(&client)],
            listen_peer: vec![peer.local_addr().unwrap()],
            advertise_peer_urls: vec![url(&peer)],
            initial_cluster: vec![InitialMember { name: "fleet-it".into(), peer_urls: vec![url(&peer)] }],
            cluster_state: ClusterState::New,
            cluster_token: "fleet-it".into(),
            discovery: None,
            heartbeat: Duration::from_millis(50),
            election_timeout: Duration::from_millis(300),
            snapshot_count: 10_000,
        };
        let client_url = url(&client);
        let embed = Embed { faults: Default::default(), listeners: Some((vec![client], vec![peer])) };
        let started = start(settings, embed).await.unwrap();
        let store = Store { started: Some(started), url: client_url, _dir: dir };
        // Wait until it has elected itself and serves writes.
        let client = store.client();
        for _ in 0..100 {
            if client.set("/ready", "1", &Default::default()).await.is_ok() {
                return store;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the store never served a write");
    }

    pub fn client(&self) -> Client {
        Client::new([self.url.as_str()]).unwrap()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(started) = self.started.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(started.stop());
            }
        }
    }
}
