// The client of the arm64 guest's smoke test (smoke-arm64.sh): 4 concurrent
// loops of 50 requests, each on a new connection (agent: false), so the
// program steers every one. Prints one JSON line; exit 0 only when every
// request got a 200 from the app and both workers answered.
'use strict';
const http = require('node:http');

const url = process.argv[2] ?? 'http://127.0.0.1:3000/';
const loops = 4;
const perLoop = 50;

function once() {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: 10000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => {
        let worker = null;
        try {
          worker = JSON.parse(body).worker;
        } catch {}
        resolve({ status: res.statusCode, worker });
      });
      res.on('error', (e) => resolve({ error: e.code ?? String(e) }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ error: e.code ?? e.message }));
  });
}

async function loop(results) {
  for (let i = 0; i < perLoop; i += 1) results.push(await once());
}

(async () => {
  const results = [];
  await Promise.all(Array.from({ length: loops }, () => loop(results)));
  const ok = results.filter((r) => r.status === 200 && r.worker !== null);
  const workers = [...new Set(ok.map((r) => r.worker))].sort();
  const errors = results.filter((r) => r.error).map((r) => r.error);
  const summary = { requests: results.length, ok: ok.length, workers, errors };
  console.log(JSON.stringify(summary));
  process.exit(ok.length === loops * perLoop && workers.length === 2 ? 0 : 1);
})();
