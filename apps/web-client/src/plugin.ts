import { existsSync } from 'node:fs';
import path from 'node:path';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance, FastifyRequest } from 'fastify';

/** The browser client's static files (plain HTML, CSS and ES modules; no build step), from the sources. */
export const WEB_CLIENT_ROOT = path.join(__dirname, '..', 'public');

/**
 * Where the files are: `dir` when configured (`WEB_CLIENT_DIR`); else next to the sources (tsx,
 * tests), or `web-client/` beside an esbuild bundle, or `apps/web-client/public` under the working
 * directory. Null when none has an index.html.
 */
export function findWebClientRoot(dir?: string): string | null {
  const candidates = dir
    ? [dir]
    : [WEB_CLIENT_ROOT, path.join(__dirname, 'web-client'), path.resolve('apps/web-client/public')];
  return candidates.find((candidate) => existsSync(path.join(candidate, 'index.html'))) ?? null;
}

export interface WebClientOptions {
  /** The WebSocket URL browsers connect to, e.g. `wss://chat.example.com/v1/ws` (env `PUBLIC_WS_URL`). */
  publicWsUrl?: string;
  /**
   * When no public URL is configured: the ws-gateway's port on the host the page was loaded from
   * (so `http://my-laptop:8081/` talks to `ws://my-laptop:8080/v1/ws`). Default 8080.
   */
  wsPort?: number;
  /** The static files' folder (env `WEB_CLIENT_DIR`); found by `findWebClientRoot` when unset. */
  root?: string;
}

/**
 * A rest-gateway plugin: the web client at `/` and `/config.json`, which tells the page where the
 * WebSocket is. Everything else the page does goes through the public protocol (REST on this
 * origin, WebSocket on the ws-gateway).
 */
export function webClientPlugin(options: WebClientOptions = {}) {
  return async (app: FastifyInstance) => {
    const root = findWebClientRoot(options.root);
    if (!root) {
      app.log.warn({ root: options.root }, 'web client files not found; not serving the web client');
      return;
    }
    app.get('/config.json', { schema: { hide: true } }, async (request, reply) => {
      void reply.header('cache-control', 'no-store');
      return { wsUrl: options.publicWsUrl || wsUrlFor(request, options.wsPort ?? 8080) };
    });
    await app.register(async (files) => {
      // A path the file server will not map into the folder (`..` past a backslash, `//x`, a NUL)
      // is, from outside, a file that is not there: not a 400 "Forbidden" that names nothing.
      files.setErrorHandler((error: { statusCode?: number }, _request, reply) => {
        if (error.statusCode === 403) return reply.callNotFound();
        throw error;
      });
      await files.register(fastifyStatic, { root, prefix: '/', index: 'index.html', maxAge: 0 });
    });
  };
}

function wsUrlFor(request: FastifyRequest, port: number): string {
  const scheme = request.protocol === 'https' ? 'wss' : 'ws';
  const hostname = request.hostname.replace(/:\d+$/, '') || '127.0.0.1';
  return `${scheme}://${hostname}:${port}/v1/ws`;
}
