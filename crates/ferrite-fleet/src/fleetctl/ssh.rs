//! What fleetctl does over SSH, through the system's OpenSSH client
//! (`ssh`): commands on a unit's machine (`status`, `journal`, `ssh`),
//! and `--tunnel`, which reaches the API through a machine of the cluster.
//!
//! fleet built its own client on Go's x/crypto/ssh; OpenSSH gives the same
//! behaviour from its options: the user and port, a connect timeout,
//! host keys checked against fleetctl's known-hosts file (asking about an
//! unknown key on a terminal, as fleet did) or not checked at all, agent
//! forwarding, and a jump through the tunnel host (`ProxyCommand` with the
//! same options, since `-J` would not pass them on).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// fleet's default for `--known-hosts-file`.
pub const DEFAULT_KNOWN_HOSTS_FILE: &str = "~/.fleetctl/known_hosts";

/// The global SSH flags, as fleetctl has them.
#[derive(Debug, Clone, PartialEq)]
pub struct SshSettings {
    pub username: String,
    pub strict_host_key_checking: bool,
    pub known_hosts_file: String,
    /// `--ssh-timeout`, seconds to set a connection up.
    pub timeout: f64,
    /// `--tunnel`, as given (`host` or `host:port`).
    pub tunnel: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot run ssh: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("cannot create a directory for the tunnel's socket: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("ssh to {host} exited before the tunnel was up ({status})")]
    TunnelExited { host: String, status: std::process::ExitStatus },
    #[error("timed out while initiating SSH connection to {0}")]
    TunnelTimeout(String),
}

/// `host` and `port` of an address fleet-style: a bare host means `port`
/// (`--ssh-port`'s 22 by default), `host:port` keeps its own, and a bare
/// IPv6 address is a host.
fn split_address(addr: &str, port: u16) -> (String, u16) {
    if let Some(rest) = addr.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok()).unwrap_or(port);
            return (host.to_owned(), port);
        }
    }
    match addr.rsplit_once(':') {
        Some((host, p)) if !host.contains(':') => match p.parse() {
            Ok(p) => (host.to_owned(), p),
            Err(_) => (addr.to_owned(), port),
        },
        _ => (addr.to_owned(), port),
    }
}

/// A word quoted for a POSIX shell (the remote login shell, or the one
/// that runs a `ProxyCommand`).
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `~/...` with the user's home directory.
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(path),
    }
}

impl SshSettings {
    /// The options every connection takes: user, timeout, host keys.
    fn common_options(&self) -> Vec<String> {
        let mut args = vec!["-l".to_owned(), self.username.clone()];
        // OpenSSH counts whole seconds.
        let seconds = self.timeout.ceil().max(1.0) as u64;
        args.extend(["-o".to_owned(), format!("ConnectTimeout={seconds}")]);
        if self.strict_host_key_checking {
            let file = expand_home(&self.known_hosts_file);
            args.extend(["-o".to_owned(), "StrictHostKeyChecking=ask".to_owned()]);
            args.extend(["-o".to_owned(), format!("UserKnownHostsFile={}", file.display())]);
        } else {
            args.extend(["-o".to_owned(), "StrictHostKeyChecking=no".to_owned()]);
            args.extend(["-o".to_owned(), "UserKnownHostsFile=/dev/null".to_owned()]);
            args.extend(["-o".to_owned(), "LogLevel=ERROR".to_owned()]);
        }
        args
    }

    /// Creates the known-hosts file's directory, so ssh can record a key
    /// the user accepts (fleet made it too).
    fn prepare(&self) {
        if self.strict_host_key_checking {
            if let Some(dir) = expand_home(&self.known_hosts_file).parent() {
                let _ = std::fs::create_dir_all(dir);
            }
        }
    }

    /// `ssh` arguments reaching `addr` (through the tunnel when there is
    /// one), before the remote command.
    pub fn ssh_args(&self, addr: &str, port: u16, forward_agent: bool) -> Vec<String> {
        let (host, port) = split_address(addr, port);
        let mut args = self.common_options();
        if let Some(tunnel) = &self.tunnel {
            let (tunnel_host, tunnel_port) = split_address(tunnel, 22);
            let mut proxy = vec!["ssh".to_owned()];
            proxy.extend(self.common_options());
            proxy.extend(["-p".to_owned(), tunnel_port.to_string(), "-W".to_owned(), "%h:%p".to_owned(), tunnel_host]);
            let proxy: Vec<String> = proxy.iter().map(|w| shell_quote(w)).collect();
            args.extend(["-o".to_owned(), format!("ProxyCommand={}", proxy.join(" "))]);
        }
        if forward_agent {
            args.push("-A".to_owned());
        }
        args.extend(["-p".to_owned(), port.to_string(), host]);
        args
    }

    /// Runs `command` (a shell command line; none opens a login shell) on
    /// the machine at `addr`; its output goes to `io`. The exit code is
    /// the remote command's, or ssh's 255 when the connection failed.
    pub async fn run(
        &self,
        io: &mut super::Io<'_>,
        addr: &str,
        port: u16,
        forward_agent: bool,
        command: Option<&str>,
    ) -> Result<i32, SshError> {
        self.prepare();
        let mut ssh = tokio::process::Command::new("ssh");
        ssh.args(self.ssh_args(addr, port, forward_agent));
        match command {
            Some(command) => {
                ssh.arg("--").arg(command);
                run_piped(ssh, io).await.map_err(SshError::Spawn)
            }
            None => {
                // An interactive shell owns the terminal.
                let status = ssh.status().await.map_err(SshError::Spawn)?;
                Ok(exit_code(status))
            }
        }
    }

    /// Forwards a local unix socket to `target` (a unix socket path or
    /// `host:port`) as seen from the tunnel host.
    pub async fn tunnel_to(&self, tunnel: &str, target: &str) -> Result<ApiTunnel, SshError> {
        self.prepare();
        let dir = tempfile::Builder::new().prefix("fleetctl-tunnel-").tempdir().map_err(SshError::TempDir)?;
        let socket = dir.path().join("api.sock");
        let direct = SshSettings { tunnel: None, ..self.clone() };
        let mut ssh = tokio::process::Command::new("ssh");
        ssh.args(["-N", "-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes"])
            .arg("-L")
            .arg(format!("{}:{target}", socket.display()))
            .args(direct.ssh_args(tunnel, 22, false))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let mut child = ssh.spawn().map_err(SshError::Spawn)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(self.timeout.max(0.1));
        loop {
            if tokio::net::UnixStream::connect(&socket).await.is_ok() {
                return Ok(ApiTunnel { _child: child, socket, _dir: dir });
            }
            if let Some(status) = child.try_wait().map_err(SshError::Spawn)? {
                return Err(SshError::TunnelExited { host: tunnel.to_owned(), status });
            }
            if tokio::time::Instant::now() > deadline {
                return Err(SshError::TunnelTimeout(tunnel.to_owned()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An `ssh -L` forwarding kept up while fleetctl runs; ssh is killed when
/// it is dropped.
#[derive(Debug)]
pub struct ApiTunnel {
    _child: tokio::process::Child,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

/// A finished process's exit code as Go reports it: -1 when a signal
/// ended it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    status.code().unwrap_or(-1)
}

/// Runs a command with stdin inherited and its stdout and stderr copied
/// to `io` as they come (so `journal -f` streams); its exit code.
pub async fn run_piped(mut command: tokio::process::Command, io: &mut super::Io<'_>) -> std::io::Result<i32> {
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = command.spawn()?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let (mut out_buf, mut err_buf) = ([0u8; 8192], [0u8; 8192]);
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        tokio::select! {
            n = stdout.read(&mut out_buf), if out_open => match n? {
                0 => out_open = false,
                n => {
                    io.out.write_all(&out_buf[..n])?;
                    io.out.flush()?;
                }
            },
            n = stderr.read(&mut err_buf), if err_open => match n? {
                0 => err_open = false,
                n => {
                    io.err.write_all(&err_buf[..n])?;
                    io.err.flush()?;
                }
            },
        }
    }
    Ok(exit_code(child.wait().await?))
}

/// Runs `program args...` on this machine, its output to `io`.
pub async fn run_local(io: &mut super::Io<'_>, program: &str, args: &[String]) -> std::io::Result<i32> {
    let mut command = tokio::process::Command::new(program);
    command.args(args);
    run_piped(command, io).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(strict: bool, tunnel: Option<&str>) -> SshSettings {
        SshSettings {
            username: "core".into(),
            strict_host_key_checking: strict,
            known_hosts_file: "/k/known_hosts".into(),
            timeout: 2.5,
            tunnel: tunnel.map(str::to_owned),
        }
    }

    #[test]
    fn addresses_take_the_ssh_port_unless_they_name_one() {
        assert_eq!(split_address("10.0.0.1", 22), ("10.0.0.1".into(), 22));
        assert_eq!(split_address("10.0.0.1", 2222), ("10.0.0.1".into(), 2222));
        assert_eq!(split_address("10.0.0.1:2022", 22), ("10.0.0.1".into(), 2022));
        assert_eq!(split_address("fd00::1", 22), ("fd00::1".into(), 22));
        assert_eq!(split_address("[fd00::1]:2022", 22), ("fd00::1".into(), 2022));
    }

    #[test]
    fn words_are_quoted_for_the_shell_only_when_needed() {
        assert_eq!(shell_quote("hello.service"), "hello.service");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn strict_checking_uses_the_known_hosts_file() {
        let args = settings(true, None).ssh_args("10.0.0.2", 22, false).join(" ");
        assert_eq!(
            args,
            "-l core -o ConnectTimeout=3 -o StrictHostKeyChecking=ask -o UserKnownHostsFile=/k/known_hosts -p 22 10.0.0.2"
        );
    }

    #[test]
    fn without_strict_checking_no_key_is_checked_or_recorded() {
        let args = settings(false, None).ssh_args("10.0.0.2", 2222, true).join(" ");
        assert_eq!(
            args,
            "-l core -o ConnectTimeout=3 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -A -p 2222 10.0.0.2"
        );
    }

    #[test]
    fn a_tunnel_is_a_proxy_command_with_the_same_options() {
        let args = settings(true, Some("10.0.0.1")).ssh_args("10.0.0.2", 22, false);
        assert!(args.contains(&"ProxyCommand=ssh -l core -o ConnectTimeout=3 -o StrictHostKeyChecking=ask -o UserKnownHostsFile=/k/known_hosts -p 22 -W %h:%p 10.0.0.1".to_owned()), "{args:?}");
        assert_eq!(args[args.len() - 3..], ["-p", "22", "10.0.0.2"]);
    }
}
