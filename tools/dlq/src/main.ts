import { Type } from '@sinclair/typebox';
import pino from 'pino';
import { createKafkaClient, KafkaSettingsSchema } from '@parley/kafka';
import { CommonConfig, ConfigError, createLogger, DAY_MS, loadConfig } from '@parley/service-kit';
import { GroupOpsKeepConfig } from '../../../apps/group-ms/src/ops-retention';
import { parseCommand, USAGE, UsageError } from './args';
import { createDlqTool, DlqToolError } from './dlq-tool';

/** The services' Kafka settings (SSL, SASL as they have them), and group-ms's op memory. */
export const DlqConfig = Type.Object({
  LOG_LEVEL: CommonConfig.LOG_LEVEL,
  ...KafkaSettingsSchema,
  ...GroupOpsKeepConfig,
});

/**
 * `npm run dlq -- <list|replay> --topic <topic> ...`, or in the image `<image> dlq ...`: records
 * go to stdout as JSON lines, logs to stderr. Exit 2: bad configuration or arguments; 1: failed,
 * interrupted, or records refused (`--force` sends them).
 */
async function main(): Promise<number> {
  let config;
  let command;
  try {
    config = loadConfig('dlq', DlqConfig);
    command = parseCommand(process.argv.slice(2));
  } catch (err) {
    if (err instanceof ConfigError) process.stderr.write(`${err.message}\n`);
    else if (err instanceof UsageError) process.stderr.write(`dlq: ${err.message} (dlq --help)\n`);
    else throw err;
    return 2;
  }
  if (command.command === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  const logger = createLogger('dlq', { level: config.LOG_LEVEL }, pino.destination(2));
  const tool = createDlqTool({
    kafka: createKafkaClient('parley-dlq', config, logger),
    out: (line) => process.stdout.write(`${line}\n`),
    groupOpsKeepMs: config.GROUP_OPS_KEEP_DAYS * DAY_MS,
  });
  if (command.command === 'list') {
    await tool.list(command);
    return 0;
  }
  const interrupt = new AbortController();
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.once(signal, () => {
      process.stderr.write(`dlq: ${signal}: stopping after the record being replayed\n`);
      interrupt.abort();
    });
  const summary = await tool.replay({ ...command, signal: interrupt.signal });
  // Records refused (a group op past GROUP_OPS_KEEP_DAYS, a topic that does not exist) were not sent:
  // not a clean replay.
  return summary.interrupted || summary.refused > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    // The tool's own refusals and Kafka's errors (authorization, a topic missing) need no stack.
    const known = err instanceof DlqToolError || (err instanceof Error && err.name.startsWith('KafkaJS'));
    process.stderr.write(`dlq: ${known ? err.message : err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
