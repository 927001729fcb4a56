//! A config drive as OpenStack makes one (ISO 9660 labelled config-2, made
//! with xorriso) attached as a second disk: the boot unit finds it by its
//! label, mounts it read-only, applies its user data and unmounts it. The
//! build host cannot mount iso9660; Ferrite's kernel can.

use std::process::Command;
use std::time::Duration;

use ferrite_vm::{Boot, Vm, VmConfig};

use crate::{images, parse_report};

/// Sets the hostname, and starts a unit that reports on the console what
/// a user would check: the hostname and whether anything of the drive is
/// still mounted (`$$` is systemd's escape for `$`). Through /dev/console:
/// a write through /dev/ttyS0 fails when the serial getty hangs that tty
/// up at the same moment (as ferrite-console-report.service notes).
const USER_DATA: &str = r#"#cloud-config
hostname: from-config-drive
coreos:
  units:
    - name: configdrive-report.service
      command: start
      content: |
        [Service]
        Type=oneshot
        StandardOutput=tty
        TTYPath=/dev/console
        ExecStart=/bin/sh -c 'echo "configdrive-report: hostname=$$(cat /proc/sys/kernel/hostname) mounted=$$(grep -c ferrite-configdrive /proc/self/mountinfo)"'
"#;

#[test]
fn a_config_drive_is_found_by_its_label_applied_and_unmounted() {
    let dir = tempfile::tempdir().unwrap();
    let latest = dir.path().join("tree/openstack/latest");
    std::fs::create_dir_all(&latest).unwrap();
    std::fs::write(latest.join("user_data"), USER_DATA).unwrap();
    std::fs::write(latest.join("meta_data.json"), r#"{"hostname":"from-meta-data"}"#).unwrap();
    let iso = dir.path().join("config-2.iso");
    let status = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "config-2", "-J", "-r", "-o"])
        .arg(&iso)
        .arg(dir.path().join("tree"))
        .status()
        .expect("xorriso runs");
    assert!(status.success());

    let mut cfg = VmConfig::disk("configdrive", &images().join("ferrite.qcow2"));
    cfg.boot = Boot::Disk { image: images().join("ferrite.qcow2"), grow_to: None };
    cfg.drives = vec![iso];
    let mut vm = Vm::start(&cfg).expect("QEMU starts");
    // The boot report comes once every start job has finished, the config
    // drive's unit among them.
    let boot =
        parse_report(&vm.wait_for_console("ferrite-report:", Duration::from_secs(600)).expect("the boot report"));
    let console = vm.console();
    assert_eq!(boot["failed"], "", "no unit failed, ferrite-cloudinit.service included:\n{console}");
    let report = console
        .lines()
        .find_map(|l| l.split_once("configdrive-report:"))
        .map(|(_, r)| r.trim())
        .unwrap_or_else(|| panic!("the config drive's unit did not report:\n{console}"));
    assert_eq!(report, "hostname=from-config-drive mounted=0", "the user data's hostname wins over meta_data's");
}
