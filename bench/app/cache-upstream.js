'use strict';
// The upstream API of `cargo xtask bench cache`: every answer takes a fixed
// delay (as a real API's database call would), carries a ~2 KiB JSON body
// and `Cache-Control: max-age=60`, and is counted. Plain node:http.
//
//   GET /count      {"total":N} (not counted)
//   GET /item/K     the item's JSON after UPSTREAM_DELAY_MS
//
// Environment: UPSTREAM_PORT (0: any; printed as "listening <port>"),
// UPSTREAM_DELAY_MS (default 20), UPSTREAM_BODY_BYTES (default 2048),
// UPSTREAM_MAX_AGE (default 60).
const http = require('http');

const delay = Number(process.env.UPSTREAM_DELAY_MS || 20);
const bodyBytes = Number(process.env.UPSTREAM_BODY_BYTES || 2048);
const maxAge = Number(process.env.UPSTREAM_MAX_AGE || 60);

// The body of item `k`: JSON padded to about bodyBytes.
function body(k) {
  const item = { id: k, name: `item ${k}`, price: (k * 7919) % 10000, tags: ['a', 'b'], attributes: [] };
  let i = 0;
  while (JSON.stringify(item).length < bodyBytes - 40) {
    item.attributes.push({ key: `attribute-${i}`, value: `value ${k}-${i}` });
    i += 1;
  }
  return Buffer.from(JSON.stringify(item));
}

const bodies = new Map();
let total = 0;
const server = http.createServer((req, res) => {
  if (req.url === '/count') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ total }));
    return;
  }
  total += 1;
  const k = req.url.startsWith('/item/') ? req.url.slice(6) : '0';
  if (!bodies.has(k)) bodies.set(k, body(k));
  setTimeout(() => {
    res.setHeader('content-type', 'application/json');
    res.setHeader('cache-control', `max-age=${maxAge}`);
    res.end(bodies.get(k));
  }, delay);
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.env.UPSTREAM_PORT) || 0, '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
