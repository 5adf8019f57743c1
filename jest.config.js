// `npm test` runs every project's suite in one Jest process.
const { readdirSync, existsSync } = require('node:fs');
const path = require('node:path');

const projects = ['apps', 'libs', 'tools']
  .flatMap((dir) => (existsSync(dir) ? readdirSync(dir).map((name) => path.join(dir, name)) : []))
  .filter((dir) => existsSync(path.join(dir, 'jest.config.js')))
  .map((dir) => `<rootDir>/${dir}`);

// Global options (testTimeout is not read from project configs in a multi-project run).
module.exports = { projects, testTimeout: 30000 };
