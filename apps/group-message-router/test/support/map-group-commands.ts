import type { GroupCommandEvent, TopicPosition } from '@parley/contracts';
import { GroupCommandApplier } from '../../src/group-commands';
import { MapMembership } from './map-membership';

/**
 * Applies the ops it is given to the MapMembership, as group-ms would to its tables (once per op
 * mid, recording the place of a change), and records them.
 */
export class MapGroupCommands implements GroupCommandApplier {
  applied: GroupCommandEvent[] = [];
  private readonly decided = new Set<string>();
  constructor(private readonly membership: MapMembership) {}
  async apply(commands: GroupCommandEvent[], positions?: TopicPosition[]) {
    for (const [i, command] of commands.entries()) {
      this.applied.push(command);
      const { frame, from } = command;
      if (this.decided.has(`${from}:${frame.id}`)) continue; // applied before: changes nothing
      this.decided.add(`${from}:${frame.id}`);
      const members = this.membership.groups.get(frame.group) ?? [];
      let next: string[] | undefined;
      if (frame.op === 'create') next = [from, ...(frame.members ?? [])];
      if (frame.op === 'add')
        next = [...members, ...(frame.members ?? []).filter((m) => !members.includes(m))]; // idempotent, as group-ms
      if (frame.op === 'remove' || frame.op === 'leave') {
        const gone = new Set(frame.op === 'leave' ? [from] : frame.members);
        next = members.filter((m) => !gone.has(m));
      }
      if (next) this.membership.changeByOp(frame.group, next, positions?.[i]);
    }
  }
}
