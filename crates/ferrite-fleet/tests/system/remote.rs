//! fleetctl reaching a unit's machine (status, journal, ssh, --tunnel)
//! over OpenSSH between the machines, locally without SSH when the unit
//! is on fleetctl's own machine; and fleetd's own socket and SIGHUP.

use std::time::Duration;

use anyhow::Result;

use crate::cluster::Cluster;

/// Twelve numbered lines, then quiet. PID 1's "Started logger.service." is
/// one of the unit's journal entries too, and it races the lines: it can
/// come before them, between two of them or after the last.
const LOGGER: &str = "[Service]\nExecStart=/bin/sh -c 'for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo line-$$i; done; exec sleep infinity'\n";
/// A line twice a second.
const TICKER: &str = "[Service]\nExecStart=/bin/sh -c 'while :; do echo tick; sleep 0.5; done'\n";

#[test]
fn status_journal_ssh_and_tunnel_reach_a_units_machine() -> Result<()> {
    let c = Cluster::start(3)?;
    c.enable_ssh()?;
    let (m0, m1) = (&c.machines[0], c.machine("m1"));
    let pin = format!("[X-Fleet]\nMachineID={}\n", m1.id);
    let logger = c.unit_file("logger.service", &format!("{LOGGER}{pin}"))?;
    let ticker = c.unit_file("ticker.service", &format!("{TICKER}{pin}"))?;
    m0.ctl(&["start", &logger, &ticker])?;

    // Host keys are checked by default, and m1's is not known yet.
    let (code, _, err) = m0.fleetctl(&["status", "logger.service"])?;
    assert_eq!(code, 255, "{err}");
    assert!(err.contains("Host key verification failed"), "{err}");
    m0.container.sh(&format!("ssh-keyscan -t ed25519 {} > /root/known_hosts 2>/dev/null", m1.ip))?;
    let known = "--known-hosts-file=/root/known_hosts";
    // m0 has no logger.service: this is m1's systemd answering, as `core`.
    let out = m0.ctl(&[known, "status", "logger.service"])?;
    assert!(out.contains("● logger.service") && out.contains("Active: active (running)"), "{out}");
    let (code, out, _) = m0.fleetctl(&[known, "status", "logger.service", "ticker.service"])?;
    assert_eq!(code, 0);
    assert!(out.contains("\n\n● ticker.service"), "{out}");
    // On the unit's own machine no SSH is used: port 1 does not matter.
    let out = m1.ctl(&["status", "--ssh-port", "1", "logger.service"])?;
    assert!(out.contains("Active: active (running)"), "{out}");
    let (code, _, err) = m0.fleetctl(&["status", "nothing.service"])?;
    assert_eq!((code, err.as_str()), (1, "Unit nothing.service does not exist.\n"));

    // journal: the last lines, and with -f the lines that keep coming. The
    // last two entries hold line-12 once it is written, PID 1's or not.
    c.wait_for("the logger's last line", Duration::from_secs(30), |_| {
        Ok(m1.ctl(&["journal", "--lines", "2", "logger.service"])?.contains("line-12"))
    })?;
    // Four entries hold the last three lines wherever PID 1's one falls;
    // all twelve lines would mean `--lines` was not passed on.
    let out = m0.ctl(&[known, "journal", "--lines", "4", "logger.service"])?;
    let lines: Vec<&str> = out.lines().filter(|l| l.contains(" line-")).collect();
    assert!(matches!(lines.len(), 3 | 4), "{out}");
    for (line, n) in lines[lines.len() - 3..].iter().zip(["10", "11", "12"]) {
        assert!(line.ends_with(&format!("line-{n}")), "{out}");
    }
    let follow = m0.container.exec(&[
        "timeout",
        "4",
        "ferrite-fleetctl",
        known,
        "journal",
        "-f",
        "--lines",
        "1",
        "ticker.service",
    ])?;
    let out = String::from_utf8_lossy(&follow.stdout);
    assert!(out.matches(": tick").count() >= 4, "journal -f did not follow:\n{out}");

    // ssh: a command on a machine chosen by id prefix or by unit; its
    // output and exit code are the command's.
    let loose = "--strict-host-key-checking=false";
    let root = [loose, "--ssh-username", "root"];
    let by_machine =
        m0.ctl(&[&root[..], &["ssh", "--machine", &m1.id[..8], "--", "cat", "/proc/sys/kernel/hostname"]].concat())?;
    assert_eq!(by_machine, "m1\n");
    assert_eq!(m0.ctl(&[loose, "ssh", "--unit", "logger.service", "id", "-un"])?, "core\n");
    let (code, _, _) = m0.fleetctl(&[&root[..], &["ssh", &m1.id, "exit 3"]].concat())?;
    assert_eq!(code, 3);
    let (code, _, err) = m0.fleetctl(&["ssh", "--machine", &m1.id, "--unit", "logger.service"])?;
    assert_eq!((code, err.as_str()), (1, "Both machine and unit flags provided, please specify only one.\n"));

    // A global unit's status comes from every machine that runs it.
    let global =
        c.unit_file("everywhere.service", "[Service]\nExecStart=/bin/sleep infinity\n[X-Fleet]\nGlobal=true\n")?;
    m0.ctl(&["start", &global])?;
    c.wait_for("the global unit on every machine", Duration::from_secs(30), |c| {
        Ok(c.running("everywhere.service")?.len() == 3)
    })?;
    c.wait_for("three machines to report the global unit", Duration::from_secs(30), |_| {
        Ok(m0.ctl(&["list-units", "--no-legend", "--fields", "unit"])?.matches("everywhere.service").count() == 3)
    })?;
    let out = m0.ctl(&[loose, "status", "everywhere.service"])?;
    assert_eq!(out.matches("● everywhere.service").count(), 3, "{out}");

    // SIGHUP: m2's fleetd reads fleet.conf again; same process, new metadata.
    let m2 = c.machine("m2");
    let pid = m2.container.sh("systemctl show -p MainPID --value ferrite-fleetd")?;
    m2.write_fleet_conf("hostname=m2,disk=ssd")?;
    m2.container.sh("systemctl reload ferrite-fleetd")?;
    c.wait_for("m2's new metadata", Duration::from_secs(30), |_| {
        let machines = m0.ctl(&["list-machines", "--no-legend", "--fields", "metadata"])?;
        Ok(machines.lines().filter(|l| *l == "disk=ssd,hostname=m2").count() == 1 && machines.lines().count() == 3)
    })?;
    assert_eq!(m2.container.sh("systemctl show -p MainPID --value ferrite-fleetd")?, pid);

    // --tunnel: with m0's fleetd gone, its API is reached through m1.
    m0.container.sh("systemctl stop ferrite-fleetd.socket ferrite-fleetd.service")?;
    let (code, _, _) = m0.fleetctl(&["list-machines"])?;
    assert_eq!(code, 1, "m0's own API still answers");
    let tunnel = [&root[..], &["--tunnel", &m1.ip]].concat();
    c.wait_for("m0 to leave the cluster", Duration::from_secs(30), |_| {
        let machines = m0.ctl(&[&tunnel[..], &["list-machines", "--no-legend", "--fields", "ip"]].concat())?;
        Ok(machines.lines().count() == 2 && !machines.contains(&m0.ip))
    })?;
    let out = m0.ctl(&[&tunnel[..], &["status", "logger.service"]].concat())?;
    assert!(out.contains("Active: active (running)"), "{out}");
    Ok(())
}

#[test]
fn fleetd_takes_its_socket_from_systemd_and_a_connection_starts_it() -> Result<()> {
    let c = Cluster::start(3)?;
    let m2 = c.machine("m2");
    let inode = || m2.container.sh("stat -c %i /run/fleet.sock");
    let before = inode()?;
    let log = m2.container.sh("journalctl -u ferrite-fleetd --no-pager -o cat")?;
    assert!(log.contains("serving the API on the sockets systemd passed"), "{log}");
    m2.container.sh("systemctl stop ferrite-fleetd.service")?;
    assert_eq!(m2.container.sh("systemctl is-active ferrite-fleetd.socket")?, "active\n");
    // The socket listens on; a request starts fleetd, which answers it.
    let machines = m2.ctl(&["list-machines", "--no-legend", "--fields", "metadata"])?;
    assert!(machines.contains("hostname=m2"), "{machines}");
    assert!(m2.is_active("ferrite-fleetd.service")?);
    // Still systemd's socket: fleetd never bound a new one over it.
    assert_eq!(inode()?, before);
    Ok(())
}
