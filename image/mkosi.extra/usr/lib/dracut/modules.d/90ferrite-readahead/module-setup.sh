#!/bin/bash
# Reads what the real root's first seconds read from /usr into the page
# cache while the initramfs finishes: PID 1 and the libraries it links,
# journald, udevd, the generators and the unit files. Under emulation the
# first read of each page of /usr costs a dm-verity hash and a squashfs
# decompression, and between /usr's mount and the switch to the real root
# the initramfs works through units one at a time, leaving a CPU idle.
# Measured: the new PID 1 started 0.4 s sooner after the switch and queued
# its first jobs 0.6 s sooner (BENCHMARKS.md). Best effort: nothing waits
# for it, and a file it cannot read only goes unread.

check() {
    # Only when asked for (dracut --add ferrite-readahead).
    return 255
}

depends() {
    echo systemd
}

install() {
    local binaries="/usr/lib/systemd/systemd /usr/lib/systemd/systemd-journald /usr/bin/udevadm"
    local files lib
    # The real root's files as its /usr is mounted in the initramfs
    # (/sysusr/usr, from mount.usr=), relative to /sysusr: the libraries
    # by their canonical path, since /lib is a link into /usr.
    files=$(for binary in $binaries; do
        echo "${binary#/}"
        # Every absolute path ldd prints: the libraries and the loader.
        for lib in $(ldd "$binary" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }'); do
            lib=$(readlink -f "$lib")
            case "$lib" in /usr/*) echo "${lib#/}" ;; esac
        done
    done | sort -u | tr '\n' ' ')
    inst_multiple cat
    cat > "$initdir/etc/systemd/system/ferrite-readahead.service" <<UNIT
[Unit]
Description=Read the real root's early files ahead
DefaultDependencies=no
After=sysusr-usr.mount
ConditionPathExists=/sysusr/usr/lib/systemd/systemd

[Service]
Type=simple
WorkingDirectory=/sysusr
# The glob takes the unit directories' subdirectories too, which cat
# refuses: its exit status says nothing about what was read, so the shell
# exits 0 whatever cat says. Not a "-" prefix: cat reads on past the switch
# root, and if it ends before the real root's PID 1 stops the unit, that
# PID 1, which has no copy of this file to find the prefix in, counts
# status 1 as a failure and the system comes up degraded.
ExecStart=/bin/sh -c 'cat $files usr/lib/systemd/system-generators/* usr/lib/systemd/system/* >/dev/null 2>&1; exit 0'
UNIT
    mkdir -p "$initdir/etc/systemd/system/initrd-fs.target.wants"
    ln -sf ../ferrite-readahead.service "$initdir/etc/systemd/system/initrd-fs.target.wants/ferrite-readahead.service"
}
