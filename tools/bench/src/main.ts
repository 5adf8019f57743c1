import { runFleetScenarios } from './fleet-scenarios';
import { startFleetUnderTest, stopFleetUnderTest } from './fleet-under-test';
import { benchOptions, HELP } from './options';
import { runRelayScenarios } from './relay-scenarios';
import { concludeRun, newRun, writeReport } from './run';

/**
 * Starts the fleet (or targets a running one) and runs its scenarios, then the raw relay's, and
 * writes the report. `npm run bench -- --help` lists the options.
 */
async function main() {
  const options = benchOptions(process.argv.slice(2));
  if (options.help) return void process.stdout.write(HELP);
  const run = newRun(options);
  const fleet = await startFleetUnderTest(run);
  run.report.fleet.where = fleet.where;
  run.report.fleet.startMs = fleet.startMs;
  try {
    await runFleetScenarios(fleet, run);
  } finally {
    await stopFleetUnderTest(fleet, run);
  }
  if (options.only.has('relay')) await runRelayScenarios(run);
  concludeRun(run);
  writeReport(run);
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
