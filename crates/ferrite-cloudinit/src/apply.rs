//! Carries out a [`Plan`]. Files (written atomically, and only when their
//! content, mode or owner differ) are handled here for every target, under a
//! root directory; what needs the running system (hostname, users, the
//! service manager, scripts) goes through the [`Machine`] trait, so the same
//! code applies to a live machine and, with `--root`, to a tree offline.
//! A second apply of the same config changes nothing.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::command::run;
use crate::config::User;
use crate::plan::{only_if_running, FileWrite, Plan, UnitStep, SSH_KEYS_NAME};
use crate::substitute::merge_environment;

/// An effect that failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A file could not be read or written.
    #[error("{action} {path}")]
    File {
        /// What was being done.
        action: &'static str,
        /// The path on the target.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `owner` names a user or group the target does not have.
    #[error("{path}: unknown owner {owner:?}")]
    Owner {
        /// The file.
        path: String,
        /// The owner given.
        owner: String,
    },
    /// A user tool failed.
    #[error(transparent)]
    Command(#[from] crate::command::CommandError),
    /// The service manager refused something.
    #[error("{action} {unit}: {detail}")]
    Unit {
        /// What was asked.
        action: String,
        /// The unit.
        unit: String,
        /// The manager's answer.
        detail: String,
    },
    /// The user an SSH key is for does not exist.
    #[error("cannot authorize SSH keys for {user}: no such user")]
    NoUser {
        /// The user.
        user: String,
    },
    /// The config asks for what the target cannot do (a unit it does not
    /// have, a group it lacks, a path it cannot write); found before any
    /// change, so nothing was changed.
    #[error("the target cannot take this config, nothing was applied:\n{0}")]
    Preflight(crate::validate::Report),
}

/// What needs the running system. The live implementation talks to
/// systemd and the user tools; the offline one (`--root`) edits the tree or
/// records what it cannot do.
pub trait Machine {
    /// Sets the static hostname; returns whether it changed.
    fn set_hostname(&mut self, root: &Path, name: &str) -> Result<bool, ApplyError>;
    /// Creates a user that does not exist.
    fn create_user(&mut self, root: &Path, user: &User) -> Result<(), ApplyError>;
    /// Sets an existing user's password hash.
    fn set_password(&mut self, root: &Path, name: &str, hash: &str) -> Result<(), ApplyError>;
    /// Enables a unit file (its `[Install]` section).
    fn enable_unit(&mut self, root: &Path, unit: &str, runtime: bool) -> Result<bool, ApplyError>;
    /// Makes the manager reread unit files.
    fn daemon_reload(&mut self) -> Result<(), ApplyError>;
    /// Runs `start`, `stop`, `restart`, ... on a unit.
    fn unit_command(&mut self, unit: &str, command: &str) -> Result<(), ApplyError>;
    /// Runs a script (already written to `path`) once; returns whether it ran.
    fn run_script(&mut self, path: &str) -> Result<bool, ApplyError>;
    /// Whether the unit exists on the target (before this config is applied).
    fn unit_exists(&mut self, root: &Path, unit: &str) -> Result<bool, ApplyError>;
    /// Whether [`Machine::unit_command`] runs commands (a live machine) or
    /// only records them (a tree offline), so units they name must exist.
    fn runs_unit_commands(&self) -> bool;
}

/// What an apply changed, one line per change, for the log and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Each change made.
    pub changes: Vec<String>,
}

/// Applies `plan` to the system under `root` (`/` for the live machine),
/// after [`crate::preflight::check`] has found nothing in the way.
pub fn apply(plan: &Plan, root: &Path, machine: &mut dyn Machine) -> Result<Outcome, ApplyError> {
    crate::preflight::check(plan, root, machine)?;
    let mut outcome = Outcome::default();
    let mut changed = |what: String| {
        tracing::info!("{what}");
        outcome.changes.push(what);
    };
    for what in &plan.ignored {
        tracing::warn!("not applied: {what}");
    }

    if let Some(name) = &plan.hostname {
        if machine.set_hostname(root, name)? {
            changed(format!("hostname set to {name}"));
        }
    }

    for user in &plan.users {
        match passwd_entry(root, &user.name)? {
            None => {
                machine.create_user(root, user)?;
                changed(format!("user {} created", user.name));
            }
            Some(_) => {
                if let Some(hash) = &user.passwd {
                    if shadow_hash(root, &user.name)?.as_deref() != Some(hash.as_str()) {
                        machine.set_password(root, &user.name, hash)?;
                        changed(format!("password of {} set", user.name));
                    }
                }
            }
        }
    }
    for ssh in &plan.ssh_keys {
        for path in authorize_keys(root, &ssh.user, &ssh.keys)? {
            changed(format!("SSH keys of {} written to {path}", ssh.user));
        }
    }

    // systemd-networkd starts beside this (not after it), so network
    // units that write_files puts in place need it restarted, as units do.
    let mut network_files_changed = false;
    for file in &plan.files {
        if write_file(root, file)? {
            changed(format!("{} written", file.path));
            network_files_changed |= is_networkd_config(&file.path);
        }
    }
    for merge in &plan.merges {
        let old = read_optional(&target(root, &merge.path))?
            .or(match &merge.fallback {
                Some(fallback) => read_optional(&target(root, fallback))?,
                None => None,
            })
            .unwrap_or_default();
        let content = merge_update_conf(&String::from_utf8_lossy(&old), &merge.vars);
        let file = FileWrite::new(merge.path.clone(), content, 0o644);
        if write_file(root, &file)? {
            changed(format!("{} written", merge.path));
        }
    }
    if plan.etc_hosts {
        let hostname = match &plan.hostname {
            Some(name) => name.clone(),
            None => current_hostname(root),
        };
        let file = FileWrite::new("/etc/hosts", format!("127.0.0.1 {hostname}\n"), 0o644);
        if write_file(root, &file)? {
            changed("/etc/hosts written".to_owned());
        }
    }
    if !plan.environment.is_empty() {
        let path = target(root, "/etc/environment");
        let old = read_optional(&path)?.unwrap_or_default();
        let old = String::from_utf8_lossy(&old);
        let content = merge_environment(&old, &plan.environment);
        if content != old {
            write_file(root, &FileWrite::new("/etc/environment", content, 0o644))?;
            changed("/etc/environment updated".to_owned());
        }
    }

    apply_units(&plan.units, network_files_changed, root, machine, &mut changed)?;

    if let Some(script) = &plan.script {
        run_script_once(root, script, machine, &mut changed)?;
    }
    Ok(outcome)
}

/// Whether a file at `path` configures systemd-networkd.
fn is_networkd_config(path: &str) -> bool {
    ["/etc/systemd/network/", "/run/systemd/network/"].iter().any(|dir| path.starts_with(dir))
        && crate::plan::is_network_unit(path)
}

/// Writes, masks and enables the units, then reloads systemd, restarts
/// systemd-networkd if its configuration changed (`network_files_changed`
/// says whether write_files changed any), and runs the units' commands.
fn apply_units(
    units: &[UnitStep],
    network_files_changed: bool,
    root: &Path,
    machine: &mut dyn Machine,
    changed: &mut dyn FnMut(String),
) -> Result<(), ApplyError> {
    let mut reload = false;
    let mut restart_networkd = network_files_changed;
    let mut commands = Vec::new();
    for unit in units {
        let mut files_changed = false;
        if let Some(content) = &unit.content {
            let file = FileWrite::new(unit.path(), content.clone(), 0o644);
            if write_file(root, &file)? {
                changed(format!("unit {} written", file.path));
                files_changed = true;
            }
        }
        for (name, content) in &unit.drop_ins {
            let file = FileWrite::new(unit.drop_in_path(name), content.clone(), 0o644);
            if write_file(root, &file)? {
                changed(format!("drop-in {} written", file.path));
                files_changed = true;
            }
        }
        let masked = match unit.mask {
            Some(true) => mask(root, &unit.path())?.then(|| format!("{} masked", unit.name)),
            Some(false) => unmask(root, &unit.path())?.then(|| format!("{} unmasked", unit.name)),
            None => None,
        };
        if let Some(what) = masked {
            changed(what);
            files_changed = true;
        }
        if files_changed {
            reload = true;
            restart_networkd |= unit.is_network();
        }
        if unit.enable && machine.enable_unit(root, &unit.name, unit.runtime)? {
            changed(format!("{} enabled", unit.name));
        }
        if let (Some(command), false) = (&unit.command, unit.is_network()) {
            commands.push((unit.name.clone(), command.clone()));
        }
    }
    if reload {
        machine.daemon_reload()?;
    }
    if restart_networkd {
        machine.unit_command("systemd-networkd.service", "restart")?;
    }
    for (unit, command) in commands {
        if only_if_running(&command) && machine.runs_unit_commands() && !machine.unit_exists(root, &unit)? {
            tracing::info!("{command} {unit}: no such unit, so not running; nothing to do");
            continue;
        }
        machine.unit_command(&unit, &command)?;
    }
    Ok(())
}

fn run_script_once(
    root: &Path,
    script: &[u8],
    machine: &mut dyn Machine,
    changed: &mut dyn FnMut(String),
) -> Result<(), ApplyError> {
    use sha1::Digest as _;
    let digest: String = sha1::Sha1::digest(script).iter().map(|b| format!("{b:02x}")).collect();
    let dir = "/var/lib/ferrite-cloudinit/scripts";
    let done = format!("{dir}/{digest}.done");
    if target(root, &done).exists() {
        return Ok(());
    }
    let path = format!("{dir}/{digest}");
    write_file(root, &FileWrite::new(path.clone(), script, 0o700))?;
    if machine.run_script(&path)? {
        write_file(root, &FileWrite::new(done, Vec::new(), 0o644))?;
        changed(format!("script {path} ran"));
    }
    Ok(())
}

/// `path` (absolute on the target) under `root`.
pub fn target(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, ApplyError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ApplyError::File { action: "cannot read", path: path.to_owned(), source }),
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ApplyError + 'a {
    move |source| ApplyError::File { action, path: path.to_owned(), source }
}

/// Writes a file atomically (temp file in the same directory, fsync,
/// rename) unless it already has this content, mode and owner; returns
/// whether it wrote.
pub fn write_file(root: &Path, file: &FileWrite) -> Result<bool, ApplyError> {
    let path = target(root, &file.path);
    let owner = match &file.owner {
        Some(owner) => Some(
            resolve_owner(root, owner)
                .ok_or_else(|| ApplyError::Owner { path: file.path.clone(), owner: owner.clone() })?,
        ),
        None => None,
    };
    if let Ok(meta) = fs::symlink_metadata(&path) {
        let same_owner = owner.is_none_or(|(uid, gid)| meta.uid() == uid && gid.is_none_or(|g| meta.gid() == g));
        if meta.is_file()
            && meta.mode() & 0o7777 == file.mode
            && same_owner
            && fs::read(&path).map_err(io("cannot read", &path))? == file.content
        {
            return Ok(false);
        }
    }
    let dir = path.parent().unwrap_or(root);
    fs::create_dir_all(dir).map_err(io("cannot create directory", dir))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".ferrite-cloudinit")
        .tempfile_in(dir)
        .map_err(io("cannot create a temporary file in", dir))?;
    temp.write_all(&file.content).map_err(io("cannot write", &path))?;
    temp.as_file().sync_all().map_err(io("cannot write", &path))?;
    fs::set_permissions(temp.path(), fs::Permissions::from_mode(file.mode))
        .map_err(io("cannot set the mode of", &path))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(temp.path(), Some(uid), gid).map_err(io("cannot change the owner of", &path))?;
    }
    temp.persist(&path).map_err(|e| ApplyError::File {
        action: "cannot write",
        path: path.clone(),
        source: e.error,
    })?;
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(true)
}

fn mask(root: &Path, unit_path: &str) -> Result<bool, ApplyError> {
    let path = target(root, unit_path);
    if fs::read_link(&path).is_ok_and(|t| t == Path::new("/dev/null")) {
        return Ok(false);
    }
    if fs::symlink_metadata(&path).is_ok() {
        fs::remove_file(&path).map_err(io("cannot remove", &path))?;
    }
    let dir = path.parent().unwrap_or(root);
    fs::create_dir_all(dir).map_err(io("cannot create directory", dir))?;
    std::os::unix::fs::symlink("/dev/null", &path).map_err(io("cannot mask with", &path))?;
    Ok(true)
}

/// Removes a mask: a link to /dev/null or an empty file (coreos-cloudinit
/// refuses to remove anything else).
fn unmask(root: &Path, unit_path: &str) -> Result<bool, ApplyError> {
    let path = target(root, unit_path);
    let is_mask = fs::read_link(&path).is_ok_and(|t| t == Path::new("/dev/null"))
        || fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == 0);
    if !is_mask {
        return Ok(false);
    }
    fs::remove_file(&path).map_err(io("cannot unmask", &path))?;
    Ok(true)
}

/// The `/etc/passwd` entry of `name` in the target: its fields.
pub fn passwd_entry(root: &Path, name: &str) -> Result<Option<Vec<String>>, ApplyError> {
    let path = target(root, "/etc/passwd");
    let text = read_optional(&path)?.unwrap_or_default();
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
        .find(|fields| fields.first().is_some_and(|n| n == name)))
}

fn shadow_hash(root: &Path, name: &str) -> Result<Option<String>, ApplyError> {
    let path = target(root, "/etc/shadow");
    let text = read_optional(&path)?.unwrap_or_default();
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .and_then(|f| f.get(1).map(|h| (*h).to_owned())))
}

fn group_id(root: &Path, name: &str) -> Option<u32> {
    if let Ok(id) = name.parse() {
        return Some(id);
    }
    let text = fs::read_to_string(target(root, "/etc/group")).ok()?;
    text.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f[0] == name).and_then(|f| f.get(2)?.parse().ok())
}

/// `user[:group]` (or `user.group`) as ids, from the target's own files.
fn resolve_owner(root: &Path, owner: &str) -> Option<(u32, Option<u32>)> {
    let (user, group) = match owner.split_once([':', '.']) {
        Some((u, g)) => (u, Some(g)),
        None => (owner, None),
    };
    let uid = match user.parse() {
        Ok(id) => id,
        Err(_) => passwd_entry(root, user).ok()??.get(2)?.parse().ok()?,
    };
    let gid = match group {
        Some(g) if !g.is_empty() => Some(group_id(root, g)?),
        _ => None,
    };
    Some((uid, gid))
}

/// Writes `~user/.ssh/authorized_keys.d/ferrite-cloudinit` and rebuilds
/// `~user/.ssh/authorized_keys` from every file in that directory, as
/// CoreOS's `update-ssh-keys` does. Returns the files it changed.
fn authorize_keys(root: &Path, user: &str, keys: &[String]) -> Result<Vec<String>, ApplyError> {
    let entry = passwd_entry(root, user)?.ok_or_else(|| ApplyError::NoUser { user: user.to_owned() })?;
    let (Some(uid), Some(gid), Some(home)) = (entry.get(2), entry.get(3), entry.get(5)) else {
        return Err(ApplyError::NoUser { user: user.to_owned() });
    };
    let owner = Some(format!("{uid}:{gid}"));
    let ssh = format!("{}/.ssh", home.trim_end_matches('/'));
    let mut changed = Vec::new();
    for dir in [ssh.clone(), format!("{ssh}/authorized_keys.d")] {
        let path = target(root, &dir);
        if !path.is_dir() {
            fs::create_dir_all(&path).map_err(io("cannot create directory", &path))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                .map_err(io("cannot set the mode of", &path))?;
            let (uid, gid) = resolve_owner(root, owner.as_deref().unwrap_or_default()).unwrap_or((0, None));
            std::os::unix::fs::chown(&path, Some(uid), gid).map_err(io("cannot change the owner of", &path))?;
        }
    }
    let mut content: String = keys.iter().map(|k| format!("{}\n", k.trim())).collect();
    if content.is_empty() {
        content.push('\n');
    }
    let ours = FileWrite {
        owner: owner.clone(),
        ..FileWrite::new(format!("{ssh}/authorized_keys.d/{SSH_KEYS_NAME}"), content, 0o600)
    };
    if write_file(root, &ours)? {
        changed.push(ours.path.clone());
    }
    let dir = target(root, &format!("{ssh}/authorized_keys.d"));
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(io("cannot read", &dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let mut all = Vec::new();
    for name in names {
        all.extend(fs::read(dir.join(&name)).map_err(io("cannot read", &dir.join(&name)))?);
    }
    let combined = FileWrite { owner, ..FileWrite::new(format!("{ssh}/authorized_keys"), all, 0o600) };
    if write_file(root, &combined)? {
        changed.push(combined.path.clone());
    }
    Ok(changed)
}

fn current_hostname(root: &Path) -> String {
    let from_file = fs::read_to_string(target(root, "/etc/hostname")).ok().map(|s| s.trim().to_owned());
    let from_kernel = || fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_owned());
    match from_file.filter(|s| !s.is_empty()) {
        Some(name) => name,
        None if root == Path::new("/") => from_kernel().unwrap_or_else(|| "localhost".to_owned()),
        None => "localhost".to_owned(),
    }
}

/// coreos-cloudinit's update.conf merge: a line starting with a key being
/// set is replaced, other lines are kept, new keys are appended in order.
pub fn merge_update_conf(old: &str, vars: &[(String, String)]) -> String {
    let mut pending: Vec<&(String, String)> = vars.iter().collect();
    let mut out = String::new();
    for line in old.lines() {
        match pending.iter().position(|(k, _)| line.starts_with(&format!("{k}="))) {
            Some(i) => {
                let (k, v) = pending.remove(i);
                out.push_str(&format!("{k}={v}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    pending.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, v) in pending {
        out.push_str(&format!("{k}={v}\n"));
    }
    out
}

/// Parses a unit file's `[Install]` section: (WantedBy, RequiredBy, Alias).
pub fn install_section(text: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut wanted, mut required, mut alias) = (Vec::new(), Vec::new(), Vec::new());
    let mut in_install = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        if !in_install {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        let values = value.split_whitespace().map(str::to_owned);
        match key.trim() {
            "WantedBy" => wanted.extend(values),
            "RequiredBy" => required.extend(values),
            "Alias" => alias.extend(values),
            _ => {}
        }
    }
    (wanted, required, alias)
}

/// Where systemd looks for unit files, most important first.
pub const UNIT_PATHS: &[&str] =
    &["/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"];

/// Where `unit`'s file is under `root` (absolute on the target), searching
/// systemd's unit paths in order.
pub fn unit_file(root: &Path, unit: &str) -> Option<String> {
    UNIT_PATHS.iter().map(|dir| format!("{dir}/{unit}")).find(|p| fs::symlink_metadata(target(root, p)).is_ok())
}

/// The template an instance is made from: `getty@tty1.service` →
/// `getty@.service`.
pub fn template_of(unit: &str) -> Option<String> {
    let (prefix, rest) = unit.split_once('@')?;
    let (instance, suffix) = rest.rsplit_once('.')?;
    (!instance.is_empty()).then(|| format!("{prefix}@.{suffix}"))
}

/// Applies to a tree offline (`--root`), like `systemctl --root`: enabling
/// makes the `[Install]` symlinks, the hostname goes to `/etc/hostname`,
/// users are added with `useradd --prefix`; the service manager is not
/// there, so reloads and unit commands are recorded and skipped, and
/// scripts are not run.
/// Writes `name` as the static hostname (`/etc/hostname` under `root`);
/// returns whether the file changed. Both machines store it this way.
pub fn store_hostname(root: &Path, name: &str) -> Result<bool, ApplyError> {
    write_file(root, &FileWrite::new("/etc/hostname", format!("{name}\n"), 0o644))
}

#[derive(Debug, Default)]
pub struct Offline {
    /// What was skipped because no system is running, for the log and tests.
    pub skipped: Vec<String>,
}

impl Machine for Offline {
    fn set_hostname(&mut self, root: &Path, name: &str) -> Result<bool, ApplyError> {
        store_hostname(root, name)
    }

    fn create_user(&mut self, root: &Path, user: &User) -> Result<(), ApplyError> {
        let mut args = useradd_args(user);
        args.splice(0..0, ["--prefix".to_owned(), root.display().to_string()]);
        Ok(run("useradd", &args)?)
    }

    fn set_password(&mut self, root: &Path, name: &str, hash: &str) -> Result<(), ApplyError> {
        Ok(run(
            "usermod",
            &[
                "--prefix".to_owned(),
                root.display().to_string(),
                "--password".to_owned(),
                hash.to_owned(),
                name.to_owned(),
            ],
        )?)
    }

    fn unit_exists(&mut self, root: &Path, unit: &str) -> Result<bool, ApplyError> {
        Ok(unit_file(root, unit).is_some() || template_of(unit).is_some_and(|t| unit_file(root, &t).is_some()))
    }

    fn runs_unit_commands(&self) -> bool {
        false
    }

    fn enable_unit(&mut self, root: &Path, unit: &str, runtime: bool) -> Result<bool, ApplyError> {
        let Some(source) = unit_file(root, unit) else {
            return Err(ApplyError::Unit {
                action: "enable".to_owned(),
                unit: unit.to_owned(),
                detail: "no such unit file".to_owned(),
            });
        };
        let text = fs::read_to_string(target(root, &source)).unwrap_or_default();
        let (wanted, required, alias) = install_section(&text);
        let base = if runtime { "/run/systemd/system" } else { "/etc/systemd/system" };
        let mut links: Vec<String> = wanted.iter().map(|t| format!("{base}/{t}.wants/{unit}")).collect();
        links.extend(required.iter().map(|t| format!("{base}/{t}.requires/{unit}")));
        links.extend(alias.iter().map(|a| format!("{base}/{a}")));
        let mut changed = false;
        for link in links {
            let path = target(root, &link);
            if fs::read_link(&path).is_ok_and(|t| t == Path::new(&source)) {
                continue;
            }
            if fs::symlink_metadata(&path).is_ok() {
                fs::remove_file(&path).map_err(io("cannot remove", &path))?;
            }
            let dir = path.parent().unwrap_or(root);
            fs::create_dir_all(dir).map_err(io("cannot create directory", dir))?;
            std::os::unix::fs::symlink(&source, &path).map_err(io("cannot link", &path))?;
            changed = true;
        }
        Ok(changed)
    }

    fn daemon_reload(&mut self) -> Result<(), ApplyError> {
        self.skipped.push("daemon-reload".to_owned());
        Ok(())
    }

    fn unit_command(&mut self, unit: &str, command: &str) -> Result<(), ApplyError> {
        self.skipped.push(format!("{command} {unit}"));
        Ok(())
    }

    fn run_script(&mut self, path: &str) -> Result<bool, ApplyError> {
        self.skipped.push(format!("script {path}"));
        Ok(false)
    }
}

/// `useradd`'s arguments for a user, as coreos-cloudinit builds them.
pub fn useradd_args(user: &User) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut push = |a: &str, b: Option<&str>| {
        args.push(a.to_owned());
        if let Some(b) = b {
            args.push(b.to_owned());
        }
    };
    push("--password", Some(user.passwd.as_deref().unwrap_or("*")));
    if let Some(gecos) = &user.gecos {
        push("--comment", Some(gecos));
    }
    if let Some(home) = &user.homedir {
        push("--home-dir", Some(home));
    }
    push(if user.no_create_home { "--no-create-home" } else { "--create-home" }, None);
    if let Some(group) = &user.primary_group {
        push("--gid", Some(group));
    }
    if !user.groups.is_empty() {
        push("--groups", Some(&user.groups.join(",")));
    }
    if user.no_user_group {
        push("--no-user-group", None);
    }
    if user.system {
        push("--system", None);
    }
    if user.no_log_init {
        push("--no-log-init", None);
    }
    if let Some(shell) = &user.shell {
        push("--shell", Some(shell));
    }
    args.push(user.name.clone());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_conf_keeps_other_lines() {
        let vars = vec![("GROUP".to_owned(), "beta".to_owned()), ("SERVER".to_owned(), "http://u".to_owned())];
        assert_eq!(merge_update_conf("GROUP=stable\nFOO=1\n", &vars), "GROUP=beta\nFOO=1\nSERVER=http://u\n");
    }

    #[test]
    fn install_sections() {
        let (w, r, a) = install_section("[Unit]\nWantedBy=no\n[Install]\nWantedBy=multi-user.target default.target\nAlias=x.service\nRequiredBy=y.target\n");
        assert_eq!(w, ["multi-user.target", "default.target"]);
        assert_eq!(r, ["y.target"]);
        assert_eq!(a, ["x.service"]);
    }

    #[test]
    fn useradd_arguments() {
        let user = User {
            name: "bob".into(),
            groups: vec!["sudo".into(), "docker".into()],
            no_create_home: true,
            system: true,
            shell: Some("/bin/sh".into()),
            ..User::default()
        };
        assert_eq!(
            useradd_args(&user).join(" "),
            "--password * --no-create-home --groups sudo,docker --system --shell /bin/sh bob"
        );
    }
}
