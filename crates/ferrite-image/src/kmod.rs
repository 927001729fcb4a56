//! The image's one kernel, as its module indexes describe it: which
//! `modprobe@NAME.service` instances would have nothing to load.
//!
//! systemd's units pull `modprobe@configfs.service`, `modprobe@fuse.service`
//! and others in, so that a module is there before the unit that needs it
//! starts. Each is one more process PID 1 forks early in every boot, ahead
//! of the units on the critical chain. For a module the kernel has built in,
//! or does not ship at all, modprobe does nothing; knowing the one kernel
//! the image carries, the build masks those instances instead.

use std::collections::BTreeSet;

/// A module's name as modprobe compares it: `-` and `_` are the same.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module a path of `modules.builtin` or `modules.dep` names:
/// `kernel/drivers/md/dm-mod.ko` (or `.ko.xz`, `.ko.zst`) is `dm_mod`.
fn module_of(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let (stem, _) = file.split_once(".ko")?;
    Some(normalize(stem))
}

/// The `modprobe@NAME.service` instances that unit files' texts name, as
/// instance names (`configfs`, `dm_mod`).
pub fn modprobe_instances<'a>(unit_texts: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    const PREFIX: &str = "modprobe@";
    const SUFFIX: &str = ".service";
    let mut found = BTreeSet::new();
    for text in unit_texts {
        let mut rest = text;
        while let Some(at) = rest.find(PREFIX) {
            rest = &rest[at + PREFIX.len()..];
            let name: String =
                rest.chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')).collect();
            if !name.is_empty() && rest[name.len()..].starts_with(SUFFIX) {
                found.insert(name);
            }
        }
    }
    found
}

/// Of `instances`, those modprobe would load nothing for: the module is
/// built into the kernel (`modules.builtin`), or neither a module file
/// (`modules.dep`) nor an alias (`modules.alias`) provides it.
pub fn idle_instances(instances: &BTreeSet<String>, builtin: &str, dep: &str, alias: &str) -> Vec<String> {
    let built_in: BTreeSet<String> = builtin.lines().filter_map(module_of).collect();
    let shipped: BTreeSet<String> =
        dep.lines().filter_map(|l| l.split_once(':')).filter_map(|(path, _)| module_of(path)).collect();
    let aliases: BTreeSet<String> = alias
        .lines()
        .filter_map(|l| l.strip_prefix("alias "))
        .filter_map(|l| l.split_whitespace().next())
        .map(normalize)
        .collect();
    instances
        .iter()
        .filter(|name| {
            let module = normalize(name);
            built_in.contains(&module) || !(shipped.contains(&module) || aliases.contains(&module))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILTIN: &str = "kernel/fs/configfs/configfs.ko\nkernel/fs/fuse/fuse.ko\nkernel/net/unix/unix.ko\n";
    const DEP: &str = "kernel/drivers/md/dm-mod.ko:\nkernel/drivers/block/loop.ko.zst:\n\
                       kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-mod.ko\n";
    const ALIAS: &str = "# Aliases extracted from modules themselves.\nalias devname:loop-control loop\n\
                         alias fs-squashfs squashfs\nalias char-major-10-237 loop\n";

    #[test]
    fn instances_are_read_from_unit_texts() {
        let units = [
            "[Unit]\nWants=modprobe@configfs.service\nAfter=modprobe@configfs.service\n",
            "Wants=modprobe@dm_mod.service modprobe@loop.service\n",
            "# modprobe@.service is the template; modprobe@%i.service too\nExecStart=modprobe@x\n",
        ];
        let found: Vec<String> = modprobe_instances(units).into_iter().collect();
        assert_eq!(found, ["configfs", "dm_mod", "loop"]);
    }

    #[test]
    fn built_in_and_absent_modules_are_idle_shipped_ones_are_not() {
        let instances: BTreeSet<String> =
            ["configfs", "fuse", "drm", "efi_pstore", "dm_mod", "loop", "fs-squashfs"].map(String::from).into();
        let idle = idle_instances(&instances, BUILTIN, DEP, ALIAS);
        // configfs and fuse are built in; drm and efi_pstore are not shipped.
        // dm_mod matches dm-mod.ko, loop its compressed file, fs-squashfs
        // an alias: modprobe has something to load for each.
        assert_eq!(idle, ["configfs", "drm", "efi_pstore", "fuse"]);
    }

    #[test]
    fn dashes_and_underscores_name_the_same_module() {
        let instances: BTreeSet<String> = ["dm-mod", "dm_verity"].map(String::from).into();
        assert!(idle_instances(&instances, "", DEP, "").is_empty());
        assert_eq!(idle_instances(&instances, "kernel/drivers/md/dm_mod.ko\n", DEP, ""), ["dm-mod"]);
    }
}
