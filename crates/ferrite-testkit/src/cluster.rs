//! etcd and ferrite-store clusters on loopback.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::ports::free_port;
use crate::process::{log_tail, Process};

/// How long a member may take to report itself healthy after it starts.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Cluster::add_member`] retries while the cluster refuses to
/// reconfigure.
const RECONFIGURE_TIMEOUT: Duration = Duration::from_secs(15);

/// Which server a cluster runs: real etcd, or ferrite-store with etcd's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Etcd,
    Ferrite,
}

impl ServerKind {
    /// Parses `etcd` or `ferrite`.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "etcd" => Ok(Self::Etcd),
            "ferrite" => Ok(Self::Ferrite),
            other => bail!("unknown server kind {other:?}: expected \"etcd\" or \"ferrite\""),
        }
    }

    /// The kind named by environment variable `var`, or `default` when unset.
    pub fn from_env(var: &str, default: Self) -> Result<Self> {
        match std::env::var(var) {
            Ok(text) => Self::parse(&text).with_context(|| format!("in ${var}")),
            Err(std::env::VarError::NotPresent) => Ok(default),
            Err(e) => Err(e).with_context(|| format!("reading ${var}")),
        }
    }
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Etcd => "etcd",
            Self::Ferrite => "ferrite",
        })
    }
}

/// One member: its name, its ports and (while it runs) its process.
#[derive(Debug)]
pub struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    process: Option<Process>,
}

impl Member {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }

    /// `http://127.0.0.1:<client port>`
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:<peer port>`
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The running process, if the member has been started and not killed.
    pub fn process(&self) -> Option<&Process> {
        self.process.as_ref()
    }

    fn process_mut(&mut self) -> Result<&mut Process> {
        let name = &self.name;
        self.process.as_mut().with_context(|| format!("member {name} is not running"))
    }
}

/// Options for [`Cluster`]; see [`Cluster::builder`].
#[derive(Debug)]
pub struct ClusterBuilder {
    kind: ServerKind,
    size: usize,
    ferrite_bin: Option<PathBuf>,
}

impl ClusterBuilder {
    /// Number of members (default 1).
    pub fn members(mut self, size: usize) -> Self {
        self.size = size;
        self
    }

    /// The ferrite-store binary; without it `$FERRITE_STORE_BIN` is used,
    /// else the workspace's own build beside the test (`target/<profile>`).
    /// Tests inside the ferrite-store crate pass
    /// `env!("CARGO_BIN_EXE_ferrite-store")`.
    pub fn ferrite_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.ferrite_bin = Some(path.into());
        self
    }

    /// Starts every member and waits until each reports itself healthy.
    pub async fn start(self) -> Result<Cluster> {
        anyhow::ensure!(self.size > 0, "a cluster needs at least one member");
        let program = match self.kind {
            ServerKind::Etcd => {
                std::env::var_os("ETCD_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("etcd"))
            }
            ServerKind::Ferrite => match self.ferrite_bin {
                Some(path) => path,
                None => std::env::var_os("FERRITE_STORE_BIN")
                    .map(PathBuf::from)
                    .or_else(|| crate::images::built_bin("ferrite-store"))
                    .context(
                        "the ferrite-store binary: set $FERRITE_STORE_BIN, pass it to ClusterBuilder::ferrite_bin, \
                         or run `cargo build --workspace --bins` first",
                    )?,
            },
        };
        static CLUSTERS: AtomicUsize = AtomicUsize::new(0);
        let serial = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let root = tempfile::Builder::new()
            .prefix(&format!("ferrite-testkit-{}-", self.kind))
            .tempdir()
            .context("creating the cluster's temp dir")?;
        let mut cluster = Cluster {
            members: Vec::new(),
            kind: self.kind,
            program,
            token: format!("ferrite-test-{}-{serial}", std::process::id()),
            http: reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build()?,
            root,
        };
        for _ in 0..self.size {
            let member = cluster.reserve_member()?;
            cluster.members.push(member);
        }
        let initial_cluster = cluster.initial_cluster(None);
        let started = async {
            for index in 0..cluster.members.len() {
                cluster.spawn(index, &initial_cluster, "new")?;
            }
            for index in 0..cluster.members.len() {
                cluster.wait_healthy(index).await?;
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = started {
            // The error names log files: keep them.
            cluster.root.disable_cleanup(true);
            return Err(e);
        }
        Ok(cluster)
    }
}

/// A cluster of real processes. Dropping it kills every member; if a test is
/// failing at that moment the data dirs and logs are kept and their paths
/// printed.
#[derive(Debug)]
pub struct Cluster {
    // Declared before `root` so the processes die before their dirs go.
    members: Vec<Member>,
    kind: ServerKind,
    program: PathBuf,
    token: String,
    http: reqwest::Client,
    root: TempDir,
}

impl Cluster {
    pub fn builder(kind: ServerKind) -> ClusterBuilder {
        ClusterBuilder { kind, size: 1, ferrite_bin: None }
    }

    /// Starts an n-member cluster of `kind` (ferrite-store from `$FERRITE_STORE_BIN`).
    pub async fn start(kind: ServerKind, size: usize) -> Result<Self> {
        Self::builder(kind).members(size).start().await
    }

    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn member(&self, index: usize) -> &Member {
        &self.members[index]
    }

    /// Client URLs of the running members, comma-separated (etcdctl's `--endpoints`).
    pub fn endpoints(&self) -> String {
        let urls: Vec<String> = self.members.iter().filter(|m| m.process.is_some()).map(Member::client_url).collect();
        urls.join(",")
    }

    /// SIGKILL one member; its data dir stays for [`Cluster::restart`].
    pub fn kill(&mut self, index: usize) -> Result<()> {
        if let Some(mut process) = self.members[index].process.take() {
            process.kill()?;
        }
        Ok(())
    }

    /// SIGSTOP one member.
    pub fn pause(&mut self, index: usize) -> Result<()> {
        self.members[index].process_mut()?.pause()
    }

    /// SIGCONT one member.
    pub fn resume(&mut self, index: usize) -> Result<()> {
        self.members[index].process_mut()?.resume()
    }

    /// Kills one member (if it runs) and starts it again on its data dir,
    /// waiting until it is healthy.
    pub async fn restart(&mut self, index: usize) -> Result<()> {
        self.kill(index)?;
        let initial_cluster = self.initial_cluster(None);
        self.spawn(index, &initial_cluster, "existing")?;
        self.wait_healthy(index).await
    }

    /// Kills every member, starts them all again on their data dirs, then
    /// waits until each is healthy. (Restarting one at a time cannot work
    /// once all are down: a lone member has no quorum to become healthy.)
    pub async fn restart_all(&mut self) -> Result<()> {
        for index in 0..self.members.len() {
            self.kill(index)?;
        }
        let initial_cluster = self.initial_cluster(None);
        for index in 0..self.members.len() {
            self.spawn(index, &initial_cluster, "existing")?;
        }
        for index in 0..self.members.len() {
            self.wait_healthy(index).await?;
        }
        Ok(())
    }

    /// Allocates the name, ports and data dir of a member that is not part of
    /// the cluster yet. Announce it (`etcdctl member add`, `POST /v2/members`),
    /// then pass it to [`Cluster::start_member`].
    pub fn reserve_member(&self) -> Result<Member> {
        let name = format!("n{}", self.members.len() + 1);
        let data_dir = self.root.path().join(&name);
        std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        Ok(Member {
            log_path: self.root.path().join(format!("{name}.log")),
            data_dir: data_dir.join("data"),
            client_port: free_port()?,
            peer_port: free_port()?,
            name,
            process: None,
        })
    }

    /// Starts an announced member with `--initial-cluster-state existing`
    /// and waits until it is healthy. Returns its index.
    pub async fn start_member(&mut self, member: Member) -> Result<usize> {
        let initial_cluster = self.initial_cluster(Some(&member));
        self.members.push(member);
        let index = self.members.len() - 1;
        self.spawn(index, &initial_cluster, "existing")?;
        self.wait_healthy(index).await?;
        Ok(index)
    }

    /// Announces a new member through `POST /v2/members` on the first running
    /// member (retrying while it answers 5xx), then starts it. Returns its index.
    pub async fn add_member(&mut self) -> Result<usize> {
        let member = self.reserve_member()?;
        let endpoint = self
            .members
            .iter()
            .find(|m| m.process.is_some())
            .context("no running member to add a member through")?
            .client_url();
        // etcd refuses reconfiguration (500, "unhealthy cluster") until every
        // member has been connected for 5 s, e.g. right after a restart.
        let deadline = Instant::now() + RECONFIGURE_TIMEOUT;
        loop {
            let response = self
                .http
                .post(format!("{endpoint}/v2/members"))
                .json(&serde_json::json!({ "peerURLs": [member.peer_url()] }))
                .send()
                .await
                .with_context(|| format!("POST {endpoint}/v2/members"))?;
            let status = response.status();
            let body = response.text().await?;
            if status == reqwest::StatusCode::CREATED {
                break;
            }
            anyhow::ensure!(
                status.is_server_error() && Instant::now() < deadline,
                "adding member {} through {endpoint}: {status}: {body}",
                member.name
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.start_member(member).await
    }

    /// Polls `/health` until the member says `{"health":"true"}`.
    pub async fn wait_healthy(&mut self, index: usize) -> Result<()> {
        let deadline = Instant::now() + HEALTH_TIMEOUT;
        let url = format!("{}/health", self.members[index].client_url());
        loop {
            let member = &mut self.members[index];
            let process = member.process_mut()?;
            if let Some(status) = process.exit_status() {
                bail!(
                    "{} exited ({status}) before becoming healthy; log {}:\n{}",
                    member.name,
                    member.log_path.display(),
                    log_tail(&member.log_path, 30)
                );
            }
            let last = match self.http.get(&url).send().await {
                Ok(response) => {
                    let text = response.text().await.unwrap_or_default();
                    let healthy = serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| v["health"] == "true");
                    if healthy {
                        return Ok(());
                    }
                    text
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                let member = &self.members[index];
                bail!(
                    "{} ({}) not healthy after {HEALTH_TIMEOUT:?}; last answer: {last}; log {}:\n{}",
                    member.name,
                    url,
                    member.log_path.display(),
                    log_tail(&member.log_path, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `n1=http://127.0.0.1:P1,...` for every member, plus `extra`.
    fn initial_cluster(&self, extra: Option<&Member>) -> String {
        let entries: Vec<String> =
            self.members.iter().chain(extra).map(|m| format!("{}={}", m.name, m.peer_url())).collect();
        entries.join(",")
    }

    fn spawn(&mut self, index: usize, initial_cluster: &str, state: &str) -> Result<()> {
        let member = &self.members[index];
        let mut command = Command::new(&self.program);
        command
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--listen-client-urls", &member.client_url()])
            .args(["--advertise-client-urls", &member.client_url()])
            .args(["--listen-peer-urls", &member.peer_url()])
            .args(["--initial-advertise-peer-urls", &member.peer_url()])
            .args(["--initial-cluster", initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .arg("--enable-v2");
        let process = Process::spawn(&format!("{} {}", self.kind, member.name), command, &member.log_path)?;
        self.members[index].process = Some(process);
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.root.disable_cleanup(true);
            eprintln!("{} cluster's data dirs and logs kept in {}", self.kind, self.root.path().display());
        }
    }
}
