//! Before the first change, everything a plan needs from its target that
//! can be checked is checked: the units it enables or commands exist (or
//! the config gives their content), the groups new users join exist (or
//! are made by users created before them), every owner and every user
//! given SSH keys resolves, and every path the config writes can be
//! written. (`try-restart` of a unit that does not exist is no problem: it
//! is skipped, see [`only_if_running`].) A config the target cannot take is refused whole, every problem
//! named with its line, and nothing is changed. What cannot be known before
//! doing it (a unit that fails to start, a full disk) is still reported by
//! the step that meets it.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::apply::{target, ApplyError, Machine};
use crate::plan::{only_if_running, Plan, UnitStep};
use crate::validate::Report;

/// Checks `plan` against the target under `root`; every problem found, as
/// [`ApplyError::Preflight`].
pub fn check(plan: &Plan, root: &Path, machine: &mut dyn Machine) -> Result<(), ApplyError> {
    let mut report = Report::default();
    let mut accounts = Accounts::read(root)?;
    for user in &plan.users {
        if accounts.users.contains(&user.name) {
            continue; // Only its password is set.
        }
        let groups =
            user.primary_group.iter().map(|g| (g, "primary_group")).chain(user.groups.iter().map(|g| (g, "groups")));
        for (group, key) in groups {
            if !accounts.has_group(group) {
                report.error(user.lines.key(key), format!("group {group:?} of user {} does not exist", user.name));
            }
        }
        accounts.users.insert(user.name.clone());
        if !user.no_user_group {
            accounts.groups.insert(user.name.clone());
        }
    }
    for ssh in &plan.ssh_keys {
        if !accounts.has_user(&ssh.user) {
            report.error(ssh.line.unwrap_or(1), format!("cannot authorize SSH keys for {}: no such user", ssh.user));
        }
    }
    for file in &plan.files {
        let Some(lines) = &file.origin else { continue };
        if let Some(owner) = &file.owner {
            if let Some(problem) = accounts.unknown_owner(owner) {
                report.error(lines.key("owner"), format!("owner of {}: {problem}", file.path));
            }
        }
        if let Some(problem) = unwritable(root, &file.path) {
            report.error(lines.key("path"), format!("cannot write {}: {problem}", file.path));
        }
    }
    for unit in &plan.units {
        check_unit(unit, root, machine, &mut report)?;
    }
    if report.entries.is_empty() {
        return Ok(());
    }
    report.entries.sort_by_key(|e| e.line);
    Err(ApplyError::Preflight(report))
}

fn check_unit(unit: &UnitStep, root: &Path, machine: &mut dyn Machine, report: &mut Report) -> Result<(), ApplyError> {
    let Some(lines) = &unit.origin else { return Ok(()) };
    let files = unit.content.iter().map(|_| (unit.path(), "content"));
    for (path, key) in files.chain(unit.drop_ins.iter().map(|(name, _)| (unit.drop_in_path(name), "drop_ins"))) {
        if let Some(problem) = unwritable(root, &path) {
            report.error(lines.key(key), format!("cannot write {path}: {problem}"));
        }
    }
    let command =
        unit.command.as_deref().filter(|c| machine.runs_unit_commands() && !unit.is_network() && !only_if_running(c));
    if (unit.enable || command.is_some()) && unit.content.is_none() && !machine.unit_exists(root, &unit.name)? {
        if unit.enable {
            report.error(lines.key("enable"), format!("cannot enable {}: no such unit", unit.name));
        }
        if let Some(command) = command {
            report.error(lines.key("command"), format!("cannot {command} {}: no such unit", unit.name));
        }
    }
    Ok(())
}

/// Why `path` (absolute on the target) cannot be written, if it cannot: it
/// is a directory, or its nearest existing ancestor is not a directory or
/// not writable (a read-only filesystem, say).
fn unwritable(root: &Path, path: &str) -> Option<String> {
    let full = target(root, path);
    if full.is_dir() {
        return Some("it is a directory".to_owned());
    }
    let shown = |dir: &Path| format!("/{}", dir.strip_prefix(root).unwrap_or(dir).display());
    let mut dir = full.parent();
    while let Some(d) = dir {
        match fs::metadata(d) {
            Ok(meta) if meta.is_dir() => {
                return rustix::fs::access(d, rustix::fs::Access::WRITE_OK)
                    .err()
                    .map(|e| format!("{} is not writable: {e}", shown(d)));
            }
            Ok(_) => return Some(format!("{} is not a directory", shown(d))),
            Err(_) => dir = d.parent(),
        }
    }
    None
}

/// The users and groups on the target, with those the plan creates added
/// as it goes.
struct Accounts {
    users: BTreeSet<String>,
    groups: BTreeSet<String>,
}

impl Accounts {
    /// Names and ids from the target's `/etc/passwd` and `/etc/group`.
    fn read(root: &Path) -> Result<Accounts, ApplyError> {
        let names_and_ids = |file: &str| -> Result<BTreeSet<String>, ApplyError> {
            let path = target(root, file);
            let text = match fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(source) => return Err(ApplyError::File { action: "cannot read", path, source }),
            };
            let fields = text.lines().map(|l| l.split(':').collect::<Vec<_>>());
            Ok(fields.flat_map(|f| [f.first().copied(), f.get(2).copied()]).flatten().map(str::to_owned).collect())
        };
        Ok(Accounts { users: names_and_ids("/etc/passwd")?, groups: names_and_ids("/etc/group")? })
    }

    fn has_user(&self, user: &str) -> bool {
        self.users.contains(user)
    }

    fn has_group(&self, group: &str) -> bool {
        self.groups.contains(group)
    }

    /// What is unknown in `user[:group]` (or `user.group`), if anything;
    /// numeric ids need no entry, as for `chown`.
    fn unknown_owner(&self, owner: &str) -> Option<String> {
        let (user, group) = owner.split_once([':', '.']).unwrap_or((owner, ""));
        let numeric = |id: &str| id.parse::<u32>().is_ok();
        if !self.has_user(user) && !numeric(user) {
            return Some(format!("no such user {user:?}"));
        }
        (!group.is_empty() && !self.has_group(group) && !numeric(group)).then(|| format!("no such group {group:?}"))
    }
}
