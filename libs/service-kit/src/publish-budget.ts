import { Type, TProperties } from '@sinclair/typebox';
import type { Registry } from 'prom-client';
import { scrapedGauge } from './metrics';

export const DEFAULT_MAX_PENDING_PUBLISH_BYTES = 64 * 1024 * 1024;

export const PublishBudgetConfig = {
  MAX_PENDING_PUBLISH_BYTES: Type.Integer({
    minimum: 65_536,
    default: DEFAULT_MAX_PENDING_PUBLISH_BYTES,
    description:
      'Memory held by client frames waiting for Kafka, across this gateway: each frame counts its bytes plus 6 KiB, what a waiting frame holds besides them (measured 5.7 KiB for a small one); past it a frame is refused unavailable (a slow or absent Kafka does not grow memory without end); acks are refused only a quarter past it. 64 MiB is about 10,000 small frames',
  }),
} satisfies TProperties;

/**
 * What one client frame waiting for Kafka holds besides its own bytes: its parsed frame, event and
 * encoded record, and the promises and suspended calls between the socket and the producer's
 * queue. Measured on the ws-gateway with the Kafka bus and a stalled broker: 4.8 KiB of heap and
 * 0.9 KiB of buffers for a 130-byte frame (tools/bench/src/pending-heap.ts). Counting the bytes
 * alone, the 64 MiB cap let a one-process fleet overloaded for two minutes hold 2.2 GB of heap on
 * its gateway thread (over a production pod's --max-old-space-size) before refusing anything.
 */
export const PENDING_FRAME_OVERHEAD_BYTES = 6 * 1024;

/**
 * Acks may hold this much of the cap: a quarter more than other frames. An ack ends work; refused,
 * it leaves its deliverables pending in session-ms, pushed again after the ack timeout and then
 * stored though they were delivered. With acks refused like messages, a one-process fleet driven
 * at 22,000 msg/s for 150 s refused 105,000 acks, pushed 640,000 messages twice and stored 23,000
 * it had delivered, session-ms's heap growing 160 to 670 MiB while its throughput fell 12,000 to
 * 7,000 msg/s.
 */
export const ACK_HEADROOM = 1.25;

/**
 * The memory client frames hold on a gateway while Kafka has not taken them, capped: past the cap
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
    scrapedGauge(
      metrics,
      {
        name: `${metricPrefix}_pending_publish_bytes`,
        help: 'Memory held by client frames waiting for Kafka: their bytes plus PENDING_FRAME_OVERHEAD_BYTES (6 KiB) each (MAX_PENDING_PUBLISH_BYTES caps it)',
      },
      () => this.pending,
    );
  }

  /**
   * Runs `publish` holding `bytes` of the budget and `PENDING_FRAME_OVERHEAD_BYTES` for each of its
   * `frames`; false, without running it, when they do not fit.
   * With nothing else pending they are held whatever their size: a request larger than the budget
   * (a REST body may hold 1 MiB, the budget can be 64 KiB) would otherwise be refused "send again
   * later" forever; the memory held stays under the budget plus one request. `acks` (frames that
   * are all acks) may use `ACK_HEADROOM` times the budget.
   */
  async hold(bytes: number, frames: number, publish: () => Promise<unknown>, acks = false): Promise<boolean> {
    bytes += frames * PENDING_FRAME_OVERHEAD_BYTES;
    const cap = acks ? this.maxBytes * ACK_HEADROOM : this.maxBytes;
    if (this.pending > 0 && this.pending + bytes > cap) return false;
    this.pending += bytes;
    try {
      await publish();
      return true;
    } finally {
      this.pending -= bytes;
    }
  }
}
