#!/bin/busybox sh
# The agent smoke test of the arm64 guest (run by init-arm64.sh): the agent
# serves the bundled example app with 2 workers under 4 concurrent client
# loops of new connections (smoke-client.js; busybox's static wget crashes
# in this root). Passes when every request got the app's answer, both
# workers answered, and SIGTERM stops the agent with exit 0.
set -u
log=/tmp/agent.log
/watt/watt-agent run --workers 2 --port 3000 --admin off -- node /watt/server.js > "$log" 2>&1 &
agent=$!
# Both workers ready before the load starts (node starts slowly under
# emulation); bounded.
t=0
while [ "$(grep -c 'worker ready' "$log")" -lt 2 ] && [ "$t" -lt 180 ]; do
  if ! kill -0 "$agent" 2>/dev/null; then break; fi
  sleep 1
  t=$((t + 1))
done
node /watt/smoke-client.js http://127.0.0.1:3000/ > /tmp/client.txt 2>&1
clients=$?
cat /tmp/client.txt
kill -TERM "$agent"
wait "$agent"
rc=$?
echo "agent exit on SIGTERM: $rc"
if [ "$clients" -ne 0 ] || [ "$rc" -ne 0 ]; then
  # The client's summary goes last, so the matrix's tail of this file shows
  # what failed after the agent's log.
  tail -n 25 "$log"
  # Resets, listen drops and migration failures, if the kernel lost any.
  grep '^TcpExt' /proc/net/netstat | awk 'NR==1{split($0,h)} NR==2{for(i=2;i<=NF;i++) if ($i != 0 && h[i] ~ /Listen|Migrate|Abort|Reset/) print h[i], $i}'
  echo "client (exit $clients):"; cat /tmp/client.txt; echo "FAIL"; exit 1
fi
echo "PASS: 200 of 200 requests answered by both workers; clean stop"
