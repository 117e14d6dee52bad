'use strict';
// Preload (`node --require`) for the peers benchmark's Node cluster workers,
// PM2 workers and plain reusePort processes. It adds to the unchanged app
// what a careful user adds, so every arm stops as gracefully as it can:
//
//   SIGTERM / SIGINT (only when the app has no handler of its own): stop
//   accepting, let in-flight requests finish, close idle keep-alive
//   connections, exit 0 (hard exit after 10 s). PM2 stops with SIGINT, the
//   launchers here with SIGTERM.
//   BENCH_REUSEPORT=1: every TCP listen gets `reusePort: true` (Node 22.12+),
//   i.e. the kernel's SO_REUSEPORT hash spreads connections over processes.
//   BENCH_NOTIFY=1 with an IPC channel: tells the parent once it listens.
//   BENCH_INFLIGHT_LOG=dir: when the process exits with a non-zero code (a
//   crash: `process.exit(1)`, an uncaught exception), append one line to
//   dir/<pid>.log: the time (ms since the epoch) and the requests in flight
//   on its HTTP servers then, e.g. `1765200000000 GET /crash GET /`: what
//   the crash took with it, as watt-agent's shim reports it.
// CommonJS, no dependencies.
const net = require('net');

const servers = new Set();
const origListen = net.Server.prototype.listen;

const inflightDir = process.env.BENCH_INFLIGHT_LOG;
const inflight = new Set();

net.Server.prototype.listen = function listen(...args) {
  servers.add(this);
  // An http.Server: count its requests from the moment they arrive (before
  // the app's handler, which may exit the process) until their response
  // ends or their connection closes.
  if (inflightDir && typeof this.setTimeout === 'function' && 'maxHeadersCount' in this) {
    this.prependListener('request', (req, res) => {
      const entry = `${req.method} ${req.url}`;
      const item = { entry };
      inflight.add(item);
      res.once('close', () => inflight.delete(item));
    });
  }
  if (process.env.BENCH_REUSEPORT === '1') args = withReusePort(args);
  if (process.env.BENCH_NOTIFY === '1' && typeof process.send === 'function') {
    this.once('listening', () => process.send({ bench: 'listening', pid: process.pid }));
  }
  return origListen.apply(this, args);
};

// listen(port[, host][, backlog][, cb]) or listen(options[, cb]) -> options with reusePort.
function withReusePort(args) {
  const a = args[0];
  if (a !== null && typeof a === 'object') {
    if (a._handle || a.handle || typeof a.fd === 'number' || a.path) return args;
    return [{ ...a, reusePort: true }, ...args.slice(1)];
  }
  if (typeof a === 'number' || (typeof a === 'string' && /^\d+$/.test(a))) {
    const opts = { port: Number(a), reusePort: true };
    let i = 1;
    if (typeof args[i] === 'string') opts.host = args[i++];
    if (typeof args[i] === 'number') opts.backlog = args[i++];
    return [opts, ...args.slice(i)];
  }
  return args;
}

if (inflightDir) {
  process.on('exit', (code) => {
    if (code === 0) return;
    const line = [String(Date.now()), ...[...inflight].map((i) => i.entry)].join(' ');
    try {
      require('fs').appendFileSync(require('path').join(inflightDir, `${process.pid}.log`), `${line}\n`);
    } catch {}
  });
}

let stopping = false;
function stop(signal) {
  // Another listener than ours: the app handles the signal itself.
  if (stopping || process.listenerCount(signal) > 1) return;
  stopping = true;
  const open = [...servers].filter((s) => s.listening);
  let left = open.length;
  if (left === 0) process.exit(0);
  for (const s of open) {
    s.close(() => {
      if (--left === 0) process.exit(0);
    });
    if (typeof s.closeIdleConnections === 'function') {
      s.closeIdleConnections();
      setInterval(() => s.closeIdleConnections(), 50).unref();
    }
  }
  setTimeout(() => process.exit(0), 10_000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
