import { HEADER_PACK_INDEX } from '../src/codec';
import { dlqRecords, parkedEvent } from '../src/consumer/dead-letter';

const source = { topic: 'notes', groupId: 'g' };

describe('dlqRecords', () => {
  test('keeps the bytes and key, and says why, where from and who read it', () => {
    const [whole, inPack] = dlqRecords(
      [
        { value: null, key: 'x', partition: 2, offset: '1' },
        { value: Buffer.from('{}'), key: 'cy', partition: 2, offset: '3', packIndex: 1 },
      ],
      new Error('bad'),
      source,
    );
    expect(whole).toEqual({
      key: 'x',
      value: Buffer.alloc(0),
      headers: { 'parley-error': 'bad', 'parley-source': 'notes/2/1', 'parley-group': 'g' },
    });
    expect(inPack.headers).toEqual({
      'parley-error': 'bad',
      'parley-source': 'notes/2/3',
      'parley-group': 'g',
      [HEADER_PACK_INDEX]: '1',
    });
  });

  test("gives a record refused for a reason of its own that reason, the others the batch's", () => {
    const [own, batch] = dlqRecords(
      [
        { value: null, key: 'x', partition: 0, offset: '1', reason: new Error('not JSON') },
        { value: null, key: 'y', partition: 0, offset: '2' },
      ],
      new Error('handler kept failing'),
      source,
    );
    expect(own.headers['parley-error']).toBe('not JSON');
    expect(batch.headers['parley-error']).toBe('handler kept failing');
  });

  test('cuts a long reason, and takes one that is not an Error as it is', () => {
    const [record] = dlqRecords(
      [{ value: null, key: 'k', partition: 0, offset: '0' }],
      'x'.repeat(2000),
      source,
    );
    expect(record.headers['parley-error']).toBe('x'.repeat(1000));
  });
});

describe('parkedEvent', () => {
  test('keeps an event as JSON, at its place in the topic', () => {
    const parked = parkedEvent({
      event: { n: 1 },
      key: 'k',
      partition: 1,
      offset: '9',
      index: 2,
      timestamp: 0,
    });
    expect(parked).toEqual({
      value: Buffer.from('{"n":1}'),
      key: 'k',
      partition: 1,
      offset: '9',
      packIndex: 2,
    });
  });

  test('parks an event too deep to serialize as a note instead of failing', () => {
    let deep: unknown = {};
    for (let i = 0; i < 100_000; i++) deep = { deep };
    const parked = parkedEvent({ event: deep, key: 'k', partition: 1, offset: '9', timestamp: 0 });
    expect(parked).toMatchObject({ key: 'k', partition: 1, offset: '9', packIndex: undefined });
    expect(Object.keys(JSON.parse(parked.value!.toString()))).toEqual(['unserializable']);
  });
});
