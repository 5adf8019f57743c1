import { createServer } from 'node:net';

/**
 * Ports handed out here lie below Linux's ephemeral range (32768-60999 by default), from which the
 * OS picks the local port of every outgoing connection: a port the OS chose for a listener (port 0)
 * and freed again could be taken by a connection before the service listened on it, as happened to
 * a test fleet among parallel suites (EADDRINUSE).
 */
const LOW = 10_000;
const HIGH = 32_000;
/**
 * Ports in that range fetch refuses to reach ("bad port", the WHATWG list): a service given one
 * could not be called, as a CI run's alerts suite found when a fleet drew 10080.
 */
const FETCH_BLOCKED = new Set([10080]);

/** A TCP port free right now on `host`, outside the ephemeral range (else one the OS picks). */
export async function freePort(host = '127.0.0.1', random: () => number = Math.random): Promise<number> {
  for (let tries = 0; tries < 50; tries++) {
    const port = LOW + Math.floor(random() * (HIGH - LOW));
    if (!FETCH_BLOCKED.has(port) && (await listensOn(port, host))) return port;
  }
  return listenOnAny(host);
}

function listensOn(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

function listenOnAny(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/**
 * How a URL names `host`, the address the fleet listens on: a wildcard names no address to call,
 * so its loopback stands in (the embedded broker advertises one the same way; 0.0.0.0 as a
 * destination reaches the loopback only on some systems); an IPv6 address goes in brackets
 * (`http://:::8081` is no URL).
 */
export function urlHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  const address = host === '::' ? '::1' : host;
  return address.includes(':') ? `[${address}]` : address;
}
