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

#[test]
fn placement_rules_templates_and_replacing() -> anyhow::Result<()> {
    let c = Cluster::start(3)?;
    let m0 = &c.machines[0];

    // MachineMetadata: only m2 is hostname=m2.
    let path = c.unit_file("meta.service", &format!("{SLEEPER}[X-Fleet]\nMachineMetadata=hostname=m2\n"))?;
    m0.ctl(&["start", &path])?;
    assert_eq!(c.running("meta.service")?, ["m2"]);

    // A template with MachineID=%i pins each instance to a machine.
    c.unit_file("pin@.service", &format!("{SLEEPER}[X-Fleet]\nMachineID=%i\n"))?;
    let m1 = c.machine("m1");
    m0.ctl(&["start", &format!("/root/units/pin@{}.service", m1.id)])?;
    assert_eq!(c.running(&format!("pin@{}.service", m1.id))?, ["m1"]);

    // MachineOf: pong follows ping.
    let ping = c.unit_file("ping.service", SLEEPER)?;
    let pong = c.unit_file("pong.service", &format!("{SLEEPER}[X-Fleet]\nMachineOf=ping.service\n"))?;
    m0.ctl(&["start", &ping, &pong])?;
    let ping_host = c.running("ping.service")?;
    assert_eq!(ping_host.len(), 1);
    assert_eq!(c.running("pong.service")?, ping_host);

    // Templates: instances come from the template file beside them.
    c.unit_file("hello@.service", "[Unit]\nDescription=hello %i\n[Service]\nExecStart=/bin/sleep infinity\n")?;
    m0.ctl(&["start", "/root/units/hello@1.service", "/root/units/hello@2.service"])?;
    assert_eq!(c.running("hello@1.service")?.len(), 1);
    assert_eq!(c.running("hello@2.service")?.len(), 1);
    // start --replace with a changed file replaces the unit, which runs on.
    let changed = "[Unit]\nDescription=hello again %i\n[Service]\nExecStart=/bin/sleep 100000\n";
    let path = c.unit_file("hello@1.service", changed)?;
    let (code, _, err) = m0.fleetctl(&["start", &path])?;
    assert_eq!(code, 0);
    assert!(err.contains("differs from local unit file"), "{err}");
    m0.ctl(&["start", "--replace", &path])?;
    assert_eq!(m0.ctl(&["cat", "hello@1.service"])?, changed.replacen("\n[Service]", "\n\n[Service]", 1));
    c.wait_for("the replaced hello@1 to run", Duration::from_secs(30), |c| {
        Ok(c.running("hello@1.service")?.len() == 1)
    })?;

    // Replaces: kick may only run where replace.0 runs, and pushes it away.
    let replace = c.unit_file("replace.0.service", SLEEPER)?;
    m0.ctl(&["start", &replace])?;
    let old_host = c.running("replace.0.service")?;
    let kick = c.unit_file(
        "kick.service",
        &format!("{SLEEPER}[X-Fleet]\nReplaces=replace.0.service\nMachineMetadata=hostname={}\n", old_host[0]),
    )?;
    m0.ctl(&["start", &kick])?;
    c.wait_for("replace.0 to move off kick's machine", Duration::from_secs(30), |c| {
        let now = c.running("replace.0.service")?;
        Ok(now.len() == 1 && now != old_host && c.running("kick.service")? == old_host)
    })?;

    // The engine's leader dies; another machine leads and places new units.
    let leader = c.engine_leader()?;
    let (leader_name, leader_id) = (leader.name.clone(), leader.id.clone());
    leader.container.kill()?;
    let killed = std::time::Instant::now();
    let driver = c.machines.iter().find(|m| m.name != leader_name).unwrap();
    driver.container.sh("mkdir -p /root/units")?;
    driver.container.write("/root/units/late.service", SLEEPER)?;
    driver.ctl(&["start", "--no-block", "/root/units/late.service"])?;
    c.wait_for("another engine to lead", Duration::from_secs(60), |c| {
        let lease = driver.etcd_get("/_coreos.com/fleet/lease/engine-leader").unwrap_or_default();
        Ok(!lease.is_empty() && !lease.contains(&leader_id) && !c.running("late.service")?.is_empty())
    })?;
    eprintln!(
        "engine leader {leader_name} killed: another led and placed a unit after {:.1} s (lease 5 s)",
        killed.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn global_units_reach_late_machines_and_cut_off_machines_keep_their_units() -> anyhow::Result<()> {
    let mut c = Cluster::start(3)?;
    let path = c.unit_file("everywhere.service", &format!("{SLEEPER}[X-Fleet]\nGlobal=true\n"))?;
    c.machines[0].ctl(&["start", &path])?;
    c.wait_for("the global unit on three machines", Duration::from_secs(30), |c| {
        Ok(c.running("everywhere.service")?.len() == 3)
    })?;
    c.add_machine("m3")?;
    c.wait_for("the global unit on the machine that joined", Duration::from_secs(30), |c| {
        c.machine("m3").is_active("everywhere.service")
    })?;

    // m3 (fleetd only) runs a unit pinned to it, then loses the network.
    let pinned = c.unit_file("pinned.service", &format!("{SLEEPER}[X-Fleet]\nMachineMetadata=hostname=m3\n"))?;
    c.machines[0].ctl(&["start", &pinned])?;
    assert_eq!(c.running("pinned.service")?, ["m3"]);
    let m3 = c.machine("m3");
    m3.container.disconnect(c.network_handle())?;
    c.wait_for("the cluster to see m3 gone", Duration::from_secs(60), |c| {
        Ok(c.machines[0].fleetctl(&["list-machines", "--no-legend"])?.1.lines().count() == 3)
    })?;
    std::thread::sleep(Duration::from_secs(AGENT_TTL_SECS + 2));
    assert!(m3.is_active("pinned.service")?, "a machine cut off from the store stopped its unit");
    assert!(m3.is_active("everywhere.service")?, "a machine cut off from the store stopped its global unit");
    Ok(())
}
