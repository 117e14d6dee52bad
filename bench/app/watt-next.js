'use strict';
// Watt runs each worker in a worker thread, where process.chdir() throws
// (ERR_WORKER_UNSUPPORTED_OPERATION), and Next.js standalone server.js
// starts with process.chdir(__dirname). Watt's own way to run Next.js is
// @platformatic/next; to run the very build the other arms run, the peers
// benchmark starts Watt with that directory as its working directory and
// loads server.js through this file, which turns a chdir to where the
// process already is into a no-op (any other chdir still throws).
const path = require('path');

const target = process.env.BENCH_APP;
if (!target) throw new Error('BENCH_APP is not set');
const chdir = process.chdir;
process.chdir = function (dir) {
  if (path.resolve(dir) === process.cwd()) return;
  return chdir.call(process, dir);
};
require(target);
