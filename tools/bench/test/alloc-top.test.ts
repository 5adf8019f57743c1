import { summarizeAllocations } from '../src/alloc-top';

interface Sample {
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  selfSize: number;
  children: Sample[];
}

const node = (functionName: string, url: string, selfSize: number, children: Sample[] = []): Sample => ({
  callFrame: { functionName, url, lineNumber: 0, columnNumber: 9 },
  selfSize,
  children,
});

describe('summarizeAllocations', () => {
  it('sums bytes by function across call sites, and by function and caller', () => {
    const encode = (size: number) => node('encode', 'file:///work/main/libs/kafka/src/codec.ts', size);
    const head = node('(root)', '', 0, [
      node('publish', 'file:///work/main/libs/kafka/src/kafka-bus.ts', 100, [encode(300)]),
      node('handle', 'file:///work/main/apps/session-ms/src/delivery.ts', 0, [encode(600)]),
    ]);
    const { total, bySelf, byCaller } = summarizeAllocations(head, 2);
    expect(total).toBe(1000);
    expect(bySelf).toEqual([
      { name: 'encode libs/kafka/src/codec.ts:1:10', bytes: 900, share: 0.9 },
      { name: 'publish libs/kafka/src/kafka-bus.ts:1:10', bytes: 100, share: 0.1 },
    ]);
    expect(byCaller.map((r) => [r.name, r.bytes])).toEqual([
      ['encode libs/kafka/src/codec.ts:1:10  <-  handle apps/session-ms/src/delivery.ts:1:10', 600],
      ['encode libs/kafka/src/codec.ts:1:10  <-  publish libs/kafka/src/kafka-bus.ts:1:10', 300],
    ]);
  });
});
