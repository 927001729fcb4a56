//! `ferrite-fleetctl`: fleetctl's command line in front of
//! [`ferrite_fleet::fleetctl`].

use std::process::ExitCode;

use clap::Parser;
use ferrite_fleet::fleetctl::{run, Cli, Io};

fn main() -> ExitCode {
    let cli = Cli::parse();
    ferrite_daemon::init_tracing("warn");
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("fleetctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let code = runtime.block_on(run(cli, &mut Io { out: &mut out, err: &mut err }));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
