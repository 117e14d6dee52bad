'use strict';
// BENCH_WORKERS plain Node processes running BENCH_APP, each listening with
// `reusePort: true` (graceful.js adds it), so the kernel's SO_REUSEPORT hash
// spreads connections over them: what Watt does with threads and nginx with
// `reuseport`. This launcher stands in for what a user would run them under
// (systemd `Restart=always`, whose default RestartSec is 100 ms): a process
// that exits is started again 100 ms later. SIGHUP restarts them one at a
// time, as a user would: start the new one, wait until it listens, stop the
// old one (SIGTERM, graceful). SIGTERM / SIGINT stop everything.
const { fork } = require('node:child_process');
const path = require('node:path');

const app = process.env.BENCH_APP;
const count = Number(process.env.BENCH_WORKERS) || 2;
const KILL_TIMEOUT = 10_000;
const RESTART_SEC = 100;
if (!app) throw new Error('BENCH_APP is not set');

const children = new Set();
const retiring = new Set();
let stopping = false;
let reloading = false;

function start() {
  const child = fork(app, [], {
    execArgv: [...process.execArgv, '--require', path.join(__dirname, 'graceful.js')],
    env: { ...process.env, BENCH_REUSEPORT: '1', BENCH_NOTIFY: '1' },
  });
  children.add(child);
  child.on('exit', (code, signal) => {
    children.delete(child);
    if (stopping) {
      if (children.size === 0) process.exit(0);
      return;
    }
    if (retiring.delete(child)) return;
    console.log(`reuseport: process ${child.pid} exited (${signal || code}); starting a new one in ${RESTART_SEC} ms`);
    setTimeout(() => stopping || start(), RESTART_SEC);
  });
  return child;
}

for (let i = 0; i < count; i++) start();

function listening(child, ms) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    const done = () => { clearTimeout(t); resolve(); };
    child.on('message', (m) => m && m.bench === 'listening' && done());
    child.once('exit', done);
  });
}

function exited(child, ms) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    child.once('exit', () => { clearTimeout(t); resolve(); });
  });
}

function stopGracefully(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  setTimeout(() => child.exitCode === null && child.signalCode === null && child.kill('SIGKILL'), KILL_TIMEOUT).unref();
}

process.on('SIGHUP', async () => {
  if (reloading || stopping) return;
  reloading = true;
  console.log('reuseport: reload started');
  for (const old of [...children]) {
    if (stopping) break;
    const fresh = start();
    await listening(fresh, KILL_TIMEOUT);
    retiring.add(old);
    const gone = exited(old, KILL_TIMEOUT + 1000);
    stopGracefully(old);
    await gone;
  }
  reloading = false;
  console.log('reuseport: reload done');
});

function stopAll() {
  if (stopping) return;
  stopping = true;
  if (children.size === 0) process.exit(0);
  for (const c of children) stopGracefully(c);
  setTimeout(() => process.exit(0), KILL_TIMEOUT + 1000).unref();
}
process.on('SIGTERM', stopAll);
process.on('SIGINT', stopAll);
