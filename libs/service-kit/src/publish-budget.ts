import { Type, TProperties } from '@sinclair/typebox';
import { Gauge, Registry } from 'prom-client';

export const DEFAULT_MAX_PENDING_PUBLISH_BYTES = 64 * 1024 * 1024;

export const PublishBudgetConfig = {
  MAX_PENDING_PUBLISH_BYTES: Type.Integer({
    minimum: 65_536,
    default: DEFAULT_MAX_PENDING_PUBLISH_BYTES,
    description:
      'Client frames waiting for Kafka, in bytes, across this gateway; past it a frame is refused unavailable (a slow or absent Kafka does not grow memory without end)',
  }),
} satisfies TProperties;

/**
 * The bytes of client frames a gateway holds while Kafka has not taken them, capped: past the cap
 * a frame is refused (unavailable: nothing accepted, send again), instead of held. Shown by the
 * gauge `<metricPrefix>_pending_publish_bytes`.
 */
export class PublishBudget {
  private pending = 0;

  constructor(
    metrics: Registry,
    metricPrefix: string,
    private readonly maxBytes = DEFAULT_MAX_PENDING_PUBLISH_BYTES,
  ) {
    const pending = () => this.pending;
    new Gauge({
      name: `${metricPrefix}_pending_publish_bytes`,
      help: 'Bytes of client frames waiting for Kafka (MAX_PENDING_PUBLISH_BYTES caps it)',
      registers: [metrics],
      collect() {
        this.set(pending());
      },
    });
  }

  /**
   * Runs `publish` holding `bytes` of the budget; false, without running it, when they do not fit.
   * With nothing else pending they are held whatever their size: a request larger than the budget
   * (a REST body may hold 1 MiB, the budget can be 64 KiB) would otherwise be refused "send again
   * later" forever; the memory held stays under the budget plus one request.
   */
  async hold(bytes: number, publish: () => Promise<unknown>): Promise<boolean> {
    if (this.pending > 0 && this.pending + bytes > this.maxBytes) return false;
    this.pending += bytes;
    try {
      await publish();
      return true;
    } finally {
      this.pending -= bytes;
    }
  }
}
