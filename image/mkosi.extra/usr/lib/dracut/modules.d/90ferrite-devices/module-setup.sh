#!/bin/bash
# Block devices the initramfs found stay known after the switch to the
# real root. dracut's initrd-udevadm-cleanup-db.service empties udev's
# database before the switch, so systemd would wait for udev's second
# coldplug to see the disk's partitions again, which under emulation
# takes most of a minute; entries marked db_persist are kept, and the
# mounts of the ESP and the OEM partition start at once. It also keeps
# the device-mapper setup from delaying udevd and loads the disk's drivers
# early (see install()).

check() {
    # Only when asked for (dracut --add ferrite-devices).
    return 255
}

depends() {
    echo udev-rules dm
}

install() {
    inst_rules "$moddir/99-ferrite-db-persist.rules"
    # dracut's dm module loads dm_mod and dm_mirror from a pre-udev hook,
    # which makes dracut-pre-udev.service (a shell and dracut's library,
    # about 5 s under emulation) run before udevd may start. Nothing needs
    # it: dm_mod loads with dm_verity from modules-load.d (below), or else
    # on the first open of /dev/mapper/control, and Ferrite uses no mirror.
    # Without a hook the service is skipped.
    rm -f "$initdir/usr/lib/dracut/hooks/pre-udev/30-dm-pre-udev.sh"
    # That static node and the others (loop-control, fuse, ...) come from
    # the list mkosi.postinst made for the image's kernel, as in the real
    # root. kmod-static-nodes.service would make a list on every boot,
    # first on the initramfs's chain: systemd-tmpfiles-setup-dev.service,
    # then udevd, wait for it.
    inst_simple /usr/lib/tmpfiles.d/ferrite-static-nodes.conf
    mkdir -p "$initdir/etc/systemd/system"
    ln -sf /dev/null "$initdir/etc/systemd/system/kmod-static-nodes.service"
    # The disk's drivers load when systemd-modules-load.service runs, early
    # in sysinit, instead of when udevd has started and its coldplug
    # reaches the PCI devices (about 2 s later under emulation); so do the
    # ones /usr needs. udevd still names the partitions.
    # sha256_ssse3 goes before dm_verity: dm-verity takes the best SHA-256
    # the kernel has when its device is set up, and for the rest of the boot
    # hashes every block read from /usr with it. Nothing else loads the
    # module in the initramfs (the coldplug below takes block devices only,
    # not the CPU's modalias), so without it that is sha256-generic: about
    # half as fast as sha256-ni under emulation (BENCHMARKS.md), several
    # times slower on hardware. On a CPU with none of the extensions it
    # uses, the module declines to load (ENODEV) and generic stays.
    mkdir -p "$initdir/usr/lib/modules-load.d"
    printf '%s\n' virtio_pci virtio_blk sha256_ssse3 dm_verity squashfs > "$initdir/usr/lib/modules-load.d/ferrite-initrd.conf"
    # With the disk's drivers loaded that way, the initramfs needs udev for
    # block devices alone: its coldplug goes through those, not every PCI,
    # tty, input and platform device (each an event udevd works through
    # under emulation before the partitions' turn). The real root's
    # coldplug, after the switch, still takes every device.
    mkdir -p "$initdir/etc/systemd/system/systemd-udev-trigger.service.d"
    printf '%s\n' '[Service]' 'ExecStart=' \
        'ExecStart=-udevadm trigger --type=devices --action=add --subsystem-match=block' \
        > "$initdir/etc/systemd/system/systemd-udev-trigger.service.d/ferrite.conf"
    # dracut's shell generator (bash sourcing dracut-lib.sh, and a dozen
    # execs of its helpers) only turns root= into the units systemd's own
    # fstab generator already makes. dracut-systemd stays for the emergency
    # shell (see mkosi.postinst); its generator goes.
    mkdir -p "$initdir/etc/systemd/system-generators"
    ln -sf /dev/null "$initdir/etc/systemd/system-generators/dracut-rootfs-generator"
    # In the initramfs systemd's GPT generator only looks for a root
    # partition, and only when root= is absent or "gpt-auto". Every Ferrite
    # command line names its root (root=PARTUUID=..., root=tmpfs for PXE),
    # so it would be one more process that PID 1 waits for and that does
    # nothing. The real root keeps it: it mounts the ESP on /efi.
    ln -sf /dev/null "$initdir/etc/systemd/system-generators/systemd-gpt-auto-generator"
}
