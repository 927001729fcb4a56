//! Running the system's own tools (`useradd`, `usermod`, `mount`).

/// A tool that could not be run or did not succeed.
#[derive(Debug, thiserror::Error)]
#[error("{command} failed: {detail}")]
pub struct CommandError {
    /// The command line.
    pub command: String,
    /// Its exit status and standard error, or why it could not start.
    pub detail: String,
}

/// Runs `program` with `args` and waits for it.
pub fn run(program: &str, args: &[impl AsRef<str>]) -> Result<(), CommandError> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let command = format!("{program} {}", args.join(" "));
    let output = std::process::Command::new(program)
        .args(&args)
        .output()
        .map_err(|e| CommandError { command: command.clone(), detail: e.to_string() })?;
    if output.status.success() {
        return Ok(());
    }
    let detail = format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    Err(CommandError { command, detail })
}
