// The example app `cargo xtask run` serves: an unmodified node:http server.
// It listens on $PORT like any app would; watt-agent's preload hands it the
// worker's listener, so four copies share one port.
'use strict';
const http = require('node:http');

const worker = process.env.WATT_WORKER_ID ?? '-';
let served = 0;

const server = http.createServer((req, res) => {
  served += 1;
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/block') {
    // Blocks this worker's event loop without using CPU (try it: the other
    // workers keep answering while this one sleeps).
    const ms = Math.min(Number(url.searchParams.get('ms') ?? 1000), 10000);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
  }
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ worker, pid: process.pid, served }) + '\n');
});

server.listen(Number(process.env.PORT ?? 3000), () => {
  console.log(`worker ${worker} (pid ${process.pid}) listening`);
});
