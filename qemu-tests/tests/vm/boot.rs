//! The image boots to a running system: /usr through dm-verity and
//! read-only, ROOT grown to the disk, nothing failed.

use std::time::Duration;

use ferrite_vm::{Boot, Vm, VmConfig};

use crate::{images, parse_report};

const DISK: u64 = 4 << 30;

#[test]
fn boots_to_a_running_system_with_verified_read_only_usr_and_root_grown_to_the_disk() {
    let mut cfg = VmConfig::disk("boot", &images().join("ferrite.qcow2"));
    cfg.boot = Boot::Disk { image: images().join("ferrite.qcow2"), grow_to: Some(DISK) };
    let mut vm = Vm::start(&cfg).expect("QEMU starts");
    let line = vm.wait_for_console("ferrite-report:", Duration::from_secs(600)).expect("the guest reports its boot");
    let r = parse_report(&line);
    eprintln!("boot report: {r:?}");

    assert_eq!(r["state"], "running", "systemctl is-system-running; failed units: {}", r["failed"]);
    let usr: Vec<&str> = r["usr"].split(',').collect();
    assert_eq!(usr[0], "/dev/mapper/usr", "/usr comes from the verity device");
    assert_eq!(usr[1], "squashfs");
    assert!(usr[2..].contains(&"ro"), "/usr is mounted read-only: {usr:?}");
    assert_eq!(r["usr-target"], "verity", "the usr device-mapper target is dm-verity");

    let root_fs: u64 = r["root-fs-bytes"].parse().expect("a size");
    let disk: u64 = r["disk-bytes"].parse().expect("a size");
    assert_eq!(disk, DISK, "the guest sees the grown disk");
    assert!(root_fs > DISK - (1 << 30), "ROOT's filesystem fills the disk: {root_fs} of {disk} bytes");
}
