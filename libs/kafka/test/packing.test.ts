import { Partitioners } from 'kafkajs';
import { HEADER_PACK, packRecords } from '../src/codec';
import { createKeyPartitioner, createPartitionCounts, packByPartition } from '../src/packing';
import { codec, note, Note, noteTopic as topic } from './support/note-codec';

const events = (records: { value: Buffer; headers: Record<string, string> }[]) =>
  records.flatMap((r) => codec.decodeRecord(r.value, r.headers)).map((d) => (d.ok ? d.event : d.error));

/** Where kafkajs's default partitioner puts `key` among `count` partitions. */
const kafkajsPartition = (key: string, count: number) =>
  Partitioners.DefaultPartitioner()({
    topic: topic.name,
    partitionMetadata: Array.from({ length: count }, (_, partitionId) => ({
      partitionId,
      leader: 0,
      replicas: [],
      isr: [],
      partitionErrorCode: 0,
    })),
    message: { key, value: null },
  });

describe('packByPartition', () => {
  const users = Array.from({ length: 40 }, (_, i) => `user-${i}`);

  test('one record per partition, keyed so that kafkajs puts it where each of its events belongs, in order', () => {
    const notes = users.flatMap((to, i) => [note(to, i), note(to, 100 + i)]);
    const packed = packByPartition(
      topic.name,
      notes.map((e) => codec.encode(e)),
      4,
    );

    expect(packed).toHaveLength(4);
    expect(packed.map((r) => kafkajsPartition(r.key, 4)).sort()).toEqual([0, 1, 2, 3]);
    for (const record of packed)
      for (const event of events([record]) as Note[])
        expect(kafkajsPartition(event.to, 4)).toBe(kafkajsPartition(record.key, 4));
    const all = events(packed) as Note[];
    expect(all).toHaveLength(80);
    for (const to of users)
      expect(all.filter((e) => e.to === to).map((e) => e.n)).toEqual(
        notes.filter((e) => e.to === to).map((e) => e.n),
      );
  });

  test('a pack stops at maxBytes; the next one goes on, in order', () => {
    const notes = Array.from({ length: 30 }, (_, n) => note('same-user', n));
    const encoded = notes.map((e) => codec.encode(e));
    const packed = packByPartition(topic.name, encoded, 4, undefined, encoded[0].value.length * 10);
    expect(packed.length).toBeGreaterThanOrEqual(3);
    expect(new Set(packed.map((r) => r.key))).toEqual(new Set(['same-user']));
    expect(packed.every((r) => r.value.length <= encoded[0].value.length * 10 + 2)).toBe(true);
    expect((events(packed) as Note[]).map((e) => e.n)).toEqual(notes.map((e) => e.n));
  });

  test('a record with headers of its own (a DLQ record) is sent alone; a pack holds one trace; order holds', () => {
    const dlq = {
      ...codec.encode(note('a', 1)),
      headers: { 'parley-error': 'boom', 'parley-source': 'notes/0/7' },
    };
    const input = [
      codec.encode(note('a', 0)),
      dlq,
      codec.encode(note('a', 2), 't1'),
      codec.encode(note('a', 3), 't2'),
      codec.encode(note('a', 4), 't2'),
      codec.encode(note('a', 5), 't1'),
    ];
    const packed = packByPartition(topic.name, input, 1);
    expect(packed.map((r) => [r.headers['parley-trace'], r.headers[HEADER_PACK]])).toEqual([
      [undefined, undefined],
      [undefined, undefined],
      ['t1', undefined],
      ['t2', '2'],
      ['t1', undefined],
    ]);
    expect(packed[1].headers).toEqual(dlq.headers);
    expect((events(packed) as Note[]).map((e) => e.n)).toEqual([0, 1, 2, 3, 4, 5]);
  });
});

describe('createKeyPartitioner', () => {
  test('answers as kafkajs does for every key and count, also once it has forgotten', () => {
    const partitionOf = createKeyPartitioner(10);
    for (const count of [1, 4, 12])
      for (let round = 0; round < 2; round++)
        for (let i = 0; i < 50; i++)
          expect(partitionOf('t', `user-${i}`, count)).toBe(kafkajsPartition(`user-${i}`, count));
  });
});

describe('TopicCodec.decodeRecord', () => {
  test('a lone record decodes as it always did; a pack of one event is the event itself', () => {
    const record = codec.encode(note('a', 1));
    expect(packRecords([record])).toBe(record);
    expect(codec.decodeRecord(record.value, record.headers)).toEqual([{ ok: true, event: note('a', 1) }]);
  });

  test('each event of a pack is checked alone; an unreadable pack is refused whole', () => {
    const value = Buffer.from(
      JSON.stringify([note('a', 1), { kind: 'note', v: 1, to: 'b', n: 'x' }, note('c', 3)]),
    );
    const decoded = codec.decodeRecord(value, { [HEADER_PACK]: '3' });
    expect(decoded.map((d) => d.ok)).toEqual([true, false, true]);
    expect(decoded[2]).toEqual({ ok: true, event: note('c', 3), key: 'c', index: 2 }); // its own key, not the pack's
    const bad = decoded[1] as Extract<(typeof decoded)[number], { ok: false }>;
    expect(bad.error.message).toMatch(/notes: .*n/);
    expect(JSON.parse(bad.value.toString())).toEqual({ kind: 'note', v: 1, to: 'b', n: 'x' });

    for (const broken of ['[{"kind":"note"', '{"kind":"note","v":1,"to":"a","n":1}']) {
      const refused = codec.decodeRecord(Buffer.from(broken), { [HEADER_PACK]: '1' });
      expect(refused).toHaveLength(1);
      expect(refused[0]).toMatchObject({ ok: false, value: Buffer.from(broken) });
    }
  });
});

describe('createPartitionCounts', () => {
  test('asks once per topic until the entry expires; a failed ask is retried sooner', async () => {
    let asked = 0;
    let fail = true;
    const counts = createPartitionCounts(
      async (name) => {
        asked++;
        if (name === 'missing' && fail) throw new Error('UNKNOWN_TOPIC_OR_PARTITION');
        return 12;
      },
      60_000,
      0,
    );
    expect(await counts.get('t')).toBe(12);
    expect(await counts.get('t')).toBe(12);
    expect(asked).toBe(1);

    expect(await counts.get('missing')).toBeUndefined();
    fail = false;
    await new Promise((r) => setTimeout(r, 5));
    expect(await counts.get('missing')).toBe(12);
    expect(asked).toBe(3);

    counts.forget();
    await counts.get('t');
    expect(asked).toBe(4);
  });
});
