#!/usr/bin/env bash
# Runs the Dockerfile's app-assembly step (the runtime stage's RUN that
# bind-mounts the `app` context) for real, without a container engine: in a
# private mount namespace, on a throwaway overlay of this machine's root
# filesystem (Debian 12, like node:22-bookworm-slim), with a `node` user
# added to the overlay, the app context bind-mounted read-only at /ctx, and
# the given build ARGs. Then, in that root:
#
#   - `watt-agent check-config` on the generated /etc/watt-agent/watt.toml
#   - the image's ENTRYPOINT + CMD (`watt-agent run`) in a network namespace
#     of its own, with the image's ENV, until GET <each URL path> answers 200
#     on 127.0.0.1:3000 (bounded), then SIGTERM and a clean exit.
#
# Nothing outside the namespaces changes; everything is gone when it exits.
#
#   deploy/lib/runtime-dryrun.sh AGENT_BINARY CONTEXT_DIR [ARG=VALUE...] [-- URL_PATH...]
#
# Needs root, overlayfs, unshare, ip, chroot, useradd, curl. Used by
# deploy/check.sh (when run as root) for examples/app and for the Next.js
# standalone fixture of the integration tests.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
source "${here}/common.sh"

[[ $# -ge 2 ]] || die "usage: runtime-dryrun.sh AGENT_BINARY CONTEXT_DIR [ARG=VALUE...] [-- URL_PATH...]"
agent="$(realpath "$1")"
ctx="$(realpath "$2")"
shift 2
build_args=()
while [[ $# -gt 0 && "$1" != "--" ]]; do build_args+=("$1"); shift; done
[[ "${1:-}" == "--" ]] && shift
paths=("$@")
[[ ${#paths[@]} -gt 0 ]] || paths=(/)
[[ ${EUID} -eq 0 ]] || die "needs root (mount namespace, overlayfs, chroot)"
[[ -x "${agent}" && -d "${ctx}" ]] || die "no agent binary or context directory"

# The ARG defaults and the RUN script, straight from the Dockerfile.
eval "$("$(yaml_python)" "${here}/dockerfile.py" app-run "${REPO_ROOT}/Dockerfile")"
for a in "${build_args[@]}"; do export "${a?}"; done

ns="watt-dryrun-$$"
ip netns add "${ns}"
trap 'ip netns del "${ns}" 2>/dev/null || true' EXIT
ip -n "${ns}" link set lo up

# Everything below runs in a new mount namespace: the overlay, the binds and
# the tmpfs vanish with it.
export AGENT_BIN="${agent}" CTX="${ctx}" NS="${ns}" APP_RUN_SCRIPT
export URL_PATHS="${paths[*]}"
# shellcheck disable=SC2016 # expanded by the inner bash
unshare --mount --propagation private bash -euo pipefail -c '
  base="$(mktemp -d)"
  mount -t tmpfs tmpfs "${base}"
  mkdir "${base}/upper" "${base}/work" "${base}/root"
  mount -t overlay overlay -o "lowerdir=/,upperdir=${base}/upper,workdir=${base}/work" "${base}/root"
  root="${base}/root"
  mount --rbind /dev "${root}/dev"
  mount -t proc proc "${root}/proc"
  mount -t tmpfs tmpfs "${root}/tmp"
  mount -t tmpfs tmpfs "${root}/run"
  mkdir -p "${root}/ctx"
  mount --bind "${CTX}" "${root}/ctx"
  mount -o remount,bind,ro "${root}/ctx"
  # The node image: user node, the agent at /usr/local/bin (both only in the overlay).
  chroot "${root}" getent passwd "${APP_USER}" >/dev/null ||
    chroot "${root}" useradd --no-create-home --user-group --shell /usr/sbin/nologin "${APP_USER}"
  install -m 0755 "${AGENT_BIN}" "${root}/usr/local/bin/watt-agent"
  rm -rf "${root}/app" "${root}/etc/watt-agent"

  echo "== RUN (runtime stage), APP_DIR=${APP_DIR} APP_SERVER_DIR=${APP_SERVER_DIR:-.} APP_STATIC_DIR=${APP_STATIC_DIR} APP_PUBLIC_DIR=${APP_PUBLIC_DIR} APP_CMD=${APP_CMD}"
  chroot "${root}" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    APP_DIR="${APP_DIR}" APP_SERVER_DIR="${APP_SERVER_DIR:-.}" APP_STATIC_DIR="${APP_STATIC_DIR}" \
    APP_PUBLIC_DIR="${APP_PUBLIC_DIR}" APP_CMD="${APP_CMD}" APP_USER="${APP_USER}" \
    bash -o pipefail -c "${APP_RUN_SCRIPT}"
  cwd="$(sed -n "s/^cwd = \"\(.*\)\"$/\1/p" "${root}/etc/watt-agent/watt.toml")"
  echo "== /app: $(cd "${root}/app" && find . -maxdepth 3 -not -path "*/node_modules/*" | head -n 12 | tr "\n" " ")"
  for d in .next/static public .next/cache; do
    [ -e "${root}${cwd}/${d}" ] && echo "   ${cwd}/${d}: $(chroot "${root}" stat -c "%U %A" "${cwd}/${d}")"
  done
  # Workers must not be able to write the app.
  if chroot "${root}" setpriv --reuid="${APP_USER}" --regid="${APP_USER}" --clear-groups \
       sh -c "touch \"${cwd}/.write-probe\"" 2>/dev/null; then
    echo "error: ${APP_USER} can write ${cwd}"; exit 1
  fi

  # The image ENV (Dockerfile), then ENTRYPOINT + CMD.
  image_env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
    NODE_ENV=production WATT_CONFIG=/etc/watt-agent/watt.toml RUNTIME_DIRECTORY=/run/watt-agent PORT=3000)
  echo "== watt-agent check-config"
  chroot "${root}" /usr/bin/env -i "${image_env[@]}" /usr/local/bin/watt-agent check-config | sed "s/^/   /"

  echo "== watt-agent run (ENTRYPOINT + CMD), netns ${NS}, loopback only"
  ip netns exec "${NS}" chroot "${root}" /usr/bin/env -i "${image_env[@]}" WATT_WORKERS=2 \
    /usr/local/bin/watt-agent run > "${base}/agent.log" 2>&1 &
  pid=$!
  ok=1
  for p in ${URL_PATHS}; do
    code=000
    for _ in $(seq 1 60); do
      code="$(ip netns exec "${NS}" curl -s -o /dev/null -w "%{http_code}" --max-time 3 "http://127.0.0.1:3000${p}" || true)"
      [ "${code}" = 200 ] && break
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.5
    done
    echo "   GET ${p}: ${code}"
    [ "${code}" = 200 ] || ok=0
  done
  kill -TERM "${pid}" 2>/dev/null || true
  rc=0
  for _ in $(seq 1 150); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "${pid}" 2>/dev/null; then kill -KILL "${pid}"; echo "   agent did not stop within 15s"; ok=0; fi
  wait "${pid}" || rc=$?
  echo "   agent exit status after SIGTERM: ${rc}"
  [ "${rc}" = 0 ] || ok=0
  if [ "${ok}" != 1 ]; then echo "== agent log"; tail -n 30 "${base}/agent.log" | sed "s/^/   /"; exit 1; fi
'
