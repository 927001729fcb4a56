//! The PXE set boots the same system from the network: QEMU's iPXE (the
//! UEFI ROM of Debian's ipxe-qemu, under OVMF) fetches an iPXE script,
//! the kernel and the initramfs carrying /usr over QEMU's built-in TFTP;
//! the initramfs verifies /usr with dm-verity and roots the machine in a
//! tmpfs; ferrite-cloudinit fetches its cloud-config from the URL on the
//! kernel command line, served by this test on host loopback.

use std::os::unix::fs::symlink;
use std::time::Duration;

use ferrite_vm::{write_ipxe_script, Vm, VmConfig};

use crate::serve::ServeFile;
use crate::{images, manifest, parse_report};

const HOSTNAME: &str = "ferrite-pxe-test";

#[test]
fn the_pxe_set_boots_through_ipxe_with_verified_usr_a_tmpfs_root_and_cloud_config_from_a_url() {
    let server = ServeFile::start("/pxe/user-data", format!("#cloud-config\nhostname: {HOSTNAME}\n"));
    let tftp = tempfile::tempdir().unwrap();
    for name in ["ferrite-pxe.vmlinuz", "ferrite-pxe.initrd"] {
        symlink(images().join(name), tftp.path().join(name)).unwrap();
    }
    let command_line =
        manifest()["pxe_command_line"].as_str().expect("the manifest names the PXE command line").to_owned();
    // 10.0.2.2 is the host as the guest sees it through user networking.
    let url = format!("http://10.0.2.2:{}/pxe/user-data", server.port);
    write_ipxe_script(
        &tftp.path().join("boot.ipxe"),
        "ferrite-pxe.vmlinuz",
        "ferrite-pxe.initrd",
        &format!("{command_line} cloud-config-url={url}"),
    )
    .unwrap();

    let mut cfg = VmConfig::pxe("pxe", tftp.path(), "boot.ipxe");
    // The initramfs (with /usr in it) and the tmpfs root live in memory.
    cfg.memory_mib = 3072;
    let mut vm = Vm::start(&cfg).expect("QEMU starts");
    let line = vm.wait_for_console("ferrite-report:", Duration::from_secs(900)).expect("the guest reports its boot");
    eprintln!("boot report after {:.0} s: {line}", vm.uptime().as_secs_f64());
    let r = parse_report(&line);

    assert_eq!(r["state"], "running", "systemctl is-system-running; failed units: {}", r["failed"]);
    let usr: Vec<&str> = r["usr"].split(',').collect();
    assert_eq!(usr[..2], ["/dev/mapper/usr", "squashfs"], "/usr comes from the verity device");
    assert!(usr[2..].contains(&"ro"), "/usr is mounted read-only: {usr:?}");
    assert_eq!(r["usr-target"], "verity", "the usr device-mapper target is dm-verity");
    assert_eq!(r["root-fstype"], "tmpfs", "a machine booted from the network is rooted in memory");
    assert!(server.served() >= 1, "the guest fetched its cloud-config from {url}");
    assert_eq!(r["hostname"], HOSTNAME, "the cloud-config from the URL is applied");
}
