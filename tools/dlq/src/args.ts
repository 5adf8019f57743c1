import { parseArgs } from 'node:util';

export const USAGE = `usage: dlq <command> --topic <topic or its .dlq> [options]

  list     prints each parked record as one JSON line; commits nothing
             --max N              at most N records
  replay   produces each parked record back to its source topic (same key and value), resuming
           where the last replay of this DLQ stopped (its consumer group parley-dlq-replay.<dlq>);
           where none is on record (a first replay, or Kafka forgot it: offsets.retention.minutes),
           it needs --from-beginning or --offsets FROM-
             --offsets FROM-TO    only DLQ offsets FROM to TO; FROM- or -TO: open-ended
             --error-contains T   only records whose parley-error contains T
             --dry-run            prints what it would replay; produces and commits nothing
             --from-beginning     starts over from the DLQ's first record (or FROM); the group's
                                  position moves only forward
             --force              also replays group ops older than GROUP_OPS_KEEP_DAYS

Kafka settings come from the KAFKA_* variables, as for the services.
`;

/** A bad command line: said in one line, exit 2. */
export class UsageError extends Error {}

export type Command =
  | { command: 'help' }
  | { command: 'list'; topic: string; max?: number }
  | {
      command: 'replay';
      topic: string;
      offsets?: OffsetRange;
      errorContains?: string;
      dryRun: boolean;
      fromBeginning: boolean;
      force: boolean;
    };

/** DLQ offsets, both ends included; an end left out is open. */
export interface OffsetRange {
  from?: bigint;
  to?: bigint;
}

const OPTIONS = {
  topic: { type: 'string' },
  max: { type: 'string' },
  offsets: { type: 'string' },
  'error-contains': { type: 'string' },
  'dry-run': { type: 'boolean' },
  'from-beginning': { type: 'boolean' },
  force: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const ONLY_FOR_REPLAY = ['offsets', 'error-contains', 'dry-run', 'from-beginning', 'force'] as const;

/**
 * `--offsets -TO` as `--offsets=-TO`: parseArgs takes a value starting with a dash for an option
 * left without one, and refused the form the help names ('ambiguous').
 */
function joinDashedOffsets(argv: string[]): string[] {
  const joined: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--offsets' && /^-\d+$/.test(argv[i + 1] ?? '')) joined.push(`--offsets=${argv[++i]}`);
    else joined.push(argv[i]);
  }
  return joined;
}

export function parseCommand(argv: string[]): Command {
  let parsed;
  try {
    parsed = parseArgs({
      args: joinDashedOffsets(argv),
      options: OPTIONS,
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError((err as Error).message.split(/\.\s/)[0]);
  }
  const { values, positionals } = parsed;
  if (values.help) return { command: 'help' };
  const [command, ...extra] = positionals;
  if (command !== 'list' && command !== 'replay')
    throw new UsageError(
      command ? `unknown command '${command}' (list or replay)` : 'no command (list or replay)',
    );
  if (extra.length > 0) throw new UsageError(`unexpected argument '${extra[0]}'`);
  const topic = values.topic?.trim();
  if (!topic) throw new UsageError('--topic is required');
  if (command === 'list') {
    const misplaced = ONLY_FOR_REPLAY.find((name) => values[name] !== undefined);
    if (misplaced) throw new UsageError(`--${misplaced} is for replay, not list`);
    return { command, topic, max: values.max === undefined ? undefined : positiveInteger(values.max) };
  }
  if (values.max !== undefined) throw new UsageError('--max is for list, not replay');
  if (values['error-contains'] === '') throw new UsageError('--error-contains needs some text');
  return {
    command,
    topic,
    offsets: values.offsets === undefined ? undefined : offsetRange(values.offsets),
    errorContains: values['error-contains'],
    dryRun: values['dry-run'] ?? false,
    fromBeginning: values['from-beginning'] ?? false,
    force: values.force ?? false,
  };
}

function positiveInteger(text: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1)
    throw new UsageError(`--max: '${text}' is not a positive integer`);
  return Number(text);
}

function offsetRange(text: string): OffsetRange {
  const match = /^(\d*)-(\d*)$/.exec(text) ?? /^(\d+)$/.exec(text);
  if (!match || text === '-')
    throw new UsageError(`--offsets: '${text}' is not FROM-TO, FROM-, -TO or one offset`);
  const [, from, to = from] = match;
  const range: OffsetRange = { from: from ? BigInt(from) : undefined, to: to ? BigInt(to) : undefined };
  if (range.from !== undefined && range.to !== undefined && range.from > range.to)
    throw new UsageError(`--offsets: ${range.from} is past ${range.to}`);
  return range;
}
