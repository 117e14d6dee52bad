# syntax=docker/dockerfile:1.7
#
# watt-agent and a Node.js app in one image. The agent is PID 1 (it reaps
# orphans and forwards signals) and runs the app's workers as the unprivileged
# user `node`.
#
# Build (BuildKit, the default builder since Docker 23; `docker buildx build`
# works the same):
#
#   # the example app of this repository (examples/app)
#   docker build -t watt-app .
#
#   # your own plain Node app: a directory with server.js (and node_modules)
#   docker build -t watt-app --build-context app=../my-app .
#
#   # a Next.js standalone build (next.config: output: 'standalone'; run
#   # `next build` first). Next does not copy .next/static and public into the
#   # standalone directory; these ARGs do.
#   docker build -t watt-app --build-context app=../my-next-app \
#     --build-arg APP_DIR=.next/standalone \
#     --build-arg APP_STATIC_DIR=.next/static \
#     --build-arg APP_PUBLIC_DIR=public \
#     --build-arg APP_CMD="node server.js" .
#   # In a monorepo (outputFileTracingRoot above the app), server.js sits at
#   # .next/standalone/<app path>/server.js: add
#   #   --build-arg APP_SERVER_DIR=<app path, e.g. apps/web>
#
# ARGs (defaults in brackets):
#   APP_DIR         [.]  directory of the app context copied to /app
#   APP_SERVER_DIR  [.]  directory under /app that holds the entry point: the
#                        workers run there, static and public go there
#   APP_STATIC_DIR  []   copied to <server dir>/.next/static (Next.js standalone)
#   APP_PUBLIC_DIR  []   copied to <server dir>/public (Next.js standalone)
#   APP_CMD         [node server.js]  the worker command, run in the server
#                        dir; words separated by spaces, no shell quoting
#   APP_USER        [node]  user the workers run as (must exist in NODE_IMAGE)
#   NODE_IMAGE      [node:22-bookworm-slim]  runtime base (Node 18+ works)
#   RUST_IMAGE      [rust:1-bookworm]  builder base (Debian bookworm: the
#                        LLVM 22 packages come from bookworm-security)
#   RUST_NIGHTLY    [nightly-2026-05-20]  builds the eBPF program; its LLVM
#                        major must equal LLVM_MAJOR
#   LLVM_MAJOR      [22], BPF_LINKER_VERSION [0.13.0]
#
# Run outside Kubernetes (the capability set of deploy/base/daemonset.yaml):
#   docker run --rm --network host --cap-drop ALL \
#     --cap-add BPF --cap-add SETUID --cap-add SETGID --cap-add SETPCAP \
#     --cap-add KILL --cap-add SYS_PTRACE \
#     --security-opt no-new-privileges --read-only \
#     --tmpfs /run/watt-agent --tmpfs /tmp watt-app
#   docker run --rm --cap-add BPF watt-app doctor     # what the host offers

ARG RUST_IMAGE=rust:1-bookworm
ARG NODE_IMAGE=node:22-bookworm-slim

# ---------------------------------------------------------------------------
# The app. This stage is the default; `--build-context app=<dir>` replaces it
# with your directory (a named context overrides the stage of the same name).
FROM scratch AS app
COPY examples/app/ /

# ---------------------------------------------------------------------------
# The agent, with its eBPF program embedded (the same steps as
# `cargo xtask setup` followed by `cargo build --release -p watt-agent`).
# checkov:skip=CKV_DOCKER_7:the tag comes from ARG RUST_IMAGE / NODE_IMAGE (rust:1-bookworm, node:22-bookworm-slim), which checkov does not expand
FROM ${RUST_IMAGE} AS builder
ARG RUST_NIGHTLY=nightly-2026-05-20
ARG LLVM_MAJOR=22
ARG BPF_LINKER_VERSION=0.13.0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# LLVM development files for bpf-linker (bookworm: from bookworm-security).
# Not version-pinned: the security suite keeps only the newest build, so a
# pinned version would stop installing at its next update.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      "llvm-${LLVM_MAJOR}-dev" "libpolly-${LLVM_MAJOR}-dev" \
 && rm -rf /var/lib/apt/lists/*

# The nightly toolchain with rust-src (-Z build-std for the bpf target). The
# agent's build script runs `rustup run nightly`, so a dated nightly is made
# the `nightly` toolchain. Its LLVM must not be newer than bpf-linker's.
RUN rustup toolchain install "${RUST_NIGHTLY}" --profile minimal --component rust-src \
 && host="$(rustc -vV | sed -n 's/^host: //p')" \
 && if [ "${RUST_NIGHTLY}" != nightly ]; then \
      ln -sfn "${RUST_NIGHTLY}-${host}" "${RUSTUP_HOME}/toolchains/nightly-${host}"; \
    fi \
 && llvm="$(rustc +nightly -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')" \
 && if [ "${llvm}" != "${LLVM_MAJOR}" ]; then \
      echo "error: ${RUST_NIGHTLY} uses LLVM ${llvm}, bpf-linker is built for LLVM ${LLVM_MAJOR}; set RUST_NIGHTLY or LLVM_MAJOR" >&2; \
      exit 1; \
    fi

RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    LLVM_PREFIX="/usr/lib/llvm-${LLVM_MAJOR}" \
    cargo install --locked bpf-linker --version "${BPF_LINKER_VERSION}" \
      --no-default-features --features "llvm-${LLVM_MAJOR}"

WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p watt-agent \
 && install -D -m 0755 target/release/watt-agent /out/watt-agent \
 && /out/watt-agent --version

# ---------------------------------------------------------------------------
# Runtime: Node 22 + the agent + the app. No compiler, no cargo, no LLVM.
FROM ${NODE_IMAGE} AS runtime
ARG APP_DIR=.
ARG APP_SERVER_DIR=.
ARG APP_STATIC_DIR=
ARG APP_PUBLIC_DIR=
ARG APP_CMD="node server.js"
ARG APP_USER=node
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

LABEL org.opencontainers.image.title="watt-agent app" \
      org.opencontainers.image.description="A Node.js app served by watt-agent: N workers behind one port, steered by eBPF" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"

COPY --from=builder /out/watt-agent /usr/local/bin/watt-agent

# undici 7 for the shared HTTP cache (--http-cache): its cache interceptor is
# what the workers use, and Node 20 and 22 bundle undici 6 (no Node exposes
# its own copy). An app with undici 7+ in its node_modules uses that one.
# Pinned to the version the tests run.
RUN npm install --prefix /usr/lib/watt-agent --no-audit --no-fund --omit=dev undici@7.30.3 \
 && npm cache clean --force

# The app, owned by root and read-only for the workers; only .next/cache
# (Next.js's own cache) is theirs to write. In Kubernetes an emptyDir is
# mounted there (deploy/base: /app/.next/cache; with APP_SERVER_DIR, move
# that mountPath to /app/<APP_SERVER_DIR>/.next/cache). The worker command
# goes to the agent's config file, so that Kubernetes `args` can still
# override it. deploy/lib/runtime-dryrun.sh runs this step for real.
RUN --mount=type=bind,from=app,target=/ctx \
    set -eu; \
    src="/ctx/${APP_DIR}"; \
    if [ ! -d "${src}" ]; then echo "error: APP_DIR=${APP_DIR} is not a directory of the app context" >&2; exit 1; fi; \
    mkdir -p /app; \
    cp -a "${src}/." /app/; \
    dir="$(realpath -m "/app/${APP_SERVER_DIR}")"; \
    case "${dir}/" in /app/*) ;; *) echo "error: APP_SERVER_DIR=${APP_SERVER_DIR} leaves /app" >&2; exit 1 ;; esac; \
    if [ ! -d "${dir}" ]; then echo "error: APP_SERVER_DIR=${APP_SERVER_DIR}: no such directory in APP_DIR" >&2; exit 1; fi; \
    if [ -n "${APP_STATIC_DIR}" ]; then \
      mkdir -p "${dir}/.next"; rm -rf "${dir}/.next/static"; \
      cp -a "/ctx/${APP_STATIC_DIR}" "${dir}/.next/static"; \
    fi; \
    if [ -n "${APP_PUBLIC_DIR}" ]; then \
      rm -rf "${dir}/public"; cp -a "/ctx/${APP_PUBLIC_DIR}" "${dir}/public"; \
    fi; \
    chown -R root:root /app; \
    chmod -R a+rX,go-w /app; \
    if [ -d "${dir}/.next" ]; then install -d -o "${APP_USER}" -g "${APP_USER}" -m 0755 "${dir}/.next/cache"; fi; \
    id "${APP_USER}" >/dev/null; \
    set -f; set -- ${APP_CMD}; set +f; \
    if [ "${1:-}" = node ] && [ -n "${2:-}" ] && [ "${2#-}" = "${2}" ] && [ ! -f "${dir}/${2}" ]; then \
      echo "error: ${2} is not in ${dir} (a Next.js monorepo build: set APP_SERVER_DIR to the app's path, e.g. apps/web)" >&2; \
      ls -la "${dir}" >&2; exit 1; \
    fi; \
    mkdir -p /etc/watt-agent /run/watt-agent; \
    { \
      echo "# Written by the Dockerfile from APP_CMD. The command line, WATT_* variables"; \
      echo "# and Kubernetes args override it."; \
      set -f; printf 'command = ['; sep=''; \
      for word in ${APP_CMD}; do \
        word="${word//\\/\\\\}"; word="${word//\"/\\\"}"; \
        printf '%s"%s"' "${sep}" "${word}"; sep=', '; \
      done; \
      printf ']\n'; \
      printf 'cwd = "%s"\nuser = "%s"\n' "${dir}" "${APP_USER}"; \
    } > /etc/watt-agent/watt.toml; \
    cat /etc/watt-agent/watt.toml

ENV NODE_ENV=production \
    WATT_CONFIG=/etc/watt-agent/watt.toml \
    RUNTIME_DIRECTORY=/run/watt-agent \
    PORT=3000
WORKDIR /app
EXPOSE 3000 9090

# Docker's own health check (Kubernetes ignores it and uses the probes in
# deploy/base/daemonset.yaml). Node's fetch, so no curl is needed.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://' + (process.env.WATT_ADMIN || '127.0.0.1:9090') + '/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# The agent stays root: it needs CAP_SETUID/CAP_SETGID to start the workers as
# APP_USER, and workers keep no capabilities (see docs/worker-contract.md).
# checkov:skip=CKV_DOCKER_3:the agent must start as root to run the workers as APP_USER; it holds only the capabilities the orchestrator grants, the app runs as node
ENTRYPOINT ["/usr/local/bin/watt-agent"]
CMD ["run"]
