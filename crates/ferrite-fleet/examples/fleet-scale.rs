//! The scheduler at scale: a real engine and many simulated agents (the
//! real agent code over in-memory unit managers, talking to the store
//! exactly as agents on machines do), against a running store. Submits a
//! burst of units and reports, as one JSON line, how long until every
//! unit runs, the store's request rate, and the engine's CPU.
//!
//! Run by `cargo xtask bench fleet`, which starts the store; by hand:
//! `cargo run --release -p ferrite-fleet --example fleet-scale -- --endpoints http://127.0.0.1:2379 --machines 1000 --units 10000`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use ferrite_etcd_client::Client;
use ferrite_fleet::agent::memory::MemoryUnits;
use ferrite_fleet::agent::{Agent, AgentSettings};
use ferrite_fleet::engine::{Engine, EngineSettings};
use ferrite_fleet::registry::{MachineState, Registry, TargetState};
use ferrite_fleet::unit_file::UnitFile;
use futures::StreamExt;

#[derive(Debug, Parser)]
struct Args {
    /// Client URLs of the store, comma-separated.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    #[arg(long, default_value_t = 1000)]
    machines: usize,
    #[arg(long, default_value_t = 10_000)]
    units: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    limit: u64,
}

/// CPU seconds (user + system) of the calling thread.
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
}

fn max_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Requests the store served: reads summed over members (each member
/// counts the reads it answered) plus writes once (every member counts
/// every write it applies), from the etcd metrics `/metrics` exposes.
/// Watches are not counted.
async fn store_requests(endpoints: &[String]) -> f64 {
    let http = reqwest::Client::new();
    let (mut reads, mut writes) = (0.0, 0.0f64);
    for endpoint in endpoints {
        let Ok(response) = http.get(format!("{endpoint}/metrics")).send().await else { continue };
        let text = response.text().await.unwrap_or_default();
        let value = |name: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or(0.0)
        };
        reads += value("etcd_debugging_store_reads_total");
        writes = writes.max(value("etcd_debugging_store_writes_total"));
    }
    reads + writes
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let client = Client::new(args.endpoints.iter().map(String::as_str)).context("store endpoints")?;
    let prefix = format!("/_ferrite_bench_{}/", std::process::id());
    let registry = Registry::new(client, &prefix);

    // The engine runs on its own thread and runtime, so its CPU is its own.
    let engine_cpu = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let engine_thread = {
        let registry = registry.clone();
        let engine_cpu = Arc::clone(&engine_cpu);
        let mut stop = stop_rx.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let start = thread_cpu_seconds();
            runtime.block_on(async move {
                let settings =
                    EngineSettings { machine_id: "m00000".into(), interval: Duration::from_secs(2), watches: true };
                Engine::new(registry, settings)
                    .run(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
            });
            engine_cpu.store(((thread_cpu_seconds() - start) * 1000.0) as u64, Ordering::Relaxed);
        })
    };

    // Simulated agents.
    let mut managers = Vec::new();
    for i in 0..args.machines {
        let manager = MemoryUnits::new();
        managers.push(manager.clone());
        let settings = AgentSettings {
            machine: MachineState {
                id: format!("m{i:05}"),
                public_ip: format!("10.0.{}.{}", i / 250, i % 250 + 1),
                ..MachineState::default()
            },
            ttl: Duration::from_secs(30),
            resync: Duration::from_secs(300),
        };
        let mut stop = stop_rx.clone();
        tokio::spawn(Agent::new(registry.clone(), settings, manager).run(async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }
    let started = Instant::now();
    while registry.machines().await?.len() < args.machines {
        if started.elapsed() > Duration::from_secs(args.limit) {
            bail!("the agents did not all register");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("{} agents registered in {:.1}s", args.machines, started.elapsed().as_secs_f64());

    // The burst.
    let requests_before = store_requests(&args.endpoints).await;
    let burst = Instant::now();
    let unit = UnitFile::parse("[Service]\nExecStart=/bin/sleep infinity\n")?;
    let results: Vec<_> = futures::stream::iter(0..args.units)
        .map(|i| {
            let registry = registry.clone();
            let unit = unit.clone();
            async move { registry.create_unit(&format!("u{i:05}.service"), &unit, TargetState::Launched).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    let submitted = burst.elapsed();
    eprintln!("{} units submitted in {:.1}s", args.units, submitted.as_secs_f64());

    let deadline = burst + Duration::from_secs(args.limit);
    let converged = loop {
        let running: usize = managers.iter().map(|m| m.running().len()).sum();
        if running >= args.units {
            break burst.elapsed();
        }
        if Instant::now() > deadline {
            bail!("only {running} of {} units run after {}s", args.units, args.limit);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let requests = store_requests(&args.endpoints).await - requests_before;
    eprintln!("all {} units launched {:.1}s after the burst began", args.units, converged.as_secs_f64());

    stop_tx.send(true)?;
    let _ = engine_thread.join();
    println!(
        "{{\"machines\":{},\"units\":{},\"submit_seconds\":{:.2},\"converge_seconds\":{:.2},\"store_requests_per_second\":{:.0},\"engine_cpu_seconds\":{:.2},\"process_max_rss_mib\":{:.0}}}",
        args.machines,
        args.units,
        submitted.as_secs_f64(),
        converged.as_secs_f64(),
        requests / converged.as_secs_f64(),
        engine_cpu.load(Ordering::Relaxed) as f64 / 1000.0,
        max_rss_mib()
    );
    Ok(())
}
