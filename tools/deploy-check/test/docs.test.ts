/** docs/operations.md stays in step with the code: the variables table, topics, secrets, apps. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { configTable, DOC, documentedTable } from '../src/config-table';
import { fleet, ROOT, SECRET_VARS } from '../src/fleet';
import { plannedTopics } from '../src/kafka-topics';

const doc = readFileSync(DOC, 'utf8');

describe('docs/operations.md', () => {
  it('has the configuration table generated from the current schemas (config-table.ts --write)', () => {
    expect(documentedTable(doc)).toBe(configTable());
  });

  it('lists every topic with its partition count', () => {
    for (const topic of plannedTopics().filter((t) => !t.name.endsWith('.dlq'))) {
      expect(doc).toMatch(
        new RegExp(`\\| \`${topic.name.replace(/\./g, '\\.')}\` \\| ${topic.partitions} \\|`),
      );
    }
  });

  it('documents every key of the operator-made Secret and every app', () => {
    const example = parse(
      readFileSync(path.join(ROOT, 'deploy/k8s/overlays/prod/parley-secrets.example.yaml'), 'utf8'),
    );
    for (const key of Object.keys(example.stringData)) expect(doc).toContain(`| \`${key}\` |`);
    for (const key of SECRET_VARS.filter((k) => k !== 'KAFKA_SASL_PASSWORD'))
      expect(Object.keys(example.stringData)).toContain(key);
    for (const app of fleet()) expect(doc).toContain(`| ${app.name} |`);
  });
});
