//! Boots Ferrite images in QEMU: UEFI (OVMF), software emulation (TCG)
//! unless KVM is asked for and answers, the serial console captured to a
//! file, cloud-config through QEMU's fw_cfg, SSH forwarded to a loopback
//! port, commands run in the guest over SSH.
//!
//! A [`Vm`] owns its QEMU process and its directory: dropping it kills and
//! reaps QEMU; when the thread is panicking (a failed test) the directory
//! with the console log is kept and its path printed. QEMU also dies with
//! the thread that started it (`PR_SET_PDEATHSIG`), so a harness killed
//! outright (SIGKILL, a test runner's timeout) leaves no QEMU behind.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod qmp;

/// OVMF firmware as Debian's `ovmf` package installs it: the 2 MB build,
/// whose variable store is a quarter of the 4 MB build's. Under TCG it
/// reaches the kernel a median 0.6 s sooner (BENCHMARKS.md); the larger
/// store is for Secure Boot's key databases, which these VMs do not use.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";
/// The emulator (QEMU 10 from bookworm-backports; see xtask's host setup).
const QEMU: &str = "qemu-system-x86_64";
/// The guest's CPU under TCG: `max`, which offers every instruction set
/// extension QEMU emulates (the default model has few), less those that
/// make the guest slower to emulate (BENCHMARKS.md, "Tenth round"):
/// - ERMS and FSRM tell software that `rep movsb` and `rep stosb` are the
///   fast way to copy and fill memory. On hardware they are; TCG executes
///   them a byte at a time. With them the guest's kernel zeroes every page
///   it hands out with `rep stosb` (13% of a boot's samples in a profile
///   of the guest); without them it uses loops of 64-bit moves.
/// - AVX and AVX2: boots measured faster without them; why is not
///   established. FMA, F16C and VAES go with them: they are encoded as AVX
///   instructions, and no CPU offers them without it.
/// - LA57: five levels of page tables for TCG's page walks instead of four.
/// - SVM: it makes the guest load kvm and kvm_amd for nested guests that
///   no Ferrite VM runs.
pub const TCG_CPU: &str = "max,-erms,-fsrm,-avx,-avx2,-fma,-f16c,-vaes,-la57,-svm";
/// The fw_cfg name a cloud-config is passed under (what ferrite-cloudinit's
/// fw_cfg datasource reads from /sys/firmware/qemu_fw_cfg/by_name/).
pub const FW_CFG_USER_DATA: &str = "opt/org.ferrite/user-data";

/// How the guest's CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation: slow and always works.
    Tcg,
    /// Hardware virtualization.
    Kvm,
}

impl Accel {
    /// TCG unless `FERRITE_VM_KVM=1` asks for KVM and /dev/kvm can be
    /// opened. Guests have been seen to hang under KVM on the build
    /// machines, so KVM is never chosen on its own.
    pub fn probe() -> Accel {
        let asked = std::env::var("FERRITE_VM_KVM").is_ok_and(|v| v == "1");
        let opens = fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
        if asked && opens {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }
}

/// How the machine boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// From a disk image (qcow2 or raw). The VM writes to an overlay, so
    /// the image itself is never changed; `grow_to` enlarges the overlay.
    Disk { image: PathBuf, grow_to: Option<u64> },
    /// From the network through QEMU's iPXE: `tftp_dir` is served by
    /// QEMU's built-in TFTP server and `bootfile` (an iPXE script in it)
    /// is fetched first.
    Pxe { tftp_dir: PathBuf, bootfile: String },
}

/// A machine to start.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Names the VM's directory and logs.
    pub name: String,
    pub boot: Boot,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: Accel,
    /// QEMU's CPU model (`-cpu`); `None` is [`TCG_CPU`] under TCG and the
    /// host's own CPU under KVM.
    pub cpu: Option<String>,
    /// Given to the guest through fw_cfg as [`FW_CFG_USER_DATA`].
    pub cloud_config: Option<String>,
    /// The private key [`Vm::ssh`] logs in with (made by [`ssh_keygen`], so
    /// its public half can go into `cloud_config`); without one the VM
    /// makes a key pair of its own.
    pub ssh_key: Option<PathBuf>,
    /// Raw images attached read-only as further virtio disks, after the
    /// boot disk (a config drive, say).
    pub drives: Vec<PathBuf>,
}

impl VmConfig {
    /// Boots from `image` (qcow2 or raw).
    pub fn disk(name: &str, image: &Path) -> VmConfig {
        VmConfig::new(name, Boot::Disk { image: image.to_path_buf(), grow_to: None })
    }

    /// Boots from the network: iPXE fetches `bootfile` from `tftp_dir`.
    pub fn pxe(name: &str, tftp_dir: &Path, bootfile: &str) -> VmConfig {
        VmConfig::new(name, Boot::Pxe { tftp_dir: tftp_dir.to_path_buf(), bootfile: bootfile.to_string() })
    }

    fn new(name: &str, boot: Boot) -> VmConfig {
        VmConfig {
            name: name.to_string(),
            boot,
            memory_mib: 2048,
            cpus: 2,
            accel: Accel::probe(),
            cpu: None,
            cloud_config: None,
            ssh_key: None,
            drives: Vec::new(),
        }
    }
}

/// Makes an ed25519 key pair at `private` (and `private`.pub) and returns
/// the public key's line, for a cloud-config's `ssh_authorized_keys`.
pub fn ssh_keygen(private: &Path) -> Result<String> {
    run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "ferrite-vm", "-f"]).arg(private))?;
    let public = private.with_extension("pub");
    Ok(fs::read_to_string(&public).map_err(io(&public))?.trim().to_string())
}

/// Why a VM could not be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run {program}")]
    Spawn { program: String, source: std::io::Error },
    #[error("`{command}` failed ({status}): {stderr}")]
    Tool { command: String, status: std::process::ExitStatus, stderr: String },
    #[error("{path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("VM {name}: QEMU exited ({status}) before {waiting_for}; {left}")]
    Exited { name: String, status: std::process::ExitStatus, waiting_for: String, left: Box<LeftBehind> },
    #[error("VM {name}: no {waiting_for} within {seconds} s; {left}")]
    Timeout { name: String, waiting_for: String, seconds: u64, left: Box<LeftBehind> },
}

/// What a VM that failed a wait left to read.
#[derive(Debug)]
pub struct LeftBehind {
    /// Where the vCPUs' state was written, or why it was not (a wait that
    /// timed out; QEMU that exited has none to give).
    pub vcpus: Option<String>,
    pub console: PathBuf,
    /// The console's last lines.
    pub tail: String,
}

impl std::fmt::Display for LeftBehind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(vcpus) = &self.vcpus {
            write!(f, "{vcpus}; ")?;
        }
        write!(f, "console log {}:\n{}", self.console.display(), self.tail)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { path, source }
}

/// Files the QEMU command line refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub vars: PathBuf,
    pub disk: Option<PathBuf>,
    pub console: PathBuf,
    pub cloud_config: Option<PathBuf>,
    /// QEMU's machine protocol socket, read when a wait times out.
    pub qmp: PathBuf,
}

/// QEMU's arguments for a configuration (pure, so it is unit-tested).
pub fn qemu_args(cfg: &VmConfig, paths: &Paths, ssh_port: u16) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&["-machine", "q35", "-nodefaults", "-display", "none", "-no-reboot"]);
    push(&["-accel", if cfg.accel == Accel::Kvm { "kvm" } else { "tcg" }]);
    let cpu = match (&cfg.cpu, cfg.accel) {
        (Some(model), _) => model.as_str(),
        (None, Accel::Kvm) => "host",
        (None, Accel::Tcg) => TCG_CPU,
    };
    push(&["-cpu", cpu]);
    push(&["-m", &cfg.memory_mib.to_string(), "-smp", &cfg.cpus.to_string()]);
    push(&["-drive", &format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}")]);
    push(&["-drive", &format!("if=pflash,format=raw,unit=1,file={}", paths.vars.display())]);
    // The disk is named the boot device (`bootindex`), as a hypervisor's
    // "boot from disk" setting does. OVMF then connects the devices QEMU's
    // boot order lists instead of every device it finds: it no longer
    // starts its network stack on the NIC, about a second under TCG
    // (BENCHMARKS.md). Further drives follow it, so the disk stays vda.
    if let Some(disk) = &paths.disk {
        push(&["-drive", &format!("if=none,id=disk,format=qcow2,file={}", disk.display())]);
        push(&["-device", "virtio-blk-pci,drive=disk,bootindex=0"]);
    }
    for (n, drive) in cfg.drives.iter().enumerate() {
        push(&["-drive", &format!("if=none,id=drive{n},format=raw,readonly=on,file={}", drive.display())]);
        push(&["-device", &format!("virtio-blk-pci,drive=drive{n}")]);
    }
    // User networking reaches nothing but the host (10.0.2.2) and the
    // forwarded SSH port: `restrict=on` cuts every other destination.
    let mut netdev = format!("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22");
    let mut nic = "virtio-net-pci,netdev=net0".to_string();
    match &cfg.boot {
        Boot::Pxe { tftp_dir, bootfile } => {
            // Not restricted: a network-booted guest fetches its
            // cloud-config from a server the caller runs on the host's
            // loopback, which it reaches as 10.0.2.2 only when user
            // networking is open. Nothing in the image contacts any other
            // address on its own (no NTP, no registry, no metadata service
            // unless a drop-in names one).
            netdev = format!(
                "user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22,tftp={},bootfile={bootfile}",
                tftp_dir.display()
            );
            nic.push_str(",bootindex=1,romfile=/usr/lib/ipxe/qemu/efi-virtio.rom");
        }
        Boot::Disk { .. } => nic.push_str(",romfile="),
    }
    push(&["-netdev", &netdev, "-device", &nic]);
    push(&["-serial", &format!("file:{}", paths.console.display())]);
    // A monitor for the harness only, on a socket in the VM's directory.
    push(&["-qmp", &format!("unix:{},server=on,wait=off", paths.qmp.display())]);
    if let Some(cc) = &paths.cloud_config {
        push(&["-fw_cfg", &format!("name={FW_CFG_USER_DATA},file={}", cc.display())]);
    }
    push(&["-device", "virtio-rng-pci"]);
    a
}

/// A running machine.
#[derive(Debug)]
pub struct Vm {
    name: String,
    child: Child,
    dir: Option<tempfile::TempDir>,
    console: PathBuf,
    qmp: PathBuf,
    cpus: u32,
    ssh_port: u16,
    ssh_key: PathBuf,
    started: Instant,
}

impl Vm {
    /// Starts QEMU. It is stopped when the [`Vm`] is dropped, and also
    /// when the calling thread ends: keep the [`Vm`] on the thread that
    /// started it.
    pub fn start(cfg: &VmConfig) -> Result<Vm> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ferrite-vm-{}-", cfg.name))
            .tempdir()
            .map_err(io(Path::new("/tmp")))?;
        let d = dir.path().to_path_buf();
        let vars = d.join("OVMF_VARS.fd");
        fs::copy(OVMF_VARS, &vars).map_err(io(Path::new(OVMF_VARS)))?;
        let disk = match &cfg.boot {
            Boot::Disk { image, grow_to } => {
                let overlay = d.join("disk.qcow2");
                let image = fs::canonicalize(image).map_err(io(image))?;
                let mut cmd = Command::new("qemu-img");
                cmd.args(["create", "-q", "-f", "qcow2", "-F"])
                    .arg(if image.extension().is_some_and(|e| e == "qcow2") { "qcow2" } else { "raw" })
                    .arg("-b")
                    .arg(&image)
                    .arg(&overlay);
                if let Some(size) = grow_to {
                    cmd.arg(size.to_string());
                }
                run(&mut cmd)?;
                Some(overlay)
            }
            Boot::Pxe { .. } => None,
        };
        let cloud_config = match &cfg.cloud_config {
            Some(text) => {
                let p = d.join("user-data");
                fs::write(&p, text).map_err(io(&p))?;
                Some(p)
            }
            None => None,
        };
        let console = d.join("console.log");
        fs::write(&console, "").map_err(io(&console))?;
        let ssh_key = match &cfg.ssh_key {
            Some(key) => key.clone(),
            None => {
                let key = d.join("id_ed25519");
                ssh_keygen(&key)?;
                key
            }
        };
        let ssh_port = free_port().map_err(io(Path::new("127.0.0.1:0")))?;
        let qmp = d.join("qmp.sock");
        let paths = Paths { vars, disk, console: console.clone(), cloud_config, qmp: qmp.clone() };
        let args = qemu_args(cfg, &paths, ssh_port);
        fs::write(d.join("qemu.args"), args.join("\n")).map_err(io(&d))?;
        let stderr = fs::File::create(d.join("qemu.stderr")).map_err(io(&d))?;
        let mut qemu = Command::new(QEMU);
        qemu.args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        let parent = rustix::process::getpid();
        // SAFETY: the closure runs in the child between fork and exec and
        // makes only raw system calls (prctl, getppid), which are
        // async-signal-safe; it allocates nothing and takes no lock.
        #[allow(unsafe_code)]
        unsafe {
            qemu.pre_exec(move || die_with_parent(parent));
        }
        let child = qemu.spawn().map_err(|source| Error::Spawn { program: QEMU.into(), source })?;
        tracing::info!(name = %cfg.name, dir = %d.display(), pid = child.id(), ssh_port, accel = ?cfg.accel, "VM started");
        Ok(Vm {
            name: cfg.name.clone(),
            child,
            dir: Some(dir),
            console,
            qmp,
            cpus: cfg.cpus,
            ssh_port,
            ssh_key,
            started: Instant::now(),
        })
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file the serial console is captured to.
    pub fn console_path(&self) -> &Path {
        &self.console
    }

    /// Everything the guest wrote to its serial console so far.
    pub fn console(&self) -> String {
        fs::read(&self.console).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Seconds since QEMU started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The CPU time QEMU has used so far, user and system, all threads.
    /// Under TCG this is the work of emulating the guest; time QEMU spent
    /// waiting for a host CPU is not in it.
    pub fn cpu_time(&self) -> Result<Duration> {
        let path = PathBuf::from(format!("/proc/{}/stat", self.child.id()));
        let stat = fs::read_to_string(&path).map_err(io(&path))?;
        let ticks = cpu_ticks(&stat).ok_or_else(|| Error::Io {
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no utime and stime fields"),
        })?;
        Ok(Duration::from_secs_f64(ticks as f64 / rustix::param::clock_ticks_per_second() as f64))
    }

    /// Waits until the console shows `needle`, QEMU exits, or `timeout`.
    /// Each look reads only what the guest wrote since the last one (from
    /// the start of the line that was still being written).
    pub fn wait_for_console(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut searched = 0;
        loop {
            if let Some(line) = find_line(&self.console, &mut searched, needle).map_err(io(&self.console))? {
                return Ok(line);
            }
            self.check_running(&format!("console line containing {needle:?}"))?;
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    name: self.name.clone(),
                    waiting_for: format!("console line containing {needle:?}"),
                    seconds: whole_seconds(timeout),
                    left: self.left_behind(true),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until QEMU exits on its own (the guest powered off or, with
    /// `-no-reboot`, tried to reboot), or `timeout`.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(io(&self.console))? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    name: self.name.clone(),
                    waiting_for: "QEMU to exit".into(),
                    seconds: whole_seconds(timeout),
                    left: self.left_behind(true),
                });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn check_running(&mut self, waiting_for: &str) -> Result<()> {
        if let Some(status) = self.child.try_wait().map_err(io(&self.console))? {
            return Err(Error::Exited {
                name: self.name.clone(),
                status,
                waiting_for: waiting_for.to_string(),
                left: self.left_behind(false),
            });
        }
        Ok(())
    }

    /// Runs `command` in the guest as `user` over the forwarded SSH port.
    pub fn ssh(&self, user: &str, command: &str) -> Result<Output> {
        self.ssh_with_key(&self.ssh_key, user, command)
    }

    /// Runs `command` as `user`, logging in with the private key `key`.
    pub fn ssh_with_key(&self, key: &Path, user: &str, command: &str) -> Result<Output> {
        self.ssh_command(key, user, command)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Spawn { program: "ssh".into(), source })
    }

    /// Runs `command` in the guest as `user` with `input` on its standard
    /// input (a file sent into the guest, e.g. `docker import -`).
    pub fn ssh_with_input(&self, user: &str, command: &str, input: &[u8]) -> Result<Output> {
        let spawn = |source| Error::Spawn { program: "ssh".into(), source };
        let mut child = self
            .ssh_command(&self.ssh_key, user, command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        // Written from a thread of its own so a guest that answers before
        // reading everything cannot deadlock the two pipes.
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().map_err(spawn)?;
        writer.join().expect("the writer thread does not panic").map_err(spawn)?;
        Ok(out)
    }

    fn ssh_command(&self, key: &Path, user: &str, command: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-i")
            .arg(key)
            .args(["-p", &self.ssh_port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("{user}@127.0.0.1"))
            .arg(command);
        cmd
    }

    /// Retries a trivial SSH command until it works or `timeout`.
    pub fn wait_for_ssh(&mut self, user: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ssh(user, "true")?.status.success() {
                return Ok(());
            }
            self.check_running("SSH login")?;
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    name: self.name.clone(),
                    waiting_for: "SSH login".into(),
                    seconds: whole_seconds(timeout),
                    left: self.left_behind(true),
                });
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// The console log's path and last lines, and with `vcpus` the vCPUs'
    /// state (see [`Vm::record_vcpus`]), for an error.
    fn left_behind(&self, vcpus: bool) -> Box<LeftBehind> {
        Box::new(LeftBehind {
            vcpus: vcpus.then(|| self.record_vcpus()),
            console: self.console.clone(),
            tail: tail(&self.console(), 40),
        })
    }

    /// Writes the vCPUs' state, as QEMU's monitor shows it, to `vcpus.txt`
    /// beside the console log, for a guest that stopped making progress
    /// (one has stopped in its kernel with a timer interrupt that never
    /// came: BENCHMARKS.md, eleventh round). Returns what an error should
    /// say about it; failing to read it does not hide the error itself.
    fn record_vcpus(&self) -> String {
        let text = match qmp::vcpu_state(&self.qmp, self.cpus) {
            Ok(text) => text,
            Err(e) => return format!("vCPU state not read from {}: {e}", self.qmp.display()),
        };
        let path = self.console.with_file_name("vcpus.txt");
        match fs::write(&path, text) {
            Ok(()) => format!("vCPU state in {}", path.display()),
            Err(e) => format!("vCPU state not written to {}: {e}", path.display()),
        }
    }

    /// Keeps the VM's directory (console log, QEMU arguments and stderr)
    /// after the VM is dropped, and returns its path.
    pub fn keep_logs(&mut self) -> Option<PathBuf> {
        self.dir.take().map(|d| d.keep())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            if let Some(dir) = self.keep_logs() {
                eprintln!("VM {}: console log kept in {}", self.name, dir.join("console.log").display());
            }
        }
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|source| Error::Spawn { program: program.clone(), source })?;
    if !out.status.success() {
        return Err(Error::Tool {
            command: program,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

/// In QEMU's process before exec: SIGTERM (QEMU's clean stop) once the
/// thread that started it exits, however it exits. A parent already gone
/// before the death signal was set would never send it, so that is an
/// error and QEMU does not start.
fn die_with_parent(parent: rustix::process::Pid) -> std::io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
    if rustix::process::getppid() != Some(parent) {
        return Err(std::io::Error::other("the process starting QEMU exited before it"));
    }
    Ok(())
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}
/// The first line of `path` at or after byte `searched` that contains
/// `needle`. Moves `searched` past the complete lines read, so the next
/// call starts at the line still being written.
fn find_line(path: &Path, searched: &mut u64, needle: &str) -> std::io::Result<Option<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        // QEMU has not created it yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(*searched))?;
    let mut new = Vec::new();
    file.read_to_end(&mut new)?;
    if let Some(line) = String::from_utf8_lossy(&new).lines().find(|l| l.contains(needle)) {
        return Ok(Some(line.to_string()));
    }
    if let Some(end) = new.iter().rposition(|b| *b == b'\n') {
        *searched += end as u64 + 1;
    }
    Ok(None)
}

/// utime + stime, in clock ticks, from a `/proc/PID/stat` line. The
/// command's name comes second, in parentheses, and may hold spaces and
/// parentheses itself, so fields are counted from its last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().skip(11);
    Some(fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?)
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A wait's length for an error message, rounded: a caller with one
/// deadline passes what is left of it, a fraction under the whole.
fn whole_seconds(timeout: Duration) -> u64 {
    u64::try_from((timeout.as_millis() + 500) / 1000).unwrap_or(u64::MAX)
}

/// Writes a file the caller serves to a PXE-booting VM (an iPXE script).
pub fn write_ipxe_script(path: &Path, kernel: &str, initrd: &str, cmdline: &str) -> Result<()> {
    let mut f = fs::File::create(path).map_err(io(path))?;
    writeln!(f, "#!ipxe\nkernel {kernel} initrd={initrd} {cmdline}\ninitrd {initrd}\nboot").map_err(io(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths {
            vars: "/t/VARS.fd".into(),
            disk: Some("/t/disk.qcow2".into()),
            console: "/t/console.log".into(),
            cloud_config: Some("/t/user-data".into()),
            qmp: "/t/qmp.sock".into(),
        }
    }

    fn cfg() -> VmConfig {
        VmConfig {
            name: "t".into(),
            boot: Boot::Disk { image: "/img.qcow2".into(), grow_to: None },
            memory_mib: 1024,
            cpus: 2,
            accel: Accel::Tcg,
            cpu: None,
            cloud_config: None,
            ssh_key: None,
            drives: Vec::new(),
        }
    }

    fn has_pair(args: &[String], flag: &str, value: &str) -> bool {
        args.windows(2).any(|w| w[0] == flag && w[1] == value)
    }

    #[test]
    fn boots_uefi_under_tcg_with_console_disk_and_cloud_config() {
        let a = qemu_args(&cfg(), &paths(), 2222);
        assert!(has_pair(&a, "-accel", "tcg"));
        assert!(has_pair(&a, "-cpu", TCG_CPU));
        assert!(has_pair(&a, "-drive", &format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}")));
        assert!(has_pair(&a, "-drive", "if=none,id=disk,format=qcow2,file=/t/disk.qcow2"));
        assert!(has_pair(&a, "-device", "virtio-blk-pci,drive=disk,bootindex=0"));
        assert!(has_pair(&a, "-serial", "file:/t/console.log"));
        assert!(has_pair(&a, "-fw_cfg", "name=opt/org.ferrite/user-data,file=/t/user-data"));
        assert!(a.contains(&"-no-reboot".to_string()));
    }

    #[test]
    fn ssh_is_forwarded_to_loopback_only_and_the_guest_reaches_nothing_else() {
        let a = qemu_args(&cfg(), &paths(), 2222);
        let netdev = a.windows(2).find(|w| w[0] == "-netdev").map(|w| w[1].clone()).unwrap();
        assert!(netdev.contains("hostfwd=tcp:127.0.0.1:2222-:22"));
        assert!(netdev.contains("restrict=on"));
    }

    #[test]
    fn the_harness_monitor_is_a_socket_in_the_vms_directory_only() {
        let a = qemu_args(&cfg(), &paths(), 2222);
        assert!(has_pair(&a, "-qmp", "unix:/t/qmp.sock,server=on,wait=off"));
        assert!(!a.iter().any(|arg| arg == "-monitor" || (arg.contains("tcp:") && !arg.contains("hostfwd"))));
    }

    #[test]
    fn a_wait_is_named_in_whole_seconds_rounded() {
        assert_eq!(whole_seconds(Duration::from_millis(2_996)), 3);
        assert_eq!(whole_seconds(Duration::from_millis(180_400)), 180);
        assert_eq!(whole_seconds(Duration::ZERO), 0);
    }

    #[test]
    fn pxe_boots_through_ipxe_and_qemu_tftp() {
        let mut c = cfg();
        c.boot = Boot::Pxe { tftp_dir: "/t/tftp".into(), bootfile: "boot.ipxe".into() };
        let p = Paths { disk: None, ..paths() };
        let a = qemu_args(&c, &p, 2222);
        let netdev = a.windows(2).find(|w| w[0] == "-netdev").map(|w| w[1].clone()).unwrap();
        assert!(netdev.contains("tftp=/t/tftp,bootfile=boot.ipxe"));
        assert!(!a.iter().any(|x| x.starts_with("virtio-blk-pci")));
        assert!(a.iter().any(|x| x.contains("romfile=/usr/lib/ipxe/qemu/efi-virtio.rom")));
    }

    #[test]
    fn further_drives_follow_the_boot_disk_read_only() {
        let mut c = cfg();
        c.drives = vec!["/t/config-2.iso".into()];
        let a = qemu_args(&c, &paths(), 2222);
        let drives: Vec<&String> = a.windows(2).filter(|w| w[0] == "-drive").map(|w| &w[1]).collect();
        assert_eq!(drives.last().unwrap().as_str(), "if=none,id=drive0,format=raw,readonly=on,file=/t/config-2.iso");
        assert_eq!(drives[drives.len() - 2].as_str(), "if=none,id=disk,format=qcow2,file=/t/disk.qcow2");
        // Devices are placed on the bus in this order: the boot disk first.
        let disks: Vec<&String> =
            a.windows(2).filter(|w| w[0] == "-device" && w[1].starts_with("virtio-blk-pci")).map(|w| &w[1]).collect();
        assert_eq!(disks, ["virtio-blk-pci,drive=disk,bootindex=0", "virtio-blk-pci,drive=drive0"]);
    }

    #[test]
    fn kvm_adds_the_host_cpu() {
        let mut c = cfg();
        c.accel = Accel::Kvm;
        let a = qemu_args(&c, &paths(), 1);
        assert!(has_pair(&a, "-accel", "kvm"));
        assert!(has_pair(&a, "-cpu", "host"));
    }

    #[test]
    fn cpu_ticks_are_utime_plus_stime_whatever_the_command_name() {
        let stat = "4242 (qemu-system-x86 (x) ) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 5 0 99";
        assert_eq!(cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(cpu_ticks("4242 (qemu) S 1"), None);
    }

    #[test]
    fn a_cpu_model_asked_for_replaces_the_default() {
        let mut c = cfg();
        c.cpu = Some("qemu64".into());
        let a = qemu_args(&c, &paths(), 1);
        assert!(has_pair(&a, "-cpu", "qemu64"));
        assert_eq!(a.iter().filter(|x| *x == "-cpu").count(), 1);
    }

    #[test]
    fn console_lines_are_found_across_looks_without_rereading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut searched = 0;
        assert_eq!(find_line(&path, &mut searched, "login:").unwrap(), None);
        fs::write(&path, "boot\nFerrite lo").unwrap();
        assert_eq!(find_line(&path, &mut searched, "login:").unwrap(), None);
        assert_eq!(searched, 5, "the half-written line is read again");
        fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"gin: ready\nmore\n").unwrap();
        assert_eq!(find_line(&path, &mut searched, "login:").unwrap().as_deref(), Some("Ferrite login: ready"));
        assert_eq!(find_line(&path, &mut searched, "boot").unwrap(), None, "lines already searched are not");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("", 3), "");
    }
}
