//! What every Ferrite binary's `main` does the same way.
//!
//! A binary parses its arguments, calls [`init_tracing`], and hands its
//! library's entry point to [`run`] (async) or [`exit`] (sync), which print
//! the whole error chain once, prefixed with the program name, and turn the
//! outcome into an exit code. Daemons pass [`shutdown_signal`] to their
//! server so SIGTERM (systemd's stop) and Ctrl-C end them cleanly.

use std::error::Error;
use std::fmt::Write as _;
use std::future::Future;
use std::io::IsTerminal;
use std::process::ExitCode;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Sends logs to the journal when stderr is connected to it (systemd sets
/// `JOURNAL_STREAM` for a unit's stdio), to stderr otherwise. `RUST_LOG`
/// overrides `default_filter` (an `EnvFilter` directive such as `info`).
pub fn init_tracing(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let registry = tracing_subscriber::registry().with(filter);
    let journald = std::env::var_os("JOURNAL_STREAM").and_then(|_| tracing_journald::layer().ok());
    match journald {
        Some(layer) => registry.with(layer).init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .init(),
    }
}

/// Resolves on SIGTERM or SIGINT, whichever comes first.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

/// The error and every cause below it, joined by `": "` as Go and anyhow
/// print them: `cannot open /var/lib/x: permission denied`.
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // anyhow and some thiserror variants already include their source.
        if !message.ends_with(&cause_text) {
            let _ = write!(message, ": {cause_text}");
        }
        source = cause.source();
    }
    message
}

/// Runs `main` on a multi-threaded tokio runtime, a worker thread per
/// core; see [`exit`].
pub fn run<F, E>(program: &str, main: F) -> ExitCode
where
    F: Future<Output = Result<(), E>>,
    E: Into<Box<dyn Error + Send + Sync + 'static>>,
{
    run_on(program, tokio::runtime::Builder::new_multi_thread(), main)
}

/// Runs `main` on a tokio runtime of `workers` worker threads (blocking
/// work still gets threads of its own); see [`exit`]. `TOKIO_WORKER_THREADS`
/// in the environment overrides the count, as it does tokio's default.
pub fn run_with_workers<F, E>(program: &str, workers: usize, main: F) -> ExitCode
where
    F: Future<Output = Result<(), E>>,
    E: Into<Box<dyn Error + Send + Sync + 'static>>,
{
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(workers);
    }
    run_on(program, builder, main)
}

fn run_on<F, E>(program: &str, mut builder: tokio::runtime::Builder, main: F) -> ExitCode
where
    F: Future<Output = Result<(), E>>,
    E: Into<Box<dyn Error + Send + Sync + 'static>>,
{
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{program}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    exit(program, runtime.block_on(main))
}

/// Exit code 0 for `Ok`; for `Err`, prints `program: <error chain>` to
/// stderr and returns exit code 1.
pub fn exit<E>(program: &str, outcome: Result<(), E>) -> ExitCode
where
    E: Into<Box<dyn Error + Send + Sync + 'static>>,
{
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let e: Box<dyn Error + Send + Sync + 'static> = e.into();
            eprintln!("{program}: {}", error_chain(&*e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    #[test]
    fn chain_joins_every_cause() {
        let e =
            Layer("cannot open data dir", Some(Box::new(Layer("meta.json", Some(Box::new(Layer("denied", None)))))));
        assert_eq!(error_chain(&e), "cannot open data dir: meta.json: denied");
    }

    #[test]
    fn chain_does_not_repeat_a_cause_already_in_the_message() {
        let e = Layer("read failed: denied", Some(Box::new(Layer("denied", None))));
        assert_eq!(error_chain(&e), "read failed: denied");
    }
}
