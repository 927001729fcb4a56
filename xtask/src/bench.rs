//! `cargo xtask bench store`: a 3-member ferrite-store cluster and a
//! 3-member etcd 3.4 cluster on loopback, started the same way, loaded by
//! the same wrk scripts in the same run; the table goes to stdout and,
//! with --write, into BENCHMARKS.md.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cluster::LocalCluster;

/// One wrk run's figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

const PUT_SCRIPT: &str = r#"
-- PUT of 256-byte values over 1000 keys; counts non-2xx answers.
wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
local body = "value=" .. string.rep("v", 256)
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/v2/keys/bench/k" .. (n % 1000), nil, body)
end
"#;

const GET_SCRIPT: &str = r#"
-- GET of the keys the PUT runs wrote.
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/v2/keys/bench/k" .. (n % 1000))
end
"#;

struct Load {
    name: &'static str,
    script: &'static str,
    connections: u32,
}

const LOADS: &[Load] = &[
    Load { name: "PUT, 1 connection", script: PUT_SCRIPT, connections: 1 },
    Load { name: "PUT, 32 connections", script: PUT_SCRIPT, connections: 32 },
    Load { name: "GET, 32 connections", script: GET_SCRIPT, connections: 32 },
];

pub fn store(root: &Path, seconds: u32, write: bool) -> Result<()> {
    let scripts = root.join("target/bench");
    std::fs::create_dir_all(&scripts)?;
    std::fs::write(scripts.join("put.lua"), PUT_SCRIPT)?;
    std::fs::write(scripts.join("get.lua"), GET_SCRIPT)?;
    let ferrite_bin = root.join("target/release/ferrite-store");
    let etcd_bin = Path::new("/usr/bin/etcd");

    let mut rows = Vec::new();
    for (label, bin, port) in [("ferrite-store", ferrite_bin.as_path(), 22379u16), ("etcd 3.4", etcd_bin, 32379u16)] {
        eprintln!("==> starting a 3-member {label} cluster");
        let cluster = LocalCluster::start(bin, &[], 3, port, &root.join(format!("target/bench/{}", port)))?;
        // Load the leader-independent first member, as a client would.
        let endpoint = cluster.endpoints[0].clone();
        let mut figures = Vec::new();
        for load in LOADS {
            let script = if load.script == PUT_SCRIPT { "put.lua" } else { "get.lua" };
            eprintln!("    {label}: {} for {seconds} s", load.name);
            figures.push(wrk(&scripts.join(script), &endpoint, load.connections, seconds)?);
        }
        rows.push((label, figures));
    }
    let table = render(&rows, seconds);
    println!("{table}");
    if write {
        let path = root.join("BENCHMARKS.md");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let start = "<!-- bench store: begin -->";
        let end = "<!-- bench store: end -->";
        let section = format!("{start}\n{table}\n{end}");
        let new = match (old.find(start), old.find(end)) {
            (Some(a), Some(b)) if a < b => {
                format!("{}{}{}", &old[..a], section, &old[b + end.len()..])
            }
            _ => format!("{old}\n{section}\n"),
        };
        std::fs::write(&path, new).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn wrk(script: &Path, endpoint: &str, connections: u32, seconds: u32) -> Result<Figures> {
    let threads = connections.min(2).to_string();
    let out = Command::new("wrk")
        .args(["-t", &threads, "-c", &connections.to_string(), "-d", &format!("{seconds}s"), "--latency", "-s"])
        .arg(script)
        .arg(endpoint)
        .output()
        .context("cannot run wrk (package wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("wrk failed: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&text).with_context(|| format!("cannot read wrk's output:\n{text}"))
}

/// Reads requests/s, p50, p99 and non-2xx counts from wrk's report.
pub fn parse_wrk(text: &str) -> Option<Figures> {
    let mut f = Figures::default();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            f.requests_per_sec = rest.trim().parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("50%") {
            f.p50_ms = millis(rest.trim())?;
        } else if let Some(rest) = line.strip_prefix("99%") {
            f.p99_ms = millis(rest.trim())?;
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            f.errors += rest.trim().parse::<u64>().ok()?;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            f.errors += rest.split(',').filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok()).sum::<u64>();
        }
    }
    (f.requests_per_sec > 0.0).then_some(f)
}

fn millis(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

fn render(rows: &[(&str, Vec<Figures>)], seconds: u32) -> String {
    let mut out = format!(
        "Command: `cargo xtask bench store --seconds {seconds}` (3 members each on loopback, fsync on, \
         256-byte values, wrk against the first member).\n\n\
         | load | server | requests/s | p50 ms | p99 ms | errors |\n|---|---|---:|---:|---:|---:|\n"
    );
    for (i, load) in LOADS.iter().enumerate() {
        for (label, figures) in rows {
            let f = figures[i];
            out.push_str(&format!(
                "| {} | {label} | {:.0} | {:.2} | {:.2} | {} |\n",
                load.name, f.requests_per_sec, f.p50_ms, f.p99_ms, f.errors
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_reports() {
        let report = "Running 10s test @ http://127.0.0.1:2379\n  Latency Distribution\n     50%    1.20ms\n     \
                      75%    2.00ms\n     90%    3.00ms\n     99%   19.50ms\n  45000 requests in 10.00s\n  \
                      Non-2xx or 3xx responses: 3\nRequests/sec:   4500.12\n";
        let f = parse_wrk(report).unwrap();
        assert_eq!(f.requests_per_sec, 4500.12);
        assert_eq!((f.p50_ms, f.p99_ms, f.errors), (1.2, 19.5, 3));
        assert_eq!(millis("850.00us"), Some(0.85));
        assert!(parse_wrk("garbage").is_none());
    }
}
