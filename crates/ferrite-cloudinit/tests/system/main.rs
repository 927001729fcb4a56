//! Tier 2: ferrite-cloudinit applied to a Docker container running real
//! systemd as PID 1, checked the way an operator would: systemctl, getent,
//! stat and the files themselves; and config drives found by their label
//! among this host's block devices (loop devices). Runs as root (docker,
//! losetup).

mod configdrive;

use std::path::Path;

use anyhow::{ensure, Result};
use ferrite_testkit::systemd_container::SystemdContainer;

const BIN: &str = "/usr/local/bin/ferrite-cloudinit";

/// Stand-ins for the image's daemons, with the aliases Ferrite gives them:
/// each writes the environment systemd gave it to /run/<unit>.env.
fn install_daemons(container: &SystemdContainer) -> Result<()> {
    for (unit, prefix, aliases) in
        [("ferrite-store", "ETCD_", "etcd.service etcd2.service"), ("ferrite-fleetd", "FLEET_", "fleet.service")]
    {
        container.write(
            &format!("/usr/lib/systemd/system/{unit}.service"),
            &format!(
                "[Unit]\nDescription=stand-in for {unit}\n[Service]\nExecStart=/bin/sh -c 'env | grep ^{prefix} | sort > /run/{unit}.env; exec sleep infinity'\n[Install]\nWantedBy=multi-user.target\nAlias={aliases}\n"
            ),
        )?;
        container.sh(&format!("systemctl enable {unit}.service"))?;
    }
    Ok(())
}

fn container_with_binary() -> Result<SystemdContainer> {
    let container = SystemdContainer::start()?;
    container.copy_in(Path::new(env!("CARGO_BIN_EXE_ferrite-cloudinit")), BIN)?;
    Ok(container)
}

fn fixture(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(path)).unwrap()
}

/// Every file, link and directory under the places cloud-config writes,
/// with mode, owner and modification time: equal snapshots mean nothing
/// was written.
fn snapshot(container: &SystemdContainer) -> Result<String> {
    container.sh(
        "find /etc /run/systemd/system /home /var/lib/ferrite-cloudinit -xdev -printf '%p %y %m %u:%g %T@ %l\\n' 2>/dev/null | sort",
    )
}

/// Applies user data at `path` in the container; (exit code, stdout, stderr).
fn apply(container: &SystemdContainer, path: &str) -> Result<(i32, String, String)> {
    apply_with(container, path, &[])
}

fn apply_with(container: &SystemdContainer, path: &str, extra: &[&str]) -> Result<(i32, String, String)> {
    let mut argv = vec![BIN, "apply", "--private-ipv4", "10.0.0.5", "--from-file", path];
    argv.extend(extra);
    let output = container.exec(&argv)?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

fn active(container: &SystemdContainer, unit: &str) -> Result<String> {
    let output = container.exec(&["systemctl", "is-active", unit])?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[test]
fn the_seed_config_starts_the_store_and_scheduler_with_its_settings() -> Result<()> {
    let container = container_with_binary()?;
    install_daemons(&container)?;
    container.write("/tmp/seed.yaml", &fixture("it/fixtures/apply/seed.yaml"))?;

    // As the boot unit runs it: commands queued, not waited for.
    let (code, _, stderr) = apply_with(&container, "/tmp/seed.yaml", &["--no-block"])?;
    ensure!(code == 0, "apply failed: {stderr}");
    for unit in ["ferrite-store.service", "ferrite-fleetd.service"] {
        container.sh(&format!(
            "for i in $(seq 300); do systemctl is-active -q {unit} && exit 0; sleep 0.1; done; systemctl status {unit}; exit 1"
        ))?;
    }
    assert_eq!(active(&container, "ferrite-store.service")?, "active");
    assert_eq!(active(&container, "etcd.service")?, "active");
    assert_eq!(active(&container, "ferrite-fleetd.service")?, "active");
    assert_eq!(
        container.sh("cat /run/ferrite-store.env")?,
        "ETCD_ADDR=10.0.0.5:4001\nETCD_DISCOVERY=https://discovery.etcd.io/<token>\nETCD_PEER_ADDR=10.0.0.5:7001\n"
    );
    assert!(container.sh("cat /etc/environment")?.contains("COREOS_PRIVATE_IPV4=10.0.0.5\n"));

    let pid = container.sh("systemctl show -p MainPID --value ferrite-store.service")?;
    let before = snapshot(&container)?;
    let (code, _, stderr) = apply(&container, "/tmp/seed.yaml")?;
    ensure!(code == 0, "second apply failed: {stderr}");
    assert!(stderr.contains(" 0 changes"), "{stderr}");
    assert_eq!(snapshot(&container)?, before);
    assert_eq!(container.sh("systemctl show -p MainPID --value ferrite-store.service")?, pid, "not restarted");
    Ok(())
}

#[test]
fn units_users_files_and_a_script_are_applied_once() -> Result<()> {
    let container = container_with_binary()?;
    container.write("/tmp/rich.yaml", &fixture("system/fixtures/rich.yaml"))?;
    let (code, stdout, stderr) = apply(&container, "/tmp/rich.yaml")?;
    ensure!(code == 0, "apply failed: {stdout}{stderr}");

    // Units: written, drop-in in force, started, enabled, masked.
    assert_eq!(active(&container, "hello.service")?, "active");
    assert_eq!(container.sh("cat /run/hello")?, "hi-from-drop-in\n");
    assert_eq!(container.sh("systemctl is-enabled hello.service")?.trim(), "enabled");
    assert_eq!(active(&container, "runtime.service")?, "active");
    assert_eq!(
        container.sh("systemctl show -p FragmentPath --value runtime.service")?.trim(),
        "/run/systemd/system/runtime.service"
    );
    let masked = container.exec(&["systemctl", "is-enabled", "masked.service"])?;
    assert_eq!(String::from_utf8_lossy(&masked.stdout).trim(), "masked");

    // Users, with the system's own tools.
    let alice = container.sh("getent passwd alice")?;
    assert!(alice.starts_with("alice:x:") && alice.contains(":Alice Liddell:/home/alice:/bin/bash"), "{alice}");
    assert_eq!(container.sh("id -nG alice")?.split_whitespace().filter(|g| ["sudo", "adm"].contains(g)).count(), 2);
    assert_eq!(container.sh("getent shadow alice | cut -d: -f2")?.trim(), "$6$saltsalt$Uq6mpsZgtyXbFqCPYD3mG0");
    assert!(container.sh("getent passwd svc")?.trim().ends_with(":/usr/sbin/nologin"));
    assert_eq!(container.sh("test -d /home/svc && echo home || echo none")?.trim(), "none");
    assert_eq!(
        container.sh("cat /home/alice/.ssh/authorized_keys")?,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIalice alice@example\n"
    );
    assert_eq!(container.sh("stat -c '%a %U' /home/alice/.ssh/authorized_keys")?.trim(), "600 alice");

    // Files: content (substituted), mode, owner.
    assert_eq!(container.sh("cat /etc/ferrite/app.conf")?, "listen=10.0.0.5:8080\n");
    assert_eq!(container.sh("stat -c '%a %U:%G' /etc/ferrite/app.conf")?.trim(), "640 alice:adm");
    assert_eq!(container.sh("cat /etc/ferrite/b64")?, "hello\n");
    assert_eq!(container.sh("stat -c '%a %U:%G' /etc/ferrite/b64")?.trim(), "600 root:root");
    assert_eq!(container.sh("cat /etc/hostname")?.trim(), "ferrite-test");
    assert_eq!(container.sh("hostname")?.trim(), "ferrite-test", "the running hostname");
    assert_eq!(container.sh("hostnamectl --static")?.trim(), "ferrite-test", "hostnamed reads the file back");
    assert_eq!(container.sh("cat /etc/hosts")?, "127.0.0.1 ferrite-test\n");

    // A script runs once, as a transient unit.
    container.write("/tmp/script", "#!/bin/sh\necho \"ran on $private_ipv4\" >> /var/lib/script-ran\n")?;
    container.sh("chmod 0755 /tmp/script")?;
    let (code, _, stderr) = apply(&container, "/tmp/script")?;
    ensure!(code == 0, "script apply failed: {stderr}");
    assert_eq!(container.sh("cat /var/lib/script-ran")?, "ran on 10.0.0.5\n");

    // A second run of each changes nothing.
    let before = snapshot(&container)?;
    let (code, _, stderr) = apply(&container, "/tmp/rich.yaml")?;
    ensure!(code == 0, "second apply failed: {stderr}");
    assert!(stderr.contains(" 0 changes"), "{stderr}");
    let (code, _, stderr) = apply(&container, "/tmp/script")?;
    ensure!(code == 0, "second script apply failed: {stderr}");
    assert_eq!(container.sh("cat /var/lib/script-ran")?, "ran on 10.0.0.5\n", "the script ran twice");
    assert_eq!(snapshot(&container)?, before);
    Ok(())
}

#[test]
fn a_config_with_several_mistakes_reports_them_all_and_changes_nothing() -> Result<()> {
    let container = container_with_binary()?;
    let input = "it/fixtures/validate/several-mistakes.yaml";
    container.write("/tmp/bad.yaml", &fixture(input))?;
    let before = snapshot(&container)?;
    let (code, stdout, _) = apply(&container, "/tmp/bad.yaml")?;
    assert_eq!(code, 1);
    assert_eq!(stdout, fixture(&input.replace(".yaml", ".report")));
    assert_eq!(stdout.matches(": error: ").count(), 4);
    assert_eq!(snapshot(&container)?, before);
    assert!(!container.exec(&["getent", "passwd", "mallory"])?.status.success());
    assert_ne!(container.sh("cat /etc/hostname")?.trim(), "broken");

    let validate = container.exec(&[BIN, "validate", "/tmp/bad.yaml"])?;
    assert_eq!(validate.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&validate.stdout), stdout);
    Ok(())
}

/// A config the machine cannot take (a missing group, unit and a read-only
/// path) fails before the first change: every problem with its line, and
/// the file, hostname and user it would have made first are not there.
/// `try-restart` of a unit that does not exist is not a problem: systemd
/// leaves a unit that is not running alone.
#[test]
fn a_config_the_machine_cannot_take_changes_nothing() -> Result<()> {
    let container = container_with_binary()?;
    let input = "system/fixtures/not-on-this-machine.yaml";
    container.write("/tmp/cannot.yaml", &fixture(input))?;
    let hostname = container.sh("hostname")?;
    let before = snapshot(&container)?;
    let (code, stdout, stderr) = apply(&container, "/tmp/cannot.yaml")?;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stdout, fixture(&input.replace(".yaml", ".report")));
    assert!(stderr.contains("nothing applied"), "{stderr}");
    assert_eq!(snapshot(&container)?, before);
    assert_eq!(container.sh("hostname")?, hostname);
    assert!(!container.exec(&["getent", "passwd", "alice"])?.status.success());
    assert_eq!(container.sh("test -e /etc/ferrite/first && echo there || echo absent")?.trim(), "absent");

    // What was in the way removed, the same config applies.
    let fixed = fixture(input)
        .replace("[nosuchgroup]", "[adm]")
        .replace("/sys/fs/cgroup/ferrite", "/etc/ferrite/second")
        .replace("nothere.service\n      enable: true", "systemd-journald.service\n      enable: false")
        .replace("nothere-either.service", "systemd-journald.service");
    container.write("/tmp/fixed.yaml", &fixed)?;
    let (code, stdout, stderr) = apply(&container, "/tmp/fixed.yaml")?;
    ensure!(code == 0, "the fixed config failed: {stdout}{stderr}");
    assert_eq!(container.sh("cat /etc/ferrite/first")?, "written first, were it not for the rest");
    assert!(container.exec(&["getent", "passwd", "alice"])?.status.success());
    Ok(())
}
