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
    // As Go's os.Exit: the low byte, so fleet's -1 is 255.
    ExitCode::from(code.to_le_bytes()[0])
}
