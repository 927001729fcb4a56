//! The build pipeline: tree, stage, /usr + verity, ESP, OEM, ROOT, GPT,
//! outputs, manifest. Each step is logged with its number so a long build
//! shows where it is.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::derive::{self, hex, sha256, unhex};
use crate::entry::{self, Slot};
use crate::gpt::{Entry, Guid, Table, SECTOR};
use crate::kmod;
use crate::layout::{Layout, Role, Sizes};
use crate::manifest::{self, Manifest};
use crate::tools::{io, output, visible};
use crate::{tree, Error, Result};

/// What to build and where.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The workspace root, holding `image/` and `os-config/`.
    pub workspace: PathBuf,
    /// Where the cache, the work files and the outputs go.
    pub out_dir: PathBuf,
    /// Binaries to install into /usr/bin (built already).
    pub binaries: Vec<PathBuf>,
    /// The OS version written into os-release and the boot entry.
    pub version: String,
    /// Every timestamp in the image.
    pub source_date_epoch: u64,
    pub sizes: Sizes,
    /// Also write a VMDK.
    pub vmdk: bool,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub raw: PathBuf,
    pub qcow2: PathBuf,
    pub vmdk: Option<PathBuf>,
    pub manifest: PathBuf,
    /// PXE set: the kernel, and an initramfs carrying /usr.
    pub pxe_kernel: PathBuf,
    pub pxe_initrd: PathBuf,
    /// The kernel command line the PXE set boots with.
    pub pxe_command_line: String,
    pub usr_hash: String,
}

const STEPS: usize = 9;

fn step(n: usize, what: &str) -> Instant {
    tracing::info!("[{n}/{STEPS}] {what}");
    Instant::now()
}

fn done(started: Instant, what: &str) {
    tracing::info!(seconds = format!("{:.1}", started.elapsed().as_secs_f64()), "{what} done");
}

/// Builds the image. Runs as root (mkosi and `chown`-preserving copies).
pub fn build(opts: &BuildOptions) -> Result<Outputs> {
    let epoch = opts.source_date_epoch;
    let cache = opts.out_dir.join("cache");
    let work = opts.out_dir.join("work");
    let images = opts.out_dir.join("images");
    for d in [&cache, &work, &images] {
        fs::create_dir_all(d).map_err(io("prepare", d))?;
    }

    let t = step(1, "OS tree");
    let (tree, tree_key) = tree::ensure(&opts.workspace.join("image"), &cache, epoch)?;
    done(t, "OS tree");

    let t = step(2, "stage: tree + Ferrite binaries + os-config");
    let stage = work.join("stage");
    stage_tree(opts, &tree, &stage)?;
    let (kver, kernel, initrd) = find_kernel(&stage)?;
    mask_units(&stage, &kver)?;
    done(t, "stage");

    let t = step(3, "USR-A: squashfs of /usr");
    let usr = work.join("usr.squashfs");
    remove(&usr, "squashfs")?;
    visible(
        "squashfs of /usr",
        Command::new("mksquashfs")
            .arg(stage.join("usr"))
            .arg(&usr)
            .args(["-noappend", "-comp", "lz4", "-all-root", "-no-xattrs", "-no-progress", "-quiet"])
            .args(["-mkfs-time", &epoch.to_string(), "-all-time", &epoch.to_string()]),
    )?;
    pad_to(&usr, 4096, "squashfs of /usr")?;
    let usr_size = file_size(&usr, "squashfs of /usr")?;
    if usr_size > opts.sizes.usr {
        return Err(Error::TooBig {
            step: "squashfs of /usr",
            what: "/usr".into(),
            size: usr_size,
            limit: opts.sizes.usr,
        });
    }
    done(t, "squashfs");

    let t = step(4, "USR-A-VERITY: dm-verity hash tree");
    let usr_digest = file_sha256(&usr, "dm-verity")?;
    let verity = work.join("usr.verity");
    remove(&verity, "dm-verity")?;
    let salt = hex(&usr_digest);
    let verity_uuid = derive::uuid(&usr_digest, "verity-superblock").to_string();
    let out = output(
        "dm-verity",
        Command::new("veritysetup")
            .arg("format")
            .arg(&usr)
            .arg(&verity)
            .args(["--data-block-size=4096", "--hash-block-size=4096"])
            .arg(format!("--salt={salt}"))
            .arg(format!("--uuid={verity_uuid}")),
    )?;
    let usr_hash =
        out.lines().find_map(|l| l.strip_prefix("Root hash:").map(|h| h.trim().to_string())).ok_or_else(|| {
            Error::Output {
                step: "dm-verity",
                program: "veritysetup".into(),
                detail: format!("no `Root hash:` line in {out:?}"),
            }
        })?;
    let root_hash: [u8; 32] = unhex(&usr_hash).and_then(|v| v.try_into().ok()).ok_or_else(|| Error::Output {
        step: "dm-verity",
        program: "veritysetup".into(),
        detail: format!("root hash {usr_hash:?} is not 32 bytes of hex"),
    })?;
    let verity_size = file_size(&verity, "dm-verity")?;
    if verity_size > opts.sizes.usr_verity {
        return Err(Error::TooBig {
            step: "dm-verity",
            what: "the hash tree".into(),
            size: verity_size,
            limit: opts.sizes.usr_verity,
        });
    }
    done(t, "verity");

    // Identities: the slot's from its hash, the rest derived from it.
    let (usr_a_uuid, usr_a_verity_uuid) = derive::verity_partition_uuids(&root_hash);
    let uuid_of = |role: Role| match role {
        Role::UsrA => usr_a_uuid,
        Role::UsrAVerity => usr_a_verity_uuid,
        other => derive::uuid(&root_hash, other.label()),
    };
    let root_partuuid = uuid_of(Role::Root).to_string();

    let t = step(5, "EFI-SYSTEM: systemd-boot, kernel, initrd, slot A's counted entry");
    let esp_dir = format!("ferrite/{}", &usr_hash[..12]);
    let slot = Slot {
        version: &opts.version,
        name: "A",
        usr_hash: &usr_hash,
        root_partuuid: &root_partuuid,
        esp_dir: &esp_dir,
        tries: Some(3),
    };
    let esp = work.join("esp.img");
    let boot_efi = stage.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi");
    let files: Vec<(String, Source)> = vec![
        ("EFI/BOOT/BOOTX64.EFI".into(), Source::File(boot_efi.clone())),
        ("EFI/systemd/systemd-bootx64.efi".into(), Source::File(boot_efi)),
        ("loader/loader.conf".into(), Source::Text(entry::loader_conf().into())),
        (format!("loader/entries/{}", entry::file_name(&slot)), Source::Text(entry::entry_file(&slot))),
        (format!("{esp_dir}/vmlinuz"), Source::File(kernel.clone())),
        (format!("{esp_dir}/initrd"), Source::File(initrd.clone())),
    ];
    make_esp(&esp, &work.join("esp-files"), &files, opts.sizes.esp, &root_hash, epoch)?;
    done(t, "ESP");

    let t = step(6, "OEM and ROOT: ext4 from directories");
    let oem_dir = work.join("oem");
    copy_tree(&opts.workspace.join("os-config/oem"), &oem_dir, "OEM")?;
    normalize_times(&oem_dir, epoch, "OEM")?;
    let oem = work.join("oem.img");
    mkfs_ext4(&oem, &oem_dir, "OEM", opts.sizes.oem, &root_hash, epoch)?;
    let rootfs = work.join("rootfs");
    root_tree(&stage, &rootfs, epoch)?;
    normalize_times(&rootfs, epoch, "ROOT")?;
    let root = work.join("root.img");
    mkfs_ext4(&root, &rootfs, "ROOT", opts.sizes.root, &root_hash, epoch)?;
    done(t, "OEM and ROOT");

    let t = step(7, "disk: GPT and partitions");
    let raw = images.join("ferrite.raw");
    let contents = [
        (Role::Esp, Some(esp.as_path())),
        (Role::UsrA, Some(usr.as_path())),
        (Role::UsrAVerity, Some(verity.as_path())),
        (Role::UsrB, None),
        (Role::UsrBVerity, None),
        (Role::Oem, Some(oem.as_path())),
        (Role::Root, Some(root.as_path())),
    ];
    let disk = Disk { guid: derive::uuid(&root_hash, "disk"), layout: Layout::plan(&opts.sizes), uuid_of: &uuid_of };
    let partitions = disk.assemble(&raw, &contents, "disk")?;
    done(t, "disk");

    let t = step(8, "qcow2 (and vmdk), PXE set");
    let qcow2 = images.join("ferrite.qcow2");
    convert(&raw, &qcow2, "qcow2")?;
    let vmdk = if opts.vmdk {
        let path = images.join("ferrite.vmdk");
        convert(&raw, &path, "vmdk")?;
        Some(path)
    } else {
        None
    };
    let pxe_kernel = images.join("ferrite-pxe.vmlinuz");
    let pxe_initrd = images.join("ferrite-pxe.initrd");
    fs::copy(&kernel, &pxe_kernel).map_err(io("PXE set", &pxe_kernel))?;
    let pxe = Pxe { usr: &usr, verity: &verity, rootfs: &rootfs, root_hash: &root_hash, uuid_of: &uuid_of };
    pxe.initramfs(&initrd, &work, &pxe_initrd, epoch)?;
    let pxe_command_line = entry::pxe_command_line(&usr_hash);
    done(t, "outputs");

    let t = step(9, "manifest");
    let mut artifacts = Vec::new();
    for path in [Some(&raw), Some(&qcow2), vmdk.as_ref(), Some(&pxe_kernel), Some(&pxe_initrd)].into_iter().flatten() {
        artifacts.push(file_record(path, "manifest")?);
    }
    let mut binaries = Vec::new();
    for b in &opts.binaries {
        binaries.push(file_record(b, "manifest")?);
    }
    let status = stage.join("var/lib/dpkg/status");
    let packages = fs::read_to_string(&status).map(|s| manifest::installed_packages(&s)).unwrap_or_default();
    let manifest = Manifest {
        version: opts.version.clone(),
        source_date_epoch: epoch,
        kernel: kver,
        usr_hash: usr_hash.clone(),
        pxe_command_line: pxe_command_line.clone(),
        tree_key,
        packages,
        binaries,
        partitions,
        artifacts,
    };
    let manifest_path = images.join("manifest.json");
    let json = serde_json::to_string_pretty(&manifest).expect("the manifest serializes");
    fs::write(&manifest_path, json + "\n").map_err(io("manifest", &manifest_path))?;
    done(t, "manifest");

    Ok(Outputs { raw, qcow2, vmdk, manifest: manifest_path, pxe_kernel, pxe_initrd, pxe_command_line, usr_hash })
}

/// Copies the cached tree and lays Ferrite on top: binaries, os-config,
/// os-release, users, enabled units, and the first-boot state removed
/// (machine-id, SSH host keys) so every machine makes its own.
fn stage_tree(opts: &BuildOptions, tree: &Path, stage: &Path) -> Result<()> {
    const STEP: &str = "stage";
    if stage.exists() {
        fs::remove_dir_all(stage).map_err(io(STEP, stage))?;
    }
    output(STEP, Command::new("cp").arg("-a").arg("--reflink=auto").arg(tree).arg(stage))?;
    let bin = stage.join("usr/bin");
    for b in &opts.binaries {
        let name = b.file_name().ok_or_else(|| Error::Io {
            step: STEP,
            path: b.clone(),
            source: std::io::Error::other("a binary path without a file name"),
        })?;
        let dest = bin.join(name);
        fs::copy(b, &dest).map_err(io(STEP, b))?;
        set_mode(&dest, 0o755, STEP)?;
        // The release profile keeps line tables for profiling on the build
        // host; in the image they would double /usr. Symbols stay, so a
        // backtrace still names functions.
        output(STEP, Command::new("strip").arg("--strip-debug").arg(&dest))?;
    }
    let os_config_usr = opts.workspace.join("os-config/usr");
    output(
        STEP,
        Command::new("cp")
            .arg("-a")
            .arg("--no-preserve=ownership")
            .arg(format!("{}/.", os_config_usr.display()))
            .arg(stage.join("usr")),
    )?;

    let os_release = format!(
        "NAME=\"Ferrite\"\nID=ferrite\nID_LIKE=debian\nVERSION_ID={v}\nVERSION=\"{v}\"\nPRETTY_NAME=\"Ferrite {v}\"\nIMAGE_ID=ferrite\nIMAGE_VERSION={v}\nHOME_URL=\"https://github.com/ferrite-os\"\n",
        v = opts.version
    );
    write(&stage.join("usr/lib/os-release"), &os_release, STEP)?;
    let etc_os_release = stage.join("etc/os-release");
    let _ = fs::remove_file(&etc_os_release);
    symlink("../usr/lib/os-release", &etc_os_release, STEP)?;

    // Users and groups from sysusers.d (core in docker), into ROOT's /etc.
    output(STEP, Command::new("systemd-sysusers").arg(format!("--root={}", stage.display())))?;
    // Ferrite's preset decides, over what Debian's packages enabled when
    // they were installed (docker.service and containerd.service, say).
    // Units it enables are re-enabled: their links are made from the unit
    // files as the image ships them, so a unit os-config replaces (such as
    // systemd-resolved.service, wanted by another target) keeps no link
    // the package made for its own file.
    let preset = opts.workspace.join("os-config/usr/lib/systemd/system-preset/40-ferrite.preset");
    let text = fs::read_to_string(&preset).map_err(io(STEP, &preset))?;
    for (verb, command) in [("disable", "disable"), ("enable", "reenable")] {
        let units: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix(verb)?.strip_prefix(' '))
            .map(str::trim)
            .filter(|u| !u.contains('*'))
            .collect();
        if !units.is_empty() {
            output(
                STEP,
                Command::new("systemctl").arg(format!("--root={}", stage.display())).arg(command).args(&units),
            )?;
        }
    }

    // Where the OEM partition is mounted (usr-share-oem.mount).
    fs::create_dir_all(stage.join("usr/share/oem")).map_err(io(STEP, stage))?;

    // First-boot identity is made on the machine, not in the image. An
    // empty machine-id, not "uninitialized": PID 1 writes a new ID into it
    // either way, but "uninitialized" also counts as a first boot, on
    // which PID 1 re-applies every preset to /etc before loading a unit
    // (4.8 s under emulation) and systemd-firstboot runs (3.7 s), both
    // redundant here: the presets were applied above, and cloud-config is
    // what provisions a machine. Ferrite's own first-boot work keys on
    // state of its own (the GPT relocation's stamp, ferrite-grow-root).
    write(&stage.join("etc/machine-id"), "", STEP)?;
    let ssh = stage.join("etc/ssh");
    if let Ok(entries) = fs::read_dir(&ssh) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("ssh_host_") {
                fs::remove_file(e.path()).map_err(io(STEP, &e.path()))?;
            }
        }
    }
    for f in ["var/lib/dbus/machine-id", "etc/hostname"] {
        let _ = fs::remove_file(stage.join(f));
    }
    Ok(())
}

/// Units masked in the image's /etc:
/// - systemd-repart.service: sysinit.target wants it through a link in
///   /usr, so sysinit.target would wait for it and for the two modules it
///   loads first. ferrite-grow-root.service runs systemd-repart beside the
///   boot instead.
/// - kmod-static-nodes.service: first on the boot's critical chain, it
///   read the kernel's modules.devname through dm-verity on every boot to
///   write the list of static device nodes to /run. The image has one
///   kernel, so mkosi.postinst writes that list into /usr once
///   (`tmpfiles.d/ferrite-static-nodes.conf`), and systemd-tmpfiles makes
///   the nodes from it as before. The initramfs carries the same list and
///   masks the service too (dracut module `ferrite-devices`).
/// - dracut-shutdown.service: dracut links it into sysinit.target from
///   /usr, so the preset cannot turn it off. At shutdown it unpacks the
///   initramfs into /run for systemd to return to; Ferrite's shutdown
///   needs no initramfs (systemd remounts ROOT read-only, its journal
///   flushed, and powers off with /usr, read-only and verified, still in
///   use), and at boot it cost one more process at the busiest moment.
const MASKED: [&str; 3] = ["systemd-repart.service", "kmod-static-nodes.service", "dracut-shutdown.service"];

/// ROOT as built: everything of the stage except /usr (machine state and
/// administrator config), the usr-merge symlinks and mount points; no
/// fstab until an administrator writes one.
fn root_tree(stage: &Path, rootfs: &Path, epoch: u64) -> Result<()> {
    const STEP: &str = "ROOT";
    if rootfs.exists() {
        fs::remove_dir_all(rootfs).map_err(io(STEP, rootfs))?;
    }
    fs::create_dir_all(rootfs).map_err(io(STEP, rootfs))?;
    let mut names: Vec<_> = fs::read_dir(stage).map_err(io(STEP, stage))?.flatten().map(|e| e.file_name()).collect();
    names.sort();
    for name in names {
        let src = stage.join(&name);
        if name == "usr" {
            fs::create_dir(rootfs.join("usr")).map_err(io(STEP, rootfs))?;
            continue;
        }
        output(STEP, Command::new("cp").arg("-a").arg("--reflink=auto").arg(&src).arg(rootfs))?;
    }
    fs::create_dir_all(rootfs.join("efi")).map_err(io(STEP, rootfs))?;
    // No package manager runs on the machine: its downloads and lists, and
    // the kernel symlinks Debian leaves in /, are not machine state.
    for dir in ["var/cache/apt", "var/lib/apt/lists"] {
        let path = rootfs.join(dir);
        if path.exists() {
            fs::remove_dir_all(&path).map_err(io(STEP, &path))?;
            fs::create_dir_all(&path).map_err(io(STEP, &path))?;
        }
    }
    for link in ["vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"] {
        let _ = fs::remove_file(rootfs.join(link));
    }
    // /etc and /var are as new as /usr: without these stamps (what
    // systemd-update-done writes), ConditionNeedsUpdate= would rerun
    // ldconfig and friends on every machine's first boot.
    for dir in ["etc", "var"] {
        let stamp = format!("TIMESTAMP_NSEC={}\n", u128::from(epoch) * 1_000_000_000);
        write(&rootfs.join(dir).join(".updated"), &stamp, STEP)?;
    }
    // No /etc/fstab (debootstrap leaves a placeholder): the kernel command
    // line mounts / and /usr (root=, mount.usr=), and the initramfs checks
    // ROOT before mounting it. Without the file, systemd-remount-fs.service
    // is skipped (os-config gives it `ConditionPathExists=/etc/fstab`);
    // with one, even one without a line, it ran on every boot, on the
    // critical chain (the /dev tmpfiles, udevd and networkd are ordered
    // after it), for nothing. An administrator who writes an fstab gets it
    // mounted and remounted as usual.
    remove(&rootfs.join("etc/fstab"), STEP)?;
    Ok(())
}

fn find_kernel(stage: &Path) -> Result<(String, PathBuf, PathBuf)> {
    let modules = stage.join("usr/lib/modules");
    let mut versions: Vec<String> = fs::read_dir(&modules)
        .map_err(io("stage", &modules))?
        .flatten()
        .filter(|e| e.path().join("vmlinuz").is_file() && e.path().join("initrd").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort();
    let kver = versions.pop().ok_or_else(|| Error::NoKernel { tree: stage.to_path_buf() })?;
    let dir = modules.join(&kver);
    Ok((kver, dir.join("vmlinuz"), dir.join("initrd")))
}

/// Masks, in one `systemctl --root mask`, the upstream units Ferrite
/// replaces that a link in /usr pulls in where no preset can disable them
/// ([`MASKED`]), and the `modprobe@NAME.service` instances the image's
/// units pull in that have nothing to load with its one kernel (the module
/// is built in, or not shipped): each was a process forked early in every
/// boot, ahead of the critical chain's first unit, to do nothing ([`kmod`]).
fn mask_units(stage: &Path, kver: &str) -> Result<()> {
    const STEP: &str = "stage";
    let units = stage.join("usr/lib/systemd/system");
    let mut texts = Vec::new();
    for entry in fs::read_dir(&units).map_err(io(STEP, &units))?.flatten() {
        let path = entry.path();
        if path.is_file() {
            texts.push(fs::read_to_string(&path).map_err(io(STEP, &path))?);
        }
    }
    let instances = kmod::modprobe_instances(texts.iter().map(String::as_str));
    let modules = stage.join("usr/lib/modules").join(kver);
    let index = |name: &str| {
        let path = modules.join(name);
        fs::read_to_string(&path).map_err(io(STEP, &path))
    };
    let idle =
        kmod::idle_instances(&instances, &index("modules.builtin")?, &index("modules.dep")?, &index("modules.alias")?);
    tracing::info!(modules = ?idle, "modprobe@ instances with nothing to load: masked");
    let masked =
        MASKED.iter().map(|unit| unit.to_string()).chain(idle.iter().map(|name| format!("modprobe@{name}.service")));
    output(
        STEP,
        Command::new("systemctl")
            .arg(format!("--root={}", stage.display()))
            .arg("mask")
            .args(masked.collect::<Vec<_>>()),
    )?;
    Ok(())
}

enum Source {
    File(PathBuf),
    Text(String),
}

/// A FAT ESP written with mtools: the directories and files are created
/// one by one in sorted order, with the build's timestamp, so the bytes
/// do not depend on the order a directory lists.
fn make_esp(
    image: &Path,
    staging: &Path,
    files: &[(String, Source)],
    size: u64,
    seed: &[u8],
    epoch: u64,
) -> Result<()> {
    const STEP: &str = "ESP";
    remove(image, STEP)?;
    if staging.exists() {
        fs::remove_dir_all(staging).map_err(io(STEP, staging))?;
    }
    let volume_id = hex(&sha256(&[seed, b"esp"].concat())[..4]);
    output(
        STEP,
        Command::new("mkfs.vfat")
            .args(["--invariant", "-F", "32", "-n", "EFI-SYSTEM", "-i", &volume_id, "-C"])
            .arg(image)
            .arg((size / 1024).to_string())
            .env("SOURCE_DATE_EPOCH", epoch.to_string()),
    )?;
    let mut sorted: Vec<&(String, Source)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut made = std::collections::BTreeSet::new();
    let mtools = |args: &[&std::ffi::OsStr]| -> Result<()> {
        let (program, rest) = args.split_first().expect("a program");
        output(
            STEP,
            Command::new(program).args(rest).env("MTOOLS_SKIP_CHECK", "1").env("SOURCE_DATE_EPOCH", epoch.to_string()),
        )
        .map(|_| ())
    };
    for (dest, source) in sorted {
        let parts: Vec<&str> = dest.split('/').collect();
        for i in 1..parts.len() {
            let dir = parts[..i].join("/");
            if made.insert(dir.clone()) {
                let target = format!("::/{dir}");
                mtools(&["mmd".as_ref(), "-i".as_ref(), image.as_os_str(), target.as_ref()])?;
            }
        }
        let local = staging.join(dest);
        fs::create_dir_all(local.parent().expect("a parent")).map_err(io(STEP, &local))?;
        match source {
            Source::File(path) => {
                fs::copy(path, &local).map_err(io(STEP, path))?;
            }
            Source::Text(text) => write(&local, text, STEP)?,
        }
        set_times(&local, epoch, STEP)?;
        let target = format!("::/{dest}");
        mtools(&[
            "mcopy".as_ref(),
            "-m".as_ref(),
            "-i".as_ref(),
            image.as_os_str(),
            local.as_os_str(),
            target.as_ref(),
        ])?;
    }
    Ok(())
}

fn mkfs_ext4(image: &Path, dir: &Path, label: &'static str, size: u64, seed: &[u8], epoch: u64) -> Result<()> {
    remove(image, label)?;
    let f = fs::File::create(image).map_err(io(label, image))?;
    f.set_len(size).map_err(io(label, image))?;
    drop(f);
    let uuid = derive::uuid(seed, &format!("{label} filesystem"));
    let hash_seed = derive::uuid(seed, &format!("{label} hash seed"));
    output(
        label,
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", label, "-U", &uuid.to_string()])
            .arg("-E")
            .arg(format!("hash_seed={hash_seed},root_owner=0:0,lazy_itable_init=0"))
            .arg("-d")
            .arg(dir)
            .arg(image)
            .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
            .env("SOURCE_DATE_EPOCH", epoch.to_string()),
    )?;
    clamp_inode_times(image, dir, label, epoch)
}

/// `mkfs.ext4 -d` copies each file's atime and ctime from the directory;
/// reading a file moves its atime and ctime cannot be set, so both are set
/// to the build's timestamp inside the image with debugfs (no mount).
fn clamp_inode_times(image: &Path, dir: &Path, step: &'static str, epoch: u64) -> Result<()> {
    let mut paths = vec![PathBuf::from("/")];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(io(step, &d))?.flatten() {
            let path = e.path();
            if e.file_type().map_err(io(step, &path))?.is_dir() {
                stack.push(path.clone());
            }
            paths.push(Path::new("/").join(path.strip_prefix(dir).unwrap_or(&path)));
        }
    }
    paths.sort();
    let mut script = String::new();
    for p in &paths {
        let quoted = format!("\"{}\"", p.display());
        for field in ["atime", "ctime"] {
            script.push_str(&format!("sif {quoted} {field} @{epoch}\nsif {quoted} {field}_extra 0\n"));
        }
    }
    let commands = image.with_extension("debugfs");
    write(&commands, &script, step)?;
    output(
        step,
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&commands)
            .arg(image)
            .env("E2FSPROGS_FAKE_TIME", epoch.to_string()),
    )?;
    Ok(())
}

/// A GPT disk to write: its layout, its GUID and its partitions' UUIDs.
struct Disk<'a> {
    guid: Guid,
    layout: Layout,
    uuid_of: &'a dyn Fn(Role) -> Guid,
}

impl Disk<'_> {
    /// Writes the table and each partition's content (`None`: left
    /// empty) into a sparse file at `path`, and returns what the manifest
    /// says of each partition.
    fn assemble(
        &self,
        path: &Path,
        contents: &[(Role, Option<&Path>)],
        step: &'static str,
    ) -> Result<Vec<manifest::Partition>> {
        let table = Table {
            disk_guid: self.guid,
            disk_blocks: self.layout.disk_size / SECTOR,
            entries: self
                .layout
                .partitions
                .iter()
                .map(|p| Entry {
                    type_guid: p.role.type_guid(),
                    unique_guid: (self.uuid_of)(p.role),
                    first_lba: p.first_lba(),
                    last_lba: p.last_lba(),
                    attributes: 0,
                    label: p.role.label().to_string(),
                })
                .collect(),
        };
        let encoded = table.encode()?;
        let mut disk = fs::File::create(path).map_err(io(step, path))?;
        disk.set_len(self.layout.disk_size).map_err(io(step, path))?;
        disk.write_all(&encoded.head).map_err(io(step, path))?;
        disk.seek(SeekFrom::Start(self.layout.disk_size - encoded.tail.len() as u64)).map_err(io(step, path))?;
        disk.write_all(&encoded.tail).map_err(io(step, path))?;
        let mut partitions = Vec::new();
        for (number, (role, content)) in contents.iter().enumerate() {
            let placed = self.layout.get(*role);
            let (content_size, content_sha256) = match content {
                Some(content) => {
                    let size = file_size(content, step)?;
                    if size > placed.size {
                        return Err(Error::TooBig {
                            step,
                            what: content.display().to_string(),
                            size,
                            limit: placed.size,
                        });
                    }
                    copy_sparse(content, &mut disk, placed.offset, step)?;
                    (size, Some(hex(&file_sha256(content, step)?)))
                }
                None => (0, None),
            };
            partitions.push(manifest::Partition {
                number: number + 1,
                label: role.label().into(),
                type_guid: role.type_guid().to_string(),
                uuid: (self.uuid_of)(*role).to_string(),
                offset: placed.offset,
                size: placed.size,
                content_size,
                content_sha256,
            });
        }
        disk.sync_all().map_err(io(step, path))?;
        Ok(partitions)
    }
}

/// What the PXE set is made of: slot A's /usr and hash tree, and ROOT's
/// tree as built.
struct Pxe<'a> {
    usr: &'a Path,
    verity: &'a Path,
    rootfs: &'a Path,
    root_hash: &'a [u8; 32],
    uuid_of: &'a dyn Fn(Role) -> Guid,
}

impl Pxe<'_> {
    /// The PXE initramfs: three cpio archives the kernel unpacks in turn:
    /// `ferrite/usr.img`, a GPT image of USR-A and USR-A-VERITY with the
    /// disk's partition UUIDs, stored as it is (squashfs is compressed
    /// already); `ferrite/root/`, ROOT's tree, compressed
    /// with zstd; and the boot initramfs, last, because its lz4 stream
    /// (the legacy format the kernel reads) has no end mark after which the
    /// kernel could find another archive. The initramfs's ferrite-pxe
    /// module attaches the image (so `usrhash=` finds /usr as on a disk) and
    /// copies the tree onto the tmpfs root.
    fn initramfs(&self, initrd: &Path, work: &Path, out: &Path, epoch: u64) -> Result<()> {
        const STEP: &str = "PXE set";
        let usr_dir = work.join("pxe-usr");
        let root_dir = work.join("pxe-root");
        for dir in [&usr_dir, &root_dir] {
            if dir.exists() {
                fs::remove_dir_all(dir).map_err(io(STEP, dir))?;
            }
            fs::create_dir_all(dir.join("ferrite")).map_err(io(STEP, dir))?;
        }
        let sizes =
            Sizes { usr: file_size(self.usr, STEP)?, usr_verity: file_size(self.verity, STEP)?, ..Sizes::default() };
        let disk = Disk {
            guid: derive::uuid(self.root_hash, "pxe usr disk"),
            layout: Layout::of_roles(&sizes, &[Role::UsrA, Role::UsrAVerity]),
            uuid_of: self.uuid_of,
        };
        disk.assemble(
            &usr_dir.join("ferrite/usr.img"),
            &[(Role::UsrA, Some(self.usr)), (Role::UsrAVerity, Some(self.verity))],
            STEP,
        )?;
        let root = root_dir.join("ferrite/root");
        output(STEP, Command::new("cp").arg("-a").arg("--reflink=auto").arg(self.rootfs).arg(&root))?;
        // /usr is mounted from the image and the root is a tmpfs named on
        // the command line: like ROOT's tree, this one has no fstab.
        fs::remove_dir(root.join("usr")).map_err(io(STEP, &root))?;
        let usr_cpio = cpio(&usr_dir, &work.join("pxe-usr.cpio"), epoch)?;
        let root_cpio = cpio(&root_dir, &work.join("pxe-root.cpio"), epoch)?;
        let root_zst = work.join("pxe-root.cpio.zst");
        output(STEP, Command::new("zstd").args(["-q", "-f", "-19", "-o"]).arg(&root_zst).arg(&root_cpio))?;

        // The kernel reads concatenated archives, compressed or not, each
        // starting on a 4-byte boundary; an lz4 one only as the last.
        let mut all = fs::File::create(out).map_err(io(STEP, out))?;
        let mut written = 0u64;
        for part in [&usr_cpio, &root_zst, initrd] {
            all.write_all(&vec![0u8; (written.next_multiple_of(4) - written) as usize]).map_err(io(STEP, out))?;
            written = written.next_multiple_of(4);
            written +=
                std::io::copy(&mut fs::File::open(part).map_err(io(STEP, part))?, &mut all).map_err(io(STEP, out))?;
        }
        all.sync_all().map_err(io(STEP, out))
    }
}

/// A newc cpio archive at `out` of everything under `dir` (names sorted,
/// times set to `epoch`, so the bytes depend on the content only).
fn cpio(dir: &Path, out: &Path, epoch: u64) -> Result<PathBuf> {
    const STEP: &str = "PXE set";
    normalize_times(dir, epoch, STEP)?;
    let listing = output(STEP, Command::new("find").arg(".").current_dir(dir))?;
    let mut names: Vec<&str> = listing.lines().filter(|l| *l != ".").collect();
    names.sort_unstable();
    let mut child = Command::new("cpio")
        .args(["--quiet", "-o", "-H", "newc", "--reproducible", "-O"])
        .arg(out)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn { step: STEP, program: "cpio".into(), source })?;
    child.stdin.take().expect("piped").write_all((names.join("\n") + "\n").as_bytes()).map_err(io(STEP, out))?;
    let done = child.wait_with_output().map_err(io(STEP, out))?;
    if !done.status.success() {
        return Err(Error::Tool {
            step: STEP,
            command: "cpio -o".into(),
            status: done.status,
            stderr: String::from_utf8_lossy(&done.stderr).into_owned(),
        });
    }
    Ok(out.to_path_buf())
}

/// Writes `raw` as `format`. The qcow2 is compressed, with zstd instead of
/// qcow2's default zlib: QEMU inflates a whole 64 KiB cluster for every
/// read that lands in one, while the guest waits, on worker threads that
/// compete with the vCPUs for the host's CPUs, and a boot reads the kernel,
/// the initramfs and much of /usr that way. zstd undoes that several times
/// faster, which took about a second off a boot under emulation on two
/// cores (BENCHMARKS.md), for 4% more bytes. QEMU reads such images from
/// 5.1 (2020) on; the raw image is there for tools that cannot.
fn convert(raw: &Path, out: &Path, format: &str) -> Result<()> {
    remove(out, "convert")?;
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-f", "raw", "-O", format]);
    if format == "qcow2" {
        cmd.args(["-c", "-o", "compression_type=zstd"]);
    }
    output("convert", cmd.arg(raw).arg(out))?;
    Ok(())
}

/// Copies `src` into `disk` at `offset`, skipping blocks of zeros so the
/// raw image stays sparse.
fn copy_sparse(src: &Path, disk: &mut fs::File, offset: u64, step: &'static str) -> Result<()> {
    let mut f = fs::File::open(src).map_err(io(step, src))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = offset;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = f.read(&mut buf[filled..]).map_err(io(step, src))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            return Ok(());
        }
        for chunk in buf[..filled].chunks(4096) {
            if chunk.iter().any(|&b| b != 0) {
                disk.seek(SeekFrom::Start(pos)).map_err(io(step, src))?;
                disk.write_all(chunk).map_err(io(step, src))?;
            }
            pos += chunk.len() as u64;
        }
    }
}

fn copy_tree(src: &Path, dest: &Path, step: &'static str) -> Result<()> {
    if dest.exists() {
        fs::remove_dir_all(dest).map_err(io(step, dest))?;
    }
    output(step, Command::new("cp").arg("-a").arg("--no-preserve=ownership").arg(src).arg(dest))?;
    Ok(())
}

fn normalize_times(dir: &Path, epoch: u64, step: &'static str) -> Result<()> {
    output(step, Command::new("find").arg(dir).args(["-exec", "touch", "-h", "-d", &format!("@{epoch}"), "{}", "+"]))?;
    Ok(())
}

fn set_times(path: &Path, epoch: u64, step: &'static str) -> Result<()> {
    output(step, Command::new("touch").args(["-h", "-d", &format!("@{epoch}")]).arg(path))?;
    Ok(())
}

fn pad_to(path: &Path, block: u64, step: &'static str) -> Result<()> {
    let size = file_size(path, step)?;
    let padded = size.div_ceil(block) * block;
    if padded != size {
        let f = fs::OpenOptions::new().write(true).open(path).map_err(io(step, path))?;
        f.set_len(padded).map_err(io(step, path))?;
    }
    Ok(())
}

fn file_size(path: &Path, step: &'static str) -> Result<u64> {
    Ok(fs::metadata(path).map_err(io(step, path))?.len())
}

fn file_sha256(path: &Path, step: &'static str) -> Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(path).map_err(io(step, path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(step, path))?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}

fn file_record(path: &Path, step: &'static str) -> Result<manifest::File> {
    Ok(manifest::File {
        name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        size: file_size(path, step)?,
        sha256: hex(&file_sha256(path, step)?),
    })
}

fn remove(path: &Path, step: &'static str) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io { step, path: path.to_path_buf(), source: e }),
    }
}

fn write(path: &Path, text: &str, step: &'static str) -> Result<()> {
    fs::write(path, text).map_err(io(step, path))
}

fn symlink(target: &str, link: &Path, step: &'static str) -> Result<()> {
    std::os::unix::fs::symlink(target, link).map_err(io(step, link))
}

fn set_mode(path: &Path, mode: u32, step: &'static str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io(step, path))
}
