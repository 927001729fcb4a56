//! A supervised child process.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

/// A running child process. Its stdout and stderr both go to one log file.
///
/// Dropping it sends SIGKILL and reaps the child. If the drop happens while
/// the thread is panicking (a failed test), the log's path is printed so the
/// person reading the failure can open it.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log_path: PathBuf,
    reaped: bool,
}

impl Process {
    /// Starts `command` with its output appended to `log_path`.
    pub fn spawn(name: &str, mut command: Command, log_path: &Path) -> Result<Self> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("opening log file {}", log_path.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(Self { name: name.to_owned(), child, log_path: log_path.to_owned(), reaped: false })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Whether the process has not exited yet.
    pub fn is_running(&mut self) -> bool {
        !self.reaped && self.exit_status().is_none()
    }

    /// How the process ended, if it has ended on its own.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }

    /// SIGKILL, then wait for the process so no zombie is left.
    pub fn kill(&mut self) -> Result<()> {
        if self.reaped {
            return Ok(());
        }
        // An error here means the process already exited; `wait` reaps it either way.
        let _ = self.child.kill();
        self.child.wait().with_context(|| format!("reaping {} (pid {})", self.name, self.pid()))?;
        self.reaped = true;
        Ok(())
    }

    /// Pauses the process (SIGSTOP), as a hung machine would look to its peers.
    pub fn pause(&self) -> Result<()> {
        self.signal("STOP")
    }

    /// Resumes a paused process (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, signal: &str) -> Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .context("running kill(1)")?;
        anyhow::ensure!(status.success(), "kill -{signal} {} ({}) failed: {status}", self.pid(), self.name);
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("log of {}: {}", self.name, self.log_path.display());
        }
        if let Err(e) = self.kill() {
            eprintln!("{e:#}");
        }
    }
}

/// The last `lines` lines of a file, read from at most its last 64 KiB.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_goes_to_the_log_and_drop_kills() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sh.log");
        let mut command = Command::new("sh");
        command.args(["-c", "echo started; exec sleep 600"]);
        let mut process = Process::spawn("sh", command, &log).unwrap();
        let pid = process.pid();
        for _ in 0..100 {
            if process.log_tail(1) == "started" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(process.log_tail(5), "started");
        assert!(process.is_running());
        drop(process);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} still exists after drop");
    }

    #[test]
    fn pause_and_resume() {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new("sleep");
        command.arg("600");
        let mut process = Process::spawn("sleep", command, &dir.path().join("l")).unwrap();
        let state = |pid: u32| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            stat.rsplit(')').next().unwrap().split_whitespace().next().unwrap().to_owned()
        };
        process.pause().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(state(process.pid()), "T");
        process.resume().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(state(process.pid()), "S");
        process.kill().unwrap();
        assert!(!process.is_running());
    }
}
