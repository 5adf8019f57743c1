import {
  DeliverEvent,
  errorDeliverable,
  GroupChangedEvent,
  GroupChangeFrame,
  GroupCommandEvent,
  GroupFrame,
  ParleyError,
  serverMid,
  TopicPosition,
  userMid,
} from '@parley/contracts';
import {
  Change,
  ChangeRequest,
  cannotAdd,
  checkGroupsPerUser,
  decideChange,
  GroupOperation,
  GroupRules,
  GroupState,
} from './group';
import { GroupNotice, GroupStore, MemberPage } from './group-store';

/** What has to be published after a change. */
export interface GroupEffects {
  /** Deliverables to one user each (a refusal to its sender). */
  deliveries: DeliverEvent[];
  /** A change's `group` frame, for every member and every removed one. */
  notices: Array<{ frame: GroupChangeFrame; recipients: string[] }>;
  changes: GroupChangedEvent[];
}

export interface ChangeOutcome {
  /** The group after the request (before it, when nothing changed); undefined if it does not exist. */
  state: GroupState | undefined;
  effects: GroupEffects;
}

/** The ids of one change: `opMid` makes it idempotent, `noticeMid` is the mid of its `group` deliverable. */
export interface ChangeIds {
  opMid: string;
  noticeMid: string;
  /** It may come again (the pipe): a no-op or a refusal is remembered too, so a replay repeats it. */
  replayable?: boolean;
  /** A replayable op's place in the group topic: a change records it as the group's last piped op. */
  position?: TopicPosition;
  /** A user the notice does not go to: one whose account is erased, leaving. */
  unnotified?: string;
}

export const noEffects = (): GroupEffects => ({ deliveries: [], notices: [], changes: [] });

/** Adds `more` to what `effects` will publish. */
export function addEffects(effects: GroupEffects, more: GroupEffects): void {
  effects.deliveries.push(...more.deliveries);
  effects.notices.push(...more.notices);
  effects.changes.push(...more.changes);
}

/** Applies group changes through the store under the rules, and says what to publish. */
export class GroupService {
  constructor(
    private readonly store: GroupStore,
    private readonly rules: GroupRules,
    /** When a change is applied: its notice's `at`, and what the outbox measures its grace from. */
    private readonly clock: () => number = Date.now,
  ) {}

  find(id: string): Promise<GroupState | undefined> {
    return this.store.find(id);
  }

  listForMember(user: string, page: MemberPage): Promise<{ groups: GroupState[]; more: boolean }> {
    return this.store.listForMember(user, page);
  }

  async change(request: ChangeRequest, ids: ChangeIds): Promise<ChangeOutcome> {
    const result = await this.store.apply(
      request.group,
      ids.opMid,
      async (current, context) => {
        // Stamped before it waited for the group's lock, a change may be applied after one stamped
        // later: its time goes past the group's last change, so notices' times follow the order
        // changes took effect (clients place them by `at`), also across hosts whose clocks differ.
        const stamped = current ? { ...request, at: Math.max(request.at, current.updatedAt + 1) } : request;
        const change = decideChange(current, stamped, this.rules);
        if (!change) return null;
        if (change.joined.length > 0) {
          // A blocked user cannot put the user who blocked them in a group (a way round the block).
          const blockers = await context.blockersAmong(request.by, change.joined);
          if (blockers.length > 0) throw cannotAdd(request.group, blockers);
          const groupsOf = await context.lockGroupCounts(change.joined);
          checkGroupsPerUser(request.group, groupsOf, this.rules);
        }
        return { next: change.next, notice: noticeOf(change, stamped, ids.noticeMid, ids.unnotified) };
      },
      ids.replayable ? { at: request.at, position: ids.position } : undefined,
    );
    switch (result.kind) {
      case 'applied':
        return { state: result.next, effects: effectsOf(result.notice) };
      case 'replayed':
        if (result.refusal) throw new ParleyError(result.refusal.code, result.refusal.message);
        return {
          state: await this.store.find(request.group),
          effects: result.notice ? effectsOf(result.notice) : noEffects(),
        };
      case 'unchanged':
        return { state: result.current, effects: noEffects() };
    }
  }

  /** Marks the notices of these ops as out: Kafka has them. */
  published(opMids: string[]): Promise<void> {
    return this.store.markPublished(opMids);
  }

  /** The outbox: what ops applied before `appliedBefore` still have to tell, with their op mids. */
  async unpublished(
    appliedBefore: number,
    limit: number,
  ): Promise<{ opMids: string[]; effects: GroupEffects }> {
    const pending = await this.store.unpublished(appliedBefore, limit);
    const effects = noEffects();
    for (const { notice } of pending) addEffects(effects, effectsOf(notice));
    return { opMids: pending.map((p) => p.opMid), effects };
  }

  /**
   * A group op from the pipe: idempotent by `<from>:<id>`; a refused op becomes an `error`
   * deliverable to the sender. Other failures (the database) throw, so the record is retried.
   * Stamped when applied, as a REST change is, not when sent: notices' times then follow the order
   * changes took effect, and the outbox does not take an op sent long ago (a backlog) for one
   * whose publish failed. `position`, the op's place in the group topic (from a router that tells
   * it), is recorded with a change it makes: the router skips what lies before it when it handles a
   * batch again.
   */
  async applyCommand(event: GroupCommandEvent, position?: TopicPosition): Promise<GroupEffects> {
    const { from, frame } = event;
    const request: ChangeRequest = {
      group: frame.group,
      by: from,
      at: this.clock(),
      operation: operationOf(frame),
    };
    try {
      const outcome = await this.change(request, {
        opMid: userMid(from, frame.id),
        noticeMid: serverMid('group', from, frame.id),
        replayable: true,
        position,
      });
      return outcome.effects;
    } catch (err) {
      if (!(err instanceof ParleyError)) throw err;
      return { ...noEffects(), deliveries: [refusal(event, err)] };
    }
  }
}

export function operationOf(frame: GroupFrame): GroupOperation {
  switch (frame.op) {
    case 'create':
      return { op: 'create', name: frame.name, members: frame.members ?? [] };
    case 'add':
      return { op: 'add', members: frame.members };
    case 'remove':
      return { op: 'remove', members: frame.members };
    case 'leave':
      return { op: 'leave' };
    case 'rename':
      return { op: 'rename', name: frame.name };
  }
}

function noticeOf(change: Change, request: ChangeRequest, mid: string, unnotified?: string): GroupNotice {
  const frame: GroupChangeFrame = {
    type: 'group',
    mid,
    op: change.op,
    group: request.group,
    by: request.by,
    at: request.at,
  };
  if (change.op === 'create' || change.op === 'rename') frame.name = change.next.name;
  if (change.affected.length > 0) frame.members = change.affected;
  if (change.admins) frame.admins = change.admins;
  const members = change.next.members.map((m) => m.user);
  const recipients = [...members, ...change.removed].filter((user) => user !== unnotified);
  return { frame, members, recipients };
}

function effectsOf(notice: GroupNotice): GroupEffects {
  return {
    deliveries: [],
    notices: [{ frame: notice.frame, recipients: notice.recipients }],
    changes: [
      {
        v: 1,
        kind: 'group-changed',
        group: notice.frame.group,
        members: notice.members,
        at: notice.frame.at,
      },
    ],
  };
}

function refusal(event: GroupCommandEvent, err: ParleyError): DeliverEvent {
  return errorDeliverable(event.from, { id: event.frame.id, code: err.code, message: err.message });
}
