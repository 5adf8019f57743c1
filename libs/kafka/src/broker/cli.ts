import { parseArgs } from 'node:util';
import { createLogger } from '@parley/service-kit';
import type { FsyncPolicy } from './log/partition-log';
import { startBroker } from './broker';

/**
 * `npm run broker -- --port 9092 --data ./data/kafka [--host 0.0.0.0] [--fsync interval]
 * [--retention-ms N] [--retention-bytes N] [--offsets-retention-ms N]`: prints
 * "kafka broker ready <host:port>" on stdout once it accepts connections; SIGTERM/SIGINT stop it.
 */
async function main() {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: process.env.KAFKA_BROKER_PORT ?? '9092' },
      host: { type: 'string', default: '127.0.0.1' },
      'advertised-host': { type: 'string' },
      data: { type: 'string', default: process.env.KAFKA_BROKER_DATA },
      fsync: { type: 'string', default: 'interval' },
      partitions: { type: 'string', default: '1' },
      'retention-ms': { type: 'string' },
      'retention-bytes': { type: 'string' },
      'offsets-retention-ms': { type: 'string' },
    },
  });
  const logger = createLogger('kafka-broker', { level: process.env.LOG_LEVEL ?? 'info' });
  if (!['never', 'interval', 'always'].includes(values.fsync!))
    throw new Error(`--fsync must be never, interval or always`);
  const broker = await startBroker({
    port: Number(values.port),
    host: values.host,
    advertisedHost: values['advertised-host'],
    dataDir: values.data || undefined,
    fsync: values.fsync as FsyncPolicy,
    defaultPartitions: Number(values.partitions),
    retentionMs: values['retention-ms'] ? Number(values['retention-ms']) : undefined,
    retentionBytes: values['retention-bytes'] ? Number(values['retention-bytes']) : undefined,
    offsetsRetentionMs: values['offsets-retention-ms'] ? Number(values['offsets-retention-ms']) : undefined,
    logger,
  });
  process.stdout.write(`kafka broker ready ${broker.address}\n`);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping');
    broker.stop().then(
      () => process.exit(0),
      (err) => {
        logger.error({ err }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err) => {
  process.stderr.write(`kafka broker failed to start: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
