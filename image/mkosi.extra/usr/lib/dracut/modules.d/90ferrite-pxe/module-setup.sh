#!/bin/bash
# Ferrite's PXE boot in the initramfs: /usr from the image the PXE
# initramfs carries, the machine's initial state copied onto a tmpfs root.
# Both units wait on files only the PXE initramfs has (/ferrite/), so a
# boot from disk with the same initramfs skips them.

check() {
    # Only when asked for (dracut --add ferrite-pxe).
    return 255
}

depends() {
    echo systemd dm
}

installkernel() {
    hostonly='' instmods loop squashfs
}

install() {
    inst_multiple losetup cp
    inst_simple "$moddir/ferrite-pxe-usr.service" "$systemdsystemunitdir/ferrite-pxe-usr.service"
    inst_simple "$moddir/ferrite-pxe-root.service" "$systemdsystemunitdir/ferrite-pxe-root.service"
    $SYSTEMCTL -q --root "$initdir" enable ferrite-pxe-usr.service ferrite-pxe-root.service
}
