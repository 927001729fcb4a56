//! Ferrite's image builder.
//!
//! `mkosi` builds the Debian tree once (cached by the content of `image/`);
//! everything after that is done here, without mounting anything: the
//! stage (tree + Ferrite's binaries + `os-config/`), a squashfs of /usr and
//! its dm-verity hash tree, the ESP (`mkfs.vfat` + `mcopy`) with
//! systemd-boot and slot A's counted boot entry, OEM and ROOT
//! (`mkfs.ext4 -d`), the GPT (written by [`gpt`]), raw and qcow2 outputs
//! and a manifest. The same inputs and `SOURCE_DATE_EPOCH` give the same
//! bytes: every UUID, salt and timestamp is derived from content.

pub mod binaries;
mod build;
pub mod derive;
pub mod entry;
pub mod gpt;
pub mod kmod;
pub mod layout;
pub mod manifest;
mod tools;
mod tree;

use std::path::PathBuf;

pub use build::{build, BuildOptions, Outputs};

/// What went wrong, and in which step, file or partition.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{step}: cannot run {program}")]
    Spawn { step: &'static str, program: String, source: std::io::Error },
    #[error("{step}: `{command}` failed ({status}){}", stderr_tail(.stderr))]
    Tool { step: &'static str, command: String, status: std::process::ExitStatus, stderr: String },
    #[error("{step}: {path}")]
    Io { step: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{step}: {what} is {size} bytes, more than the {limit} bytes its partition holds")]
    TooBig { step: &'static str, what: String, size: u64, limit: u64 },
    #[error("{step}: unexpected output from {program}: {detail}")]
    Output { step: &'static str, program: String, detail: String },
    #[error("the OS tree {tree} has no kernel: no vmlinuz and initrd under usr/lib/modules/*/")]
    NoKernel { tree: PathBuf },
    #[error("partition table")]
    Gpt(#[from] gpt::TableError),
    #[error("cargo metadata")]
    Metadata(#[from] binaries::MetadataError),
}

fn stderr_tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(5)..];
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {}", tail.join(" | "))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
