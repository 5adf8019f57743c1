import { issueToken } from '@parley/service-kit';
import { ClientPool, type Target } from './clients';
import { ProcSampler, spawnTs } from './proc';
import { pairs, type BenchRun } from './run';
import { drain, formatStep, maxSustainable, ramp, runFanout, runStep } from './scenarios';

/**
 * The baseline: a raw `ws` relay in its own process, driven by the same clients. Its ramp gives the
 * ratio's denominator; at the fleet's half-max rate it gives these clients' latency floor on this box.
 */
export async function runRelayScenarios(run: BenchRun): Promise<void> {
  const { options, report, log, tag } = run;
  const { settings, only, quick } = options;
  log('starting the raw ws relay (its own process)...');
  const relay = await spawnTs('tools/bench/src/relay.ts', 'RELAY_READY', {
    timeoutMs: 30_000,
    cpus: options.serviceCpus,
  });
  try {
    const sampler = new ProcSampler(relay.pid);
    const target: Target = {
      name: 'relay',
      wsUrl: relay.ready.url as string,
      token: (u) => issueToken('relay-does-not-verify-tokens-0123456789', u),
    };
    const pool = new ClientPool(target, settings);
    await pool.connect(pairs(`b${tag}r`, settings.conns));
    await runStep(pool, {
      scenario: 'warm-up',
      rate: 2000,
      durationMs: 1000,
      graceMs: 2000,
      criteria: settings.criteria,
    });
    await drain(pool, 300, 3000);
    log('relay 1:1 ramp:');
    const steps = only.has('ramp')
      ? await ramp(pool, {
          start: settings.relayStart,
          max: settings.maxRate,
          durationMs: settings.stepMs,
          graceMs: settings.graceMs,
          refine: settings.refine,
          criteria: settings.criteria,
          sampler,
          log,
          rates: options.relayRates,
        })
      : [];
    report.relay = { steps, max: maxSustainable(steps) };
    log(`  relay max sustainable: ${report.relay.max.delivered} msg/s`);
    if (report.fleet.half) {
      report.relay.half = await runStep(pool, {
        scenario: 'fleet half',
        rate: report.fleet.half.offered,
        durationMs: Math.min(settings.halfMs, 5000),
        graceMs: settings.graceMs,
        criteria: settings.criteria,
        sampler,
      });
      log(formatStep(report.relay.half));
    }
    if (only.has('fanout')) {
      report.relay.fanout = await runFanout(pool, {
        ...settings.fanout,
        // The relay knows no groups but this frame, which makes one in its memory.
        createGroup: async (group, owner, others) => {
          const client = pool.clients.find((c) => c.user === owner)!;
          pool.sendRaw(client, {
            type: 'group',
            id: `create-${group}`,
            op: 'create',
            group,
            name: 'bench',
            members: others,
          });
        },
        sampler,
        log,
        maxWaitMs: quick ? 20_000 : 60_000,
      });
    }
    await pool.close();
  } finally {
    await relay.stop();
  }
}
