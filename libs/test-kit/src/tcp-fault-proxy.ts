import { createConnection, createServer, Server, Socket } from 'node:net';

/**
 * A TCP proxy in front of a dependency that a test can cut: every open connection is reset and
 * new ones are refused until `restore()`. From the clients' side this is the dependency going down,
 * without stopping a server that other test suites share. `retarget()` moves where new connections
 * go, as a failover moves a service's name to another server.
 */
export class TcpFaultProxy {
  private readonly open = new Set<Socket>();
  private down = false;
  private stalled = false;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private target: { host: string; port: number },
  ) {}

  static start(target: { host: string; port: number }): Promise<TcpFaultProxy> {
    const server = createServer();
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const proxy = new TcpFaultProxy(server, (server.address() as { port: number }).port, target);
        server.on('connection', (client) => proxy.pipe(client, proxy.target));
        resolve(proxy);
      });
    });
  }

  /** Connections from now on go to `target`; open ones stay where they are. */
  retarget(target: { host: string; port: number }): void {
    this.target = target;
  }

  cut(): void {
    this.down = true;
    for (const socket of this.open) {
      // A socket already closing (its peer ended it) is destroyed, not reset: resetting one
      // mid-close left its handle unclosable, and Node spun at exit (CI, 2026-12-05).
      if (socket.readableEnded || socket.writableEnded) socket.destroy();
      else socket.resetAndDestroy();
    }
    this.open.clear();
  }

  /**
   * Stops forwarding, without closing anything: a server host gone without a reset (its packets
   * dropped). Connections open now stay silent for good; new ones until `restore()`.
   */
  stall(): void {
    this.stalled = true;
    for (const socket of this.open) {
      socket.unpipe();
      socket.pause();
    }
  }

  restore(): void {
    this.down = false;
    this.stalled = false;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private pipe(client: Socket, target: { host: string; port: number }) {
    if (this.down) {
      client.resetAndDestroy();
      return;
    }
    if (this.stalled) {
      client.pause();
      this.open.add(client);
      client.on('error', () => undefined);
      client.on('close', () => this.open.delete(client));
      return;
    }
    const upstream = createConnection(target);
    for (const [socket, other] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      this.open.add(socket);
      socket.pipe(other);
      socket.on('error', () => other.destroy());
      socket.on('close', () => {
        this.open.delete(socket);
        other.destroy();
      });
    }
  }
}
