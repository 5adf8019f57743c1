import { readFileSync } from 'node:fs';

/**
 * Summarizes a sampled allocation profile (`npm run bench -- --alloc-prof`): bytes allocated by
 * function, and by function with its caller (which map() or which arrow allocated).
 * Usage: tsx tools/bench/src/alloc-top.ts <file.heapprofile> [top=30]
 */

interface AllocationNode {
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  selfSize: number;
  children: AllocationNode[];
}

const nameOf = ({ callFrame: f }: AllocationNode) => {
  const where = f.url ? f.url.replace(/^.*\/(apps|libs|tools|node_modules)\//, '$1/') : '(native)';
  return `${f.functionName || '(anonymous)'} ${where}:${f.lineNumber + 1}:${f.columnNumber + 1}`;
};

export function summarizeAllocations(head: AllocationNode, top = 30) {
  const bySelf = new Map<string, number>();
  const byCaller = new Map<string, number>();
  let total = 0;
  const walk = (node: AllocationNode, caller: string) => {
    const name = nameOf(node);
    total += node.selfSize;
    bySelf.set(name, (bySelf.get(name) ?? 0) + node.selfSize);
    const pair = `${name}  <-  ${caller}`;
    byCaller.set(pair, (byCaller.get(pair) ?? 0) + node.selfSize);
    for (const child of node.children) walk(child, name);
  };
  walk(head, '');
  const rank = (map: Map<string, number>) =>
    [...map]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, bytes]) => ({ name, bytes, share: bytes / total }));
  return { total, bySelf: rank(bySelf), byCaller: rank(byCaller) };
}

function main() {
  const [file, topArg] = process.argv.slice(2);
  if (!file) throw new Error('usage: alloc-top.ts <file.heapprofile> [top]');
  const { head } = JSON.parse(readFileSync(file, 'utf8')) as { head: AllocationNode };
  const { total, bySelf, byCaller } = summarizeAllocations(head, Number(topArg ?? 30));
  const line = (r: { name: string; bytes: number; share: number }) =>
    `${(r.share * 100).toFixed(1).padStart(5)}% ${(r.bytes / 2 ** 20).toFixed(1).padStart(8)} MiB  ${r.name}`;
  console.log(`sampled: ${(total / 2 ** 20).toFixed(0)} MiB allocated\n\nby function`);
  bySelf.forEach((r) => console.log(line(r)));
  console.log('\nby function and caller');
  byCaller.forEach((r) => console.log(line(r)));
}

if (require.main === module) main();
