import type { EncodedRecord } from '../src/codec';
import {
  MAX_RECORDS_PER_REQUEST,
  MAX_REQUEST_BYTES,
  recordBytes,
  requestSized,
} from '../src/producer/request-size';
import { PendingSend, SendQueue } from '../src/producer/send-queue';

const record = (bytes: number): EncodedRecord => ({ key: 'k', value: Buffer.alloc(bytes), headers: {} });

describe('requestSized', () => {
  test('splits a publish in order where a request would pass its record or byte limit', () => {
    const many = Array.from({ length: MAX_RECORDS_PER_REQUEST + 1 }, () => record(1));
    expect(requestSized(many).map((p) => p.records.length)).toEqual([MAX_RECORDS_PER_REQUEST, 1]);

    const big = [record(400_000), record(400_000), record(400_000)];
    const parts = requestSized(big);
    expect(parts.map((p) => p.records.length)).toEqual([2, 1]);
    expect(parts[0].bytes).toBe(recordBytes(big[0]) * 2);
    expect(parts[0].records[0]).toBe(big[0]);
  });

  test('sends a record over the limit alone', () => {
    expect(
      requestSized([record(10), record(MAX_REQUEST_BYTES), record(10)]).map((p) => p.records.length),
    ).toEqual([1, 1, 1]);
  });
});

describe('SendQueue', () => {
  const send = (records: number, bytes = records * 100): PendingSend & { rejected?: unknown } => {
    const pending: PendingSend & { rejected?: unknown } = {
      topic: 't',
      messages: Array.from({ length: records }, () => record(1)),
      bytes,
      resolve: () => undefined,
      reject: (err) => (pending.rejected = err),
    };
    return pending;
  };

  test('takes the sends that fit one request, in order, and at least one', () => {
    const queue = new SendQueue();
    const [a, b, c] = [send(1500), send(400), send(200)];
    for (const s of [a, b, c]) queue.push(s);
    expect(queue.takeRequest()).toEqual([a, b]);
    expect(queue.hasWaiting()).toBe(true);
    expect(queue.takeRequest()).toEqual([c]);
    expect(queue.hasWaiting()).toBe(false);

    const huge = send(1, MAX_REQUEST_BYTES + 1);
    queue.push(huge);
    queue.push(send(1));
    expect(queue.takeRequest()).toEqual([huge]);
  });

  test('rejects everything still waiting and starts empty', () => {
    const queue = new SendQueue();
    const [taken, waiting] = [send(MAX_RECORDS_PER_REQUEST), send(1)];
    queue.push(taken);
    queue.push(waiting);
    queue.takeRequest();
    const err = new Error('behind');
    queue.rejectAll(err);
    expect(taken.rejected).toBeUndefined();
    expect(waiting.rejected).toBe(err);
    expect(queue.hasWaiting()).toBe(false);
  });
});
