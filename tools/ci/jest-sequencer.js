// Jest's order, except on a first run: a suite whose docblock says `@expectedSeconds N` starts
// before every suite with no recorded duration, longest first. Jest orders suites it has no timing
// for (a fresh checkout, as CI's) by file size, so a long suite in a short file (one line calling a
// shared suite) started last and ran alone for a minute and a half while the other worker idled.
const { readFileSync } = require('node:fs');
const Sequencer = require('@jest/test-sequencer').default;
const { extract, parse } = require('jest-docblock');

function expectedSeconds(path) {
  const value = parse(extract(readFileSync(path, 'utf8'))).expectedSeconds;
  const seconds = Number(Array.isArray(value) ? value[0] : value);
  return Number.isFinite(seconds) ? seconds : 0;
}

class ExpectedDurationSequencer extends Sequencer {
  sort(tests) {
    const sorted = super.sort(tests);
    const hinted = sorted
      .filter((test) => test.duration == null)
      .map((test) => ({ test, seconds: expectedSeconds(test.path) }))
      .filter(({ seconds }) => seconds > 0)
      .sort((a, b) => b.seconds - a.seconds)
      .map(({ test }) => test);
    const first = new Set(hinted);
    return [...hinted, ...sorted.filter((test) => !first.has(test))];
  }
}

module.exports = ExpectedDurationSequencer;
