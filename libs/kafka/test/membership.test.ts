import { Membership } from '../src/consumer/membership';

const offsets = (...topics: [string, [number, number][]][]) => ({
  topics: topics.map(([topic, partitions]) => ({
    topic,
    partitions: partitions.map(([partition, offset]) => ({ partition, offset: String(offset) })),
  })),
});

describe('Membership', () => {
  test('commits what kafkajs has while nothing is rewound', () => {
    const member = new Membership('notes');
    member.joined([0, 1]);
    const handled = offsets(['notes', [[0, 10]]]);
    expect(member.committable(handled)).toBe(handled);
  });

  test('commits a rewound partition at its rewound offset until a chunk of it is handled', () => {
    const member = new Membership('notes');
    member.joined([0, 1, 2]);
    member.handled(1, 50);
    member.rewound(1, 20);
    member.rewound(2, 7);
    expect(member.nextOffset(1)).toBe(20);
    expect(
      member.committable(
        offsets(
          ['other', [[0, 3]]],
          [
            'notes',
            [
              [0, 10],
              [1, 50],
            ],
          ],
        ),
      ),
    ).toEqual(
      offsets(
        ['other', [[0, 3]]],
        [
          'notes',
          [
            [0, 10],
            [1, 20],
            [2, 7],
          ],
        ],
      ),
    );
    member.handled(1, 21); // read from the seek on
    expect(member.committable(offsets(['notes', [[1, 21]]]))).toEqual(
      offsets([
        'notes',
        [
          [1, 21],
          [2, 7],
        ],
      ]),
    );
  });

  test('a join forgets what was handled, the move of the group, and rewinds of partitions gone', () => {
    const member = new Membership('notes');
    member.joined([0, 1]);
    member.handled(0, 5);
    member.rewound(0, 2);
    member.rewound(1, 3);
    member.groupMoved = new Error('REBALANCE_IN_PROGRESS');
    member.joined([1]);
    expect(member.groupMoved).toBeUndefined();
    expect(member.assigned).toEqual([1]);
    expect(member.nextOffset(0)).toBeUndefined();
    expect(member.nextOffset(1)).toBeUndefined();
    expect(member.committable(offsets())).toEqual(offsets(['notes', [[1, 3]]]));
  });
});
