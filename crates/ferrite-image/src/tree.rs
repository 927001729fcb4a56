//! The OS tree: mkosi builds it from `image/`, once per content of that
//! directory. The tree is kept under a key derived from `image/`'s files,
//! so a build after a Rust-only change reuses it and never runs mkosi.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::derive::{hex, sha256};
use crate::tools::{io, visible};
use crate::Result;

const STEP: &str = "OS tree (mkosi)";

/// A digest of every file under `dir` (names, executable bits and bytes).
pub fn key(dir: &Path) -> Result<String> {
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    let mut all = Vec::new();
    for rel in files {
        let path = dir.join(&rel);
        let meta = fs::symlink_metadata(&path).map_err(io(STEP, &path))?;
        all.extend_from_slice(rel.to_string_lossy().as_bytes());
        all.push(0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            all.push(u8::from(meta.permissions().mode() & 0o111 != 0));
        }
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(io(STEP, &path))?;
            all.extend_from_slice(target.to_string_lossy().as_bytes());
        } else {
            all.extend_from_slice(&sha256(&fs::read(&path).map_err(io(STEP, &path))?));
        }
    }
    Ok(hex(&sha256(&all))[..16].to_string())
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(io(STEP, dir))? {
        let entry = entry.map_err(io(STEP, dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io(STEP, &path))?;
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}

/// Returns the cached tree for `image_dir`, building it with mkosi first
/// when there is none for the current content.
pub fn ensure(image_dir: &Path, cache_dir: &Path, source_date_epoch: u64) -> Result<(PathBuf, String)> {
    let key = key(image_dir)?;
    let tree = cache_dir.join(format!("tree-{key}"));
    if tree.join("usr").is_dir() {
        tracing::info!(tree = %tree.display(), "OS tree is cached; mkosi does not run");
        return Ok((tree, key));
    }
    let building = cache_dir.join("tree-building");
    let packages = cache_dir.join("packages");
    for d in [&building, &packages] {
        fs::create_dir_all(d).map_err(io(STEP, d))?;
    }
    let out = building.join("tree");
    if out.exists() {
        fs::remove_dir_all(&out).map_err(io(STEP, &out))?;
    }
    tracing::info!("building the OS tree with mkosi (a few minutes; its output follows)");
    let started = Instant::now();
    // mkosi 14 runs its scripts in systemd-nspawn, which needs the wrapper
    // on build hosts whose PID 1 is not systemd.
    let path = format!(
        "{}:{}",
        image_dir.join("nspawn-wrapper").display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
    );
    visible(
        STEP,
        Command::new("mkosi")
            .current_dir(image_dir)
            .env("PATH", path)
            .env("SOURCE_DATE_EPOCH", source_date_epoch.to_string())
            .arg("--force")
            .arg("--output")
            .arg(&out)
            .arg("--cache")
            .arg(&packages)
            .arg("build"),
    )?;
    if tree.exists() {
        fs::remove_dir_all(&tree).map_err(io(STEP, &tree))?;
    }
    fs::rename(&out, &tree).map_err(io(STEP, &tree))?;
    tracing::info!(seconds = started.elapsed().as_secs(), tree = %tree.display(), "OS tree built");
    Ok((tree, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_content_not_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("mkosi.conf"), "a").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/x"), "b").unwrap();
        let k1 = key(dir.path()).unwrap();
        fs::write(dir.path().join("sub/x"), "b").unwrap();
        assert_eq!(k1, key(dir.path()).unwrap());
        fs::write(dir.path().join("sub/x"), "c").unwrap();
        assert_ne!(k1, key(dir.path()).unwrap());
    }
}
