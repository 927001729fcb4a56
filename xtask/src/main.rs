//! Ferrite's automation. `cargo xtask --help` lists the tasks.
//!
//! Every task installs the host packages it needs (idempotently), so a
//! fresh Debian 12 machine with the Rust toolchain runs any of them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod bench;
mod bench_ambassador;
mod cluster;
mod docker;
mod image;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Ferrite's automation")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// The whole test suite, as CI runs it: formatting, lints, tier 1
    /// (unit and in-process) and tier 2 (real etcd, etcdctl, processes).
    Test {
        /// Skip tier 2 (system tests) and tier 3 (VM tests).
        #[arg(long)]
        tier1_only: bool,
        /// Skip tier 3 (the disk image booted in QEMU).
        #[arg(long)]
        no_vm: bool,
        /// Run only tier 3 (after a change to the image or the VM tests).
        #[arg(long, conflicts_with_all = ["tier1_only", "no_vm"])]
        vm_only: bool,
    },
    /// Ferrite's main job as far as it exists: build the release binaries
    /// and run a local 3-member ferrite-store cluster on loopback, checked
    /// with the real etcdctl. Runs until Ctrl-C unless --check is given.
    Cluster {
        /// Verify the cluster and stop instead of serving.
        #[arg(long)]
        check: bool,
        /// Members in the cluster.
        #[arg(long, default_value_t = 3)]
        size: usize,
    },
    /// Build Ferrite's disk image (raw, qcow2), PXE set and manifest into
    /// target/ferrite-image/images. The OS tree is cached: a build after a
    /// Rust-only change does not rerun mkosi.
    Image {
        /// Also write a VMDK.
        #[arg(long)]
        vmdk: bool,
    },
    /// Ferrite's main job: build the image and boot it in QEMU, printing
    /// the guest's boot report. Keeps the VM running unless --check.
    Vm {
        /// Stop once the boot is reported.
        #[arg(long)]
        check: bool,
    },
    /// Install the host packages the tests and tasks need.
    Deps,
    /// Benchmarks, side by side with the reference implementation.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// ferrite-store against etcd 3.4: PUT at 1 and 32 connections, GET at 32.
    Store {
        /// Seconds per load.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Rounds per load; the median is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Only the loads whose name contains this (e.g. "32 connections").
        #[arg(long)]
        only: Option<String>,
        /// Write the table into BENCHMARKS.md.
        #[arg(long)]
        write: bool,
    },
    /// The fleet scheduler at scale: the real engine and simulated agents
    /// on a 3-member ferrite-store, a burst of units.
    Fleet {
        #[arg(long, default_value_t = 1000)]
        machines: usize,
        #[arg(long, default_value_t = 10_000)]
        units: usize,
        /// Units on the one real agent measured at rest.
        #[arg(long, default_value_t = 500)]
        idle_units: usize,
        /// Write the table into BENCHMARKS.md.
        #[arg(long)]
        write: bool,
    },
    /// redis-benchmark against redis directly, through HAProxy and through
    /// ferrite-ambassador.
    Ambassador {
        /// Requests per redis-benchmark run.
        #[arg(long, default_value_t = 100_000)]
        requests: u32,
        /// Rounds per load; the median is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Write the table into BENCHMARKS.md.
        #[arg(long)]
        write: bool,
    },
    /// The disk image: build and rebuild times, partition and artifact
    /// sizes, boot time under TCG.
    Image {
        /// Also drop the apt download cache (a build from nothing).
        #[arg(long)]
        cold: bool,
        /// Boots to time; the median is reported.
        #[arg(long, default_value_t = 3)]
        boots: usize,
        /// Write the table into BENCHMARKS.md.
        #[arg(long)]
        write: bool,
    },
    /// Two boots compared in turn under TCG, to tell whether a change to
    /// the image, or to the CPU model QEMU emulates, shortens the boot on
    /// a machine whose speed drifts: QEMU start to multi-user.target of
    /// each, pair by pair. Builds nothing; copy the image away before
    /// rebuilding it with the change.
    ImageAb {
        /// The image without the change (a relative path is taken from the
        /// workspace's root).
        #[arg(long, default_value = image::IMAGE)]
        baseline: PathBuf,
        /// The image with the change.
        #[arg(long, default_value = image::IMAGE)]
        candidate: PathBuf,
        /// QEMU's CPU model for the baseline (default: ferrite-vm's).
        #[arg(long)]
        baseline_cpu: Option<String>,
        /// QEMU's CPU model for the candidate (default: ferrite-vm's).
        #[arg(long)]
        candidate_cpu: Option<String>,
        /// Pairs of boots; which side boots first alternates.
        #[arg(long, default_value_t = 5)]
        pairs: usize,
    },
}

/// Debian packages the test tiers use: etcd 3.4 and etcdctl as the
/// reference implementation, wrk for benchmarks, the Docker engine for
/// containers as stand-in machines (debootstrap builds their tree), redis
/// (server, redis-cli, redis-benchmark) for the sidekicks' tests and
/// benchmark, HAProxy as the reference proxy in that benchmark, iproute2 for the bridge a private Docker engine gets in the
/// sidekicks' tests, sfdisk (fdisk) as the independent reader of the image
/// builder's partition tables, xorriso, dosfstools and mtools for the
/// config drives (ISO 9660 and vfat) ferrite-cloudinit's tests make, QEMU
/// with OVMF (and ssh-keygen) for ferrite-vm's tests of stopping it (no
/// guest boots in tier 2).
const HOST_PACKAGES: &[&str] = &[
    "etcd-server",
    "etcd-client",
    "wrk",
    "docker.io",
    "debootstrap",
    "redis-server",
    "redis-tools",
    "haproxy",
    "iproute2",
    "fdisk",
    "xorriso",
    "dosfstools",
    "mtools",
    "qemu-system-x86",
    "qemu-utils",
    "ovmf",
    "openssh-client",
    "curl",
];

/// Debian packages the image builder and the VM tier use: mkosi (with
/// debootstrap and systemd-nspawn) for the OS tree, the filesystem and
/// verity tools that assemble the disk without mounting, QEMU with OVMF
/// and iPXE to boot it, an SSH client to drive the guest, strip (binutils)
/// for the binaries that go into /usr, and xorriso for the config drive a
/// VM test attaches.
pub const IMAGE_PACKAGES: &[&str] = &[
    "mkosi",
    "debootstrap",
    "systemd-container",
    "erofs-utils",
    "squashfs-tools",
    "cryptsetup-bin",
    "dosfstools",
    "mtools",
    "e2fsprogs",
    "qemu-utils",
    "qemu-system-x86",
    "ovmf",
    "ipxe-qemu",
    "openssh-client",
    "cpio",
    "zstd",
    "binutils",
    "xorriso",
];

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    match cli.task {
        Task::Deps => {
            // Both lists: the test command installs the image packages too.
            install_packages(HOST_PACKAGES)?;
            install_packages(IMAGE_PACKAGES)
        }
        Task::Test { vm_only: true, .. } => vm_tier(&root),
        Task::Test { tier1_only, no_vm, vm_only: false } => test(&root, tier1_only, no_vm),
        Task::Image { vmdk } => image::build(&root, vmdk),
        Task::Vm { check } => {
            image::build(&root, false)?;
            image::boot(&root, check)
        }
        Task::Cluster { check, size } => {
            install_packages(HOST_PACKAGES)?;
            run(&root, "cargo", &["build", "--release", "-p", "ferrite-store"])?;
            cluster::run(&root, size, check)
        }
        Task::Bench { what: Bench::Store { seconds, rounds, only, write } } => {
            install_packages(HOST_PACKAGES)?;
            run(&root, "cargo", &["build", "--release", "-p", "ferrite-store"])?;
            bench::store(&root, seconds, rounds.max(1), only.as_deref(), write)
        }
        Task::Bench { what: Bench::Fleet { machines, units, idle_units, write } } => {
            install_packages(HOST_PACKAGES)?;
            docker::ensure_engine()?;
            run(&root, "cargo", &["build", "--release", "-p", "ferrite-store", "-p", "ferrite-fleet", "--bins"])?;
            let examples = ["--example", "fleet-scale", "--example", "agent-idle"];
            run(&root, "cargo", &[&["build", "--release", "-p", "ferrite-fleet"][..], &examples[..]].concat())?;
            bench::fleet(&root, machines, units, idle_units, write)
        }
        Task::Bench { what: Bench::Ambassador { requests, rounds, write } } => {
            install_packages(HOST_PACKAGES)?;
            run(&root, "cargo", &["build", "--release", "-p", "ferrite-store", "-p", "ferrite-ambassador"])?;
            bench_ambassador::ambassador(&root, requests, rounds.max(1), write)
        }
        Task::Bench { what: Bench::Image { cold, boots, write } } => image::bench(&root, cold, boots.max(1), write),
        Task::Bench { what: Bench::ImageAb { baseline, candidate, baseline_cpu, candidate_cpu, pairs } } => {
            let baseline = image::Arm { image: baseline, cpu: baseline_cpu };
            let candidate = image::Arm { image: candidate, cpu: candidate_cpu };
            image::bench_pairs(&root, &baseline, &candidate, pairs.max(1))
        }
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).context("xtask has no parent directory")
}

fn test(root: &Path, tier1_only: bool, no_vm: bool) -> Result<()> {
    if !tier1_only {
        install_packages(HOST_PACKAGES)?;
    }
    step("formatting");
    run(root, "cargo", &["fmt", "--all", "--check"])?;
    step("lints");
    run(root, "cargo", &["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"])?;
    step("tier 1: unit and in-process tests");
    run(root, "cargo", &["test", "--workspace"])?;
    if !tier1_only {
        step("tier 2: system tests (real etcd, etcdctl, Docker, processes)");
        docker::ensure_engine()?;
        run(root, "cargo", &["build", "--workspace", "--bins"])?;
        // One test at a time: the fault tests measure failover and drive
        // clusters of real processes, and on 2 cores tests running beside
        // them starve those processes and distort what is measured.
        run(root, "cargo", &["test", "--workspace", "--all-features", "--test", "system", "--", "--test-threads=1"])?;
    }
    if !tier1_only && !no_vm {
        vm_tier(root)?;
    }
    step("all tests passed");
    Ok(())
}

fn vm_tier(root: &Path) -> Result<()> {
    step("tier 3: the disk image booted in QEMU");
    image::build(root, false)?;
    image::check_reproducible(root)?;
    image::vm_tests(root)
}

fn step(what: &str) {
    eprintln!("\n==> {what}");
}

/// Runs a command in `dir`, failing with its exit status.
pub fn run(dir: &Path, program: &str, args: &[&str]) -> Result<()> {
    let status =
        Command::new(program).args(args).current_dir(dir).status().with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed: {status}", args.join(" "));
    }
    Ok(())
}

/// Packages taken from Debian's bookworm-backports rather than bookworm,
/// with the oldest version that will do. QEMU: bookworm's 7.2 finds the
/// code it has already translated by the guest's virtual address, so under
/// TCG every new process translates the shared libraries again at the
/// address ASLR gave them (fork and exec of /bin/true took 56 ms in a
/// guest with ASLR and 14 ms without). Later releases translate x86 code
/// position-independently in system mode; 10.0, from backports, boots the
/// image about a fifth faster (BENCHMARKS.md).
const BACKPORTS: &[(&str, &str)] = &[("qemu-system-x86", "1:10.0")];
const BACKPORTS_SUITE: &str = "bookworm-backports";
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/ferrite-bookworm-backports.sources";

/// Installs missing Debian packages, those in [`BACKPORTS`] from
/// bookworm-backports (adding it to apt's sources if no source names it);
/// a no-op when all are present.
pub fn install_packages(packages: &[&str]) -> Result<()> {
    let (backported, missing): (Vec<&str>, Vec<&str>) =
        packages.iter().copied().filter(|p| !installed(p)).partition(|p| backport_floor(p).is_some());
    if missing.is_empty() && backported.is_empty() {
        return Ok(());
    }
    step(&format!("installing host packages: {}", [&missing[..], &backported[..]].concat().join(" ")));
    if !backported.is_empty() {
        add_backports_source()?;
    }
    let root = Path::new("/");
    run(root, "apt-get", &["update", "-qq"])?;
    apt_install(&missing, None)?;
    apt_install(&backported, Some(BACKPORTS_SUITE))
}

/// The oldest version of `package` that will do, if it comes from backports.
fn backport_floor(package: &str) -> Option<&'static str> {
    BACKPORTS.iter().find(|(name, _)| *name == package).map(|(_, oldest)| *oldest)
}

/// Whether `package` is installed, at a version [`BACKPORTS`] accepts.
fn installed(package: &str) -> bool {
    let out = Command::new("dpkg-query").args(["-W", "-f=${Status} ${Version}", package]).output();
    let Ok(out) = out else { return false };
    let status = String::from_utf8_lossy(&out.stdout);
    let Some(version) = status.strip_prefix("install ok installed ") else { return false };
    backport_floor(package).is_none_or(|oldest| {
        Command::new("dpkg").args(["--compare-versions", version, "ge", oldest]).status().is_ok_and(|s| s.success())
    })
}

/// Whether an apt source file names `suite` on a line that is not a comment.
fn names_suite(source: &str, suite: &str) -> bool {
    source.lines().any(|line| !line.trim_start().starts_with('#') && line.split_whitespace().any(|word| word == suite))
}

fn add_backports_source() -> Result<()> {
    let mut sources = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        sources.extend(dir.filter_map(|e| e.ok()).map(|e| e.path()));
    }
    let named = sources.iter().any(|p| std::fs::read_to_string(p).is_ok_and(|s| names_suite(&s, BACKPORTS_SUITE)));
    if named {
        return Ok(());
    }
    let source = format!(
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {BACKPORTS_SUITE}\nComponents: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    );
    std::fs::write(BACKPORTS_SOURCE, source).with_context(|| format!("cannot write {BACKPORTS_SOURCE}"))
}

fn apt_install(packages: &[&str], suite: Option<&str>) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    if let Some(suite) = suite {
        args.extend(["-t", suite]);
    }
    args.extend(packages);
    let status = Command::new("apt-get")
        .args(&args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get")?;
    if !status.success() {
        bail!("apt-get {} failed: {status}", args.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_names_the_suite_only_on_a_line_that_is_not_a_comment() {
        let one_line = "deb http://deb.debian.org/debian bookworm-backports main\n";
        assert!(names_suite(one_line, "bookworm-backports"));
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-backports\n";
        assert!(names_suite(deb822, "bookworm-backports"));
        let commented = "# deb http://deb.debian.org/debian bookworm-backports main\n";
        assert!(!names_suite(commented, "bookworm-backports"));
        let other = "deb http://deb.debian.org/debian bookworm-backports-sloppy main\n";
        assert!(!names_suite(other, "bookworm-backports"));
    }

    #[test]
    fn only_listed_packages_come_from_backports() {
        assert_eq!(backport_floor("qemu-system-x86"), Some("1:10.0"));
        assert_eq!(backport_floor("ovmf"), None);
    }
}
