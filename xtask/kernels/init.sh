#!/bin/busybox sh
# PID 1 of a kernel-matrix guest (`cargo xtask kernels`), inside the
# initramfs that xtask builds per kernel. It mounts the host's root
# filesystem read-only over virtiofs (tag `hostroot`), the results folder
# writable (tag `results`, at /mnt), gives the guest the writable places
# and that kernel's own modules, and runs the guest script with the host's
# own bash. Any failure here powers the guest off: the host sees no result
# and reports the console log.
/bin/busybox --install -s /bin
export PATH=/bin
# The host looks for this line to tell a kernel that died while booting
# (before any of this ran) from a guest whose steps failed.
echo "watt-init: started"
die() { echo "watt-init: $*"; echo o > /proc/sysrq-trigger; sleep 5; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The modules needed to reach virtiofs, in dependency order (modules.order
# is written by xtask from the kernel's modules.dep).
while read -r m; do
  insmod "/modules/$m" || die "insmod $m failed"
done < /modules/order
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    watt.script=*) script="${arg#watt.script=}" ;;
    watt.modules=*) modules="${arg#watt.modules=}" ;;
  esac
done
mkdir -p /newroot
mount -t virtiofs hostroot /newroot -o ro || die "mount hostroot"
mount -t virtiofs results /newroot/mnt || die "mount results"
for d in tmp run var/tmp dev/shm; do
  mount -t tmpfs tmpfs "/newroot/$d" 2>/dev/null
done
# This kernel's modules at /lib/modules/<release>, for autoloading
# (tcp_diag, veth, ...): an overlay with a tmpfs upper over /usr/lib (a host
# need not have /lib/modules at all; /lib is /usr/lib on a merged-/usr
# system), then a bind of the extracted package there.
release="$(uname -r)"
mkdir -p /overlay && mount -t tmpfs tmpfs /overlay && mkdir -p /overlay/u /overlay/w
mount -t overlay overlay -o lowerdir=/newroot/usr/lib,upperdir=/overlay/u,workdir=/overlay/w \
  /newroot/usr/lib || die "overlay /usr/lib"
mkdir -p "/newroot/usr/lib/modules/$release"
mount --bind "/newroot$modules" "/newroot/usr/lib/modules/$release" || die "bind modules"
mount --move /dev /newroot/dev
# devtmpfs has no /dev/fd (bash's process substitution needs it).
ln -sf /proc/self/fd /newroot/dev/fd
ln -sf /proc/self/fd/0 /newroot/dev/stdin
ln -sf /proc/self/fd/1 /newroot/dev/stdout
ln -sf /proc/self/fd/2 /newroot/dev/stderr
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
exec switch_root /newroot /bin/bash "$script"
