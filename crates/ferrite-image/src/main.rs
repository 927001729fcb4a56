//! `ferrite-image`: builds Ferrite's disk image and PXE set.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

/// Builds Ferrite's bootable A/B disk image (raw, qcow2, optional vmdk),
/// its PXE set and a manifest. Runs as root.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the release binaries and the image.
    Build {
        /// The workspace root (holding image/ and os-config/).
        #[arg(long, default_value = ".")]
        workspace: PathBuf,
        /// Cache, work files and outputs (outputs land in <out>/images).
        #[arg(long, default_value = "target/ferrite-image")]
        out: PathBuf,
        /// Every timestamp in the image; defaults to the last commit's time.
        #[arg(long, env = "SOURCE_DATE_EPOCH")]
        source_date_epoch: Option<u64>,
        /// Also write a VMDK.
        #[arg(long)]
        vmdk: bool,
        /// Use the binaries already in target/release instead of running cargo.
        #[arg(long)]
        no_cargo: bool,
    },
}

fn build(
    workspace: PathBuf,
    out: PathBuf,
    source_date_epoch: Option<u64>,
    vmdk: bool,
    no_cargo: bool,
) -> anyhow::Result<()> {
    let workspace = workspace.canonicalize().with_context(|| format!("workspace {}", workspace.display()))?;
    let out = if out.is_absolute() { out } else { workspace.join(out) };
    let metadata = capture(
        Command::new("cargo").args(["metadata", "--format-version", "1", "--no-deps"]).current_dir(&workspace),
    )?;
    let bins = ferrite_image::binaries::from_metadata(&metadata)?;
    if !no_cargo {
        let mut cmd = Command::new("cargo");
        cmd.args(["build", "--release"]).current_dir(&workspace);
        for b in &bins {
            cmd.args(["--bin", &b.name]);
        }
        let status = cmd.status().context("cannot run cargo")?;
        if !status.success() {
            bail!("cargo build --release failed: {status}");
        }
    }
    let binaries = bins.iter().map(|b| workspace.join("target/release").join(&b.name)).collect();
    let epoch = match source_date_epoch {
        Some(e) => e,
        None => capture(Command::new("git").args(["log", "-1", "--format=%ct"]).current_dir(&workspace))?
            .trim()
            .parse()
            .context("git log gave no commit time; set SOURCE_DATE_EPOCH")?,
    };
    let opts = ferrite_image::BuildOptions {
        workspace,
        out_dir: out,
        binaries,
        version: env!("CARGO_PKG_VERSION").to_string(),
        source_date_epoch: epoch,
        sizes: ferrite_image::layout::Sizes::default(),
        vmdk,
    };
    let outputs = ferrite_image::build(&opts)?;
    println!("raw:      {}", outputs.raw.display());
    println!("qcow2:    {}", outputs.qcow2.display());
    if let Some(v) = &outputs.vmdk {
        println!("vmdk:     {}", v.display());
    }
    println!("pxe:      {} {}", outputs.pxe_kernel.display(), outputs.pxe_initrd.display());
    println!("pxe args: {}", outputs.pxe_command_line);
    println!("manifest: {}", outputs.manifest.display());
    println!("usrhash:  {}", outputs.usr_hash);
    Ok(())
}

fn capture(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!("{:?} failed: {}", cmd.get_program(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn main() -> ExitCode {
    let args = Args::parse();
    ferrite_daemon::init_tracing("info");
    let outcome = match args.command {
        Cmd::Build { workspace, out, source_date_epoch, vmdk, no_cargo } => {
            build(workspace, out, source_date_epoch, vmdk, no_cargo)
        }
    };
    ferrite_daemon::exit("ferrite-image", outcome)
}
