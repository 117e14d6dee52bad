'use strict';
// The app of `cargo xtask bench cache`: each request fetches one item from
// an upstream API with the global fetch, as an app calling an API does, and
// times that fetch (process.hrtime.bigint() from before fetch() to the end
// of reading the body). The same file runs under every arm; only the
// environment says which cache, if any, the app installs itself.
//
//   GET /api?run=R   fetch(UPSTREAM/item/K) (K goes round BENCH_KEYS items,
//                    per worker), answers the item; the fetch's duration is
//                    recorded under run R
//   GET /            {"pid":..} (readiness)
//
// The recorded durations (nanoseconds, per run) are written to
// BENCH_STATS_DIR/<pid>-<threadId>.json once the worker has had no request
// for 300 ms (between the warm-up and the measured window, and after it;
// at 250 requests/s per worker a gap that long inside the window means the
// worker was getting no requests anyway); the bench
// reads every worker's file after a run (a process per worker under
// watt-agent, a thread per worker under Watt: both get a file).
//
// Environment: PORT, UPSTREAM (http://127.0.0.1:N), BENCH_KEYS (default
// 100), BENCH_STATS_DIR, and for the file-backed candidate BENCH_STORE=sqlite
// with BENCH_UNDICI (undici 7's directory) and BENCH_SQLITE (the file every
// worker opens): undici's SqliteCacheStore under its cache interceptor on
// this worker's global dispatcher (its writes guarded, see below).
const fs = require('fs');
const http = require('http');
const path = require('path');
const { threadId } = require('worker_threads');

const upstream = process.env.UPSTREAM;
const keys = Number(process.env.BENCH_KEYS || 100);
const statsDir = process.env.BENCH_STATS_DIR;

if (process.env.BENCH_STORE === 'sqlite') {
  const undici = require(process.env.BENCH_UNDICI);
  // As undici ships it, a write that finds the file locked by another
  // worker (SQLITE_BUSY: the store sets no busy timeout) fails its stream,
  // and the interceptor's clean-up then calls delete(), which throws the
  // same error where nothing catches it: the worker dies. So the store's
  // writes are guarded here, as an app using it across processes would
  // have to: a write or delete that fails is dropped (and logged).
  class GuardedSqliteCacheStore extends undici.cacheStores.SqliteCacheStore {
    set(key, value) {
      try {
        super.set(key, value);
      } catch (err) {
        console.warn(`cache-app: sqlite store error on set (dropped): ${err && err.message}`);
      }
    }

    delete(key) {
      try {
        super.delete(key);
      } catch (err) {
        console.warn(`cache-app: sqlite store error on delete (dropped): ${err && err.message}`);
      }
    }
  }
  // Workers start together and opening the file sets WAL mode, which needs
  // the database's lock: retry a few times (bounded) while another holds it.
  let store;
  for (let i = 0; ; i++) {
    try {
      store = new GuardedSqliteCacheStore({ location: process.env.BENCH_SQLITE });
      break;
    } catch (err) {
      if (i >= 50 || !/locked|busy/i.test(String(err && err.message))) throw err;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
  undici.setGlobalDispatcher(new undici.Agent().compose(undici.interceptors.cache({ store })));
  console.log('cache-app: undici SqliteCacheStore at', process.env.BENCH_SQLITE);
}

const runs = new Map(); // run -> [ns, ...]
let next = (process.pid * 31 + threadId * 17) % keys; // workers start at different items
let lastRequest = 0;
let dirty = false;

function record(run, ns) {
  let list = runs.get(run);
  if (!list) runs.set(run, (list = []));
  list.push(ns);
  dirty = true;
}

if (statsDir) {
  setInterval(() => {
    if (!dirty || Date.now() - lastRequest < 300) return;
    dirty = false;
    const file = path.join(statsDir, `${process.pid}-${threadId}.json`);
    fs.writeFileSync(`${file}.tmp`, JSON.stringify({ pid: process.pid, threadId, runs: Object.fromEntries(runs) }));
    fs.renameSync(`${file}.tmp`, file);
  }, 100).unref();
}

http
  .createServer(async (req, res) => {
    lastRequest = Date.now();
    const url = new URL(req.url, 'http://app');
    if (url.pathname !== '/api') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ pid: process.pid }));
      return;
    }
    const k = next;
    next = (next + 1) % keys;
    try {
      const t0 = process.hrtime.bigint();
      const r = await fetch(`${upstream}/item/${k}`);
      const body = await r.text();
      const ns = Number(process.hrtime.bigint() - t0);
      record(url.searchParams.get('run') || '', ns);
      lastRequest = Date.now();
      res.statusCode = r.status === 200 ? 200 : 502;
      res.setHeader('content-type', 'application/json');
      res.end(body);
    } catch (err) {
      lastRequest = Date.now();
      res.statusCode = 502;
      res.end(JSON.stringify({ error: String(err && err.message) }));
    }
  })
  .listen(Number(process.env.PORT) || 3000, () => {
    console.log(`cache-app: listening on ${process.env.PORT || 3000}`);
  });
