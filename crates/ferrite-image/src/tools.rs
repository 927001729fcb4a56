//! Running the external tools a build step needs, with errors that name
//! the step and the command.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::{Error, Result};

/// Runs `cmd` and returns its standard output; standard error is kept for
/// the error message.
pub fn output(step: &'static str, cmd: &mut Command) -> Result<String> {
    let command = describe(cmd);
    let out =
        cmd.stdin(Stdio::null()).output().map_err(|source| Error::Spawn { step, program: program(cmd), source })?;
    if !out.status.success() {
        return Err(Error::Tool {
            step,
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with its output shown (long steps: the user sees progress).
pub fn visible(step: &'static str, cmd: &mut Command) -> Result<()> {
    let command = describe(cmd);
    let status =
        cmd.stdin(Stdio::null()).status().map_err(|source| Error::Spawn { step, program: program(cmd), source })?;
    if !status.success() {
        return Err(Error::Tool { step, command, status, stderr: String::new() });
    }
    Ok(())
}

fn program(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

fn describe(cmd: &Command) -> String {
    let mut s = program(cmd);
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// An I/O error in `step` about `path`.
pub fn io(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { step, path, source }
}
