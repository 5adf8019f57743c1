import { pushKey, UnfinishedRecords } from '../src/unfinished';

describe('UnfinishedRecords', () => {
  it('tells each partition its oldest record still held, and nothing once every push is done', () => {
    const records = new UnfinishedRecords();
    records.hold(pushKey('bob', 'm1'), 0, 7);
    records.hold(pushKey('bob', 'm2'), 0, 9);
    records.hold(pushKey('eve', 'm3'), 1, 4);
    expect([records.oldestUnfinished(0), records.oldestUnfinished(1), records.oldestUnfinished(2)]).toEqual([
      7,
      4,
      undefined,
    ]);
    records.release(pushKey('bob', 'm1'));
    expect(records.oldestUnfinished(0)).toBe(9);
    records.release(pushKey('bob', 'm2'));
    records.release(pushKey('eve', 'm3'));
    expect([records.oldestUnfinished(0), records.oldestUnfinished(1), records.size]).toEqual([
      undefined,
      undefined,
      0,
    ]);
  });

  it('holds a record that packs several pushes until the last of them is done', () => {
    const records = new UnfinishedRecords();
    records.hold(pushKey('bob', 'm1'), 0, 3);
    records.hold(pushKey('eve', 'm1'), 0, 3); // a group message: one record, two recipients
    records.release(pushKey('bob', 'm1'));
    expect(records.oldestUnfinished(0)).toBe(3);
    records.release(pushKey('eve', 'm1'));
    expect(records.oldestUnfinished(0)).toBeUndefined();
  });

  it('holds every record of a message read twice (a redelivery) until its push is done, and forgets a release of nothing', () => {
    const records = new UnfinishedRecords();
    records.hold(pushKey('bob', 'm1'), 0, 3);
    records.hold(pushKey('bob', 'm1'), 0, 12);
    records.release(pushKey('bob', 'unknown'));
    expect(records.oldestUnfinished(0)).toBe(3);
    records.release(pushKey('bob', 'm1'));
    expect(records.oldestUnfinished(0)).toBeUndefined();
  });
});
