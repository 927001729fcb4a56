//! The boot entry and kernel command line of a /usr slot.

/// What a slot's boot entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot<'a> {
    /// The OS version, e.g. `0.1.0`.
    pub version: &'a str,
    /// `A` or `B`.
    pub name: &'a str,
    /// The dm-verity root hash of the slot's /usr, in hex.
    pub usr_hash: &'a str,
    /// PARTUUID of ROOT.
    pub root_partuuid: &'a str,
    /// Directory on the ESP holding this slot's kernel and initrd.
    pub esp_dir: &'a str,
    /// Tries left for boot counting (`+N` in the file name), if counted.
    pub tries: Option<u32>,
}

/// The kernel command line: /usr through dm-verity from the partitions
/// the hash names, read-only; ROOT by PARTUUID, grown on first boot; the
/// serial console first so a VM's log captures boot.
pub fn kernel_command_line(slot: &Slot<'_>) -> String {
    command_line(slot.usr_hash, &[format!("root=PARTUUID={}", slot.root_partuuid), "rootfstype=ext4".into()])
}

/// The PXE set's kernel command line: /usr as on the disk (the initramfs
/// carries USR-A and its hash tree as a GPT image with the same partition
/// UUIDs, so `usrhash=` finds them), and a tmpfs root, since a machine
/// booted from the network has no ROOT partition. Nor has it an OEM
/// partition: its mount is masked, since a condition on a mount unit does
/// not stop systemd from waiting for the device.
pub fn pxe_command_line(usr_hash: &str) -> String {
    command_line(usr_hash, &["root=tmpfs".into(), "systemd.mask=usr-share-oem.mount".into()])
}

fn command_line(usr_hash: &str, root: &[String]) -> String {
    let mut args = vec![
        format!("usrhash={usr_hash}"),
        "mount.usr=/dev/mapper/usr".to_string(),
        "mount.usrfstype=squashfs".to_string(),
        "mount.usrflags=ro".to_string(),
    ];
    args.extend_from_slice(root);
    // No AppArmor: the image ships neither profiles nor a parser, and
    // Docker refuses to run containers when the kernel offers AppArmor
    // without them.
    args.extend(
        ["rootflags=rw", "rw", "apparmor=0", "console=tty0", "console=ttyS0,115200n8", "systemd.show_status=1"]
            .map(String::from),
    );
    args.join(" ")
}

/// The entry's file name under `loader/entries/`: systemd-boot boots the
/// highest version first and counts `+N` down on every try.
pub fn file_name(slot: &Slot<'_>) -> String {
    let short = &slot.usr_hash[..slot.usr_hash.len().min(12)];
    match slot.tries {
        Some(n) => format!("ferrite-{}-{short}+{n}.conf", slot.version),
        None => format!("ferrite-{}-{short}.conf", slot.version),
    }
}

/// The entry file (Boot Loader Specification type 1).
pub fn entry_file(slot: &Slot<'_>) -> String {
    format!(
        "title Ferrite {version} (USR-{name})\nversion {version}\nlinux /{dir}/vmlinuz\ninitrd /{dir}/initrd\noptions {options}\n",
        version = slot.version,
        name = slot.name,
        dir = slot.esp_dir,
        options = kernel_command_line(slot),
    )
}

/// systemd-boot's own settings: no menu unless a key is held, the newest
/// entry first.
pub fn loader_conf() -> &'static str {
    "timeout 0\ndefault ferrite-*\neditor no\nconsole-mode keep\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Slot<'static> {
        Slot {
            version: "0.1.0",
            name: "A",
            usr_hash: "aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899",
            root_partuuid: "01234567-89ab-4def-8123-456789abcdef",
            esp_dir: "ferrite/aabbccddeeff",
            tries: Some(3),
        }
    }

    #[test]
    fn counted_entries_carry_the_tries_in_their_name() {
        assert_eq!(file_name(&slot()), "ferrite-0.1.0-aabbccddeeff+3.conf");
        assert_eq!(file_name(&Slot { tries: None, ..slot() }), "ferrite-0.1.0-aabbccddeeff.conf");
    }

    #[test]
    fn the_command_line_verifies_usr_and_names_root() {
        let line = kernel_command_line(&slot());
        assert!(line.contains("usrhash=aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899"));
        assert!(line.contains("mount.usrflags=ro"));
        assert!(line.contains("root=PARTUUID=01234567-89ab-4def-8123-456789abcdef"));
        assert!(line.contains(" apparmor=0 "), "Docker runs no container while AppArmor is on without a parser");
        assert!(!line.contains("  "));
    }

    #[test]
    fn the_pxe_command_line_verifies_usr_and_roots_in_tmpfs() {
        let line = pxe_command_line(slot().usr_hash);
        assert!(line.starts_with(&format!("usrhash={} mount.usr=/dev/mapper/usr ", slot().usr_hash)));
        assert!(line.contains(" root=tmpfs "));
        assert!(!line.contains("PARTUUID"));
        let disk = kernel_command_line(&slot());
        assert!(line.contains(" systemd.mask=usr-share-oem.mount "));
        let disk_root = format!("root=PARTUUID={} rootfstype=ext4", slot().root_partuuid);
        assert_eq!(line.replace("root=tmpfs systemd.mask=usr-share-oem.mount", ""), disk.replace(&disk_root, ""));
    }

    #[test]
    fn the_entry_points_at_the_slot_kernel() {
        let e = entry_file(&slot());
        assert!(e.contains("linux /ferrite/aabbccddeeff/vmlinuz\n"));
        assert!(e.contains("initrd /ferrite/aabbccddeeff/initrd\n"));
        assert!(e.starts_with("title Ferrite 0.1.0 (USR-A)\n"));
    }
}
