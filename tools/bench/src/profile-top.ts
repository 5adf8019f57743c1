import { readFileSync } from 'node:fs';

/**
 * Summarizes a V8 `.cpuprofile` (from `npm run bench -- --cpu-prof`): self time by function and
 * by package/file, and inclusive time of the heaviest functions.
 * Usage: tsx tools/bench/src/profile-top.ts <file.cpuprofile> [top=30] [from-s=0] [to-s]
 * (from/to: seconds since the profile started, e.g. to skip the fleet's start-up)
 */

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount: number;
  children?: number[];
}

export function summarizeProfile(
  profile: { nodes: Node[]; samples: number[]; timeDeltas: number[] },
  top = 30,
  fromS = 0,
  toS = Infinity,
) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  let at = 0;
  profile.samples.forEach((id, i) => {
    at += profile.timeDeltas[i] ?? 0;
    if (at < fromS * 1e6 || at > toS * 1e6) return;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0);
  const label = (n: Node) =>
    `${n.callFrame.functionName || '(anonymous)'} ${shortUrl(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;
  const fn = new Map<string, number>();
  const file = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const n = byId.get(id)!;
    fn.set(label(n), (fn.get(label(n)) ?? 0) + us);
    const f = bucket(n.callFrame.url, n.callFrame.functionName);
    file.set(f, (file.get(f) ?? 0) + us);
  }
  // inclusive: sum of self time of each node's subtree, per function label (counted once per stack)
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const incl = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const l = label(byId.get(cur)!);
      if (seen.has(l)) continue;
      seen.add(l);
      incl.set(l, (incl.get(l) ?? 0) + us);
    }
  }
  const sorted = (m: Map<string, number>) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, v]) => ({ name: k, ms: Math.round(v / 1000), pct: Math.round((v / total) * 1000) / 10 }));
  return {
    totalMs: Math.round(total / 1000),
    selfByFunction: sorted(fn),
    selfByFile: sorted(file),
    inclusive: sorted(incl),
  };
}

function shortUrl(url: string): string {
  const i = url.indexOf('node_modules/');
  if (i >= 0) return url.slice(i + 13);
  const w = url.search(/\/(apps|libs|tools)\//);
  return w >= 0 ? url.slice(w + 1) : url.replace(/^file:\/\//, '');
}

function bucket(url: string, name: string): string {
  if (!url) return name.startsWith('(') ? name : '(native)';
  const nm = /node_modules\/((@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return `npm:${nm[1]}`;
  if (url.startsWith('node:')) return url;
  return shortUrl(url);
}

if (require.main === module) {
  const [file, top, from, to] = process.argv.slice(2);
  if (!file) {
    process.stderr.write('usage: tsx tools/bench/src/profile-top.ts <file.cpuprofile> [top]\n');
    process.exit(2);
  }
  const s = summarizeProfile(
    JSON.parse(readFileSync(file, 'utf8')),
    Number(top ?? 30),
    Number(from ?? 0),
    to ? Number(to) : Infinity,
  );
  const print = (title: string, rows: Array<{ name: string; ms: number; pct: number }>) => {
    process.stdout.write(`\n${title}\n`);
    for (const r of rows)
      process.stdout.write(`${String(r.pct).padStart(6)}% ${String(r.ms).padStart(8)} ms  ${r.name}\n`);
  };
  process.stdout.write(`total sampled: ${s.totalMs} ms\n`);
  print('self time by package/file', s.selfByFile);
  print('self time by function', s.selfByFunction);
  print('inclusive time by function', s.inclusive);
}
