#!/bin/bash
# The steps of one kernel-matrix guest, run by the initramfs's init with the
# host's own bash on the host's root filesystem (read-only). Each step's
# output and exit code go to /mnt (the host's results folder of this
# kernel): <step>.txt and <step>.rc. The host reads them and decides; this
# script only runs, and then powers the guest off.
set -u
exec > >(tee /mnt/guest.log > /dev/console) 2>&1
# shellcheck disable=SC1091
. /mnt/env
echo "guest: Linux $(uname -r), $(nproc) CPUs"

# What the guest needs writable beyond the tmpfs that init mounted: an
# overlay with a tmpfs upper over these host folders.
writable() {
  local dir="$1" up="/run/overlay/${1//\//_}"
  mkdir -p "$up/upper" "$up/work"
  mount -t overlay overlay -o "lowerdir=$dir,upperdir=$up/upper,workdir=$up/work" "$dir"
}
writable /root
writable /etc
writable /var
writable "$WATT_ROOT/target/deploy-check"
mount -t bpf bpf /sys/fs/bpf
# For kernels whose only hook of the epoll wait is the syscalls tracepoints.
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
hostname watt-guest

step() {
  local name="$1"
  shift
  echo "guest: step $name: $*"
  local started=$SECONDS
  "$@" > "/mnt/$name.txt" 2>&1
  local rc=$?
  echo "$rc $((SECONDS - started))" > "/mnt/$name.rc"
  echo "guest: step $name: exit $rc in $((SECONDS - started)) s"
  tail -n 3 "/mnt/$name.txt"
}

cd "$WATT_ROOT" || exit 1
export WATT_AGENT_BIN="$WATT_ROOT/target/release/watt-agent"
for t in $WATT_TESTS; do
  name="$(basename "$t" | sed 's/-[0-9a-f]*$//')"
  if [[ " $WATT_STEPS " == *" tests "* ]]; then
    step "test-$name" "$t" --test-threads=1
  fi
done
if [[ " $WATT_STEPS " == *" doctor "* ]]; then
  step doctor "$WATT_AGENT_BIN" doctor --admin off
fi
if [[ " $WATT_STEPS " == *" e2e "* ]]; then
  # Before 5.11 the kernel charges BPF maps to RLIMIT_MEMLOCK, which the
  # agent can raise only with CAP_SYS_RESOURCE: such nodes get the eks-al2
  # overlay (eks plus SYS_RESOURCE; docs/deploy-eks.md, "What each kernel
  # gets"), so the emulation mirrors that overlay there, and only there.
  overlay=eks
  IFS=.- read -r major minor _ <<< "$(uname -r)"
  if (( major < 5 || (major == 5 && minor < 11) )); then
    overlay=eks-al2
  fi
  # Under TCG a worker's first answers (and a reload's new workers) take
  # seconds: a longer client timeout, so that only a refused or reset
  # connection, not a slow emulated CPU, fails a request.
  step e2e bash deploy/e2e-netns.sh --overlay "$overlay" --workers 2 --requests 50 \
    --client-timeout 20 "$WATT_AGENT_BIN"
fi
echo "guest: done"
sync
echo o > /proc/sysrq-trigger
