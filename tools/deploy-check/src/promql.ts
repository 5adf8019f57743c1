/** What a PromQL expression says: its syntax errors, and the metrics and labels it names. */
import { parser } from '@prometheus-io/lezer-promql';
import type { SyntaxNode } from '@lezer/common';

export function syntaxErrors(expr: string): string[] {
  const errors: string[] = [];
  parser.parse(expr).iterate({
    enter(node) {
      if (node.type.isError)
        errors.push(
          `at ${node.from}: ${JSON.stringify(expr.slice(Math.max(0, node.from - 20), node.from + 20))}`,
        );
    },
  });
  return errors;
}

/** Metric names and, per metric, the labels its selector matches on or an enclosing aggregation groups by. */
export function references(expr: string): Map<string, Set<string>> {
  const tree = parser.parse(expr);
  const text = (n: SyntaxNode) => expr.slice(n.from, n.to);
  const out = new Map<string, Set<string>>();
  const grouping = (n: SyntaxNode): string[] => {
    const labels: string[] = [];
    for (let p: SyntaxNode | null = n.parent; p; p = p.parent) {
      if (p.name !== 'AggregateExpr') continue;
      const modifier = p.getChild('AggregateModifier');
      if (modifier?.getChild('By'))
        labels.push(...(modifier.getChild('GroupingLabels')?.getChildren('LabelName') ?? []).map(text));
    }
    return labels;
  };
  tree.iterate({
    enter(ref) {
      if (ref.name !== 'VectorSelector') return;
      const node = ref.node;
      const id = node.getChild('Identifier');
      if (!id) throw new Error(`a selector without a metric name in ${expr}`);
      const labels = out.get(text(id)) ?? new Set<string>();
      const matchers = node.getChild('LabelMatchers');
      for (const m of matchers ? [...matchers.getChildren('UnquotedLabelMatcher')] : [])
        labels.add(text(m.getChild('LabelName')!));
      for (const l of grouping(node)) labels.add(l);
      out.set(text(id), labels);
    },
  });
  return out;
}

/** The function each range selector (`metric[5m]`) is passed to, per metric: rate, delta, min_over_time... */
export function rangeFunctions(expr: string): Array<{ metric: string; fn: string }> {
  const text = (n: SyntaxNode) => expr.slice(n.from, n.to);
  const out: Array<{ metric: string; fn: string }> = [];
  parser.parse(expr).iterate({
    enter(ref) {
      if (ref.name !== 'MatrixSelector') return;
      const id = ref.node.getChild('VectorSelector')?.getChild('Identifier');
      let call: SyntaxNode | null = ref.node.parent;
      while (call && call.name !== 'FunctionCall') call = call.parent;
      const fn = call?.getChild('FunctionIdentifier');
      if (id && fn) out.push({ metric: text(id), fn: text(fn) });
    },
  });
  return out;
}
