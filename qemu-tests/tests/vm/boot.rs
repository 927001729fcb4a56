//! The image boots to a running system: /usr through dm-verity and
//! read-only, ROOT grown to the disk, nothing failed.

use std::time::Duration;

use ferrite_vm::{Boot, Vm, VmConfig};

use crate::{images, manifest, parse_report};

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
    let root_part: u64 = r["root-part-bytes"].parse().expect("a size");
    let disk: u64 = r["disk-bytes"].parse().expect("a size");
    assert_eq!(disk, DISK, "the guest sees the grown disk");
    // ROOT is last: grown, it reaches (within alignment) the backup GPT at
    // the disk's end; 1 MiB is left before the first partition.
    let others: u64 = manifest()["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["label"] != "ROOT")
        .map(|p| p["size"].as_u64().unwrap())
        .sum();
    let room = DISK - others - (2 << 20);
    assert!(root_part >= room, "ROOT's partition fills the disk: {root_part} bytes, at least {room} expected");
    assert!(root_fs > room / 10 * 9, "ROOT's filesystem fills its partition: {root_fs} of {root_part} bytes");
}
