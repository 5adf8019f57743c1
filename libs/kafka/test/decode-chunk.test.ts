import type { KafkaMessage } from 'kafkajs';
import { DecodeError, HEADER_PACK, packRecords } from '../src/codec';
import { decodeChunk } from '../src/consumer/decode-chunk';
import { codec, note } from './support/note-codec';

/** A consumed record as kafkajs hands it over. */
const message = (
  offset: number,
  record: { key: string; value: Buffer | null; headers: Record<string, string> },
): KafkaMessage => ({
  key: Buffer.from(record.key),
  value: record.value,
  timestamp: String(1_000 + offset),
  attributes: 0,
  offset: String(offset),
  headers: Object.fromEntries(Object.entries(record.headers).map(([k, v]) => [k, Buffer.from(v)])),
});

describe('decodeChunk', () => {
  test('turns records into envelopes of their partition, offset, timestamp and trace', () => {
    const chunk = [
      message(7, codec.encode(note('ann', 1), 'trace-1')),
      message(8, codec.encode(note('bob', 2))),
    ];
    const { good, poison } = decodeChunk(codec, 3, chunk);
    expect(poison).toEqual([]);
    expect(good).toEqual([
      {
        event: note('ann', 1),
        key: 'ann',
        partition: 3,
        offset: '7',
        index: undefined,
        timestamp: 1_007,
        traceId: 'trace-1',
      },
      {
        event: note('bob', 2),
        key: 'bob',
        partition: 3,
        offset: '8',
        index: undefined,
        timestamp: 1_008,
        traceId: undefined,
      },
    ]);
  });

  test("gives each event of a pack its own key and place; the pack's offset and trace are theirs", () => {
    const pack = packRecords([codec.encode(note('ann', 1), 't'), codec.encode(note('bob', 2), 't')]);
    expect(pack.headers[HEADER_PACK]).toBe('2');
    const { good, poison } = decodeChunk(codec, 0, [message(5, pack)]);
    expect(poison).toEqual([]);
    expect(good.map(({ key, offset, index, traceId }) => ({ key, offset, index, traceId }))).toEqual([
      { key: 'ann', offset: '5', index: 0, traceId: 't' },
      { key: 'bob', offset: '5', index: 1, traceId: 't' },
    ]);
  });

  test('sets aside what cannot be decoded, keeping its neighbours and the reason', () => {
    const badInPack = {
      key: 'ann',
      value: Buffer.from(JSON.stringify([note('ann', 1), { kind: 'note', v: 1, to: 'cy' }])),
      headers: { [HEADER_PACK]: '2' },
    };
    const chunk = [
      message(1, { key: 'x', value: Buffer.from('{not json'), headers: {} }),
      message(2, codec.encode(note('bob', 2))),
      message(3, badInPack),
      message(4, { key: 'y', value: null, headers: {} }),
    ];
    const { good, poison } = decodeChunk(codec, 2, chunk);
    expect(good.map((e) => [e.offset, e.index, e.event.n])).toEqual([
      ['2', undefined, 2],
      ['3', 0, 1],
    ]);
    expect(poison.map(({ reason: _reason, ...place }) => place)).toEqual([
      { value: Buffer.from('{not json'), key: 'x', partition: 2, offset: '1', packIndex: undefined },
      {
        value: Buffer.from(JSON.stringify({ kind: 'note', v: 1, to: 'cy' })),
        key: 'cy',
        partition: 2,
        offset: '3',
        packIndex: 1,
      },
      { value: Buffer.alloc(0), key: 'y', partition: 2, offset: '4', packIndex: undefined },
    ]);
    // Each with its own reason: the DLQ record of each says why it was refused.
    for (const { reason } of poison) expect(reason).toBeInstanceOf(DecodeError);
    const [notJson, badEvent, empty] = poison.map(({ reason }) => (reason as DecodeError).message);
    expect(new Set([notJson, badEvent, empty]).size).toBe(3);
    expect(empty).toMatch(/empty record/);
  });
});
