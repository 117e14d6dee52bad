'use strict';
// watt-agent worker preload, loaded with `--require` through NODE_OPTIONS.
// The contract it implements is docs/worker-contract.md: fd 3 is this worker's
// already-listening SO_REUSEPORT socket, fd WATT_NOTIFY_FD is a pipe for
// sd_notify-style `KEY=VALUE` lines. The app's own `server.listen(PORT)` is
// turned into `listen({ fd: 3 })`, so unmodified apps (node:http, https, http2,
// Express, Fastify, Next.js standalone) serve from the agent's socket.
// CommonJS, no dependencies, Node 20 and 22.

const env = process.env;

// Only the process the agent started (systemd's LISTEN_PID check), and only
// its main thread: anything else must see no trace of the shim.
if (Number(env.LISTEN_FDS) >= 1 && env.LISTEN_PID === String(process.pid) && isMainThread()) {
  activate();
}

function isMainThread() {
  try {
    return require('worker_threads').isMainThread;
  } catch {
    return true;
  }
}

function activate() {
  const fs = require('fs');
  const net = require('net');

  const LISTEN_FD = 3;
  const wattPort = toPort(env.WATT_PORT);
  const backlog = Number(env.WATT_BACKLOG) > 0 ? Number(env.WATT_BACKLOG) : undefined;
  const notifyFd = /^\d+$/.test(env.WATT_NOTIFY_FD || '') ? Number(env.WATT_NOTIFY_FD) : -1;
  const maxRequests = Number(env.WATT_MAX_REQUESTS_PER_SOCKET) > 0 ? Number(env.WATT_MAX_REQUESTS_PER_SOCKET) : 0;
  const maxAgeMs = Number(env.WATT_MAX_CONNECTION_AGE_MS) > 0 ? Number(env.WATT_MAX_CONNECTION_AGE_MS) : 0;
  let inFlightFd = /^\d+$/.test(env.WATT_IN_FLIGHT_FD || '') ? Number(env.WATT_IN_FLIGHT_FD) : -1;
  const inFlightOffset = /^\d+$/.test(env.WATT_IN_FLIGHT_OFFSET || '') ? Number(env.WATT_IN_FLIGHT_OFFSET) : -1;
  let quarantineFd = /^\d+$/.test(env.WATT_QUARANTINE_FD || '') ? Number(env.WATT_QUARANTINE_FD) : -1;
  if (inFlightOffset < 0) inFlightFd = -1;

  // Scrub the environment first: children the app spawns inherit process.env,
  // and a grandchild that saw LISTEN_* or the --require would try to use fds
  // that are not its own. (fds 3 and 4 themselves do not leak: Node marks
  // inherited fds close-on-exec at startup; seen with strace on 20 and 22.)
  const shimPath = env.WATT_SHIM;
  for (const k of ['LISTEN_FDS', 'LISTEN_PID', 'LISTEN_FDNAMES', 'WATT_NOTIFY_FD', 'WATT_BACKLOG', 'WATT_SHIM', 'WATT_MAX_REQUESTS_PER_SOCKET', 'WATT_MAX_CONNECTION_AGE_MS', 'WATT_IN_FLIGHT_FD', 'WATT_IN_FLIGHT_OFFSET', 'WATT_QUARANTINE_FD']) {
    delete env[k];
  }
  if (shimPath && env.NODE_OPTIONS !== undefined) {
    // The agent appends `--require <path>` unquoted; accept a quoted path and
    // `--require=<path>` too. Everything else the user put there stays as is.
    const p = shimPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const re = new RegExp(`(^|\\s+)--require(?:\\s+|=)(?:${p}|"${p}")(?=\\s|$)`, 'g');
    const rest = env.NODE_OPTIONS.replace(re, '').trim();
    if (rest) env.NODE_OPTIONS = rest;
    else delete env.NODE_OPTIONS;
  }
  // The shared HTTP cache (--http-cache): outgoing fetch/undici requests.
  const httpCache = env.WATT_HTTP_CACHE;
  delete env.WATT_HTTP_CACHE;
  if (httpCache) {
    try {
      const opts = JSON.parse(httpCache);
      // For the Next.js cache handler (next_cache_handler.js, which the
      // app's cache-handler.js requires from here): the store's socket,
      // kept out of the environment like the rest.
      globalThis[Symbol.for('watt-agent.http-cache')] = Object.freeze({
        socket: opts.socket,
        timeoutMs: opts.timeoutMs,
        maxEntrySize: opts.maxEntrySize,
        nextCacheHandler: require('path').join(__dirname, 'next_cache_handler.js'),
      });
      require(require('path').join(__dirname, 'http_cache.js')).install(opts);
    } catch (err) {
      console.warn(`watt-agent http cache: not installed in this worker: ${err && err.message}`);
    }
  }
  if (wattPort === null) return; // nothing to manage without a port

  function notify(line) {
    if (notifyFd < 0) return false;
    try {
      fs.writeSync(notifyFd, line + '\n');
      return true;
    } catch {
      return false; // the agent closed its end (EPIPE) or the fd is gone: nothing to tell
    }
  }

  // Errors accept() returns while the agent runs its queue rescue
  // (shutdown(SHUT_RD) then listen() again on its dup of this socket): the
  // listener is briefly not listening and comes back by itself. libuv 1.45+
  // (Node >= 20.3, 22) drops accept errors before JS; older libuv hands them
  // to Node, which emits 'error' (syscall 'accept') and would crash the app.
  const RESCUE_ACCEPT_ERRORS = new Set(['EINVAL', 'ENOTCONN', 'ECONNABORTED']);

  let managed = null; // the server that got fd 3
  const sessions = new Set(); // its open HTTP/2 sessions
  let extra = 0; // later listens on WATT_PORT, moved to abstract unix sockets
  const origListen = net.Server.prototype.listen;

  net.Server.prototype.listen = function listen(...args) {
    const target = tcpTarget(args);
    // Already listening: let Node throw ERR_SERVER_ALREADY_LISTEN as usual.
    if (target === null || this._handle || target.port === 0) return origListen.apply(this, args);
    const cb = typeof args[args.length - 1] === 'function' ? args[args.length - 1] : undefined;

    if (target.port !== wattPort) {
      if (managed === null) {
        // The agent logs it once, naming both ports.
        notify(`WATT_OTHER_PORT=${target.port}`);
      }
      return origListen.apply(this, args);
    }

    if (managed === null) {
      managed = this;
      manage(this);
      // The host is ignored: the inherited socket is already bound to the
      // agent's address (and Next.js standalone passes HOSTNAME, which
      // Kubernetes sets to the pod name). With `fd`, Node 20/22 take the
      // backlog only from the second argument, not from options.backlog;
      // without it Node re-listens with 511 and overrides the agent's.
      const opts = { fd: LISTEN_FD, backlog };
      if (target.signal) opts.signal = target.signal;
      return cb ? origListen.call(this, opts, backlog, cb) : origListen.call(this, opts, backlog);
    }

    // A second server on WATT_PORT in the same process: Fastify listens once
    // per address `localhost` resolves to (127.0.0.1, then ::1 on a second
    // server). fd 3 is taken. Binding for real would put a TCP listener beside
    // the agent's (e.g. [::1]:PORT: the first worker gets it, the others get
    // EADDRINUSE, which Fastify ignores), outside its steering. Failing the
    // listen breaks apps that do not ignore it. A private abstract unix socket
    // gives the server a real handle, so the callback, 'listening', address()
    // and close() all behave; it takes no TCP port, leaves no file behind and
    // nothing connects to it. (Linux abstract namespace: a leading NUL. Fastify
    // logs it as "Server listening at \u0000watt-<pid>-<n>".)
    extra += 1;
    const path = `\0watt-${process.pid}-${extra}`;
    const opts = { path };
    if (target.signal) opts.signal = target.signal;
    return cb ? origListen.call(this, opts, cb) : origListen.call(this, opts);
  };

  function manage(server) {
    // http.Server has the property from its constructor; https.Server lacks
    // it until set but honours it (same HTTP/1 connection code).
    if (maxRequests && (server instanceof require('http').Server || server instanceof require('https').Server)) {
      // Keep-alive clients reconnect after this many requests and get
      // re-steered. An app's own lower limit wins.
      const own = server.maxRequestsPerSocket;
      if (!(own > 0 && own < maxRequests)) server.maxRequestsPerSocket = maxRequests;
    }

    if (maxAgeMs) limitAge(server);
    markIdle(server);

    trackInFlight(server);

    // HTTP/2 sessions are not connections closeIdleConnections() knows about:
    // track them so SIGTERM can send GOAWAY. ('session' is emitted only by
    // http2 servers.)
    server.on('session', (session) => {
      sessions.add(session);
      session.once('close', () => sessions.delete(session));
    });

    // Swallow only the rescue-window accept errors; every other error goes
    // through the normal emit (and crashes the app if it has no listener).
    // Also sees every connection the app takes over (an upgrade to
    // WebSocket, a CONNECT tunnel): it is never idle again (`markIdle`).
    // Wrapping emit rather than listening: Node destroys such a socket when
    // the app has no listener of its own, and one of ours would change that.
    const emit = server.emit;
    server.emit = function (event, err, socket) {
      if (event === 'error' && err && err.syscall === 'accept' && RESCUE_ACCEPT_ERRORS.has(err.code)) return false;
      if ((event === 'upgrade' || event === 'connect') && socket) busy(socket, Infinity);
      // A held request never reaches the app (nor the in-flight count).
      // ('checkContinue' and 'checkExpectation' carry a request too, when
      // the app listens for them.)
      if ((event === 'request' || event === 'checkContinue' || event === 'checkExpectation') && err && socket && refuseHeld(err.method, err.url, socket)) return true;
      if (event === 'stream' && err && socket && refuseHeld(socket[':method'], socket[':path'], err)) return true;
      return emit.apply(this, arguments);
    };

    server.once('listening', () => {
      notify('WATT_IDLE_MARKS=nodelay');
      notify('READY=1');
      // Take over SIGTERM only now: before the app serves, and if it never
      // does, SIGTERM keeps Node's default (die).
      process.prependListener('SIGTERM', onSigterm);
      server.once('close', () => {
        if (!stopping) process.removeListener('SIGTERM', onSigterm);
      });
    });
  }

  // Bounded connection age (WATT_MAX_CONNECTION_AGE_MS). Pools that never
  // reconnect (nginx upstream keepalive, an ALB) are steered once, when the
  // connection is made; closing old connections at a request boundary makes
  // them connect again and be steered again. Never mid-request: HTTP/1 gets
  // `Connection: close` on the response of the first request that starts
  // after the age (Node ends the socket once that response is sent), an
  // idle connection is left alone until its next request comes (as Envoy's
  // max_connection_duration drains); HTTP/2 gets GOAWAY when the session
  // reaches the age (session.close(): open streams finish, no new ones).
  const BORN = Symbol('watt.born');
  const MAX_TIMER_MS = 2 ** 31 - 1; // larger delays fire at once in Node

  function limitAge(server) {
    const born = (socket) => {
      socket[BORN] = performance.now();
    };
    // https and http2 servers emit both: the TCP socket, then the TLS
    // socket that requests see as req.socket.
    server.on('connection', born);
    server.on('secureConnection', born);
    // Prepended so it runs before the app's handler writes any header.
    server.prependListener('request', (req, res) => {
      // HTTP/2 compatibility requests (httpVersionMajor 2) are the
      // session's business, below.
      if (req.httpVersionMajor !== 1 || !req.socket) return;
      const now = performance.now();
      if (req.socket[BORN] === undefined) req.socket[BORN] = now;
      // Read by Node when the headers are written: `Connection: close` and
      // the socket ends after this response (an app that sets its own
      // `Connection: keep-alive` header overrides it).
      if (now - req.socket[BORN] >= maxAgeMs) res.shouldKeepAlive = false;
    });
    server.on('session', (session) => {
      const bornAt = performance.now();
      let timer = null;
      const arm = () => {
        const left = maxAgeMs - (performance.now() - bornAt);
        if (left > 0) {
          timer = setTimeout(arm, Math.min(left, MAX_TIMER_MS));
          timer.unref(); // an old session must not keep the worker alive
        } else {
          session.close();
        }
      };
      arm();
      session.once('close', () => clearTimeout(timer));
    });
  }

  // Keep-alive release (docs/worker-contract.md): while this worker's event
  // loop is blocked, the agent closes its idle keep-alive connections so
  // their clients reconnect and are steered to another worker. Only the
  // app knows whether a response is still being written (a stream, a
  // response waiting on I/O), and a blocked loop cannot say so when asked,
  // so it is said ahead of time, in the socket itself, where the agent
  // reads it with getsockopt: TCP_NODELAY off means "no response in
  // progress". It is on from the connection until its first response
  // ends, while any request on it is unanswered, and for good once the
  // app takes the socket over. Nagle's algorithm only delays data sent
  // while earlier data is unacknowledged, and an idle connection sends
  // nothing, so the flag costs the app nothing but one setsockopt per
  // change. Plain HTTP/1 only: TLS and HTTP/2 connections keep the flag on
  // (never released).
  const IN_FLIGHT = Symbol('watt.inFlight');

  function busy(socket, count) {
    socket[IN_FLIGHT] = count;
    socket.setNoDelay(true);
  }

  function markIdle(server) {
    // Every kind of server: a TLS or HTTP/2 connection must never read as
    // idle (a socket's TCP_NODELAY may start off).
    server.on('connection', (socket) => busy(socket, Infinity));
    // Only plain HTTP/1 is marked idle between requests. (A 'request'
    // listener on an http2 server would also switch on its compat layer
    // for an app that serves 'stream' events only.)
    if (!(server instanceof require('http').Server)) return;
    // Prepended: the flag is on before the app's handler writes anything.
    server.prependListener('request', (req, res) => {
      const socket = req.socket;
      if (req.httpVersionMajor !== 1 || !socket || socket.encrypted) return;
      const before = socket[IN_FLIGHT];
      // From the connection to its first request: Infinity, now counted.
      busy(socket, before === undefined || before === Infinity ? 1 : before + 1);
      let done = false;
      const end = () => {
        if (done) return;
        done = true;
        socket[IN_FLIGHT] -= 1;
        if (socket[IN_FLIGHT] === 0 && !socket.destroyed) socket.setNoDelay(false);
      };
      res.once('finish', end);
      res.once('close', end);
    });
  }

  // Crash attribution (WATT_CRASH_* in docs/worker-contract.md): when the
  // process dies of an uncaught error or exits non-zero, tell the agent what
  // the managed server was serving, so its log says which request crashed it.
  const inFlight = new Set(); // { method, url } of requests not yet closed
  const CRASH_MAX_REQUESTS = 16;
  const CRASH_MAX_URL = 200;
  const CRASH_MAX_ERROR = 500;
  let uncaught = null; // { origin, error }: the last uncaught error seen
  let crashReported = false;

  // Requests in flight, for the agent's table (WATT_IN_FLIGHT_FD): the
  // agent sends new connections mostly to the workers serving the fewest.
  // The count goes into a page the agent maps, at this worker's offset: a
  // new request is written at once (a handler may block the loop right
  // away, and the agent should see it serving meanwhile); finished ones
  // are written once per event-loop turn (setImmediate coalesces them).
  const inFlightBuf = Buffer.alloc(4);
  let inFlightWritten = 0;
  let inFlightFlush = null;

  function writeInFlight() {
    inFlightFlush = null;
    const n = inFlight.size;
    if (inFlightFd < 0 || n === inFlightWritten) return;
    inFlightBuf.writeUInt32LE(n, 0);
    try {
      fs.writeSync(inFlightFd, inFlightBuf, 0, 4, inFlightOffset);
      inFlightWritten = n;
    } catch {
      inFlightFd = -1; // not the agent's board after all: stop writing
    }
  }

  function requestStarted(entry) {
    inFlight.add(entry);
    writeInFlight();
  }

  function requestEnded(entry) {
    inFlight.delete(entry);
    if (inFlightFd >= 0 && !inFlightFlush) {
      inFlightFlush = setImmediate(writeInFlight);
      inFlightFlush.unref();
    }
  }

  function trackInFlight(server) {
    // Prepended: a handler that throws synchronously must find its own
    // request already tracked. 'close' follows both finish and abort.
    // On an http2 server a 'request' listener would switch on the compat
    // layer for an app that serves 'stream' events only, so it is added
    // there only if the app has one (it then sees allowHTTP1 requests);
    // HTTP/2 requests, compat or not, are counted as streams.
    const http1 = server instanceof require('http').Server || server instanceof require('https').Server;
    if (http1 || server.listenerCount('request') > 0) {
      server.prependListener('request', (req, res) => {
        if (req.httpVersionMajor !== 1) return;
        requestStarted(req);
        res.once('close', () => requestEnded(req));
      });
    }
    server.prependListener('stream', (stream, headers) => {
      const entry = { method: headers[':method'], url: headers[':path'] };
      requestStarted(entry);
      stream.once('close', () => requestEnded(entry));
    });
  }

  // Quarantine (WATT_QUARANTINE_FD): requests the agent holds because
  // they were in flight when workers crashed, in a page it shares with
  // every worker (quarantine/page.rs). The 8-byte header is read once per
  // event-loop turn that serves requests (a pread costs 1-2 us: per
  // request it would show at high rates), and the list only when its
  // sequence changed, so a hold written before a turn applies to every
  // request of that turn. A held request gets 503 with Retry-After, here,
  // before the app sees it.
  const heldHeader = Buffer.alloc(8);
  let heldSeq = -1;
  let held = new Map(); // request line -> until (ms since the epoch)
  let heldRead = false; // this turn

  function readHeld() {
    if (quarantineFd < 0 || heldRead) return held;
    heldRead = true;
    setImmediate(() => {
      heldRead = false;
    }).unref();
    try {
      fs.readSync(quarantineFd, heldHeader, 0, 8, 0);
      const seq = heldHeader.readUInt32LE(0);
      if (seq === heldSeq || seq % 2 === 1) return held; // unchanged, or being written
      const text = Buffer.alloc(Math.min(heldHeader.readUInt32LE(4), 4088));
      if (text.length > 0) fs.readSync(quarantineFd, text, 0, text.length, 8);
      fs.readSync(quarantineFd, heldHeader, 0, 4, 0);
      if (heldHeader.readUInt32LE(0) !== seq) return held; // rewritten meanwhile: next time
      // Kept only if whole (every line ends, every time is a number): a
      // torn read would otherwise stay until the next change.
      const lines = text.toString('utf8').split('\n');
      if (lines.pop() !== '') return held;
      const next = new Map();
      for (const line of lines) {
        const space = line.indexOf(' ');
        const until = Number(line.slice(0, space));
        if (space <= 0 || !Number.isFinite(until)) return held;
        next.set(line.slice(space + 1), until);
      }
      held = next;
      heldSeq = seq;
    } catch {
      quarantineFd = -1; // not the agent's page after all: stop reading
    }
    return held;
  }

  // `res` is an HTTP/1 (or HTTP/2 compat) response, or an HTTP/2 stream.
  function refuseHeld(method, url, res) {
    const list = readHeld();
    if (list.size === 0) return false;
    const until = list.get(`${oneLine(String(method), 20)} ${oneLine(String(url), CRASH_MAX_URL)}`);
    const now = Date.now();
    if (!(until > now)) return false;
    const retryAfter = String(Math.ceil((until - now) / 1000));
    const body = `quarantined by watt-agent until ${new Date(until).toISOString()}: this request was in flight when workers crashed\n`;
    try {
      if (typeof res.respond === 'function') {
        res.respond({ ':status': 503, 'retry-after': retryAfter, 'content-type': 'text/plain' });
        res.end(body);
      } else {
        res.writeHead(503, {
          'retry-after': retryAfter,
          'content-type': 'text/plain',
          'content-length': Buffer.byteLength(body),
        });
        res.end(body);
      }
    } catch {
      // The stream or socket is already gone: nothing to answer.
    }
    return true;
  }

  // The monitor observes without handling: Node still dies unless the app
  // listens to 'uncaughtException'. Promise rejections arrive here too
  // (origin 'unhandledRejection') when they are about to kill the process.
  process.on('uncaughtExceptionMonitor', (error, origin) => {
    uncaught = { origin, error };
    if (process.listenerCount('uncaughtException') === 0) reportCrash(origin);
  });
  // process.exit(1), process.exitCode, or an app's 'uncaughtException'
  // handler that exits non-zero. Exit code 0 is a clean stop: nothing to say.
  process.on('exit', (code) => {
    if (code !== 0) reportCrash(uncaught ? uncaught.origin : 'exit');
  });

  function reportCrash(origin) {
    if (crashReported) return;
    crashReported = true;
    const lines = [`WATT_CRASH=${origin}`];
    if (uncaught) lines.push(`WATT_CRASH_ERROR=${oneLine(errorText(uncaught.error), CRASH_MAX_ERROR)}`);
    // Newest first: a handler that threw synchronously is serving the newest.
    const requests = [...inFlight].reverse();
    for (const r of requests.slice(0, CRASH_MAX_REQUESTS)) {
      lines.push(`WATT_CRASH_REQUEST=${oneLine(String(r.method), 20)} ${oneLine(String(r.url), CRASH_MAX_URL)}`);
    }
    if (requests.length > CRASH_MAX_REQUESTS) lines.push(`WATT_CRASH_MORE=${requests.length - CRASH_MAX_REQUESTS}`);
    notify(lines.join('\n')); // one write: the agent reads the report whole
  }

  // The error's first line: `TypeError: x is not a function` (the stack
  // stays in the worker's stderr, which the agent logs anyway).
  function errorText(error) {
    try {
      const text = error instanceof Error ? String(error) : require('util').inspect(error);
      return text.split('\n', 1)[0];
    } catch {
      return 'an error that cannot be printed';
    }
  }

  // Without control characters or line separators (one report line stays
  // one line), at most `max` characters.
  function oneLine(text, max) {
    const line = text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, '');
    return line.length > max ? `${line.slice(0, max)}…` : line;
  }

  // Graceful stop, only if the app did not take SIGTERM itself. A listener
  // installed with process.on replaces Node's default "die on SIGTERM", so:
  // no app listener -> we drain and exit 0; app listener -> we do nothing and
  // the app decides. We are prepended, so an app's process.once() listener is
  // still counted when we run. (The agent SIGKILLs after its kill timeout.)
  let stopping = false;
  function onSigterm() {
    if (process.listenerCount('SIGTERM') > 1 || stopping) return;
    stopping = true;
    notify('STOPPING=1');
    const server = managed;
    // close(): stop accepting; the callback runs once every connection has
    // ended, i.e. in-flight requests are done.
    server.close(() => process.exit(0));
    // GOAWAY: no new streams, open ones finish, then the session closes.
    for (const session of sessions) session.close();
    if (typeof server.closeIdleConnections === 'function') {
      // Keep-alive connections hold close() open. Those idle now are closed
      // now; ones that finish a request later become idle later, so repeat.
      server.closeIdleConnections();
      setInterval(() => server.closeIdleConnections(), 50).unref();
    }
  }

  // Returns { port, signal } for a TCP listen (Node's own argument rules), or
  // null for unix paths, fds and handles.
  function tcpTarget(args) {
    const a = args[0];
    if (a !== null && typeof a === 'object') {
      // (handle[, backlog][, cb]): a server/socket, { handle }, { _handle }, { fd }
      if (a._handle || a.handle || (typeof a.fd === 'number' && a.fd >= 0)) return null;
      if (typeof a.port === 'number' || typeof a.port === 'string') {
        const port = toPort(a.port);
        return port === null ? null : { port, signal: a.signal };
      }
      if (a.path) return null; // (options) with a unix path
      return { port: 0 }; // { } or { port: undefined }: random port
    }
    if (typeof a === 'number' || typeof a === 'string') {
      const port = toPort(a); // a non-numeric string is a unix path
      return port === null ? null : { port };
    }
    return { port: 0 }; // () or (cb): random port
  }
}

// Node accepts ports as numbers or numeric strings ("3000").
function toPort(v) {
  if (typeof v === 'string' && v.trim() === '') return null;
  const n = Number(v);
  return Number.isInteger(n) && n >= 0 && n <= 65535 ? n : null;
}
