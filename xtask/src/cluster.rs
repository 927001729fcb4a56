//! A local ferrite-store cluster on loopback, checked with the real etcdctl.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Kills and reaps the members when the task ends, however it ends.
struct Members(Vec<Child>);

impl Drop for Members {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn run(root: &Path, size: usize, check: bool) -> Result<()> {
    let bin = root.join("target/release/ferrite-store");
    let base = root.join("target/cluster");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    let peer = |i: usize| format!("http://127.0.0.1:{}", 12380 + 2 * i);
    let client = |i: usize| format!("http://127.0.0.1:{}", 12379 + 2 * i);
    let initial: Vec<String> = (0..size).map(|i| format!("n{i}={}", peer(i))).collect();
    let initial = initial.join(",");
    let mut members = Members(Vec::new());
    for i in 0..size {
        let log = std::fs::File::create(base.join(format!("n{i}.log")))?;
        let child = Command::new(&bin)
            .args(["--name", &format!("n{i}")])
            .arg("--data-dir")
            .arg(base.join(format!("n{i}")))
            .args(["--listen-client-urls", &client(i), "--advertise-client-urls", &client(i)])
            .args(["--listen-peer-urls", &peer(i), "--initial-advertise-peer-urls", &peer(i)])
            .args(["--initial-cluster", &initial, "--initial-cluster-token", "xtask-cluster"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        members.0.push(child);
    }
    let endpoints: Vec<String> = (0..size).map(client).collect();
    let endpoints = endpoints.join(",");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = etcdctl(&endpoints, &["cluster-health"])?;
        if out.status.success() {
            print!("{}", String::from_utf8_lossy(&out.stdout));
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the cluster did not become healthy in 30 s; logs in {}:\n{}",
                base.display(),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let set = etcdctl(&endpoints, &["set", "/ferrite/hello", "world"])?;
    let get = etcdctl(&endpoints, &["get", "/ferrite/hello"])?;
    if !set.status.success() || String::from_utf8_lossy(&get.stdout).trim() != "world" {
        bail!("etcdctl set/get through the cluster failed: {}", String::from_utf8_lossy(&get.stderr));
    }
    let list = etcdctl(&endpoints, &["member", "list"])?;
    print!("{}", String::from_utf8_lossy(&list.stdout));
    println!("cluster of {size} up; ETCDCTL_API=2 etcdctl --endpoints {endpoints} ...");
    if check {
        return Ok(());
    }
    println!("logs in {}; Ctrl-C to stop", base.display());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn etcdctl(endpoints: &str, args: &[&str]) -> Result<std::process::Output> {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "2")
        .arg("--endpoints")
        .arg(endpoints)
        .args(args)
        .output()
        .context("cannot run etcdctl (package etcd-client)")
}
