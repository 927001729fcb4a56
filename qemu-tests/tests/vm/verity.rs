//! One corrupted block in USR-A stops the boot: the initramfs refuses the
//! bad /usr instead of running it.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::process::Command;
use std::time::Duration;

use ferrite_vm::{Boot, Vm, VmConfig};

use crate::{images, manifest};

#[test]
fn a_corrupted_block_in_usr_a_fails_verification_and_the_system_never_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("corrupt.raw");
    let status = Command::new("cp")
        .arg("--sparse=always")
        .arg(images().join("ferrite.raw"))
        .arg(&disk)
        .status()
        .expect("cp runs");
    assert!(status.success());

    // Flip one byte in the first 4 KiB block of USR-A (the squashfs
    // superblock, which mounting /usr must read).
    let m = manifest();
    let usr_a = m["partitions"].as_array().unwrap().iter().find(|p| p["label"] == "USR-A").expect("USR-A");
    let offset = usr_a["offset"].as_u64().unwrap() + 100;
    let mut f = fs::OpenOptions::new().read(true).write(true).open(&disk).unwrap();
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut byte).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[byte[0] ^ 0xff]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let mut cfg = VmConfig::disk("corrupt", &disk);
    cfg.boot = Boot::Disk { image: disk.clone(), grow_to: None };
    let mut vm = Vm::start(&cfg).expect("QEMU starts");
    let line = vm.wait_for_console("is corrupted", Duration::from_secs(600)).expect("dm-verity reports the bad block");
    eprintln!("kernel: {line}");
    // The initramfs gives up on /usr: it does not switch to the system.
    vm.wait_for_console("emergency", Duration::from_secs(300)).expect("the initramfs stops in emergency mode");
    let console = vm.console();
    assert!(!console.contains("ferrite-report:"), "the system must not come up on a corrupted /usr");
    assert!(!console.contains("Reached target multi-user.target"), "multi-user must not be reached");
}
