/**
 * For `.ci/run`: which failed test suites failed only because their Jest worker process was killed
 * by a signal (a crash of Node itself, not of a test), so that CI can run those once more. Seen once
 * in the full suite: SIGSEGV in a worker that had already run many suites, not reproducible alone.
 *
 * Usage: tsx tools/deploy-check/src/jest-crashes.ts <jest --json output file>
 * Prints the crashed suites' paths, space-separated, and exits 0 when every failure is such a
 * crash; exits 1 (printing why) when any suite failed otherwise, or when nothing crashed.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

interface JestSuiteResult {
  name: string;
  status: 'passed' | 'failed' | 'pending' | 'focused';
  message: string;
  assertionResults: Array<{ status: string }>;
}

const WORKER_KILLED = /A jest worker process \(pid=\d+\) was terminated by another process: signal=SIG\w+/;

/** The suites that crashed, or why a run is not one to repeat. */
export function crashedSuites(
  results: { testResults: JestSuiteResult[] },
  root: string,
): { crashed: string[] } | { refused: string } {
  const failed = results.testResults.filter((suite) => suite.status === 'failed');
  const otherwise = failed.filter(
    (suite) =>
      !WORKER_KILLED.test(suite.message) || suite.assertionResults.some((a) => a.status === 'failed'),
  );
  if (otherwise.length > 0)
    return {
      refused: `failed, not crashed: ${otherwise.map((s) => path.relative(root, s.name)).join(', ')}`,
    };
  if (failed.length === 0) return { refused: 'no suite crashed (the run failed elsewhere)' };
  return { crashed: failed.map((suite) => path.relative(root, suite.name)) };
}

if (require.main === module) {
  const verdict = crashedSuites(JSON.parse(readFileSync(process.argv[2]!, 'utf8')), process.cwd());
  if ('refused' in verdict) {
    process.stderr.write(`${verdict.refused}\n`);
    process.exit(1);
  }
  process.stdout.write(`${verdict.crashed.join(' ')}\n`);
}
