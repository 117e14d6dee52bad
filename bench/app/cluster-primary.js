'use strict';
// Node's cluster module, written the way a user would: the primary forks
// BENCH_WORKERS workers running BENCH_APP and hands them connections
// round-robin (SCHED_RR: the primary accepts, then passes each socket to a
// worker over IPC). A worker that dies is replaced at once. SIGHUP replaces
// the workers one at a time: fork the new one, wait until it listens, then
// stop the old one (SIGTERM: graceful.js closes its server and lets in-flight
// requests finish). SIGTERM / SIGINT stop everything.
const cluster = require('node:cluster');
const path = require('node:path');

const app = process.env.BENCH_APP;
const count = Number(process.env.BENCH_WORKERS) || 2;
const KILL_TIMEOUT = 10_000;
if (!app) throw new Error('BENCH_APP is not set');

cluster.schedulingPolicy = cluster.SCHED_RR;
cluster.setupPrimary({
  exec: app,
  execArgv: [...process.execArgv, '--require', path.join(__dirname, 'graceful.js')],
});

let stopping = false;
let reloading = false;
const retiring = new Set();

cluster.on('exit', (worker, code, signal) => {
  if (retiring.delete(worker.id) || stopping) {
    if (stopping && Object.keys(cluster.workers).length === 0) process.exit(0);
    return;
  }
  console.log(`cluster: worker ${worker.process.pid} exited (${signal || code}); forking a new one`);
  cluster.fork();
});

for (let i = 0; i < count; i++) cluster.fork();

function stopGracefully(worker) {
  if (worker.isDead()) return;
  worker.process.kill('SIGTERM');
  setTimeout(() => {
    if (!worker.isDead()) worker.process.kill('SIGKILL');
  }, KILL_TIMEOUT).unref();
}

function until(emitter, events, ms) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    for (const e of events) emitter.once(e, () => { clearTimeout(t); resolve(); });
  });
}

process.on('SIGHUP', async () => {
  if (reloading || stopping) return;
  reloading = true;
  console.log('cluster: reload started');
  for (const old of Object.values(cluster.workers)) {
    if (stopping) break;
    const fresh = cluster.fork();
    await until(fresh, ['listening', 'exit'], KILL_TIMEOUT);
    retiring.add(old.id);
    const gone = old.isDead() ? Promise.resolve() : until(old, ['exit'], KILL_TIMEOUT + 1000);
    stopGracefully(old);
    await gone;
  }
  reloading = false;
  console.log('cluster: reload done');
});

function stopAll() {
  if (stopping) return;
  stopping = true;
  const workers = Object.values(cluster.workers);
  if (workers.length === 0) process.exit(0);
  for (const w of workers) stopGracefully(w);
  setTimeout(() => process.exit(0), KILL_TIMEOUT + 1000).unref();
}
process.on('SIGTERM', stopAll);
process.on('SIGINT', stopAll);
