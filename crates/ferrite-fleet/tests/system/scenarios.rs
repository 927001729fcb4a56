//! fleet's functional scenarios, against real systemd.

use std::time::Duration;

use crate::cluster::{Cluster, AGENT_TTL_SECS};

const SLEEPER: &str = "[Service]\nExecStart=/bin/sleep infinity\n";

#[test]
fn a_unit_goes_through_its_lifecycle_on_real_systemd() -> anyhow::Result<()> {
    let c = Cluster::start(3)?;
    let m0 = &c.machines[0];
    let path = c.unit_file("hello.service", SLEEPER)?;
    assert_eq!(m0.ctl(&["submit", &path])?, "Unit hello.service inactive\n");
    assert!(c.running("hello.service")?.is_empty());

    let out = m0.ctl(&["load", "hello.service"])?;
    assert!(out.starts_with("Unit hello.service loaded on "), "{out}");
    let files = m0.ctl(&["list-unit-files", "--no-legend", "--fields", "unit,dstate,state"])?;
    assert_eq!(files, "hello.service\tloaded\tloaded\n");
    assert!(c.running("hello.service")?.is_empty(), "loaded is not started");

    let out = m0.ctl(&["start", "hello.service"])?;
    assert!(out.starts_with("Unit hello.service launched on "), "{out}");
    let running = c.running("hello.service")?;
    assert_eq!(running.len(), 1, "{running:?}");
    let host = c.machines.iter().find(|m| m.name == running[0]).unwrap();
    // The unit is fleet's, linked for this boot only.
    let enabled = host.container.exec(&["systemctl", "is-enabled", "hello.service"])?;
    assert_eq!(String::from_utf8_lossy(&enabled.stdout).trim(), "linked-runtime");
    let units = m0.ctl(&["list-units", "--no-legend", "--full"])?;
    assert_eq!(units, format!("hello.service\t{}/{}\tactive\trunning\n", host.id, host.ip));

    m0.ctl(&["stop", "hello.service"])?;
    assert!(!host.is_active("hello.service")?);
    m0.ctl(&["unload", "hello.service"])?;
    assert!(host.container.exec(&["test", "-e", "/run/fleet/units/hello.service"])?.status.code() == Some(1));
    assert_eq!(m0.ctl(&["destroy", "hello.service"])?, "Destroyed hello.service\n");
    assert_eq!(m0.ctl(&["list-unit-files", "--no-legend"])?, "");
    Ok(())
}

#[test]
fn five_conflicting_units_on_three_machines_run_three() -> anyhow::Result<()> {
    let c = Cluster::start(3)?;
    let conflict = format!("{SLEEPER}[X-Fleet]\nConflicts=conflict*\n");
    for i in 0..5 {
        let path = c.unit_file(&format!("conflict.{i}.service"), &conflict)?;
        c.machines[0].ctl(&["start", "--no-block", &path])?;
    }
    c.wait_for("three conflicting units to run on distinct machines", Duration::from_secs(30), |c| {
        let mut hosts = Vec::new();
        for i in 0..5 {
            hosts.extend(c.running(&format!("conflict.{i}.service"))?);
        }
        hosts.sort();
        Ok(hosts == ["m0", "m1", "m2"])
    })?;
    // And it stays so: the two others have nowhere to go.
    std::thread::sleep(Duration::from_secs(3));
    let mut hosts = Vec::new();
    for i in 0..5 {
        hosts.extend(c.running(&format!("conflict.{i}.service"))?);
    }
    hosts.sort();
    assert_eq!(hosts, ["m0", "m1", "m2"]);
    Ok(())
}

#[test]
fn a_lost_machines_unit_moves_and_nothing_else_does() -> anyhow::Result<()> {
    let c = Cluster::start(3)?;
    let m0 = &c.machines[0];
    let conflict = format!("{SLEEPER}[X-Fleet]\nConflicts=conflict*\n");
    for i in 0..2 {
        let path = c.unit_file(&format!("conflict.{i}.service"), &conflict)?;
        m0.ctl(&["start", &path])?;
    }
    let path = c.unit_file("everywhere.service", &format!("{SLEEPER}[X-Fleet]\nGlobal=true\n"))?;
    m0.ctl(&["start", &path])?;
    c.wait_for("the global unit on every machine", Duration::from_secs(30), |c| {
        Ok(c.running("everywhere.service")?.len() == 3)
    })?;
    let hosts: Vec<Vec<String>> =
        (0..2).map(|i| c.running(&format!("conflict.{i}.service"))).collect::<Result<_, _>>()?;
    assert!(hosts.iter().all(|h| h.len() == 1) && hosts[0] != hosts[1], "{hosts:?}");
    // Kill a machine that runs one of them (not m0, which fleetctl uses).
    let (moved, stays) = if hosts[0][0] != "m0" { (0, 1) } else { (1, 0) };
    let victim = c.machines.iter().find(|m| m.name == hosts[moved][0]).unwrap();
    let free = c.machines.iter().find(|m| !hosts[0].contains(&m.name) && !hosts[1].contains(&m.name)).unwrap();
    victim.container.kill()?;
    let killed = std::time::Instant::now();
    let unit = format!("conflict.{moved}.service");
    c.wait_for(&format!("{unit} to run on {}", free.name), Duration::from_secs(60), |_| free.is_active(&unit))?;
    eprintln!(
        "machine lost: {unit} ran on {} {:.1} s after the kill (agent TTL {AGENT_TTL_SECS} s)",
        free.name,
        killed.elapsed().as_secs_f64()
    );
    let survivors: Vec<&crate::cluster::Machine> = c.machines.iter().filter(|m| m.name != victim.name).collect();
    let stayed = format!("conflict.{stays}.service");
    let now: Vec<String> =
        survivors.iter().filter(|m| m.is_active(&stayed).unwrap_or(false)).map(|m| m.name.clone()).collect();
    assert_eq!(now, hosts[stays], "{stayed} moved");
    for m in survivors {
        assert!(m.is_active("everywhere.service")?, "the global unit left {}", m.name);
    }
    let machines = m0.ctl(&["list-machines", "--no-legend"])?;
    assert_eq!(machines.lines().count(), 2, "{machines}");
    Ok(())
}
