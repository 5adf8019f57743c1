import { chunk, groupBy } from '../src/collections';

describe('groupBy', () => {
  it('groups items by key, each group in the order of the items, the groups in the order first met', () => {
    const groups = groupBy(['b1', 'a1', 'b2', 'c1', 'a2'], (item) => item[0]);
    expect([...groups]).toEqual([
      ['b', ['b1', 'b2']],
      ['a', ['a1', 'a2']],
      ['c', ['c1']],
    ]);
  });

  it('gives an empty map for no items', () => {
    expect(groupBy([], (item: string) => item).size).toBe(0);
  });
});

describe('chunk', () => {
  it('cuts items in order into arrays of the size, the last one shorter', () => {
    expect(chunk([1, 2, 3, 4, 5], 2)).toEqual([[1, 2], [3, 4], [5]]);
    expect(chunk([1, 2, 3, 4], 2)).toEqual([
      [1, 2],
      [3, 4],
    ]);
  });

  it('gives no chunk for no items', () => {
    expect(chunk([], 3)).toEqual([]);
  });
});
