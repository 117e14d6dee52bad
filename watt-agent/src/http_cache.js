'use strict';
// watt-agent's shared HTTP cache, the worker's side. shim.js loads this when
// the agent runs with --http-cache: undici's cache interceptor goes on the
// process's global dispatcher (which `fetch` and undici use), with a store
// that holds nothing itself and asks the agent over its unix socket. The
// frames are described in watt-agent/src/http_cache/protocol.rs.
//
// The store must never fail or hold up a request: an answer that does not
// come within `timeoutMs` is a miss, and while the socket is down every
// lookup is a miss at once (one warning per outage, not per request).
const net = require('net');
const { Writable } = require('stream');

// Puts are dropped while this much waits unsent: the agent is not reading.
const MAX_UNSENT = 8 * 1024 * 1024;
// After the socket fails, the next attempt waits this long.
const RETRY_MS = 1000;

// The global dispatcher's slot, which undici (the app's, Node's bundled
// one for `fetch`, and ours) reads on every request.
const GLOBAL_DISPATCHER = Symbol.for('undici.globalDispatcher.1');

// Puts the cache on the global dispatcher, lazily: undici (a large module
// graph) is loaded on the first outgoing request, not at start. Loaded at
// start, its garbage kept every idle worker's event loop turning for a
// minute (the agent saw the turns and woke for them); an app that never
// fetches never pays for it. Until then the slot holds a stand-in that
// builds the real dispatcher on first use: a getter on the slot instead
// would run inside undici's own module initialisation (it reads the slot),
// and loading undici from there breaks an app that loads the same copy.
exports.install = function install(opts) {
  let real;
  const standIn = new Proxy(Object.create(null), {
    get(_, prop) {
      if (real === undefined) real = build(opts);
      if (!real) return undefined;
      const value = Reflect.get(real, prop, real);
      return typeof value === 'function' ? value.bind(real) : value;
    },
  });
  define(standIn);
};

function define(value) {
  Object.defineProperty(globalThis, GLOBAL_DISPATCHER, {
    value,
    writable: true,
    enumerable: false,
    configurable: false,
  });
}

// Loads undici and makes the global dispatcher an Agent composed with the
// cache interceptor over the agent's store (unless the app has set its own
// meanwhile); null when undici cannot be loaded.
function build(opts) {
  try {
    const undici = require(opts.undici);
    const store = new AgentStore(opts);
    const cache = undici.interceptors.cache({
      store,
      type: opts.type,
      origins: opts.origins && opts.origins.length ? opts.origins : undefined,
    });
    return new undici.Agent().compose(cache);
  } catch (err) {
    console.warn(`watt-agent http cache: not installed in this worker: ${err && err.message}`);
    return null;
  }
}

class AgentStore {
  constructor(opts) {
    this.path = opts.socket;
    this.timeoutMs = opts.timeoutMs;
    this.maxEntrySize = opts.maxEntrySize;
    this.tagsHeader = opts.tagsHeader;
    this.sock = null;
    this.down = false; // warned about this outage already
    this.retryAt = 0;
    this.nextId = 1;
    this.pending = new Map(); // id -> { resolve, timer }
    this.input = Buffer.alloc(0);
  }

  // The connected socket, or null while the store is down.
  connection() {
    if (this.sock) return this.sock;
    if (Date.now() < this.retryAt) return null;
    const sock = net.connect(this.path);
    sock.unref(); // the cache never keeps a worker alive
    sock.on('data', (chunk) => {
      try {
        this.onData(chunk);
      } catch (err) {
        // A frame this side cannot read: drop the connection, never the worker.
        this.fail(sock, err);
      }
    });
    sock.on('error', (err) => this.fail(sock, err));
    sock.on('close', () => this.fail(sock, new Error('the agent closed the connection')));
    this.sock = sock;
    return sock;
  }

  fail(sock, err) {
    if (this.sock !== sock) return;
    this.sock = null;
    this.retryAt = Date.now() + RETRY_MS;
    this.input = Buffer.alloc(0);
    sock.destroy();
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.resolve(undefined);
    }
    this.pending.clear();
    if (!this.down) {
      this.down = true;
      console.warn(`watt-agent http cache: store unreachable (${err.message}); requests go to their origins until it is back`);
    }
  }

  send(header, body) {
    const sock = this.connection();
    if (!sock) return false;
    const h = Buffer.from(JSON.stringify(header));
    const b = body || Buffer.alloc(0);
    const frame = Buffer.allocUnsafe(8);
    frame.writeUInt32BE(4 + h.length + b.length, 0);
    frame.writeUInt32BE(h.length, 4);
    sock.write(b.length ? Buffer.concat([frame, h, b]) : Buffer.concat([frame, h]));
    return true;
  }

  onData(chunk) {
    this.input = this.input.length ? Buffer.concat([this.input, chunk]) : chunk;
    while (this.input.length >= 8) {
      const len = this.input.readUInt32BE(0);
      if (this.input.length < 4 + len) return;
      const hlen = this.input.readUInt32BE(4);
      const header = JSON.parse(this.input.subarray(8, 8 + hlen).toString());
      const body = Buffer.from(this.input.subarray(8 + hlen, 4 + len));
      this.input = this.input.subarray(4 + len);
      if (this.down) {
        // Up again only once it answers: a stopped agent still accepts.
        this.down = false;
        console.warn('watt-agent http cache: the store answers again');
      }
      const p = this.pending.get(header.id);
      if (!p) continue; // answered after its timeout
      this.pending.delete(header.id);
      clearTimeout(p.timer);
      p.resolve(header.meta === undefined ? undefined : { ...JSON.parse(header.meta), body: [body] });
    }
  }

  get(key) {
    const id = this.nextId++;
    const sent = this.send({ op: 'get', id, origin: key.origin, method: key.method, path: key.path, headers: key.headers || {} });
    if (!sent) return undefined;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        // Not yet: timers run before the loop reads its sockets, so after
        // a stall of this worker's own loop the answer may be waiting
        // unread. setImmediate runs after that read; only an answer still
        // missing then is the store's fault.
        setImmediate(() => {
          if (!this.pending.has(id)) return;
          this.pending.delete(id);
          resolve(undefined);
          // A store that does not answer in time is down: the next lookups
          // miss at once instead of each waiting out the timeout.
          if (this.sock) this.fail(this.sock, new Error(`no answer within ${this.timeoutMs}ms`));
        });
      }, this.timeoutMs);
      timer.unref();
      this.pending.set(id, { resolve, timer });
    });
  }

  createWriteStream(key, value) {
    const store = this;
    const chunks = [];
    let size = 0;
    return new Writable({
      write(chunk, encoding, callback) {
        if (typeof chunk === 'string') chunk = Buffer.from(chunk, encoding);
        size += chunk.length;
        if (size > store.maxEntrySize) {
          this.destroy(); // too large to store; the response itself goes on
        } else {
          chunks.push(chunk);
        }
        callback();
      },
      final(callback) {
        const sock = store.connection();
        if (sock && sock.writableLength < MAX_UNSENT) {
          store.send({
            op: 'put',
            origin: key.origin,
            method: key.method,
            path: key.path,
            vary: value.vary || null,
            deleteAt: value.deleteAt,
            tags: tagsOf(value.headers, store.tagsHeader),
            meta: JSON.stringify(value),
          }, Buffer.concat(chunks));
        }
        callback();
      },
    });
  }

  delete(key) {
    this.send({ op: 'delete', origin: key.origin, path: key.path });
  }
}

// The entry's tags: the configured response header's comma-separated values.
function tagsOf(headers, name) {
  const v = headers && headers[name];
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v])
    .flatMap((s) => String(s).split(','))
    .map((s) => s.trim())
    .filter(Boolean);
}
