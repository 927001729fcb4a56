//! `ferrite-cloudinit`: parses arguments, sets up logging, calls the library.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferrite_cloudinit::substitute::Addresses;

/// A coreos-cloudinit-compatible cloud-config validator and interpreter.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reports every problem in a user-data file as `line N: error|warning|info: message`;
    /// exits 1 when there is an error.
    Validate {
        /// The user-data file (`-` for standard input).
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validates user data and, when it has no error, applies it.
    Apply(ApplyArgs),
}

#[derive(Debug, clap::Args)]
struct ApplyArgs {
    /// Read user data from this file.
    #[arg(long, value_name = "FILE")]
    from_file: PathBuf,
    /// Apply to the tree under DIR offline (as `systemctl --root`): files,
    /// unit files, drop-ins, enable and mask links, /etc/environment,
    /// /etc/hostname; unit commands and scripts are skipped.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// `$private_ipv4` (otherwise from metadata or COREOS_PRIVATE_IPV4).
    #[arg(long)]
    private_ipv4: Option<IpAddr>,
    /// `$public_ipv4` (otherwise from metadata or COREOS_PUBLIC_IPV4).
    #[arg(long)]
    public_ipv4: Option<IpAddr>,
    /// `$private_ipv6`.
    #[arg(long)]
    private_ipv6: Option<IpAddr>,
    /// `$public_ipv6`.
    #[arg(long)]
    public_ipv6: Option<IpAddr>,
}

fn apply(args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let data = std::fs::read(&args.from_file).with_context(|| format!("cannot read {}", args.from_file.display()))?;
    let addresses = Addresses {
        public_ipv4: args.public_ipv4,
        private_ipv4: args.private_ipv4,
        public_ipv6: args.public_ipv6,
        private_ipv6: args.private_ipv6,
    };
    let (report, plan) = match ferrite_cloudinit::prepare(&data, &addresses, |k| std::env::var(k).ok()) {
        Ok(prepared) => prepared,
        Err(ferrite_cloudinit::Error::Invalid(report)) => {
            print!("{report}");
            eprintln!("ferrite-cloudinit: {}: errors found, nothing applied", args.from_file.display());
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    print!("{report}");
    let outcome = match &args.root {
        Some(root) => {
            let mut machine = ferrite_cloudinit::apply::Offline::default();
            let outcome = ferrite_cloudinit::apply::apply(&plan, root, &mut machine)?;
            for skipped in &machine.skipped {
                tracing::info!("offline, skipped: {skipped}");
            }
            outcome
        }
        None => {
            let mut machine = ferrite_cloudinit::live::Live::connect()?;
            ferrite_cloudinit::apply::apply(&plan, std::path::Path::new("/"), &mut machine)?
        }
    };
    tracing::info!("{} changes", outcome.changes.len());
    Ok(ExitCode::SUCCESS)
}

fn validate(file: &PathBuf, json: bool) -> anyhow::Result<ExitCode> {
    let data = if file.as_os_str() == "-" {
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut data).context("cannot read standard input")?;
        data
    } else {
        std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let report = ferrite_cloudinit::validate::validate(&data);
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    Ok(if report.has_errors() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn main() -> ExitCode {
    let args = Args::parse();
    ferrite_daemon::init_tracing("info");
    let outcome = match &args.command {
        Command::Validate { file, json } => validate(file, *json),
        Command::Apply(apply_args) => apply(apply_args),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => ferrite_daemon::exit("ferrite-cloudinit", Err(error)),
    }
}
