import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { FsyncPolicy, LogConfig, PartitionLog } from './partition-log';

export interface TopicInfo {
  name: string;
  partitions: PartitionLog[];
  configs: Record<string, string>;
}

const LEGAL_TOPIC = /^[a-zA-Z0-9._-]{1,249}$/;

export function isLegalTopicName(name: string): boolean {
  return LEGAL_TOPIC.test(name) && name !== '.' && name !== '..';
}

/** Topics and their partition logs; the topic list lives in `<dataDir>/topics.json`. */
export class TopicStore {
  private readonly topics = new Map<string, TopicInfo>();
  private readonly logRoot: string | null;

  constructor(
    private readonly dataDir: string | null,
    private readonly defaults: LogConfig,
    readonly fsync: FsyncPolicy,
    private readonly logger: Logger,
  ) {
    this.logRoot = dataDir ? path.join(dataDir, 'log') : null;
    if (!dataDir) return;
    fs.mkdirSync(this.logRoot!, { recursive: true });
    const file = path.join(dataDir, 'topics.json');
    if (!fs.existsSync(file)) return;
    const saved = JSON.parse(fs.readFileSync(file, 'utf8')) as {
      name: string;
      partitions: number;
      configs: Record<string, string>;
    }[];
    for (const t of saved) this.open(t.name, t.partitions, t.configs);
    logger.info({ topics: saved.length }, 'recovered topics');
  }

  private configFor(configs: Record<string, string>): LogConfig {
    const num = (key: string, fallback: number) =>
      configs[key] !== undefined && Number.isFinite(Number(configs[key])) ? Number(configs[key]) : fallback;
    return {
      ...this.defaults,
      retentionMs: num('retention.ms', this.defaults.retentionMs),
      retentionBytes: num('retention.bytes', this.defaults.retentionBytes),
      segmentBytes: num('segment.bytes', this.defaults.segmentBytes),
      segmentMs: num('segment.ms', this.defaults.segmentMs),
      maxMessageBytes: num('max.message.bytes', this.defaults.maxMessageBytes),
    };
  }

  private open(name: string, partitions: number, configs: Record<string, string>): TopicInfo {
    const config = this.configFor(configs);
    const logs = Array.from({ length: partitions }, (_, p) =>
      PartitionLog.create(
        name,
        p,
        this.logRoot ? PartitionLog.dirFor(this.logRoot, name, p) : null,
        config,
        this.logger,
      ),
    );
    const info = { name, partitions: logs, configs };
    this.topics.set(name, info);
    return info;
  }

  private save(): void {
    if (!this.dataDir) return;
    const file = path.join(this.dataDir, 'topics.json');
    const body = JSON.stringify(
      [...this.topics.values()].map((t) => ({
        name: t.name,
        partitions: t.partitions.length,
        configs: t.configs,
      })),
    );
    fs.writeFileSync(`${file}.tmp`, body);
    const fd = fs.openSync(`${file}.tmp`, 'r');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(`${file}.tmp`, file);
  }

  get(name: string): TopicInfo | undefined {
    return this.topics.get(name);
  }

  partition(name: string, partition: number): PartitionLog | undefined {
    return this.topics.get(name)?.partitions[partition];
  }

  list(): TopicInfo[] {
    return [...this.topics.values()];
  }

  create(name: string, partitions: number, configs: Record<string, string> = {}): TopicInfo {
    const info = this.open(name, partitions, configs);
    this.save();
    this.logger.info({ topic: name, partitions }, 'created topic');
    return info;
  }

  delete(name: string): boolean {
    const info = this.topics.get(name);
    if (!info) return false;
    this.topics.delete(name);
    this.save();
    for (const log of info.partitions) log.destroy();
    if (this.logRoot) fs.rmSync(path.join(this.logRoot, name), { recursive: true, force: true });
    this.logger.info({ topic: name }, 'deleted topic');
    return true;
  }

  applyRetention(now = Date.now()): void {
    for (const t of this.topics.values()) {
      for (const log of t.partitions) {
        try {
          const n = log.applyRetention(now);
          if (n)
            this.logger.debug(
              { topic: t.name, partition: log.partition, segments: n },
              'retention deleted segments',
            );
        } catch (err) {
          this.logger.error({ err, topic: t.name }, 'retention failed');
        }
      }
    }
  }

  async sync(logs?: Iterable<PartitionLog>): Promise<void> {
    const all = logs ?? [...this.topics.values()].flatMap((t) => t.partitions);
    await Promise.all([...all].map((l) => l.sync()));
  }

  close(): void {
    for (const t of this.topics.values()) for (const log of t.partitions) log.close();
  }
}
