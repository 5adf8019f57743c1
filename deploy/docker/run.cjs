// The image's entrypoint: `docker run parley <app>` (Kubernetes: `args: [<app>]`) runs
// /app/dist/<app>.js in this same Node process, so SIGTERM reaches the app's own graceful
// shutdown directly (no shell in between). One image for every app: the apps share ~all of their
// dependencies, so one image is one build, one scan, one tag to roll out and roll back, and the
// node_modules layer is pulled once per node instead of eight times.
'use strict';
const { existsSync, readdirSync } = require('node:fs');
const path = require('node:path');

const dist = path.resolve(process.env.PARLEY_DIST || path.join(__dirname, 'dist'));
const apps = readdirSync(dist)
  .filter((f) => f.endsWith('.js'))
  .map((f) => f.slice(0, -3))
  .sort();
const app = process.argv[2] || process.env.PARLEY_APP;

if (!app || !apps.includes(app) || !existsSync(path.join(dist, `${app}.js`))) {
  process.stderr.write(`usage: <image> <app>   (app is one of: ${apps.join(', ')})\n`);
  process.exit(64);
}
process.argv.splice(2, 1);
require(path.join(dist, `${app}.js`));
