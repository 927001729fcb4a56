//! One boot of the disk image, checked the ways a user would: it reaches a
//! running system with /usr through dm-verity and read-only and ROOT grown
//! to the disk; the cloud-config given through fw_cfg is applied (hostname,
//! the SSH key of user core); `core` logs in over SSH with that key and no
//! other; the machine made its own machine-id and host key, and serves SSH
//! per connection from sshd.socket; names resolve through systemd-resolved's stub; Docker runs a container whose image was made on this host and
//! sent over SSH (no registry); systemd-boot counted a try of slot A's
//! entry and the good boot blessed it (the counter is gone from its name);
//! dm-verity hashes /usr with the CPU's SHA-256 extensions; under TCG the
//! guest's CPU is ferrite-vm's model, without the features TCG emulates
//! slowly.

use std::time::Duration;

use ferrite_testkit::images::Image;
use ferrite_vm::{ssh_keygen, Accel, Boot, Vm, VmConfig, TCG_CPU};

use crate::{images, manifest, parse_report, shell_quote, stdout_of};

const DISK: u64 = 4 << 30;
const HOSTNAME: &str = "ferrite-boot-test";

#[test]
fn boots_to_a_running_system_applies_cloud_config_and_serves_ssh_and_docker() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("id_core");
    let public = ssh_keygen(&key).expect("ssh-keygen makes the test's key");
    let mut cfg = VmConfig::disk("boot", &images().join("ferrite.qcow2"));
    cfg.boot = Boot::Disk { image: images().join("ferrite.qcow2"), grow_to: Some(DISK) };
    cfg.cloud_config = Some(format!("#cloud-config\nhostname: {HOSTNAME}\nssh_authorized_keys:\n  - {public}\n"));
    cfg.ssh_key = Some(key);
    let mut vm = Vm::start(&cfg).expect("QEMU starts");
    let line = vm.wait_for_console("ferrite-report:", Duration::from_secs(600)).expect("the guest reports its boot");
    eprintln!("boot report after {:.0} s: {line}", vm.uptime().as_secs_f64());

    the_system_runs_on_verified_usr_with_root_grown(&line);
    cloud_config_reports_on_the_console(&vm);
    core_logs_in_with_the_cloud_config_key_only(&mut vm, keys.path());
    the_machine_made_its_own_identity_once(&vm);
    root_grew_beside_the_boot(&vm);
    units_with_nothing_to_do_start_nothing(&vm);
    names_resolve_through_systemd_resolved(&vm);
    the_static_device_nodes_are_there(&vm);
    // The guest CPU's flags, as its kernel reports them, for both checks.
    let cpu_flags = stdout_of(&vm, "grep -m1 '^flags' /proc/cpuinfo");
    usr_is_hashed_with_the_cpus_sha256(&vm, &cpu_flags);
    if cfg.accel == Accel::Tcg {
        the_emulated_cpu_lacks_what_tcg_emulates_slowly(&vm, &cpu_flags);
    }
    docker_runs_a_container_imported_over_ssh(&vm);
    the_counted_entry_is_tried_and_blessed(&vm);
}

fn the_system_runs_on_verified_usr_with_root_grown(line: &str) {
    let r = parse_report(line);
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

fn cloud_config_reports_on_the_console(vm: &Vm) {
    // Where an operator of a cloud machine sees provisioning: the serial
    // console. Its log (not only its prints) goes there as well as to the
    // journal.
    let console = vm.console();
    assert!(
        console.contains("user data from QEMU fw_cfg"),
        "ferrite-cloudinit's log names the datasource on the console"
    );
}

fn core_logs_in_with_the_cloud_config_key_only(vm: &mut Vm, keys: &std::path::Path) {
    vm.wait_for_ssh("core", Duration::from_secs(120)).expect("core logs in with the key from cloud-config");
    assert_eq!(stdout_of(vm, "id -un"), "core");
    assert!(
        stdout_of(vm, "id -Gn").split_whitespace().any(|g| g == "docker"),
        "core is in the docker group (sysusers.d)"
    );
    assert_eq!(stdout_of(vm, "hostname"), HOSTNAME, "cloud-config's hostname is applied");

    let stranger = keys.join("id_stranger");
    ssh_keygen(&stranger).expect("ssh-keygen makes a second key");
    let out = vm.ssh_with_key(&stranger, "core", "true").expect("ssh runs");
    assert!(!out.status.success(), "a key that is not in the cloud-config must not log in");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Permission denied"), "sshd refuses the other key: {stderr}");
}

/// The image ships an empty machine-id and no host key: PID 1 wrote a new
/// ID into /etc, the first boot made the host key and relocated the backup
/// GPT once, and SSH is socket-activated (one sshd per connection, as on
/// CoreOS) with Debian's daemon off.
fn the_machine_made_its_own_identity_once(vm: &Vm) {
    let id = stdout_of(vm, "cat /etc/machine-id");
    assert!(id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()), "a machine id was written: {id:?}");
    assert_eq!(stdout_of(vm, "test -s /etc/ssh/ssh_host_ed25519_key.pub && echo made"), "made");
    assert_eq!(stdout_of(vm, "test -e /var/lib/ferrite/gpt-relocated && echo once"), "once");
    assert_eq!(stdout_of(vm, "systemctl is-active sshd.socket"), "active");
    let daemon = vm.ssh("core", "systemctl is-active ssh.service").expect("ssh runs");
    assert_eq!(String::from_utf8_lossy(&daemon.stdout).trim(), "inactive", "no standing sshd");
}

/// ROOT's growth (checked above) ran beside the boot: multi-user.target is
/// not ordered after it, and systemd-repart.service, which sysinit.target
/// would wait for, is masked.
fn root_grew_beside_the_boot(vm: &Vm) {
    assert_eq!(stdout_of(vm, "systemctl is-active ferrite-grow-root.service"), "active");
    let after = stdout_of(vm, "systemctl show -p After --value multi-user.target");
    assert!(!after.contains("ferrite-grow-root"), "multi-user.target waits for ROOT's growth: {after}");
    let repart = vm.ssh("core", "systemctl is-enabled systemd-repart.service").expect("ssh runs");
    assert_eq!(String::from_utf8_lossy(&repart.stdout).trim(), "masked");
}

/// Units with nothing to do on this machine start no process: with no
/// /etc/fstab, systemd-remount-fs is skipped by its condition; with no
/// network argument on the kernel command line, so is
/// systemd-network-generator (both sit before udevd on the critical
/// chain); dracut-shutdown, which dracut links in from /usr, is masked, and
/// so is the modprobe@ instance logind pulls in for drm, a module Debian's
/// cloud kernel does not ship (fuse's, a module it ships, is not).
fn units_with_nothing_to_do_start_nothing(vm: &Vm) {
    assert_eq!(stdout_of(vm, "test -e /etc/fstab || echo none"), "none", "ROOT has no fstab");
    for unit in ["systemd-remount-fs.service", "systemd-network-generator.service"] {
        let condition = stdout_of(vm, &format!("systemctl show -P ConditionResult {unit}"));
        let pid = stdout_of(vm, &format!("systemctl show -P ExecMainPID {unit}"));
        assert_eq!((condition.as_str(), pid.as_str()), ("no", "0"), "{unit} was skipped, not run");
    }
    for (unit, state) in
        [("dracut-shutdown.service", "masked"), ("modprobe@drm.service", "masked"), ("modprobe@fuse.service", "static")]
    {
        let out = vm.ssh("core", &format!("systemctl is-enabled {unit}")).expect("ssh runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), state, "{unit}");
    }
}

fn names_resolve_through_systemd_resolved(vm: &Vm) {
    // resolved starts beside the boot, not before sysinit.target; once
    // booted it answers the stub resolver of /etc/resolv.conf. /etc/hosts
    // does not name the machine, so the answer comes from resolved (the
    // disk boot's restricted network offers no DNS server to ask further).
    assert_eq!(stdout_of(vm, "systemctl is-active systemd-resolved"), "active");
    assert!(stdout_of(vm, "cat /etc/resolv.conf").contains("nameserver 127.0.0.53"), "the stub is the resolver");
    let hosts = stdout_of(vm, "cat /etc/hosts");
    assert!(!hosts.contains(HOSTNAME), "/etc/hosts does not answer for {HOSTNAME}: {hosts}");
    let answer = stdout_of(vm, &format!("getent ahosts {HOSTNAME}"));
    assert!(answer.contains("10.0.2.15"), "{HOSTNAME} resolves to the machine's address: {answer:?}");
}

fn the_static_device_nodes_are_there(vm: &Vm) {
    // kmod-static-nodes is masked in the image, which lists the nodes of
    // its kernel's modules in /usr instead: they are there for modules not
    // yet loaded (opening one loads its module), not only for the few the
    // initramfs carries (tun is not among those).
    assert_eq!(stdout_of(vm, "systemctl is-enabled kmod-static-nodes.service || true"), "masked");
    // The initramfs carries the same list and masks the service too: the
    // journal, which begins in the initramfs, has no line from the unit.
    let journal = stdout_of(vm, "sudo journalctl -b -q -o cat -u kmod-static-nodes.service");
    assert_eq!(journal, "", "kmod-static-nodes ran during the boot");
    let nodes = "/dev/fuse /dev/loop-control /dev/net/tun /dev/mapper/control";
    assert_eq!(stdout_of(vm, &format!("for n in {nodes}; do test -c $n || echo missing $n; done")), "");
}

/// dm-verity hashes every block read from /usr with the SHA-256 it found
/// when the initramfs set the device up. The initramfs loads the module of
/// the CPU's SHA-256 extensions first (SHA-NI, AVX2 or SSSE3, whichever the
/// CPU has), so that is not the kernel's generic C code. Every CPU model
/// the VM tier runs (TCG_CPU, or the host's under KVM) has SSSE3 at least.
fn usr_is_hashed_with_the_cpus_sha256(vm: &Vm, flags: &str) {
    assert!(flags.split_whitespace().any(|f| f == "ssse3"), "the guest CPU lacks SSSE3: {flags}");
    let line = stdout_of(vm, "sudo journalctl -b -k -q -o cat | grep -m1 'verity: sha256 using implementation'");
    let implementation = line.rsplit(' ').next().unwrap_or_default().trim_matches('"');
    assert!(
        implementation.starts_with("sha256-") && implementation != "sha256-generic",
        "/usr's verity device hashes with {implementation:?}: {line:?}"
    );
}

/// ferrite-vm's CPU model under TCG (`TCG_CPU`): QEMU's `max` less the
/// features that make the guest slower to emulate (QEMU's names for them
/// are the kernel's), with the extensions `max` was chosen for kept.
fn the_emulated_cpu_lacks_what_tcg_emulates_slowly(vm: &Vm, line: &str) {
    let flags: Vec<&str> = line.split_whitespace().collect();
    let removed: Vec<&str> = TCG_CPU.split(',').filter_map(|f| f.strip_prefix('-')).collect();
    for flag in ["erms", "fsrm", "avx", "avx2", "la57", "svm"] {
        assert!(removed.contains(&flag), "TCG_CPU no longer removes {flag}: {TCG_CPU}");
    }
    for gone in removed {
        assert!(!flags.contains(&gone), "the guest CPU offers {gone}: {line}");
    }
    for kept in ["sse4_2", "aes", "sha_ni", "rdrand"] {
        assert!(flags.contains(&kept), "the guest CPU lacks {kept}: {line}");
    }
    // Without SVM the guest has no nested virtualization to load KVM for.
    assert_eq!(stdout_of(vm, "grep -c '^kvm' /proc/modules || true"), "0");
}

fn docker_runs_a_container_imported_over_ssh(vm: &Vm) {
    // The image is made here from this host's `env` and its libraries,
    // sent over SSH and imported: the guest never reaches a registry.
    let image =
        Image::new("ferrite-vm-test/env:1").binary("/usr/bin/env", "/usr/bin/env").entrypoint(&["/usr/bin/env"]);
    let tar = image.tar().expect("the image's tarball");
    let changes: Vec<String> = image.import_changes().expect("import flags").iter().map(|c| shell_quote(c)).collect();
    let import = format!("docker import {} - {}", changes.join(" "), image.name());
    let out = vm.ssh_with_input("core", &import, &tar).expect("ssh runs");
    assert!(out.status.success(), "docker import in the guest: {}", String::from_utf8_lossy(&out.stderr));

    let run = format!("docker run --rm --network none -e FERRITE_GREETING=from-the-host {}", image.name());
    let out = vm.ssh("core", &run).expect("ssh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "docker run: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().any(|l| l == "FERRITE_GREETING=from-the-host"), "the container's environment: {stdout}");
    // Docker names the container's UTS namespace after its id: the output
    // comes from inside a container, not from the guest's shell.
    let hostname = stdout.lines().find_map(|l| l.strip_prefix("HOSTNAME=")).unwrap_or("");
    assert!(
        hostname.len() == 12 && hostname.chars().all(|c| c.is_ascii_hexdigit()),
        "HOSTNAME is a container id, not {hostname:?}"
    );
}

fn the_counted_entry_is_tried_and_blessed(vm: &Vm) {
    let m = manifest();
    let entry = format!("ferrite-{}-{}", m["version"].as_str().unwrap(), &m["usr_hash"].as_str().unwrap()[..12]);
    // systemd-boot names the entry it booted after counting one try down
    // (the image ships `<entry>+3.conf`), in LoaderBootCountPath.
    let var = "/sys/firmware/efi/efivars/LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
    let out = vm.ssh("core", &format!("sudo cat {var}")).expect("ssh runs");
    assert!(out.status.success(), "systemd-boot set LoaderBootCountPath: {}", String::from_utf8_lossy(&out.stderr));
    // efivarfs: 4 bytes of attributes, then UTF-16LE text.
    let units: Vec<u16> = out.stdout[4..].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    let counted = String::from_utf16_lossy(&units).trim_end_matches('\0').to_string();
    assert_eq!(counted, format!("\\loader\\entries\\{entry}+2-1.conf"), "the try was counted");

    let esp = stdout_of(vm, "sudo bootctl --print-esp-path");
    let entries = stdout_of(vm, &format!("sudo ls {esp}/loader/entries"));
    assert_eq!(entries, format!("{entry}.conf"), "systemd-bless-boot removed the counter after the good boot");
}
