import path from 'node:path';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance, FastifyRequest } from 'fastify';

/** The browser client's static files (plain HTML, CSS and ES modules; no build step). */
export const WEB_CLIENT_ROOT = path.join(__dirname, '..', 'public');

export interface WebClientOptions {
  /** The WebSocket URL browsers connect to, e.g. `wss://chat.example.com/v1/ws` (env `PUBLIC_WS_URL`). */
  publicWsUrl?: string;
  /**
   * When no public URL is configured: the ws-gateway's port on the host the page was loaded from
   * (so `http://my-laptop:8081/` talks to `ws://my-laptop:8080/v1/ws`). Default 8080.
   */
  wsPort?: number;
}

/**
 * A rest-gateway plugin: the web client at `/` and `/config.json`, which tells the page where the
 * WebSocket is. Everything else the page does goes through the public protocol (REST on this
 * origin, WebSocket on the ws-gateway).
 */
export function webClientPlugin(options: WebClientOptions = {}) {
  return async (app: FastifyInstance) => {
    app.get('/config.json', { schema: { hide: true } }, async (request, reply) => {
      void reply.header('cache-control', 'no-store');
      return { wsUrl: options.publicWsUrl || wsUrlFor(request, options.wsPort ?? 8080) };
    });
    await app.register(fastifyStatic, { root: WEB_CLIENT_ROOT, prefix: '/', index: 'index.html', maxAge: 0 });
  };
}

function wsUrlFor(request: FastifyRequest, port: number): string {
  const scheme = request.protocol === 'https' ? 'wss' : 'ws';
  const hostname = request.hostname.replace(/:\d+$/, '') || '127.0.0.1';
  return `${scheme}://${hostname}:${port}/v1/ws`;
}
