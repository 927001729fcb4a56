//! Docker images made from this host's binaries, with no registry: a tree
//! holding the binaries, the shared libraries `ldd` lists for them and a
//! minimal `/etc`, imported with `docker import`. And containers removed
//! on drop.
//!
//! ```no_run
//! # fn demo() -> anyhow::Result<()> {
//! use ferrite_testkit::images::Image;
//! Image::new("ferrite-test/redis:latest")
//!     .binary("/usr/bin/redis-server", "/usr/bin/redis-server")
//!     .entrypoint(&["/usr/bin/redis-server", "--protected-mode", "no"])
//!     .expose("6379/tcp")
//!     .import()?;
//! # Ok(()) }
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// An image to import.
#[derive(Debug, Clone)]
pub struct Image {
    name: String,
    binaries: Vec<(PathBuf, String)>,
    files: Vec<(String, Vec<u8>)>,
    entrypoint: Vec<String>,
    expose: Vec<String>,
    env: Vec<String>,
}

impl Image {
    /// `name` as `repository:tag`.
    pub fn new(name: &str) -> Image {
        Image {
            name: name.to_owned(),
            binaries: Vec::new(),
            files: Vec::new(),
            entrypoint: Vec::new(),
            expose: Vec::new(),
            env: Vec::new(),
        }
    }

    /// A host binary, placed at `path` in the image with its libraries.
    pub fn binary(mut self, host: impl Into<PathBuf>, path: &str) -> Image {
        self.binaries.push((host.into(), path.to_owned()));
        self
    }

    /// A file with the given content.
    pub fn file(mut self, path: &str, content: &[u8]) -> Image {
        self.files.push((path.to_owned(), content.to_vec()));
        self
    }

    pub fn entrypoint(mut self, argv: &[&str]) -> Image {
        self.entrypoint = argv.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    /// A port the image exposes (`6379/tcp`), as Dockerfile's `EXPOSE`.
    pub fn expose(mut self, port: &str) -> Image {
        self.expose.push(port.to_owned());
        self
    }

    /// `KEY=value` in the image's environment.
    pub fn env(mut self, entry: &str) -> Image {
        self.env.push(entry.to_owned());
        self
    }

    /// Assembles the tree and imports it into the engine `docker` reaches
    /// by default. The image is removed when the result is dropped.
    pub fn import(&self) -> Result<Imported> {
        self.import_to(None)
    }

    /// As [`Image::import`], into the engine at `docker_host`
    /// (`unix:///path`) when given.
    pub fn import_to(&self, docker_host: Option<&str>) -> Result<Imported> {
        let tar = self.tar()?;
        let mut import = docker_command(docker_host);
        import.arg("import").args(self.import_changes()?).args(["-", &self.name]);
        let mut child = import
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run docker import")?;
        child.stdin.take().context("docker import has no stdin")?.write_all(&tar)?;
        let output = child.wait_with_output().context("cannot run docker import")?;
        if !output.status.success() {
            bail!("importing {} failed: {}", self.name, String::from_utf8_lossy(&output.stderr));
        }
        Ok(Imported { name: self.name.clone(), docker_host: docker_host.map(str::to_owned) })
    }

    /// The image's filesystem as a tar archive, for `docker import -` on
    /// this engine or another machine's: the binaries with their libraries,
    /// the files, and a minimal `/etc`.
    pub fn tar(&self) -> Result<Vec<u8>> {
        let dir = tempfile::Builder::new().prefix("ferrite-image-").tempdir()?;
        let root = dir.path();
        for sub in ["etc", "tmp", "data", "root"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        )?;
        std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
        std::fs::write(root.join("etc/nsswitch.conf"), "passwd: files\ngroup: files\nhosts: files dns\n")?;
        for (host, path) in &self.binaries {
            place(root, host, path)?;
            for library in libraries(host)? {
                let text = library.to_string_lossy().into_owned();
                place(root, &library, &text)?;
            }
        }
        for (path, content) in &self.files {
            let target = root.join(path.trim_start_matches('/'));
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&target, content)?;
        }
        let output = Command::new("tar").arg("-C").arg(root).args(["-c", "."]).output().context("cannot run tar")?;
        if !output.status.success() {
            bail!("tar of {} failed: {}", self.name, String::from_utf8_lossy(&output.stderr));
        }
        Ok(output.stdout)
    }

    /// `docker import`'s `--change` flags: entrypoint, exposed ports,
    /// environment.
    pub fn import_changes(&self) -> Result<Vec<String>> {
        let mut changes = Vec::new();
        if !self.entrypoint.is_empty() {
            changes.push(format!("ENTRYPOINT {}", serde_json::to_string(&self.entrypoint)?));
        }
        changes.extend(self.expose.iter().map(|port| format!("EXPOSE {port}")));
        changes.extend(self.env.iter().map(|entry| format!("ENV {entry}")));
        Ok(changes.into_iter().flat_map(|c| ["--change".to_owned(), c]).collect())
    }

    /// `repository:tag`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// An imported image, removed (`docker rmi -f`) on drop, even when the
/// test fails.
#[derive(Debug)]
pub struct Imported {
    name: String,
    docker_host: Option<String>,
}

impl Imported {
    /// `repository:tag`, for `docker run`.
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl Drop for Imported {
    fn drop(&mut self) {
        let _ = docker_command(self.docker_host.as_deref()).args(["rmi", "-f", &self.name]).output();
    }
}

fn place(root: &Path, host: &Path, path: &str) -> Result<()> {
    let target = root.join(path.trim_start_matches('/'));
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Copies the content, following symlinks (libfoo.so.1 -> libfoo.so.1.2).
    std::fs::copy(host, &target).with_context(|| format!("cannot copy {} into the image", host.display()))?;
    Ok(())
}

/// The shared libraries (and the loader) `ldd` lists for a binary.
fn libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd").arg(binary).output().context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        // A static binary: "not a dynamic executable".
        return Ok(Vec::new());
    }
    Ok(parse_ldd(&text))
}

fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// The path of a binary of this workspace, built beside the running test
/// (`target/<profile>/<name>`; the test command builds every binary first).
pub fn workspace_bin(name: &str) -> PathBuf {
    built_bin(name).unwrap_or_else(|| panic!("{name} is not built: run `cargo build --workspace --bins` first"))
}

/// [`workspace_bin`] if it exists.
pub(crate) fn built_bin(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/<name>
    let bin = exe.parent()?.parent()?.join(name);
    bin.exists().then_some(bin)
}

/// `docker`, talking to `docker_host` when given.
fn docker_command(docker_host: Option<&str>) -> Command {
    let mut command = Command::new("docker");
    if let Some(host) = docker_host {
        command.env("DOCKER_HOST", host);
    }
    command
}

/// A container started with `docker run -d`, removed (forcibly) on drop.
#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub name: String,
    docker_host: Option<String>,
}

impl Container {
    /// `docker run -d --name <name> <args...>`.
    pub fn run(name: &str, args: &[&str]) -> Result<Container> {
        Container::run_on(None, name, args)
    }

    /// As [`Container::run`], on the engine at `docker_host` when given.
    pub fn run_on(docker_host: Option<&str>, name: &str, args: &[&str]) -> Result<Container> {
        let output = docker_command(docker_host).args(["run", "-d", "--name", name]).args(args).output()?;
        if !output.status.success() {
            bail!("docker run {name} failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        Ok(Container { id, name: name.to_owned(), docker_host: docker_host.map(str::to_owned) })
    }

    /// `docker <verb> <this container>` (stop, kill, start...).
    pub fn docker(&self, verb: &[&str]) -> Result<String> {
        let output = docker_command(self.docker_host.as_deref()).args(verb).arg(&self.id).output()?;
        if !output.status.success() {
            bail!("docker {} {} failed: {}", verb.join(" "), self.name, String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// A field of `docker inspect` (a Go template such as
    /// `{{.NetworkSettings.IPAddress}}`).
    pub fn inspect(&self, template: &str) -> Result<String> {
        self.docker(&["inspect", "-f", template])
    }

    /// The host port Docker published for a container port (`6379/tcp`).
    pub fn host_port(&self, port: &str) -> Result<u16> {
        let text = self.inspect(&format!("{{{{(index (index .NetworkSettings.Ports \"{port}\") 0).HostPort}}}}"))?;
        text.parse().with_context(|| format!("host port of {port} in {}: {text:?}", self.name))
    }

    /// The container's logs, for failure messages.
    pub fn logs(&self) -> String {
        docker_command(self.docker_host.as_deref())
            .args(["logs", "--tail", "50", &self.id])
            .output()
            .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
            .unwrap_or_default()
    }

    /// Removes the container now (as drop does).
    pub fn remove(&mut self) {
        let _ = docker_command(self.docker_host.as_deref()).args(["rm", "-f", "-v", &self.id]).output();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A Docker engine of the test's own (`dockerd` with its own socket, data
/// and exec roots, its own bridge interface and no iptables rules, so it
/// leaves the machine's engine and network alone), which a test may stop
/// and start again. Stopped with SIGTERM on drop, as systemd stops
/// docker.service, so it stops its containers and its containerd.
///
/// Never `--bridge none`: dockerd then deletes the host's `docker0`, which
/// the machine's own engine needs.
#[derive(Debug)]
pub struct PrivateEngine {
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
    bridge: String,
    /// `unix:///.../docker.sock`, for `DOCKER_HOST`.
    pub host: String,
}

impl PrivateEngine {
    pub fn start() -> Result<PrivateEngine> {
        let dir = tempfile::Builder::new().prefix("ferrite-dockerd-").tempdir()?;
        let host = format!("unix://{}", dir.path().join("docker.sock").display());
        // A bridge of its own, on a subnet nothing else here uses.
        let n = std::process::id() % 200 + 20;
        let bridge = format!("ferrite-dk{n}");
        let subnet = format!("10.254.{n}.1/24");
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        let steps: [&[&str]; 3] = [
            &["link", "add", &bridge, "type", "bridge"],
            &["addr", "add", &subnet, "dev", &bridge],
            &["link", "set", &bridge, "up"],
        ];
        for args in steps {
            let output = Command::new("ip").args(args).output().context("cannot run ip")?;
            if !output.status.success() {
                bail!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
            }
        }
        let mut engine = PrivateEngine { child: None, dir, bridge, host };
        engine.spawn()?;
        Ok(engine)
    }

    fn spawn(&mut self) -> Result<()> {
        let root = self.dir.path();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(root.join("dockerd.log"))?;
        let child = Command::new("dockerd")
            .args(["--host", &self.host])
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("docker.pid"))
            .args(["--bridge", &self.bridge, "--iptables=false", "--ip-masq=false", "--ip-forward=false"])
            .args(["--shutdown-timeout", "2"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start dockerd")?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let answered = docker_command(Some(&self.host))
                .arg("info")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if answered {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("the private dockerd did not answer; see {}", root.join("dockerd.log").display());
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// SIGTERM, then wait for it to exit (SIGKILL after 30 s).
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while child.try_wait()?.is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the private dockerd did not stop on SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Ok(())
    }

    /// Stops the engine and starts it again on the same roots, as a
    /// package upgrade or `systemctl restart docker` does.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()
    }

    /// The tail of the engine's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        // Containers first, so the engine's shutdown is quick.
        let _ = Command::new("sh")
            .arg("-c")
            .arg("ids=$(docker ps -aq); [ -z \"$ids\" ] || docker rm -f $ids")
            .env("DOCKER_HOST", &self.host)
            .output();
        let _ = self.stop();
        // dockerd leaves its default network namespace mounted under the
        // exec root; unmounted, the temp dir can go.
        let _ = Command::new("umount").arg(self.dir.path().join("exec/netns/default")).output();
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}

/// The address of Docker's default bridge on the host (`docker0`), which
/// containers on the bridge reach the host through: the network's gateway
/// when Docker states one, else the bridge interface's own IPv4 address.
pub fn bridge_gateway() -> Result<String> {
    let inspect = |template: &str| -> Result<String> {
        let output = Command::new("docker").args(["network", "inspect", "bridge", "-f", template]).output()?;
        if !output.status.success() {
            bail!("docker network inspect bridge failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let gateway = inspect("{{range .IPAM.Config}}{{.Gateway}}{{end}}")?;
    if !gateway.is_empty() {
        return Ok(gateway);
    }
    let mut interface = inspect("{{index .Options \"com.docker.network.bridge.name\"}}")?;
    if interface.is_empty() || interface == "<no value>" {
        interface = "docker0".into();
    }
    let output = Command::new("ip").args(["-4", "-o", "addr", "show", "dev", &interface]).output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_inet(&text).with_context(|| format!("no IPv4 address on {interface}: {text:?}"))
}

/// The address of `ip -4 -o addr show` output's first `inet a.b.c.d/n`.
fn parse_inet(text: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == "inet")?;
    Some(words.next()?.split('/').next()?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_output_gives_the_bridge_address() {
        let text =
            "5: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\\       valid_lft forever\n";
        assert_eq!(parse_inet(text).as_deref(), Some("172.17.0.1"));
        assert_eq!(parse_inet(""), None);
    }

    #[test]
    fn ldd_output_gives_libraries_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }
}
