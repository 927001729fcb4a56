//! Local clusters on loopback, started with etcd's flags, so ferrite-store
//! and the reference etcd run side by side the same way.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A running local cluster; its members are killed and reaped on drop.
#[derive(Debug)]
pub struct LocalCluster {
    children: Vec<Child>,
    pub endpoints: Vec<String>,
    pub dir: PathBuf,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl LocalCluster {
    /// Starts `size` members of `bin` with client ports from `base_port`
    /// (odd offsets) and peer ports after them, data under `dir`, and
    /// waits until `etcdctl cluster-health` passes.
    pub fn start(bin: &Path, extra_args: &[&str], size: usize, base_port: u16, dir: &Path) -> Result<LocalCluster> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let offset = |i: usize| u16::try_from(2 * i).unwrap_or(0);
        let client = |i: usize| format!("http://127.0.0.1:{}", base_port + offset(i));
        let peer = |i: usize| format!("http://127.0.0.1:{}", base_port + 1 + offset(i));
        let initial: Vec<String> = (0..size).map(|i| format!("n{i}={}", peer(i))).collect();
        let initial = initial.join(",");
        let mut cluster =
            LocalCluster { children: Vec::new(), endpoints: (0..size).map(client).collect(), dir: dir.into() };
        for i in 0..size {
            let log_path = dir.join(format!("n{i}.log"));
            let log =
                std::fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
            let child = Command::new(bin)
                .args(["--name", &format!("n{i}")])
                .arg("--data-dir")
                .arg(dir.join(format!("n{i}")))
                .args(["--listen-client-urls", &client(i), "--advertise-client-urls", &client(i)])
                .args(["--listen-peer-urls", &peer(i), "--initial-advertise-peer-urls", &peer(i)])
                .args(["--initial-cluster", &initial, "--initial-cluster-token", "xtask-cluster"])
                .args(["--initial-cluster-state", "new", "--enable-v2"])
                .args(extra_args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start {}", bin.display()))?;
            cluster.children.push(child);
        }
        cluster.wait_healthy(Duration::from_secs(30))?;
        Ok(cluster)
    }

    pub fn endpoints_arg(&self) -> String {
        self.endpoints.join(",")
    }

    /// The client URL of the current leader, as `etcdctl member list` says.
    pub fn leader_endpoint(&self) -> Result<String> {
        let out = etcdctl(&self.endpoints_arg(), &["member", "list"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        leader_in_member_list(&text).with_context(|| format!("no leader in `etcdctl member list`:\n{text}"))
    }

    /// The client URL of a member that is not the leader.
    pub fn follower_endpoint(&self) -> Result<String> {
        let leader = self.leader_endpoint()?;
        self.endpoints.iter().find(|e| **e != leader).cloned().context("a one-member cluster has no follower")
    }

    fn wait_healthy(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let out = etcdctl(&self.endpoints_arg(), &["cluster-health"])?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the cluster did not become healthy in {} s; logs in {}:\n{}",
                    limit.as_secs(),
                    self.dir.display(),
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// The leader's first client URL in etcdctl v2's `member list` output
/// (`ID: name=N peerURLs=P clientURLs=C isLeader=true`).
fn leader_in_member_list(text: &str) -> Option<String> {
    let line = text.lines().find(|line| line.contains("isLeader=true"))?;
    let urls = line.split_whitespace().find_map(|field| field.strip_prefix("clientURLs="))?;
    urls.split(',').next().map(str::to_owned)
}

/// The main job for now: a ferrite-store cluster, checked with etcdctl.
pub fn run(root: &Path, size: usize, check: bool) -> Result<()> {
    let bin = root.join("target/release/ferrite-store");
    let cluster = LocalCluster::start(&bin, &[], size, 12379, &root.join("target/cluster"))?;
    let endpoints = cluster.endpoints_arg();
    print!("{}", String::from_utf8_lossy(&etcdctl(&endpoints, &["cluster-health"])?.stdout));
    let set = etcdctl(&endpoints, &["set", "/ferrite/hello", "world"])?;
    let get = etcdctl(&endpoints, &["get", "/ferrite/hello"])?;
    if !set.status.success() || String::from_utf8_lossy(&get.stdout).trim() != "world" {
        bail!("etcdctl set/get through the cluster failed: {}", String::from_utf8_lossy(&get.stderr));
    }
    print!("{}", String::from_utf8_lossy(&etcdctl(&endpoints, &["member", "list"])?.stdout));
    println!("cluster of {size} up; ETCDCTL_API=2 etcdctl --endpoints {endpoints} ...");
    if check {
        return Ok(());
    }
    println!("logs in {}; Ctrl-C to stop", cluster.dir.display());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

pub fn etcdctl(endpoints: &str, args: &[&str]) -> Result<std::process::Output> {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "2")
        .arg("--endpoints")
        .arg(endpoints)
        .args(args)
        .output()
        .context("cannot run etcdctl (package etcd-client)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_is_read_from_member_list() {
        let text = "8e9e05c52164694d: name=n0 peerURLs=http://127.0.0.1:2380 clientURLs=http://127.0.0.1:2379 isLeader=false\n\
                    91bc3c398fb3c146: name=n1 peerURLs=http://127.0.0.1:2382 clientURLs=http://127.0.0.1:2381,http://127.0.0.1:4001 isLeader=true\n";
        assert_eq!(leader_in_member_list(text).as_deref(), Some("http://127.0.0.1:2381"));
        assert_eq!(leader_in_member_list("no leader here"), None);
    }
}
