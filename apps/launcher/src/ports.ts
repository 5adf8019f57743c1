import { createServer } from 'node:net';

/**
 * Ports handed out here lie below Linux's ephemeral range (32768-60999 by default), from which the
 * OS picks the local port of every outgoing connection: a port the OS chose for a listener (port 0)
 * and freed again could be taken by a connection before the service listened on it, as happened to
 * a test fleet among parallel suites (EADDRINUSE).
 */
const LOW = 10_000;
const HIGH = 32_000;

/** A TCP port free right now on `host`, outside the ephemeral range (else one the OS picks). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let tries = 0; tries < 50; tries++) {
    const port = LOW + Math.floor(Math.random() * (HIGH - LOW));
    if (await listensOn(port, host)) return port;
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
