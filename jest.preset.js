// Shared Jest settings: SWC transforms TypeScript (no type-checking; `npm run typecheck` does that),
// and the @parley/* aliases resolve to the libs' sources, as in tsconfig.base.json.
const path = require('node:path');

const root = __dirname;

module.exports = {
  testEnvironment: 'node',
  transform: {
    '^.+\\.(ts|js)$': [
      '@swc/jest',
      { jsc: { parser: { syntax: 'typescript' }, target: 'es2022' }, module: { type: 'commonjs' } },
    ],
  },
  // A few dependencies ship ESM only; Node 20 loads them with require(esm), Jest needs them compiled.
  transformIgnorePatterns: ['/node_modules/(?!(cookie|content-disposition)/)'],
  moduleNameMapper: {
    '^@parley/([a-z-]+)$': path.join(root, 'libs/$1/src/index.ts'),
    '^@parley/([a-z-]+)/testing$': path.join(root, 'libs/$1/src/testing.ts'),
  },
  testMatch: ['<rootDir>/test/**/*.test.ts'],
  testTimeout: 30000,
};
