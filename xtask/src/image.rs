//! The image tasks: build the disk image, boot it, run the VM tier.

use std::path::Path;

use anyhow::Result;

use crate::{install_packages, run, step, IMAGE_PACKAGES};

/// Builds the release binaries and the image (cached OS tree).
pub fn build(root: &Path, vmdk: bool) -> Result<()> {
    install_packages(IMAGE_PACKAGES)?;
    step("building the disk image");
    run(root, "cargo", &["build", "--release", "-p", "ferrite-image", "-p", "ferrite-vm"])?;
    let mut args = vec!["build", "--workspace", "."];
    if vmdk {
        args.push("--vmdk");
    }
    run(root, "target/release/ferrite-image", &args)
}

/// Boots the built image and prints the guest's boot report.
pub fn boot(root: &Path, check: bool) -> Result<()> {
    step("booting the image in QEMU");
    let mut args = vec![];
    if check {
        args.push("--check");
    }
    run(root, "target/release/ferrite-vm", &args)
}

/// The VM tier: one test at a time (each boots a VM on 2 cores).
pub fn vm_tests(root: &Path) -> Result<()> {
    run(
        root,
        "cargo",
        &["test", "-p", "qemu-tests", "--features", "vm-tests", "--test", "vm", "--", "--test-threads=1"],
    )
}
