//! `ferrite-vm`: boots a Ferrite image in QEMU and reports how the boot went.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use ferrite_vm::{Vm, VmConfig};

/// Boots a Ferrite disk image under QEMU (OVMF; TCG unless FERRITE_VM_KVM=1),
/// waits for the guest's boot report on the serial console and prints it.
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
    /// Seconds to wait for the boot report.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    ferrite_daemon::init_tracing("info");
    ferrite_daemon::exit("ferrite-vm", boot(args))
}

fn boot(args: Args) -> anyhow::Result<()> {
    let mut cfg = VmConfig::disk("cli", &args.image);
    cfg.boot = ferrite_vm::Boot::Disk { image: args.image.clone(), grow_to: Some(args.disk_gib << 30) };
    if let Some(path) = &args.cloud_config {
        cfg.cloud_config = Some(std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?);
    }
    let mut vm = Vm::start(&cfg)?;
    eprintln!("console: {}", vm.console_path().display());
    let report = vm.wait_for_console("ferrite-report:", Duration::from_secs(args.timeout));
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            let kept = vm.keep_logs();
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
        // Until QEMU exits (the guest powers off) or Ctrl-C ends this process.
        let _ = vm.wait_for_exit(Duration::from_secs(10 * 365 * 24 * 3600));
    }
    Ok(())
}
