import { TEST_DATABASE_URL } from '@parley/postgres/testing';
import { ProcessFleet } from './process-fleet';

/**
 * `npx tsx tools/reliability/src/start-process-fleet.ts`: the fleet as separate processes (as the
 * fault suite runs it) until Ctrl-C, for benchmarks that sample one service's process. Prints one
 * line, `PROCESS_FLEET {"ws":…,"rest":…,"pids":{…}}`, once every part is ready. Needs Postgres
 * (TEST_DATABASE_URL) and `redis-server` on the PATH.
 */
async function main() {
  const fleet = await ProcessFleet.start({ postgresUrl: TEST_DATABASE_URL });
  const pids = Object.fromEntries(Object.entries(fleet.parts).map(([name, part]) => [name, part.pid]));
  process.stdout.write(`PROCESS_FLEET ${JSON.stringify({ ...fleet.urls, pids })}\n`);
  const stop = () => void fleet.stop().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
