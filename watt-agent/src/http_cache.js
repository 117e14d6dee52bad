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
const path = require('path');
const { Writable } = require('stream');

const { StoreClient } = require(path.join(__dirname, 'store_client.js'));

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
      if (real === undefined) {
        real = build(opts);
        // From now on the slot holds the real one (unless the app has put
        // its own there meanwhile): no stand-in on later requests.
        if (real && globalThis[GLOBAL_DISPATCHER] === standIn) globalThis[GLOBAL_DISPATCHER] = real;
      }
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

// undici's cache store interface (get, createWriteStream, delete) over the
// agent's store.
class AgentStore {
  constructor(opts) {
    this.client = new StoreClient({
      socket: opts.socket,
      timeoutMs: opts.timeoutMs,
      name: 'http cache',
      without: 'requests go to their origins',
    });
    this.maxEntrySize = opts.maxEntrySize;
    this.tagsHeader = opts.tagsHeader;
  }

  get(key) {
    return this.client
      .request({ op: 'get', origin: key.origin, method: key.method, path: key.path, headers: key.headers || {} })
      .then((answer) => {
        if (!answer || answer.header.meta === undefined) return undefined;
        return { ...JSON.parse(answer.header.meta), body: [answer.body] };
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
        store.client.send({
          op: 'put',
          origin: key.origin,
          method: key.method,
          path: key.path,
          vary: value.vary || null,
          deleteAt: value.deleteAt,
          tags: tagsOf(value.headers, store.tagsHeader),
          meta: JSON.stringify(value),
        }, Buffer.concat(chunks));
        callback();
      },
    });
  }

  delete(key) {
    this.client.send({ op: 'delete', origin: key.origin, path: key.path });
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
