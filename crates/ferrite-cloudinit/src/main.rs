//! `ferrite-cloudinit`: parses arguments, sets up logging, calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

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
    };
    match outcome {
        Ok(code) => code,
        Err(error) => ferrite_daemon::exit("ferrite-cloudinit", Err(error)),
    }
}
