//! Docker containers running real systemd as PID 1: stand-in machines for
//! the cloud-config interpreter and, later, the scheduler's agent.
//!
//! The image is a Debian 12 tree with systemd and dbus, made once with
//! `debootstrap` (installed with apt-get when missing), cached under
//! `target/testkit/debian12-systemd-<version>`, and `docker import`ed. Containers start
//! with the flags DESIGN.md gives plus `--network none`, are waited on until systemd says
//! the system is up, and are removed on drop; when the drop happens during
//! a failing test the container's journal is printed first.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The image tag; bump the version (here and in [`TREE`]) when the tree's
/// package list changes.
pub const IMAGE: &str = "ferrite-test/debian12-systemd:2";
/// The cached tree's directory under [`cache_dir`], versioned as [`IMAGE`]
/// so a tree made for an older package list is never imported.
const TREE: &str = "debian12-systemd-2";
/// systemd and D-Bus for PID 1, OpenSSH's server for what reaches a
/// machine over SSH (fleetctl's status, journal and ssh).
const PACKAGES: &str = "systemd,systemd-sysv,dbus,openssh-server";
const MIRROR: &str = "http://deb.debian.org/debian";

/// Where the tree is cached: `$CARGO_TARGET_DIR/testkit` or the workspace's
/// `target/testkit`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("testkit"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/testkit"),
    }
}

fn run(command: &mut Command) -> Result<Output> {
    let output = command.output().with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

/// Makes sure [`IMAGE`] exists, building the tree and importing it if needed.
pub fn ensure_image() -> Result<&'static str> {
    if Command::new("docker").args(["image", "inspect", IMAGE]).output().is_ok_and(|o| o.status.success()) {
        return Ok(IMAGE);
    }
    let dir = cache_dir();
    let tree = dir.join(TREE);
    if !tree.join("lib/systemd/systemd").exists() {
        if Command::new("debootstrap").arg("--version").output().is_err() {
            run(Command::new("apt-get").args(["install", "-y", "debootstrap"]))?;
        }
        let partial = dir.join(format!("{TREE}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        run(Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={PACKAGES}"), "bookworm"])
            .arg(&partial)
            .arg(MIRROR))?;
        std::fs::rename(&partial, &tree).with_context(|| format!("cannot move the tree to {}", tree.display()))?;
    }
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&tree)
        .args(["-c", "."])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run tar")?;
    let stdout = tar.stdout.context("tar has no stdout")?;
    run(Command::new("docker").args(["import", "-", IMAGE]).stdin(stdout))?;
    Ok(IMAGE)
}

/// A running container with systemd as PID 1, removed on drop.
#[derive(Debug)]
pub struct SystemdContainer {
    id: String,
}

impl SystemdContainer {
    /// Starts a container from [`IMAGE`] (built if needed) and waits until
    /// systemd reports the system running (or degraded). Docker's bind
    /// mounts over `/etc/hostname` and `/etc/hosts` are removed, so those
    /// are plain files as on a machine.
    pub fn start() -> Result<SystemdContainer> {
        // No network: nothing here needs one, and the network rule wants
        // no traffic a test did not create.
        SystemdContainer::start_with("none", None, &[])
    }

    /// Starts a container on a network of the test's own, as a machine of
    /// a cluster, with the given hostname and a machine id of its own.
    pub fn start_on(network: &Network, hostname: &str) -> Result<SystemdContainer> {
        SystemdContainer::start_on_with(network, hostname, &[])
    }

    /// As [`SystemdContainer::start_on`], with more `docker run` options
    /// (`-v /var/run/docker.sock:/run/docker.sock` lends the machine the
    /// host's Docker engine).
    pub fn start_on_with(network: &Network, hostname: &str, options: &[&str]) -> Result<SystemdContainer> {
        let container = SystemdContainer::start_with(&network.name, Some(hostname), options)?;
        // The image's tree is shared, so its machine id would be too.
        // journald files its journal under the id it started with, and
        // journalctl reads only the current id's journal: restarted, it
        // files under the new one.
        container.sh("tr -dc 0-9a-f < /dev/urandom | head -c 32 > /etc/machine-id; echo >> /etc/machine-id; \
             systemctl restart systemd-journald")?;
        Ok(container)
    }

    fn start_with(network: &str, hostname: Option<&str>, options: &[&str]) -> Result<SystemdContainer> {
        let image = ensure_image()?;
        let mut command = Command::new("docker");
        if let Some(hostname) = hostname {
            command.args(["run", "--hostname", hostname]);
        } else {
            command.arg("run");
        }
        command.args([
            "-d",
            "--network",
            network,
            "--cap-add",
            "SYS_ADMIN",
            "--cap-add",
            "NET_ADMIN",
            "--security-opt",
            "seccomp=unconfined",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:ro",
        ]);
        command.args(options);
        command.args([image, "/lib/systemd/systemd"]);
        let output = command.output().context("cannot run docker")?;
        // Removed on drop even when docker created it but could not start it.
        let container = SystemdContainer { id: String::from_utf8_lossy(&output.stdout).trim().to_owned() };
        if !output.status.success() {
            bail!("{command:?} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr));
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let state = container.exec(&["systemctl", "is-system-running"])?;
            let state = String::from_utf8_lossy(&state.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                break;
            }
            if Instant::now() > deadline {
                bail!("systemd in container {} is still {state:?} after 90 s", container.id);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        container.sh("umount /etc/hostname /etc/hosts; true")?;
        Ok(container)
    }

    /// The container's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container's address on its network.
    pub fn ip(&self) -> Result<String> {
        let output = run(Command::new("docker").args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &self.id,
        ]))?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Stops the container the hard way (`docker kill`): the machine dies.
    pub fn kill(&self) -> Result<()> {
        run(Command::new("docker").args(["kill", &self.id]))?;
        Ok(())
    }

    /// Disconnects the container from its network: the machine is cut off
    /// but goes on running.
    pub fn disconnect(&self, network: &Network) -> Result<()> {
        run(Command::new("docker").args(["network", "disconnect", &network.name, &self.id]))?;
        Ok(())
    }

    /// Runs a command in the container; its output whatever the status.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        Command::new("docker")
            .arg("exec")
            .arg(&self.id)
            .args(argv)
            .output()
            .with_context(|| format!("cannot docker exec {argv:?}"))
    }

    /// Runs a shell script in the container; its stdout, or an error with
    /// both outputs when it fails.
    pub fn sh(&self, script: &str) -> Result<String> {
        let output = self.exec(&["sh", "-c", script])?;
        if !output.status.success() {
            bail!(
                "in container {}: {script:?} failed ({}): {}{}",
                self.id,
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Copies a host file into the container.
    pub fn copy_in(&self, host: &Path, dest: &str) -> Result<()> {
        run(Command::new("docker").arg("cp").arg(host).arg(format!("{}:{dest}", self.id)))?;
        Ok(())
    }

    /// Writes `content` to `path` in the container.
    pub fn write(&self, path: &str, content: &str) -> Result<()> {
        let temp = tempfile::NamedTempFile::new().context("cannot create a temporary file")?;
        std::fs::write(temp.path(), content).context("cannot write a temporary file")?;
        self.copy_in(temp.path(), path)
    }
}

/// A Docker bridge network of the test's own, removed on drop (after the
/// containers on it, which must be dropped first).
#[derive(Debug)]
pub struct Network {
    pub name: String,
}

impl Network {
    /// Creates a network named `ferrite-<label>-<pid>-<n>`: the tests of one
    /// process run side by side, and Docker lets two networks share a name
    /// (then neither can be used or removed by it).
    pub fn create(label: &str) -> Result<Network> {
        static CREATED: AtomicUsize = AtomicUsize::new(0);
        let n = CREATED.fetch_add(1, Ordering::Relaxed);
        let name = format!("ferrite-{label}-{}-{n}", std::process::id());
        let _ = Command::new("docker").args(["network", "rm", &name]).output();
        // Internal: the machines reach each other and nothing beyond.
        run(Command::new("docker").args(["network", "create", "--internal", "--driver", "bridge", &name]))?;
        Ok(Network { name })
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["network", "rm", &self.name]).output();
    }
}

impl Drop for SystemdContainer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(journal) = self.exec(&["journalctl", "--no-pager", "-n", "300"]) {
                eprintln!("--- journal of container {} ---\n{}", self.id, String::from_utf8_lossy(&journal.stdout));
            }
        }
        let _ = Command::new("docker").args(["rm", "-f", &self.id]).output();
    }
}
