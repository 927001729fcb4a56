//! Config drives: the block device labelled `config-2` (ISO 9660 or vfat),
//! found by its label, mounted read-only on a private temporary directory
//! for as long as it is read, and unmounted afterwards, also when reading
//! fails.
//!
//! A device is found through udev's `/dev/disk/by-label` when udev has made
//! it, and otherwise by reading the label from the superblock of every block
//! device the kernel lists in `/sys/class/block` (the boot unit runs before
//! udev has settled). [`probe`] is pure: it reads the label from a device's
//! first bytes.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::command::{run, CommandError};

/// The label OpenStack (and every cloud copying it) gives config drives.
pub const LABEL: &str = "config-2";

/// The link udev makes to the device labelled [`LABEL`]; naming it means
/// "the config drive, found by its label" (see [`BlockDevices::find`]).
pub const BY_LABEL: &str = "/dev/disk/by-label/config-2";

/// A config drive's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    /// ISO 9660 (`genisoimage -V config-2`), the usual form.
    Iso9660,
    /// FAT (`mkfs.vfat -n config-2`).
    Vfat,
}

impl FsType {
    /// The name `mount -t` takes.
    pub fn name(self) -> &'static str {
        match self {
            FsType::Iso9660 => "iso9660",
            FsType::Vfat => "vfat",
        }
    }
}

/// How many bytes [`probe`] needs: ISO 9660's primary volume descriptor
/// starts at 32 KiB and is 2 KiB long.
pub const PROBE_BYTES: usize = ISO_PVD + 2048;
const ISO_PVD: usize = 0x8000;

/// The filesystem and volume label in a device's first [`PROBE_BYTES`]:
/// ISO 9660's primary volume descriptor, or a FAT boot sector's label
/// (FAT12/16 or FAT32 layout). `None` for anything else or no label.
pub fn probe(head: &[u8]) -> Option<(FsType, String)> {
    if let Some(pvd) = head.get(ISO_PVD..ISO_PVD + 72) {
        if pvd[0] == 1 && &pvd[1..6] == b"CD001" {
            return label(&pvd[40..72]).map(|l| (FsType::Iso9660, l));
        }
    }
    let boot = head.get(..512)?;
    if boot[510..512] != [0x55, 0xAA] {
        return None;
    }
    // FAT32 has no 16-bit FAT size; its extended boot record sits further in.
    let (signature, label_at, kind_at) = if boot[22..24] == [0, 0] { (66, 71, 82) } else { (38, 43, 54) };
    if boot[signature] != 0x29 || !boot[kind_at..kind_at + 3].eq(b"FAT") {
        return None;
    }
    label(&boot[label_at..label_at + 11]).filter(|l| l != "NO NAME").map(|l| (FsType::Vfat, l))
}

fn label(field: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(field).trim_end_matches([' ', '\0']).to_owned();
    (!text.is_empty()).then_some(text)
}

/// A device that can hold a config drive, and what [`probe`] found on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The device node.
    pub path: PathBuf,
    /// Its filesystem.
    pub fs_type: FsType,
}

/// Where the system lists block devices; fields so tests can point elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevices {
    /// udev's links by label (`/dev/disk/by-label`).
    pub by_label: PathBuf,
    /// The kernel's list of block devices (`/sys/class/block`).
    pub sys_class_block: PathBuf,
    /// Where their nodes are (`/dev`).
    pub dev: PathBuf,
}

impl Default for BlockDevices {
    fn default() -> Self {
        BlockDevices {
            by_label: PathBuf::from("/dev/disk/by-label"),
            sys_class_block: PathBuf::from("/sys/class/block"),
            dev: PathBuf::from("/dev"),
        }
    }
}

/// Why a config drive could not be found, mounted or unmounted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    /// A device or directory could not be read, made or removed.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The device holds no filesystem a config drive uses.
    #[error("{device}: no ISO 9660 or vfat filesystem")]
    NotAConfigDrive {
        /// The device.
        device: PathBuf,
    },
    /// `mount` or `umount` failed.
    #[error(transparent)]
    Mount(#[from] CommandError),
}

fn read_head(path: &Path) -> Result<Vec<u8>, std::io::Error> {
    let mut head = Vec::with_capacity(PROBE_BYTES);
    fs::File::open(path)?.take(PROBE_BYTES as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// What `device` holds, when it is a config drive's filesystem.
pub fn device(path: &Path) -> Result<Device, ConfigDriveError> {
    let head = read_head(path).map_err(|source| ConfigDriveError::Io {
        action: "cannot read",
        path: path.to_owned(),
        source,
    })?;
    let (fs_type, _) = probe(&head).ok_or_else(|| ConfigDriveError::NotAConfigDrive { device: path.to_owned() })?;
    Ok(Device { path: path.to_owned(), fs_type })
}

impl BlockDevices {
    /// The device whose filesystem is labelled `label` (compared ignoring
    /// case: ISO 9660 tools may upper-case it), if any.
    pub fn find(&self, label: &str) -> Result<Option<Device>, ConfigDriveError> {
        for name in [label.to_owned(), label.to_uppercase()] {
            let link = self.by_label.join(&name);
            if link.exists() {
                return device(&link).map(Some);
            }
        }
        let entries = match fs::read_dir(&self.sys_class_block) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ConfigDriveError::Io { action: "cannot list", path: self.sys_class_block.clone(), source })
            }
        };
        let mut names: Vec<String> =
            entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        for name in names {
            // Unattached loop devices and empty drives have no sectors.
            let sectors = fs::read_to_string(self.sys_class_block.join(&name).join("size")).unwrap_or_default();
            if sectors.trim().parse::<u64>().unwrap_or(0) == 0 {
                continue;
            }
            let path = self.dev.join(&name);
            let head = match read_head(&path) {
                Ok(head) => head,
                Err(e) => {
                    tracing::debug!("cannot probe {}: {e}", path.display());
                    continue;
                }
            };
            if let Some((fs_type, found)) = probe(&head) {
                if found.eq_ignore_ascii_case(label) {
                    return Ok(Some(Device { path, fs_type }));
                }
            }
        }
        Ok(None)
    }
}

/// A device mounted read-only on a private temporary directory; unmounted
/// (and the directory removed) when dropped.
#[derive(Debug)]
pub struct Mounted {
    /// `None` once unmounted.
    dir: Option<tempfile::TempDir>,
}

impl Mounted {
    /// Mounts `device` read-only (and without devices, set-id or execution)
    /// on a new directory under the temporary directory.
    pub fn mount(device: &Device) -> Result<Mounted, ConfigDriveError> {
        let temp = std::env::temp_dir();
        let dir = tempfile::Builder::new()
            .prefix("ferrite-configdrive.")
            .tempdir_in(&temp)
            .map_err(|source| ConfigDriveError::Io { action: "cannot create a directory in", path: temp, source })?;
        let target = dir.path().to_string_lossy().into_owned();
        let source = device.path.to_string_lossy();
        run("mount", &["-t", device.fs_type.name(), "-o", "ro,nodev,nosuid,noexec", &source, &target])?;
        Ok(Mounted { dir: Some(dir) })
    }

    /// Where the filesystem is.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("mounted until unmount or drop").path()
    }

    /// Unmounts and removes the directory.
    pub fn unmount(mut self) -> Result<(), ConfigDriveError> {
        self.release()
    }

    fn release(&mut self) -> Result<(), ConfigDriveError> {
        let Some(dir) = self.dir.take() else { return Ok(()) };
        match run("umount", &[dir.path().to_string_lossy()]) {
            Ok(()) => {
                let path = dir.path().to_owned();
                dir.close().map_err(|source| ConfigDriveError::Io { action: "cannot remove", path, source })
            }
            Err(e) => {
                // Still mounted: leave the directory rather than remove
                // anything on the drive.
                let _ = dir.keep();
                Err(e.into())
            }
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::error!("cannot release the config drive's mount: {}", ferrite_daemon::error_chain(&e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(volume_id: &str) -> Vec<u8> {
        let mut head = vec![0; PROBE_BYTES];
        head[ISO_PVD] = 1;
        head[ISO_PVD + 1..ISO_PVD + 6].copy_from_slice(b"CD001");
        let field = format!("{volume_id:<32}");
        head[ISO_PVD + 40..ISO_PVD + 72].copy_from_slice(field.as_bytes());
        head
    }

    fn fat(fat32: bool, label: &str) -> Vec<u8> {
        let mut head = vec![0; PROBE_BYTES];
        head[510..512].copy_from_slice(&[0x55, 0xAA]);
        let (signature, label_at, kind_at, kind) =
            if fat32 { (66, 71, 82, "FAT32   ") } else { (38, 43, 54, "FAT16   ") };
        if !fat32 {
            head[22] = 8;
        }
        head[signature] = 0x29;
        head[label_at..label_at + 11].copy_from_slice(format!("{label:<11}").as_bytes());
        head[kind_at..kind_at + 8].copy_from_slice(kind.as_bytes());
        head
    }

    #[test]
    fn iso9660_and_fat_labels_are_read() {
        assert_eq!(probe(&iso("config-2")), Some((FsType::Iso9660, "config-2".to_owned())));
        assert_eq!(probe(&fat(false, "config-2")), Some((FsType::Vfat, "config-2".to_owned())));
        assert_eq!(probe(&fat(true, "CONFIG-2")), Some((FsType::Vfat, "CONFIG-2".to_owned())));
    }

    #[test]
    fn other_content_and_missing_labels_are_not_config_drives() {
        assert_eq!(probe(&vec![0; PROBE_BYTES]), None);
        assert_eq!(probe(&iso("")), None);
        assert_eq!(probe(&fat(false, "NO NAME")), None);
        assert_eq!(probe(&[0x55; 100]), None, "short input");
        let mut not_fat = fat(false, "config-2");
        not_fat[54..57].copy_from_slice(b"NTF");
        assert_eq!(probe(&not_fat), None);
    }
}
