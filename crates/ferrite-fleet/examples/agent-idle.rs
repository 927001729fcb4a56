//! A real agent at rest: one machine (a Docker container with systemd as
//! PID 1) running ferrite-store and ferrite-fleetd, with a number of units
//! (500 by default) launched through fleetctl; once they all run, the
//! daemon's CPU is measured over a quiet minute from `/proc/<pid>/stat`.
//! Prints one JSON line. Run by `cargo xtask bench fleet`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use ferrite_testkit::images::workspace_bin;
use ferrite_testkit::systemd_container::SystemdContainer;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 500)]
    units: usize,
    /// Seconds of rest measured.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

/// utime + stime of a process in the container, in clock ticks.
fn cpu_ticks(machine: &SystemdContainer, unit: &str) -> Result<f64> {
    let pid = machine.sh(&format!("systemctl show -p MainPID --value {unit}"))?;
    let stat = machine.sh(&format!("cat /proc/{}/stat", pid.trim()))?;
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).context("short /proc stat")?.iter().filter_map(|v| v.parse::<f64>().ok()).sum();
    Ok(ticks)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let machine = SystemdContainer::start()?;
    machine.sh("tr -dc 0-9a-f < /dev/urandom | head -c 32 > /etc/machine-id; echo >> /etc/machine-id")?;
    for bin in ["ferrite-store", "ferrite-fleetd", "ferrite-fleetctl"] {
        machine.copy_in(&workspace_bin(bin), &format!("/usr/local/bin/{bin}"))?;
    }
    machine.write(
        "/etc/systemd/system/ferrite-store.service",
        "[Service]\nType=notify\nExecStart=/usr/local/bin/ferrite-store --name m0 --data-dir /var/lib/ferrite-store \
         --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
         --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
         --initial-cluster m0=http://127.0.0.1:2380\n",
    )?;
    machine.write(
        "/etc/systemd/system/ferrite-fleetd.service",
        "[Unit]\nAfter=ferrite-store.service\n[Service]\nType=notify\nEnvironment=FLEET_PUBLIC_IP=10.0.0.1\n\
         ExecStart=/usr/local/bin/ferrite-fleetd\n",
    )?;
    machine.sh("systemctl daemon-reload && systemctl start ferrite-store ferrite-fleetd")?;
    machine.sh("mkdir -p /root/units")?;
    machine.write("/root/units/idle@.service", "[Service]\nExecStart=/bin/sleep infinity\n")?;
    let names: Vec<String> = (1..=args.units).map(|i| format!("/root/units/idle@{i}.service")).collect();
    let started = Instant::now();
    for chunk in names.chunks(100) {
        let mut argv = vec!["ferrite-fleetctl", "start", "--no-block"];
        argv.extend(chunk.iter().map(String::as_str));
        let out = machine.exec(&argv)?;
        if !out.status.success() {
            bail!("fleetctl start failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    loop {
        let active = machine.sh("systemctl list-units 'idle@*' --state=active --no-legend | wc -l")?;
        if active.trim().parse::<usize>().unwrap_or(0) >= args.units {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("only {} of {} units active after 600 s", active.trim(), args.units);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let launched = started.elapsed();
    eprintln!(
        "{} units active after {:.1} s; measuring {} s of rest",
        args.units,
        launched.as_secs_f64(),
        args.seconds
    );
    std::thread::sleep(Duration::from_secs(10));
    let hz = machine.sh("getconf CLK_TCK")?.trim().parse::<f64>().unwrap_or(100.0);
    let (fleetd_before, store_before) = (cpu_ticks(&machine, "ferrite-fleetd")?, cpu_ticks(&machine, "ferrite-store")?);
    std::thread::sleep(Duration::from_secs(args.seconds));
    let (fleetd_after, store_after) = (cpu_ticks(&machine, "ferrite-fleetd")?, cpu_ticks(&machine, "ferrite-store")?);
    let percent = |before: f64, after: f64| (after - before) / hz / args.seconds as f64 * 100.0;
    let rss = machine.sh("grep VmRSS /proc/$(systemctl show -p MainPID --value ferrite-fleetd)/status")?;
    let rss_mib = rss.split_whitespace().nth(1).and_then(|k| k.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0;
    println!(
        "{{\"units\":{},\"launch_seconds\":{:.1},\"idle_seconds\":{},\"fleetd_cpu_percent\":{:.2},\"store_cpu_percent\":{:.2},\"fleetd_rss_mib\":{:.0}}}",
        args.units,
        launched.as_secs_f64(),
        args.seconds,
        percent(fleetd_before, fleetd_after),
        percent(store_before, store_after),
        rss_mib
    );
    Ok(())
}
