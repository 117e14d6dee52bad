#!/usr/bin/env bash
# Where a keep-alive pool's requests go after keep-alive release moved its
# connections: 4 workers of the test app under the release build of the
# agent, Node's http.Agent keeping 50 connections (`scheduling: "fifo"`,
# tests/fixtures/clients/pool.js), 300 requests/s for 20 s, and one worker
# blocked for 1 s (SIGUSR2) 5 s in. One arm per set of agent flags, one
# after another; per arm it prints each worker's share of the requests per
# 2 s window (the blocked one starred), the p99 of each window, the
# failures, the connections the agent released, and how many connections
# each worker served in the last 5 s.
#
#   cargo build --release && sudo bash bench/pool-shares.sh
#
# Traffic goes to loopback only; every process it starts is stopped by pid
# on exit.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
agent_bin=${WATT_AGENT_BIN:-$root/target/release/watt-agent}
[[ -x $agent_bin ]] || { echo "pool-shares: no agent at $agent_bin (cargo build --release)" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "pool-shares: the agent loads eBPF: run as root" >&2; exit 2; }
out=$(mktemp -d /tmp/pool-shares.XXXXXX)
agent_pid=
blocker=
cleanup() {
  [[ -n $blocker ]] && kill "$blocker" 2>/dev/null
  [[ -n $agent_pid ]] && kill -TERM "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  rm -rf "$out"
}
trap cleanup EXIT

free_port() {
  node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'
}

# One arm: name, then the agent's flags.
arm() {
  local name=$1; shift
  local port admin
  port=$(free_port)
  admin=$(free_port)
  "$agent_bin" run --workers 4 --port "$port" --admin "127.0.0.1:$admin" "$@" \
    -- node "$root/tests/fixtures/apps/test-app.js" >"$out/$name.log" 2>&1 &
  agent_pid=$!
  for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.2; done
  # Warm every worker up (a cold worker's first turns look like stalls).
  for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$port/" >/dev/null || true; done
  local victim
  victim=$(pgrep -P "$agent_pid" | head -1)
  (sleep 5; kill -USR2 "$victim"; date +%s%3N >"$out/$name.blocked_at") &
  blocker=$!
  timeout 60 node "$root/tests/fixtures/clients/pool.js" agent "$port" 50 300 6000 >"$out/$name.jsonl"
  wait "$blocker"; blocker=
  sleep 1.5 # the agent's metrics follow once a second
  local released
  released=$(curl -s "http://127.0.0.1:$admin/metrics" | awk '/^watt_released_connections_total /{print $2}')
  kill -TERM "$agent_pid"; wait "$agent_pid" || true; agent_pid=
  NAME=$name FLAGS="$*" VICTIM=$victim RELEASED=${released:-0} BLOCKED_AT=$(cat "$out/$name.blocked_at") \
    node -e '
      const fs = require("fs");
      const rows = fs.readFileSync(0, "utf8").trim().split("\n").map((l) => JSON.parse(l));
      const victim = Number(process.env.VICTIM);
      const t0 = rows[0].sent;
      const pids = [...new Set(rows.filter((r) => r.pid).map((r) => r.pid))].sort();
      const failed = rows.filter((r) => !r.ok);
      console.log(`== ${process.env.NAME} (${process.env.FLAGS || "defaults"}): ${rows.length} requests, ` +
        `${failed.length} failed, ${process.env.RELEASED} connections released; ` +
        `worker ${victim} (*) blocked 1 s at ${((Number(process.env.BLOCKED_AT) - t0) / 1000).toFixed(1)} s`);
      const windows = new Map();
      for (const r of rows) {
        const w = Math.floor((r.sent - t0) / 2000);
        if (!windows.has(w)) windows.set(w, { by: new Map(), ms: [] });
        const x = windows.get(w);
        if (r.ok) { x.by.set(r.pid, (x.by.get(r.pid) ?? 0) + 1); x.ms.push(r.ms); }
      }
      for (const [w, x] of [...windows].sort((a, b) => a[0] - b[0])) {
        const total = [...x.by.values()].reduce((a, b) => a + b, 0) || 1;
        const shares = pids.map((p) => `${p === victim ? "*" : " "}${((100 * (x.by.get(p) ?? 0)) / total).toFixed(1).padStart(5)}%`);
        x.ms.sort((a, b) => a - b);
        const p99 = x.ms.length ? x.ms[Math.max(0, Math.ceil(x.ms.length * 0.99) - 1)] : 0;
        console.log(`  ${String(2 * w).padStart(3)}-${String(2 * w + 2).padStart(3)} s ${shares.join(" ")}   p99 ${p99} ms`);
      }
      const last = new Map(pids.map((p) => [p, new Set()]));
      for (const r of rows) if (r.ok && r.sent - t0 >= 15000) last.get(r.pid)?.add(r.local);
      console.log("  connections serving in the last 5 s, per worker: " +
        pids.map((p) => `${p === victim ? "*" : ""}${last.get(p).size}`).join(" "));
      if (failed.length) console.log("  failures: " + [...new Set(failed.map((r) => r.error))].join(", "));
    ' <"$out/$name.jsonl"
}

arm release
arm release-age-5s --max-connection-age 5s
arm release-stall-5ms --stall-after 5ms
arm release-off --keepalive-release=false
