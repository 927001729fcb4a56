//! `ferrite-vm` run as a process, the way an operator or CI runs it, is
//! stopped from outside: no QEMU may outlive it. QEMU boots OVMF with a
//! blank disk, so no guest is needed; the firmware keeps it busy. A
//! ferrite-vm that gives up on a boot leaves the vCPUs' state behind.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `ferrite-vm` and the QEMU it started.
struct Running {
    ferrite_vm: Child,
    qemu: u32,
    stderr: std::path::PathBuf,
}

/// A disk with nothing to boot: OVMF runs and never starts a kernel.
fn blank_image(dir: &Path) -> std::path::PathBuf {
    let image = dir.join("blank.qcow2");
    let out = Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&image).arg("64M").output().unwrap();
    assert!(out.status.success(), "qemu-img: {}", String::from_utf8_lossy(&out.stderr));
    image
}

fn start(dir: &Path) -> Running {
    let image = blank_image(dir);
    let stderr = dir.join("ferrite-vm.stderr");
    let ferrite_vm = Command::new(env!("CARGO_BIN_EXE_ferrite-vm"))
        .arg("--image")
        .arg(&image)
        .args(["--timeout", "600"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("ferrite-vm starts");
    // Running once QEMU is its child and it has named the console log.
    let qemu = wait_for(Duration::from_secs(60), || {
        let named = fs::read_to_string(&stderr).is_ok_and(|e| e.contains("console: "));
        qemu_child_of(ferrite_vm.id()).filter(|_| named)
    })
    .expect("ferrite-vm starts QEMU within 60 s");
    Running { ferrite_vm, qemu, stderr }
}

/// The pid of `parent`'s QEMU child, from /proc.
fn qemu_child_of(parent: u32) -> Option<u32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let (comm, ppid, _) = stat(pid)?;
        (ppid == parent && comm.starts_with("qemu-system")).then_some(pid)
    })
}

/// `comm`, parent pid and state of a process, or `None` once it is gone.
fn stat(pid: u32) -> Option<(String, u32, char)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (comm, rest) = text.split_once(" (")?.1.rsplit_once(") ")?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((comm.to_string(), fields.next()?.parse().ok()?, state))
}

/// Whether `pid` still runs (a zombie waiting for its reaper does not).
fn runs(pid: u32) -> bool {
    stat(pid).is_some_and(|(_, _, state)| state != 'Z')
}

fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

fn exit_of(child: &mut Child) -> ExitStatus {
    wait_for(Duration::from_secs(60), || child.try_wait().unwrap()).expect("ferrite-vm exits within 60 s")
}

#[test]
fn sigterm_stops_qemu_and_keeps_the_console_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = start(dir.path());
    signal(vm.ferrite_vm.id(), "TERM");
    let status = exit_of(&mut vm.ferrite_vm);
    let stderr = fs::read_to_string(&vm.stderr).unwrap();
    // Handled, not killed by the signal: it reports and exits non-zero.
    assert_eq!(status.code(), Some(1), "ferrite-vm's exit: {status}; stderr:\n{stderr}");
    assert!(!runs(vm.qemu), "QEMU {} still runs after ferrite-vm stopped", vm.qemu);
    assert!(stderr.contains("stopped by a signal"), "ferrite-vm says why it stopped:\n{stderr}");
    let kept = stderr
        .split("logs kept in Some(\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("ferrite-vm names the kept log directory:\n{stderr}"));
    let console = Path::new(kept).join("console.log");
    assert!(console.is_file(), "{} is kept", console.display());
    fs::remove_dir_all(kept).unwrap();
}

#[test]
fn sigkill_of_ferrite_vm_takes_qemu_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = start(dir.path());
    signal(vm.ferrite_vm.id(), "KILL");
    exit_of(&mut vm.ferrite_vm);
    let gone = wait_for(Duration::from_secs(30), || (!runs(vm.qemu)).then_some(()));
    if gone.is_none() {
        signal(vm.qemu, "KILL");
        panic!("QEMU {} still runs 30 s after ferrite-vm was killed", vm.qemu);
    }
    // A killed ferrite-vm cannot remove its VM directory; the test does.
    let stderr = fs::read_to_string(&vm.stderr).unwrap();
    let console = stderr.lines().find_map(|l| l.strip_prefix("console: ")).expect("ferrite-vm names its console log");
    fs::remove_dir_all(Path::new(console).parent().unwrap()).unwrap();
}

#[test]
fn a_boot_that_never_comes_up_leaves_the_vcpus_state_beside_the_console_log() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite-vm"))
        .arg("--image")
        .arg(blank_image(dir.path()))
        .args(["--check", "--timeout", "5"])
        .stdin(Stdio::null())
        .output()
        .expect("ferrite-vm runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "ferrite-vm gives up with an error:\n{stderr}");
    let vcpus = stderr
        .split("vCPU state in ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("the error names the vCPU state's file:\n{stderr}"));
    let state = fs::read_to_string(vcpus).unwrap_or_else(|e| panic!("{vcpus}: {e}"));
    // Both vCPUs (the test's VM has two), their registers, and each local
    // APIC with its timer.
    for expected in ["# info cpus", "CPU #0", "CPU #1", "RIP=", "# info lapic 0", "# info lapic 1"] {
        assert!(state.contains(expected), "{vcpus} has no {expected:?}:\n{state}");
    }
    let timers = state.lines().filter(|line| line.starts_with("LVTT\t")).count();
    assert_eq!(timers, 2, "one timer per local APIC:\n{state}");
    fs::remove_dir_all(Path::new(vcpus).parent().unwrap()).unwrap();
}
