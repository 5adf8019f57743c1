import { execFileSync } from 'node:child_process';
import { kafkaSuite } from './support/kafka-suite';
import { containerTarget } from './support/targets';

/**
 * The same suite against a real Kafka through testcontainers, when a container engine answers.
 * Checked synchronously (in a child process) so that Jest can mark the suite skipped.
 */
function containerRuntime(): { ok: true } | { ok: false; reason: string } {
  try {
    execFileSync(
      process.execPath,
      [
        '-e',
        "require('testcontainers').getContainerRuntimeClient().then(() => process.exit(0), (e) => { process.stderr.write(String(e && e.message || e)); process.exit(1); })",
      ],
      { stdio: ['ignore', 'ignore', 'pipe'], timeout: 20_000, env: { ...process.env, DEBUG: '' } },
    );
    return { ok: true };
  } catch (err) {
    return {
      ok: false,
      reason:
        String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim() ||
        'no container runtime',
    };
  }
}

const runtime = containerRuntime();
if (runtime.ok) {
  kafkaSuite('libs/kafka against Kafka (testcontainers)', containerTarget);
} else {
  console.log(`[kafka-container.test] SKIPPED: no Docker engine for testcontainers (${runtime.reason})`);
  describe.skip('libs/kafka against Kafka (testcontainers): no container runtime', () => {
    test.skip(`skipped: ${runtime.reason}`, () => undefined);
  });
}
