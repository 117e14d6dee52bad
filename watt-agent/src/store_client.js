'use strict';
// The worker's connection to the agent's shared store (--http-cache), used
// by the HTTP cache (http_cache.js) and by the Next.js cache handler
// (next_cache_handler.js); the agent writes all three into its runtime
// directory. Frames: watt-agent/src/http_cache/protocol.rs (a u32 length, a
// u32 header length, a JSON header, the body bytes).
//
// The store must never fail or hold up a request: an answer that does not
// come within `timeoutMs` is `undefined` (a miss), and then, and while the
// socket is down, every request gets `undefined` at once for RETRY_MS (one
// warning per outage, and one when the store answers again).
const net = require('net');

// Frames are dropped while this much waits unsent: the agent is not reading.
const MAX_UNSENT = 8 * 1024 * 1024;
// After the socket fails, the next attempt waits this long.
const RETRY_MS = 1000;

class StoreClient {
  // `name` and `without` word the warnings: "<name>: store unreachable
  // (...); <without> until it is back".
  constructor({ socket, timeoutMs, name, without }) {
    this.path = socket;
    this.timeoutMs = timeoutMs;
    this.name = name;
    this.without = without;
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
    sock.unref(); // the store never keeps a worker alive
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
      console.warn(`watt-agent ${this.name}: store unreachable (${err.message}); ${this.without} until it is back`);
    }
  }

  // Sends a frame that is not answered; false if the store is down or not
  // reading.
  send(header, body) {
    const sock = this.connection();
    if (!sock || sock.writableLength >= MAX_UNSENT) return false;
    const h = Buffer.from(JSON.stringify(header));
    const b = body || Buffer.alloc(0);
    const frame = Buffer.allocUnsafe(8);
    frame.writeUInt32BE(4 + h.length + b.length, 0);
    frame.writeUInt32BE(h.length, 4);
    sock.write(b.length ? Buffer.concat([frame, h, b]) : Buffer.concat([frame, h]));
    return true;
  }

  // Sends a request that is answered: its answer { header, body }, or
  // undefined when the store is down or slower than the timeout.
  request(header) {
    const id = this.nextId++;
    if (!this.send({ ...header, id })) return Promise.resolve(undefined);
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
          // A store that does not answer in time is down: the next requests
          // get undefined at once instead of each waiting out the timeout.
          if (this.sock) this.fail(this.sock, new Error(`no answer within ${this.timeoutMs}ms`));
        });
      }, this.timeoutMs);
      timer.unref();
      this.pending.set(id, { resolve, timer });
    });
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
        console.warn(`watt-agent ${this.name}: the store answers again`);
      }
      const p = this.pending.get(header.id);
      if (!p) continue; // answered after its timeout, or not awaited
      this.pending.delete(header.id);
      clearTimeout(p.timer);
      p.resolve({ header, body });
    }
  }
}

module.exports = { StoreClient };
