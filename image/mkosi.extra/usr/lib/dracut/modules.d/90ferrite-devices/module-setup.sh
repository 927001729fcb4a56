#!/bin/bash
# Block devices the initramfs found stay known after the switch to the
# real root. dracut's initrd-udevadm-cleanup-db.service empties udev's
# database before the switch, so systemd would wait for udev's second
# coldplug to see the disk's partitions again, which under emulation
# takes most of a minute; entries marked db_persist are kept, and the
# mounts of the ESP and the OEM partition start at once.

check() {
    # Only when asked for (dracut --add ferrite-devices).
    return 255
}

depends() {
    echo udev-rules
}

install() {
    inst_rules "$moddir/99-ferrite-db-persist.rules"
}
