import type { BackgroundWork } from '../src';
import { heldForBackground } from '../src/consumer/background';
import { Membership } from '../src/consumer/membership';

const offsets = (topic: string, ...partitions: [number, number][]) => ({
  topics: [
    { topic, partitions: partitions.map(([partition, offset]) => ({ partition, offset: String(offset) })) },
  ],
});
const work = (oldest: Record<number, number>): BackgroundWork => ({
  oldestUnfinished: (partition) => oldest[partition],
  finish: async () => undefined,
});

describe('heldForBackground', () => {
  test('holds each partition of the topic at its oldest unfinished record, and leaves the rest', () => {
    const member = new Membership('notes');
    member.joined([0, 1]);
    member.reading(0, 5);
    member.reading(1, 5);
    const held = heldForBackground(
      offsets('notes', [0, 40], [1, 40], [2, 40]),
      'notes',
      work({ 0: 12, 1: 55 }),
      (partition) => member.firstRead(partition),
    );
    expect(held).toEqual(offsets('notes', [0, 12], [1, 40], [2, 40]));
    const other = offsets('other', [0, 40]);
    expect(heldForBackground(other, 'notes', work({ 0: 12 }), () => undefined)).toEqual(other);
  });

  test('is not held back by work on records read before the member last joined (the partition came back to it)', () => {
    const member = new Membership('notes');
    member.joined([0]);
    member.reading(0, 10); // held the partition, started work on offset 12, lost the partition
    member.joined([0]); // got it back after another member committed up to 300
    member.reading(0, 300);
    const held = heldForBackground(offsets('notes', [0, 340]), 'notes', work({ 0: 12 }), (partition) =>
      member.firstRead(partition),
    );
    expect(held).toEqual(offsets('notes', [0, 300]));
  });

  test('a rewind lowers where the member read from, so work on the records read again holds', () => {
    const member = new Membership('notes');
    member.joined([0]);
    member.reading(0, 300);
    member.rewound(0, 100);
    expect(member.firstRead(0)).toBe(100);
    const held = heldForBackground(offsets('notes', [0, 340]), 'notes', work({ 0: 150 }), (partition) =>
      member.firstRead(partition),
    );
    expect(held).toEqual(offsets('notes', [0, 150]));
  });
});
