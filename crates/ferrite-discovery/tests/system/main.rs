//! System tier of ferrite-discovery: the real binary in front of a real
//! etcd 3.4, real etcd members bootstrapping through it, and the client's
//! `join()` through it. Everything on 127.0.0.1; every wait is bounded.
//!
//! `cargo test -p ferrite-discovery --features system-tests --test system`

mod bootstrap;
mod join;
mod protocol;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrite_testkit::{free_port, Cluster, Process, ServerKind};

/// A backing etcd and ferrite-discovery in front of it, as processes.
#[derive(Debug)]
pub struct Service {
    // Declared first so the service stops before its store.
    pub process: Process,
    pub backing: Cluster,
    pub url: String,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// The ferrite-store binary built beside this test (the test command
/// builds every binary of the workspace before the system tier).
pub fn ferrite_store_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/system-<hash> -> target/<profile>/ferrite-store
    let bin = exe.parent().and_then(|deps| deps.parent()).unwrap().join("ferrite-store");
    assert!(bin.exists(), "{} is missing: run `cargo build -p ferrite-store` first", bin.display());
    bin
}

impl Service {
    pub async fn start() -> Service {
        Service::start_on(ServerKind::Etcd).await
    }

    /// The service in front of a one-member store of the given kind.
    pub async fn start_on(kind: ServerKind) -> Service {
        let backing = match kind {
            ServerKind::Etcd => Cluster::start(ServerKind::Etcd, 1).await.unwrap(),
            ServerKind::Ferrite => {
                Cluster::builder(ServerKind::Ferrite).members(1).ferrite_bin(ferrite_store_bin()).start().await.unwrap()
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferrite-discovery"));
        command
            .args(["--listen-addr", &format!("127.0.0.1:{port}")])
            .args(["--host", &url])
            // The endpoints come from the environment, as a unit file would
            // give them.
            .env("FERRITE_DISCOVERY_ETCD_ENDPOINTS", backing.endpoints())
            .env("RUST_LOG", "info");
        let mut process = Process::spawn("ferrite-discovery", command, &dir.path().join("discovery.log")).unwrap();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(process.is_running(), "ferrite-discovery exited:\n{}", process.log_tail(30));
            if let Ok(response) = http.get(format!("{url}/health")).send().await {
                if response.text().await.unwrap_or_default() == "OK" {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "ferrite-discovery not healthy:\n{}", process.log_tail(30));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Service { process, backing, url, http, _dir: dir }
    }

    /// `GET /new?size=N`: the token URL.
    pub async fn new_token(&self, size: u32) -> String {
        let response = self.http.get(format!("{}/new?size={size}", self.url)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// A client of the backing store itself.
    pub fn store(&self) -> ferrite_etcd_client::Client {
        ferrite_etcd_client::Client::new([self.backing.member(0).client_url()]).unwrap()
    }
}

/// A temp dir for one test's members.
pub fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix("ferrite-discovery-test-").tempdir().unwrap();
    let path = dir.path().to_owned();
    (dir, path)
}
