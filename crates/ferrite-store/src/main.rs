//! `ferrite-store`: etcd's command line in front of [`ferrite_store::server`].

use std::process::ExitCode;

use clap::Parser;
use ferrite_store::config::{normalize_args, Flags};

/// glibc's malloc took about a tenth of the leader's CPU under write load;
/// with mimalloc the members used 15-20% less CPU per write (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let flags = Flags::parse_from(normalize_args(std::env::args()));
    ferrite_daemon::init_tracing("info,openraft=warn");
    let settings = match flags.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferrite-store: {e}");
            return ExitCode::from(2);
        }
    };
    ferrite_daemon::run_with_workers(
        "ferrite-store",
        ferrite_store::server::ASYNC_WORKERS,
        ferrite_store::server::run(settings, ferrite_daemon::shutdown_signal()),
    )
}
