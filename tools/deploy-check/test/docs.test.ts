/** docs/operations.md stays in step with the code: the variables table, topics, secrets, apps. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { configTable, DOC, documentedTable } from '../src/config-table';
import { fleet, ROOT, SECRET_VARS } from '../src/fleet';
import { plannedTopics } from '../src/kafka-topics';

const doc = readFileSync(DOC, 'utf8');
const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');

/**
 * The rows of the Markdown table whose header row starts with `header`: the variable of each row
 * (its first cell, when that is one backticked name) and the apps its second cell names, where that
 * cell is `all` or a list of app names only (a row that describes its apps in words is left out).
 */
function usedByColumn(text: string, header: string): Array<{ variable: string; apps: string[] }> {
  const apps = fleet().map((a) => a.name);
  const start = text.indexOf(header);
  if (start < 0) throw new Error(`no table headed ${header}`);
  const lines = text.slice(start).split('\n');
  const end = lines.findIndex((line) => !line.startsWith('|'));
  return lines.slice(2, end < 0 ? undefined : end).flatMap((row) => {
    const [variable, usedBy] = row
      .split('|')
      .slice(1, 3)
      .map((c) => c.trim());
    const name = /^`([A-Z0-9_]+)`$/.exec(variable)?.[1];
    const listed = usedBy === 'all' ? apps : usedBy.split(/,\s*/);
    if (!name || !listed.every((a) => apps.includes(a))) return [];
    return [{ variable: name, apps: [...listed].sort() }];
  });
}

/** The apps whose config schema has `variable`. */
const readersOf = (variable: string) =>
  fleet()
    .filter((a) => a.vars.includes(variable))
    .map((a) => a.name)
    .sort();

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

  it('names under the Secret\'s "Used by" every app that reads each key, and no other', () => {
    const rows = usedByColumn(doc, '| Key | Used by | Required |');
    expect(rows.map((r) => r.variable)).toContain('DATABASE_URL');
    for (const { variable, apps } of rows) expect([variable, apps]).toEqual([variable, readersOf(variable)]);
  });
});

describe('README.md', () => {
  it('names under "used by" every app that reads each variable, and no other', () => {
    const rows = usedByColumn(readme, '| variable | used by | default |');
    expect(rows.map((r) => r.variable)).toContain('DATABASE_URL');
    for (const { variable, apps } of rows) expect([variable, apps]).toEqual([variable, readersOf(variable)]);
  });
});
