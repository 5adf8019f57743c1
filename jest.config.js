// `npm test` runs every project's suite in one Jest process.
const { readdirSync, existsSync } = require('node:fs');
const { availableParallelism } = require('node:os');
const path = require('node:path');

const projects = ['apps', 'libs', 'tools']
  .flatMap((dir) => (existsSync(dir) ? readdirSync(dir).map((name) => path.join(dir, name)) : []))
  .filter((dir) => existsSync(path.join(dir, 'jest.config.js')))
  .map((dir) => `<rootDir>/${dir}`);

// Global options (testTimeout is not read from project configs in a multi-project run).
// Two workers at least: most suites wait on sockets and timers more than they compute, so on a
// 2-core box (CI's) Jest's default of one worker left a core idle. Measured: 264 s with two
// workers (1.3 cores busy on average) against 484-686 s with one in the runs before.
const maxWorkers = Math.max(2, availableParallelism() - 1);

const testSequencer = path.join(__dirname, 'tools/ci/jest-sequencer.js');

module.exports = { projects, testTimeout: 30000, maxWorkers, testSequencer };
