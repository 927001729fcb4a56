//! `ferrite-vm`: boots a Ferrite image in QEMU and reports how the boot went.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use ferrite_vm::{Vm, VmConfig};

/// Boots a Ferrite disk image under QEMU (OVMF; TCG unless FERRITE_VM_KVM=1),
/// waits for the guest's boot report on the serial console and prints it.
/// SIGTERM or SIGINT stops QEMU and keeps the console log.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The disk image (qcow2 or raw); it is never written to.
    #[arg(long, default_value = "target/ferrite-image/images/ferrite.qcow2")]
    image: PathBuf,
    /// A cloud-config file passed through fw_cfg.
    #[arg(long)]
    cloud_config: Option<PathBuf>,
    /// Grow the VM's disk to this many GiB (ROOT fills it on first boot).
    #[arg(long, default_value_t = 4)]
    disk_gib: u64,
    /// Stop once the boot is reported instead of keeping the VM running.
    #[arg(long)]
    check: bool,
    /// QEMU's CPU model (`-cpu`) instead of the default for the
    /// accelerator (under TCG, `max` less the features TCG emulates
    /// slowly; see ferrite_vm::TCG_CPU).
    #[arg(long)]
    cpu: Option<String>,
    /// Seconds from QEMU start to wait for the boot report.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    ferrite_daemon::init_tracing("info");
    ferrite_daemon::exit("ferrite-vm", boot(args))
}

fn boot(args: Args) -> anyhow::Result<()> {
    let stop = StopOnSignal::install()?;
    let mut cfg = VmConfig::disk("cli", &args.image);
    cfg.boot = ferrite_vm::Boot::Disk { image: args.image.clone(), grow_to: Some(args.disk_gib << 30) };
    cfg.cpu = args.cpu.clone();
    if let Some(path) = &args.cloud_config {
        cfg.cloud_config = Some(std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?);
    }
    let mut vm = Vm::start(&cfg)?;
    stop.watch(&vm);
    eprintln!("console: {}", vm.console_path().display());
    // One deadline for every wait below: a boot that stops early is not
    // waited for once per line. The first wait that fails ends the check
    // (the deadline has passed, or QEMU is gone) and says where the boot
    // stopped.
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let left = || deadline.saturating_duration_since(Instant::now());
    let report = vm
        // The firmware's and the boot loader's share of the boot, which the
        // guest's own clock does not see: until the kernel's first line.
        .wait_for_console("Linux version", left())
        .and_then(|_| {
            println!("kernel started {:.1} s after QEMU start", vm.uptime().as_secs_f64());
            // multi-user.target by the host's clock, and what QEMU's
            // emulation of the guest cost in CPU by then: systemd's status
            // line on the console.
            vm.wait_for_console("Multi-User System", left())
        })
        .and_then(|_| {
            let cpu = vm.cpu_time()?;
            println!(
                "multi-user.target reached {:.1} s after QEMU start; QEMU used {:.1} s of CPU",
                vm.uptime().as_secs_f64(),
                cpu.as_secs_f64()
            );
            vm.wait_for_console("ferrite-report:", left())
        });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            let kept = vm.keep_logs();
            if stop.signalled() {
                bail!("stopped by a signal before the boot report; QEMU stopped (logs kept in {kept:?})");
            }
            bail!("{e} (logs kept in {kept:?})");
        }
    };
    println!("{}", report.trim());
    println!("booted in {:.0} s from QEMU start", vm.uptime().as_secs_f64());
    if !report.contains("state=running") {
        let kept = vm.keep_logs();
        bail!("the system is not running cleanly (logs kept in {kept:?})");
    }
    if !args.check {
        eprintln!("VM running; Ctrl-C stops it");
        // Until QEMU exits (the guest powers off, or a signal stopped it).
        let _ = vm.wait_for_exit(Duration::from_secs(10 * 365 * 24 * 3600));
        if stop.signalled() {
            let kept = vm.keep_logs();
            eprintln!("stopped by a signal; QEMU stopped (logs kept in {kept:?})");
        }
    }
    Ok(())
}

/// SIGTERM and SIGINT stop QEMU (with SIGTERM, its clean stop) instead of
/// ending this process at once: the waits above then see QEMU gone and
/// keep its console log. Handled on a thread of its own with the signals
/// registered before QEMU starts.
#[derive(Debug, Clone)]
struct StopOnSignal {
    signalled: Arc<AtomicBool>,
    qemu: Arc<AtomicU32>,
}

impl StopOnSignal {
    fn install() -> anyhow::Result<StopOnSignal> {
        use tokio::signal::unix::{signal, SignalKind};

        let stop = StopOnSignal { signalled: Arc::default(), qemu: Arc::default() };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("cannot start the signal handler's runtime")?;
        let (mut term, mut int) = runtime
            .block_on(async {
                Ok::<_, std::io::Error>((signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?))
            })
            .context("cannot handle SIGTERM and SIGINT")?;
        let handler = stop.clone();
        std::thread::spawn(move || {
            runtime.block_on(async {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            });
            handler.signalled.store(true, Ordering::SeqCst);
            handler.stop_qemu();
        });
        Ok(stop)
    }

    /// From now on a signal stops `vm`'s QEMU (at once if one came already).
    fn watch(&self, vm: &Vm) {
        self.qemu.store(vm.pid(), Ordering::SeqCst);
        if self.signalled() {
            self.stop_qemu();
        }
    }

    fn stop_qemu(&self) {
        let pid = self.qemu.load(Ordering::SeqCst);
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            tracing::info!(pid = pid.as_raw_nonzero().get(), "signal received: stopping QEMU");
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }

    fn signalled(&self) -> bool {
        self.signalled.load(Ordering::SeqCst)
    }
}
