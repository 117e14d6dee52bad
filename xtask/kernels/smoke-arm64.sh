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
node /watt/smoke-client.js http://127.0.0.1:3000/
clients=$?
kill -TERM "$agent"
wait "$agent"
rc=$?
echo "agent exit on SIGTERM: $rc"
if [ "$clients" -ne 0 ] || [ "$rc" -ne 0 ]; then
  echo "FAIL"; tail -n 40 "$log"; exit 1
fi
echo "PASS: 200 of 200 requests answered by both workers; clean stop"
