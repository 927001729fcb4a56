//! Config drives as clouds make them (`xorriso -as mkisofs -V config-2`,
//! `mkfs.vfat -n config-2`), attached to this host as read-only loop
//! devices: the label is read from the real filesystems and the device is
//! found among the kernel's block devices.
//!
//! Mounting needs the kernel's iso9660 or vfat driver. Where the kernel has
//! it (Ferrite's own), the drive's user data and metadata are read and
//! nothing stays mounted; this build host's kernel has neither (its
//! /proc/filesystems lists no iso9660 or vfat), and there the test checks
//! that the failure names the device and the mount, and that the private
//! mount point is gone.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use ferrite_cloudinit::configdrive::{self, BlockDevices, FsType};
use ferrite_cloudinit::datasource::{Datasource, DatasourceError, Http};

const USER_DATA: &str = "#cloud-config\nhostname: from-config-drive\n";
const META_DATA: &str = r#"{"hostname":"meta","public_keys":{"k":"ssh-ed25519 AAAAdrive drive@example"}}"#;

fn run(command: &mut Command) -> Result<String> {
    let output = command.output().with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!("{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The drive's files, as OpenStack lays them out.
fn content(dir: &Path) -> Result<PathBuf> {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("openstack/latest"))?;
    std::fs::write(tree.join("openstack/latest/user_data"), USER_DATA)?;
    std::fs::write(tree.join("openstack/latest/meta_data.json"), META_DATA)?;
    Ok(tree)
}

fn iso(dir: &Path) -> Result<PathBuf> {
    let tree = content(dir)?;
    let image = dir.join("config-2.iso");
    run(Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "config-2", "-J", "-r", "-o"])
        .arg(&image)
        .arg(&tree))?;
    Ok(image)
}

fn vfat(dir: &Path) -> Result<PathBuf> {
    let tree = content(dir)?;
    let image = dir.join("config-2.img");
    run(Command::new("truncate").args(["-s", "4M"]).arg(&image))?;
    run(Command::new("mkfs.vfat").args(["-n", "config-2"]).arg(&image))?;
    run(Command::new("mcopy").args(["-s", "-i"]).arg(&image).arg(tree.join("openstack")).arg("::/"))?;
    Ok(image)
}

/// A read-only loop device, detached on drop.
struct Loop(PathBuf);

impl Loop {
    fn attach(image: &Path) -> Result<Loop> {
        Ok(Loop(PathBuf::from(run(Command::new("losetup").args(["--find", "--show", "--read-only"]).arg(image))?)))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("--detach").arg(&self.0).status();
    }
}

fn kernel_mounts(fs_type: FsType) -> bool {
    std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| t.split_whitespace().any(|f| f == fs_type.name()))
}

fn mounted_under_temp() -> Result<Vec<String>> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mounts.lines().filter(|l| l.contains("ferrite-configdrive.")).map(str::to_owned).collect())
}

fn leftover_mount_points(temp: &Path) -> Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(temp)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("ferrite-configdrive.")))
        .collect())
}

async fn found_and_read(image: &Path, fs_type: FsType) -> Result<()> {
    let head = std::fs::read(image)?;
    assert_eq!(configdrive::probe(&head), Some((fs_type, "config-2".to_owned())), "{}", image.display());

    let device = Loop::attach(image)?;
    let devices = BlockDevices { by_label: "/nonexistent/by-label".into(), ..BlockDevices::default() };
    let found = devices.find(configdrive::LABEL)?.context("no device labelled config-2 found")?;
    assert_eq!((found.path.as_path(), found.fs_type), (device.0.as_path(), fs_type));

    let temp = std::env::temp_dir();
    let before = leftover_mount_points(&temp)?;
    let source = Datasource::ConfigDriveLabel { label: configdrive::LABEL.to_owned(), devices };
    let fetched = source.fetch(&Http::default()).await;
    if kernel_mounts(fs_type) {
        let fetched = fetched?;
        assert_eq!(fetched.user_data.as_deref(), Some(USER_DATA.as_bytes()));
        assert_eq!(fetched.metadata.hostname.as_deref(), Some("meta"));
        assert_eq!(fetched.metadata.ssh_public_keys, ["ssh-ed25519 AAAAdrive drive@example"]);
    } else {
        let Err(DatasourceError::Invalid { reason, .. }) = fetched else {
            bail!("mounting {} should fail on a kernel without {}: {fetched:?}", device.0.display(), fs_type.name())
        };
        let mount = format!("mount -t {} -o ro,nodev,nosuid,noexec {}", fs_type.name(), device.0.display());
        assert!(reason.contains(&mount) && reason.contains("unknown filesystem type"), "{reason}");
    }
    assert_eq!(mounted_under_temp()?, Vec::<String>::new(), "nothing stays mounted");
    assert_eq!(leftover_mount_points(&temp)?, before, "the private mount point is removed");
    Ok(())
}

#[tokio::test]
async fn an_iso9660_config_drive_is_found_by_its_label() -> Result<()> {
    let dir = tempfile::tempdir()?;
    found_and_read(&iso(dir.path())?, FsType::Iso9660).await
}

#[tokio::test]
async fn a_vfat_config_drive_is_found_by_its_label() -> Result<()> {
    let dir = tempfile::tempdir()?;
    found_and_read(&vfat(dir.path())?, FsType::Vfat).await
}

#[tokio::test]
async fn a_device_given_by_path_that_is_no_config_drive_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let image = dir.path().join("blank.img");
    std::fs::write(&image, vec![0u8; 1 << 20])?;
    let device = Loop::attach(&image)?;
    let fetched = Datasource::ConfigDrive(device.0.clone()).fetch(&Http::default()).await;
    let Err(DatasourceError::Invalid { reason, .. }) = fetched else {
        bail!("a blank device was accepted: {fetched:?}")
    };
    assert!(reason.contains("no ISO 9660 or vfat filesystem"), "{reason}");
    Ok(())
}
