// `npm test` runs every project's suite in one Jest process.
const { readdirSync, existsSync } = require('node:fs');
const path = require('node:path');

const projects = ['apps', 'libs', 'tools']
  .flatMap((dir) => (existsSync(dir) ? readdirSync(dir).map((name) => path.join(dir, name)) : []))
  .filter((dir) => existsSync(path.join(dir, 'jest.config.js')))
  .map((dir) => `<rootDir>/${dir}`);

// Global options (testTimeout is not read from project configs in a multi-project run).
// forceExit: on the CI box (two cores, so Jest runs the suites in its own process) every suite
// passed, and then Node's exit spun on a TCP handle left closing, without end (2026-12-05: gdb
// showed uv_run inside Environment::CleanupHandles); the suites themselves close what they open.
module.exports = { projects, testTimeout: 30000, forceExit: true };
