//! `cargo xtask bench ambassador`: redis-benchmark against redis directly,
//! through HAProxy (Debian's, `mode tcp`: the reference for what a proxy
//! costs on this machine) and through ferrite-ambassador, in the same run,
//! side by side. The ambassador follows a one-member ferrite-store that
//! lists the redis as its only backend, as in the walkthrough.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cluster::LocalCluster;

const REDIS_PORT: u16 = 46379;
const AMBASSADOR_PORT: u16 = 46380;
const HAPROXY_PORT: u16 = 46381;
const STORE_PORT: u16 = 42379;
const KEY: &str = "/bench/redis";

/// One redis-benchmark load.
struct Load {
    name: &'static str,
    args: &'static [&'static str],
}

const LOADS: &[Load] = &[
    Load { name: "SET+GET, 50 connections", args: &["-c", "50"] },
    Load { name: "SET+GET, 50 connections, pipeline 16", args: &["-c", "50", "-P", "16"] },
];

/// A child killed and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("{what} does not listen on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// (SET, GET) requests per second.
type Figures = (f64, f64);

pub fn ambassador(root: &Path, requests: u32, rounds: usize, write: bool) -> Result<()> {
    let dir = root.join("target/bench/ambassador");
    let store = LocalCluster::start(&root.join("target/release/ferrite-store"), &[], 1, STORE_PORT, &dir)?;
    let endpoint = store.endpoints[0].clone();
    let status = Command::new("etcdctl")
        .env("ETCDCTL_API", "2")
        .args(["--endpoints", &endpoint, "set", KEY, &format!("127.0.0.1:{REDIS_PORT}")])
        .stdout(Stdio::null())
        .status()
        .context("cannot run etcdctl (package etcd-client)")?;
    if !status.success() {
        bail!("etcdctl set {KEY} failed");
    }
    let _redis = Guard(
        Command::new("redis-server")
            .args(["--port", &REDIS_PORT.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .context("cannot run redis-server (package redis-server)")?,
    );
    wait_for_port(REDIS_PORT, "redis-server")?;
    let log = std::fs::File::create(dir.join("ambassador.log"))?;
    let _ambassador = Guard(
        Command::new(root.join("target/release/ferrite-ambassador"))
            .args(["--listen", &format!("127.0.0.1:{AMBASSADOR_PORT}"), "--etcd-endpoints", &endpoint, KEY])
            .env("RUST_LOG", "warn")
            .stderr(log)
            .spawn()
            .context("cannot run ferrite-ambassador")?,
    );
    wait_for_port(AMBASSADOR_PORT, "ferrite-ambassador")?;
    let _haproxy = Guard(start_haproxy(&dir)?);
    wait_for_port(HAPROXY_PORT, "haproxy")?;

    let targets =
        [("direct", REDIS_PORT), ("through HAProxy", HAPROXY_PORT), ("through ferrite-ambassador", AMBASSADOR_PORT)];
    let mut samples: Vec<Vec<Vec<Figures>>> = vec![vec![Vec::new(); targets.len()]; LOADS.len()];
    for (l, load) in LOADS.iter().enumerate() {
        for round in 0..rounds {
            // Each target goes first in turn, so drift on the machine
            // does not favour one.
            let mut order: Vec<usize> = (0..targets.len()).collect();
            order.rotate_left(round % targets.len());
            for t in order {
                eprintln!("    round {}/{rounds}: {}: {}", round + 1, targets[t].0, load.name);
                samples[l][t].push(redis_benchmark(targets[t].1, load.args, requests)?);
            }
        }
    }
    let table = render(&samples, requests, rounds);
    println!("{table}");
    if write {
        crate::bench::write_section(root, "ambassador", &table)?;
    }
    Ok(())
}

/// HAProxy in the foreground with the same job as the ambassador: TCP to
/// the one redis.
fn start_haproxy(dir: &Path) -> Result<Child> {
    let config = dir.join("haproxy.cfg");
    let text = format!(
        "global\n    maxconn 4096\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n\
         frontend ambassador\n    bind 127.0.0.1:{HAPROXY_PORT}\n    default_backend redis\n\
         backend redis\n    server redis 127.0.0.1:{REDIS_PORT}\n"
    );
    std::fs::write(&config, text).with_context(|| format!("cannot write {}", config.display()))?;
    Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run haproxy (package haproxy)")
}

fn redis_benchmark(port: u16, args: &[&str], requests: u32) -> Result<Figures> {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "set,get", "-n", &requests.to_string(), "--csv"])
        .args(args)
        .output()
        .context("cannot run redis-benchmark (package redis-tools)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("redis-benchmark failed: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    }
    parse_csv(&text).with_context(|| format!("cannot read redis-benchmark's output:\n{text}"))
}

/// `"SET","28818.44",...` and `"GET","51150.89",...` lines.
fn parse_csv(text: &str) -> Option<Figures> {
    let mut set = None;
    let mut get = None;
    for line in text.lines() {
        let mut fields = line.split(',').map(|f| f.trim().trim_matches('"'));
        let test = fields.next()?;
        let rps = fields.next().and_then(|r| r.parse::<f64>().ok());
        match test {
            "SET" => set = rps,
            "GET" => get = rps,
            _ => {}
        }
    }
    Some((set?, get?))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn render(samples: &[Vec<Vec<Figures>>], requests: u32, rounds: usize) -> String {
    let mut out = format!(
        "Command: `cargo xtask bench ambassador --requests {requests} --rounds {rounds}` (redis-server 7, \
         HAProxy 2.6 and ferrite-ambassador on loopback, redis-benchmark -t set,get -n {requests}; median of \
         {rounds} rounds in alternating order, with every round after it).\n\n\
         | load | command | direct requests/s | HAProxy requests/s | ambassador requests/s | ambassador / direct \
         | ambassador / HAProxy | rounds direct / HAProxy / ambassador |\n\
         |---|---|---:|---:|---:|---:|---:|---|\n"
    );
    for (l, load) in LOADS.iter().enumerate() {
        for (c, command) in ["SET", "GET"].iter().enumerate() {
            let pick =
                |t: usize| -> Vec<f64> { samples[l][t].iter().map(|f| if c == 0 { f.0 } else { f.1 }).collect() };
            let (mut direct, mut haproxy, mut ambassador) = (pick(0), pick(1), pick(2));
            let each = |v: &[f64]| v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
            let rounds_text = format!("{} / {} / {}", each(&direct), each(&haproxy), each(&ambassador));
            let (d, h, a) = (median(&mut direct), median(&mut haproxy), median(&mut ambassador));
            let percent = |x: f64, of: f64| if of > 0.0 { x / of * 100.0 } else { 0.0 };
            out.push_str(&format!(
                "| {} | {command} | {d:.0} | {h:.0} | {a:.0} | {:.0}% | {:.0}% | {rounds_text} |\n",
                load.name,
                percent(a, d),
                percent(a, h)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_redis_benchmark_csv() {
        let text =
            "\"test\",\"rps\",\"avg_latency_ms\"\n\"SET\",\"28818.44\",\"1.229\"\n\"GET\",\"51150.89\",\"0.649\"\n";
        assert_eq!(parse_csv(text), Some((28818.44, 51150.89)));
        assert_eq!(parse_csv("\"SET\",\"1\"\n"), None);
    }
}
