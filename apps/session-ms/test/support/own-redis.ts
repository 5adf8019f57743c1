import { ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Redis from 'ioredis';
import { waitFor } from '@parley/test-kit';
import { freePort } from '../../../launcher/src/ports';

/**
 * Starts redis-servers of a test file's own (the shared one is never demoted, filled, stalled or
 * given replicas), killed after its tests: call at the top of the file.
 */
export function ownRedisServers(): () => Promise<{ port: number; server: ChildProcess }> {
  const servers: ChildProcess[] = [];
  afterAll(() => servers.forEach((server) => server.kill('SIGKILL')));
  return async () => {
    // Below the ephemeral range (32768+), where no outgoing connection can be holding it already.
    const port = await freePort();
    // In a directory of its own: a replica's full sync writes an RDB file to the working directory.
    const dir = mkdtempSync(join(tmpdir(), 'parley-redis-'));
    const server = spawn(
      'redis-server',
      // A replica's first sync at once, not after the 5 s Redis waits for more replicas to join.
      [
        '--port',
        String(port),
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        dir,
        '--repl-diskless-sync-delay',
        '0',
      ],
      { stdio: 'ignore' },
    );
    servers.push(server);
    const probe = new Redis({
      port,
      lazyConnect: true,
      retryStrategy: () => 100,
      maxRetriesPerRequest: null,
    });
    await probe.connect().catch(() => undefined);
    await probe.ping();
    probe.disconnect();
    return { port, server };
  };
}

/** A redis-server of `start`'s replicating `primary`, once its link is up. */
export async function ownReplicaOf(start: ReturnType<typeof ownRedisServers>, primary: number) {
  const replica = await start();
  const admin = new Redis({ port: replica.port });
  await admin.replicaof('127.0.0.1', String(primary));
  await waitFor(
    async () => /master_link_status:up/.test(await admin.info('replication')),
    10_000,
    'the replica in sync',
  );
  admin.disconnect();
  return replica;
}
