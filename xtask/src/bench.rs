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

/// Which member a load goes to. Clients talk to any member: a write to a
/// follower costs a forward to the leader (ferrite-store's forwarder,
/// etcd's MsgProp), so both ways are measured.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Leader,
    Follower,
}

struct Load {
    name: &'static str,
    script: &'static str,
    connections: u32,
    target: Target,
}

const LOADS: &[Load] = &[
    Load { name: "PUT, 1 connection, to the leader", script: PUT_SCRIPT, connections: 1, target: Target::Leader },
    Load { name: "PUT, 1 connection, to a follower", script: PUT_SCRIPT, connections: 1, target: Target::Follower },
    Load { name: "PUT, 32 connections, to the leader", script: PUT_SCRIPT, connections: 32, target: Target::Leader },
    Load { name: "PUT, 32 connections, to a follower", script: PUT_SCRIPT, connections: 32, target: Target::Follower },
    Load { name: "GET, 32 connections, to a follower", script: GET_SCRIPT, connections: 32, target: Target::Follower },
];

/// `only`, when given, keeps the loads whose name contains it (for a quick
/// look at one row; a run written to BENCHMARKS.md measures them all).
pub fn store(root: &Path, seconds: u32, rounds: usize, only: Option<&str>, write: bool) -> Result<()> {
    let loads: Vec<&Load> = LOADS.iter().filter(|load| only.is_none_or(|only| load.name.contains(only))).collect();
    if loads.is_empty() {
        bail!("no load's name contains {:?}; the loads are: {}", only.unwrap_or_default(), load_names());
    }
    if write && loads.len() != LOADS.len() {
        bail!("--write measures every load; drop --only");
    }
    let scripts = root.join("target/bench");
    std::fs::create_dir_all(&scripts)?;
    std::fs::write(scripts.join("put.lua"), PUT_SCRIPT)?;
    std::fs::write(scripts.join("get.lua"), GET_SCRIPT)?;
    let ferrite_bin = root.join("target/release/ferrite-store");
    let etcd_bin = Path::new("/usr/bin/etcd");

    // Both clusters run for the whole benchmark and take turns under load,
    // alternating which goes first in each round, so a noisy neighbour on
    // the machine hits both alike; the median of the rounds is reported.
    let servers = [("ferrite-store", ferrite_bin.as_path(), 22379u16), ("etcd 3.4", etcd_bin, 32379u16)];
    let mut clusters = Vec::new();
    for (label, bin, port) in servers {
        eprintln!("==> starting a 3-member {label} cluster");
        clusters.push(LocalCluster::start(bin, &[], 3, port, &root.join(format!("target/bench/{port}")))?);
    }
    let mut samples: Vec<Vec<Vec<Figures>>> = vec![vec![Vec::new(); loads.len()]; servers.len()];
    for (l, load) in loads.iter().enumerate() {
        let script = scripts.join(if load.script == PUT_SCRIPT { "put.lua" } else { "get.lua" });
        for round in 0..rounds {
            let mut order: Vec<usize> = (0..servers.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for s in order {
                eprintln!("    round {}/{rounds}: {}: {} for {seconds} s", round + 1, servers[s].0, load.name);
                // Asked each time: the leader may have changed.
                let endpoint = match load.target {
                    Target::Leader => clusters[s].leader_endpoint()?,
                    Target::Follower => clusters[s].follower_endpoint()?,
                };
                samples[s][l].push(wrk(&script, &endpoint, load.connections, seconds)?);
            }
        }
    }
    let labels: Vec<&str> = servers.iter().map(|(label, _, _)| *label).collect();
    let mut table = render(&loads, &labels, seconds, rounds, &samples);
    table.push_str(&render_fsyncs(&labels, &clusters));
    drop(clusters);
    println!("{table}");
    if write {
        write_section(root, "store", &table)?;
    }
    Ok(())
}

/// Replaces the section between `<!-- bench NAME: begin -->` and its end
/// marker in BENCHMARKS.md (appending it the first time).
pub fn write_section(root: &Path, name: &str, text: &str) -> Result<()> {
    let path = root.join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let start = format!("<!-- bench {name}: begin -->");
    let end = format!("<!-- bench {name}: end -->");
    let section = format!("{start}\n{text}\n{end}");
    let new = match (old.find(&start), old.find(&end)) {
        (Some(a), Some(b)) if a < b => format!("{}{}{}", &old[..a], section, &old[b + end.len()..]),
        _ => format!("{old}\n{section}\n"),
    };
    std::fs::write(&path, new).with_context(|| format!("cannot write {}", path.display()))
}

/// `cargo xtask bench fleet`: the scheduler at scale against a 3-member
/// ferrite-store cluster (the `fleet-scale` example of ferrite-fleet:
/// the real engine, simulated agents, a burst of units), then a real agent
/// at rest with many units (the `agent-idle` example, in a systemd
/// container).
pub fn fleet(root: &Path, machines: usize, units: usize, idle_units: usize, write: bool) -> Result<()> {
    let store = LocalCluster::start(
        &root.join("target/release/ferrite-store"),
        &[],
        3,
        23379,
        &root.join("target/bench/fleet-store"),
    )?;
    eprintln!("==> {machines} simulated machines, a burst of {units} units");
    let output = Command::new(root.join("target/release/examples/fleet-scale"))
        .args(["--endpoints", &store.endpoints_arg()])
        .args(["--machines", &machines.to_string(), "--units", &units.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run the fleet-scale example")?;
    if !output.status.success() {
        bail!("fleet-scale failed: {}", output.status);
    }
    let report = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    drop(store);
    eprintln!("==> a real agent at rest with {idle_units} units (systemd container)");
    let output = Command::new(root.join("target/release/examples/agent-idle"))
        .args(["--units", &idle_units.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run the agent-idle example")?;
    if !output.status.success() {
        bail!("agent-idle failed: {}", output.status);
    }
    let idle = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let number = |report: &str, key: &str| -> String {
        let pattern = format!("\"{key}\":");
        report
            .split(&pattern)
            .nth(1)
            .map(|rest| rest.split([',', '}']).next().unwrap_or_default().to_owned())
            .unwrap_or_else(|| "?".to_owned())
    };
    let table = format!(
        "Command: `cargo xtask bench fleet --machines {machines} --units {units} --idle-units {idle_units}`.\n\n\
         Scale: a 3-member ferrite-store on loopback (fsync on); the real engine on its own thread; {machines} \
         agents, the real agent code over in-memory unit managers, in one process; the units submitted 64 at a \
         time.\n\n\
         | machines | units | burst submitted (s) | all launched after (s) | store requests/s | engine CPU (s) | harness max RSS (MiB) |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n\
         | {machines} | {units} | {} | {} | {} | {} | {} |\n\n\
         Rest: one machine (a systemd container) running ferrite-store and ferrite-fleetd as services, \
         {idle_units} units launched with fleetctl, then CPU measured from /proc over {} s of rest.\n\n\
         | units | all active after (s) | ferrite-fleetd CPU (% of a core) | ferrite-store CPU (% of a core) | ferrite-fleetd RSS (MiB) |\n\
         |---:|---:|---:|---:|---:|\n\
         | {idle_units} | {} | {} | {} | {} |\n",
        number(&report, "submit_seconds"),
        number(&report, "converge_seconds"),
        number(&report, "store_requests_per_second"),
        number(&report, "engine_cpu_seconds"),
        number(&report, "process_max_rss_mib"),
        number(&idle, "idle_seconds"),
        number(&idle, "launch_seconds"),
        number(&idle, "fleetd_cpu_percent"),
        number(&idle, "store_cpu_percent"),
        number(&idle, "fleetd_rss_mib"),
    );
    println!("{table}");
    if write {
        write_section(root, "fleet", &table)?;
    }
    Ok(())
}

/// Each figure's own median over the rounds (a round's p99 is as noisy
/// as its throughput, and the two need not be bad in the same round), and
/// the errors of every round added up.
fn median(runs: &[Figures]) -> Figures {
    let of = |figure: fn(&Figures) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(figure).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or_default()
    };
    Figures {
        requests_per_sec: of(|f| f.requests_per_sec),
        p50_ms: of(|f| f.p50_ms),
        p99_ms: of(|f| f.p99_ms),
        errors: runs.iter().map(|f| f.errors).sum(),
    }
}

/// Each member's raft log fsyncs over the whole run, from the histogram
/// both servers publish as `etcd_disk_wal_fsync_duration_seconds`: both
/// clusters share one disk, and its stalls are in every write's latency.
fn render_fsyncs(labels: &[&str], clusters: &[LocalCluster]) -> String {
    let mut out = "\nThe raft log's fsyncs on each member over the whole run (`etcd_disk_wal_fsync_duration_seconds` \
                   from `/metrics`; a quantile is the bucket bound it falls under):\n\n\
                   | server | member | fsyncs | p50 under ms | p99 under ms | over 16 ms | slowest under ms |\n\
                   |---|---|---:|---:|---:|---:|---:|\n"
        .to_owned();
    for (label, cluster) in labels.iter().zip(clusters) {
        for endpoint in &cluster.endpoints {
            let Some(buckets) = fetch_fsync_buckets(endpoint) else {
                out.push_str(&format!("| {label} | {endpoint} | (no histogram) | | | | |\n"));
                continue;
            };
            let total = buckets.last().map_or(0, |&(_, count)| count);
            let quantile = |q: f64| {
                let rank = (q * total as f64).ceil() as u64;
                buckets.iter().find(|&&(_, count)| count >= rank.max(1)).map(|&(le, _)| le)
            };
            let ms = |le: Option<f64>| le.map_or("-".to_owned(), |le| format!("{}", le * 1000.0));
            let over_16 = total - buckets.iter().find(|&&(le, _)| le >= 0.016).map_or(total, |&(_, count)| count);
            let slowest = buckets.iter().find(|&&(_, count)| count == total && total > 0).map(|&(le, _)| le);
            out.push_str(&format!(
                "| {label} | {endpoint} | {total} | {} | {} | {over_16} | {} |\n",
                ms(quantile(0.5)),
                ms(quantile(0.99)),
                ms(slowest),
            ));
        }
    }
    out
}

/// The cumulative `(le, count)` buckets of a member's WAL fsync histogram.
fn fetch_fsync_buckets(endpoint: &str) -> Option<Vec<(f64, u64)>> {
    let out = Command::new("curl").args(["-sf", "--max-time", "5"]).arg(format!("{endpoint}/metrics")).output().ok()?;
    parse_fsync_buckets(&String::from_utf8_lossy(&out.stdout))
}

fn parse_fsync_buckets(text: &str) -> Option<Vec<(f64, u64)>> {
    let mut buckets = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"") else { continue };
        let (le, count) = rest.split_once("\"} ")?;
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
        buckets.push((le, count.trim().parse::<f64>().ok()? as u64));
    }
    (!buckets.is_empty()).then_some(buckets)
}

fn load_names() -> String {
    LOADS.iter().map(|load| load.name).collect::<Vec<_>>().join("; ")
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

fn render(loads: &[&Load], labels: &[&str], seconds: u32, rounds: usize, samples: &[Vec<Vec<Figures>>]) -> String {
    let mut out = format!(
        "Command: `cargo xtask bench store --seconds {seconds} --rounds {rounds}` (3 members each on loopback, \
         fsync on, 256-byte values, wrk against the member each row names; {rounds} alternating rounds: each \
         figure is its median over the rounds, errors are summed, and every round's requests/s and p99 follow).\n\n\
         | load | server | requests/s | p50 ms | p99 ms | errors | rounds: requests/s | rounds: p99 ms |\n\
         |---|---|---:|---:|---:|---:|---|---|\n"
    );
    for (l, load) in loads.iter().enumerate() {
        for (s, label) in labels.iter().enumerate() {
            let runs = &samples[s][l];
            let f = median(runs);
            let each = |figure: fn(&Figures) -> String| runs.iter().map(figure).collect::<Vec<_>>().join(", ");
            out.push_str(&format!(
                "| {} | {label} | {:.0} | {:.2} | {:.2} | {} | {} | {} |\n",
                load.name,
                f.requests_per_sec,
                f.p50_ms,
                f.p99_ms,
                f.errors,
                each(|r| format!("{:.0}", r.requests_per_sec)),
                each(|r| format!("{:.1}", r.p99_ms)),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_figure_has_its_own_median() {
        let run = |r, p99, errors| Figures { requests_per_sec: r, p50_ms: 1.0, p99_ms: p99, errors };
        let m = median(&[run(3.0, 10.0, 1), run(1.0, 30.0, 0), run(2.0, 20.0, 2)]);
        assert_eq!((m.requests_per_sec, m.p99_ms, m.errors), (2.0, 20.0, 3));
        assert_eq!(median(&[]).requests_per_sec, 0.0);
    }

    #[test]
    fn reads_the_fsync_histogram_of_metrics() {
        let text = "# TYPE etcd_disk_wal_fsync_duration_seconds histogram\n\
                    etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 2\n\
                    etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.002\"} 5\n\
                    etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"} 6\n\
                    etcd_disk_wal_fsync_duration_seconds_sum 0.5\n";
        assert_eq!(parse_fsync_buckets(text), Some(vec![(0.001, 2), (0.002, 5), (f64::INFINITY, 6)]));
        assert_eq!(parse_fsync_buckets("etcd_server_has_leader 1\n"), None);
    }

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
