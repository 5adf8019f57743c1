import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { ErrorCode } from '../protocol/errors';

export type GroupState = 'Empty' | 'PreparingRebalance' | 'CompletingRebalance' | 'Stable' | 'Dead';

export interface JoinRequest {
  groupId: string;
  memberId: string;
  clientId: string;
  clientHost: string;
  sessionTimeout: number;
  rebalanceTimeout: number;
  protocolType: string;
  protocols: { name: string; metadata: Buffer }[];
}

export interface JoinResult {
  errorCode: number;
  generationId: number;
  protocol: string | null;
  leaderId: string;
  memberId: string;
  members: { memberId: string; metadata: Buffer }[];
}

export interface SyncResult {
  errorCode: number;
  assignment: Buffer;
}

interface Member {
  id: string;
  clientId: string;
  clientHost: string;
  sessionTimeout: number;
  rebalanceTimeout: number;
  protocols: { name: string; metadata: Buffer }[];
  assignment: Buffer;
  pendingJoin?: (r: JoinResult) => void;
  pendingSync?: (r: SyncResult) => void;
  session?: NodeJS.Timeout;
}

interface Group {
  id: string;
  state: GroupState;
  generation: number;
  protocolType: string | null;
  protocol: string | null;
  leader: string | null;
  members: Map<string, Member>;
  rebalanceTimer?: NodeJS.Timeout;
}

export interface CoordinatorOptions {
  minSessionTimeoutMs: number;
  maxSessionTimeoutMs: number;
  /** A group lost its last member (`empty`) or has its first again: where its offsets' retention clock starts. */
  onEmptyChange?(groupId: string, empty: boolean): void;
}

const EMPTY: Buffer = Buffer.alloc(0);

/**
 * Consumer-group coordinator, Kafka's state machine in one process: a JoinGroup (but a follower's
 * unchanged rejoin of a Stable group) starts a rebalance that waits (the barrier) until every known
 * member has rejoined or the rebalance timeout passes;
 * followers' SyncGroups wait for the leader's; members learn of a rebalance through Heartbeat and
 * OffsetCommit answering REBALANCE_IN_PROGRESS; a member silent past its session timeout is evicted.
 */
export class GroupCoordinator {
  private readonly groups = new Map<string, Group>();

  constructor(
    private readonly options: CoordinatorOptions,
    private readonly logger: Logger,
  ) {}

  private group(id: string): Group {
    let g = this.groups.get(id);
    if (!g) {
      g = {
        id,
        state: 'Empty',
        generation: 0,
        protocolType: null,
        protocol: null,
        leader: null,
        members: new Map(),
      };
      this.groups.set(id, g);
    }
    return g;
  }

  join(req: JoinRequest): Promise<JoinResult> {
    const fail = (errorCode: number) =>
      Promise.resolve({
        errorCode,
        generationId: -1,
        protocol: null,
        leaderId: '',
        memberId: req.memberId,
        members: [],
      });
    if (!req.groupId) return fail(ErrorCode.INVALID_GROUP_ID);
    if (
      req.sessionTimeout < this.options.minSessionTimeoutMs ||
      req.sessionTimeout > this.options.maxSessionTimeoutMs
    )
      return fail(ErrorCode.INVALID_SESSION_TIMEOUT);
    if (!req.protocolType || req.protocols.length === 0) return fail(ErrorCode.INCONSISTENT_GROUP_PROTOCOL);
    const g = this.group(req.groupId);
    if (g.members.size > 0 && g.protocolType !== req.protocolType)
      return fail(ErrorCode.INCONSISTENT_GROUP_PROTOCOL);
    if (g.members.size > 0 && !this.commonProtocol(g, req.protocols))
      return fail(ErrorCode.INCONSISTENT_GROUP_PROTOCOL);
    let member: Member | undefined;
    if (req.memberId) {
      member = g.members.get(req.memberId);
      if (!member) return fail(ErrorCode.UNKNOWN_MEMBER_ID);
      if (this.isSameFollowerRejoin(g, member, req.protocols)) return this.currentGeneration(g, member);
    } else {
      member = {
        id: `${req.clientId || 'member'}-${randomUUID()}`,
        clientId: req.clientId,
        clientHost: req.clientHost,
        sessionTimeout: 0,
        rebalanceTimeout: 0,
        protocols: [],
        assignment: EMPTY,
      };
      g.members.set(member.id, member);
      if (g.members.size === 1) this.options.onEmptyChange?.(g.id, false);
    }
    const m = member;
    if (m.session && m.sessionTimeout !== req.sessionTimeout) {
      clearTimeout(m.session);
      m.session = undefined;
    }
    m.sessionTimeout = req.sessionTimeout;
    m.rebalanceTimeout = req.rebalanceTimeout;
    m.protocols = req.protocols;
    g.protocolType = req.protocolType;
    // A rejoin that replaces an earlier, still pending one: answer the old one.
    answerJoinAsUnknown(m);
    const result = new Promise<JoinResult>((resolve) => (m.pendingJoin = resolve));
    this.touch(g, m);
    if (g.state !== 'PreparingRebalance') this.prepareRebalance(g, `member ${m.id} joined`);
    else this.maybeCompleteJoin(g);
    return result;
  }

  /**
   * A follower of a Stable group rejoining with the protocols and metadata it has: nothing changed
   * that the assignment depends on, so, as in Kafka, no rebalance (the leader's rejoin still starts
   * one: it may have seen a change the metadata does not show, a topic's partition count).
   */
  private isSameFollowerRejoin(g: Group, m: Member, protocols: JoinRequest['protocols']): boolean {
    return (
      g.state === 'Stable' &&
      g.leader !== m.id &&
      protocols.length === m.protocols.length &&
      protocols.every((p, i) => p.name === m.protocols[i].name && p.metadata.equals(m.protocols[i].metadata))
    );
  }

  /** The group's current generation, as a follower's JoinGroup answer: it goes on to SyncGroup. */
  private currentGeneration(g: Group, m: Member): Promise<JoinResult> {
    this.touch(g, m);
    return Promise.resolve({
      errorCode: ErrorCode.NONE,
      generationId: g.generation,
      protocol: g.protocol,
      leaderId: g.leader!,
      memberId: m.id,
      members: [],
    });
  }

  private commonProtocol(g: Group, extra?: { name: string }[]): string | null {
    const lists = [...g.members.values()].map((m) => m.protocols.map((p) => p.name));
    if (extra) lists.push(extra.map((p) => p.name));
    const candidates = lists[0] ?? [];
    return candidates.find((name) => lists.every((l) => l.includes(name))) ?? null;
  }

  private prepareRebalance(g: Group, reason: string): void {
    this.logger.debug({ group: g.id, generation: g.generation, reason }, 'rebalance');
    g.state = 'PreparingRebalance';
    for (const m of g.members.values()) this.answerSync(g, m, ErrorCode.REBALANCE_IN_PROGRESS);
    clearTimeout(g.rebalanceTimer);
    const timeout = Math.max(0, ...[...g.members.values()].map((m) => m.rebalanceTimeout));
    g.rebalanceTimer = setTimeout(() => this.rebalanceTimedOut(g), timeout);
    this.maybeCompleteJoin(g);
  }

  private rebalanceTimedOut(g: Group): void {
    if (g.state !== 'PreparingRebalance') return;
    for (const m of [...g.members.values()]) {
      if (!m.pendingJoin) this.removeMember(g, m, 'did not rejoin within the rebalance timeout');
    }
    this.completeJoin(g);
  }

  private maybeCompleteJoin(g: Group): void {
    if (g.state !== 'PreparingRebalance') return;
    for (const m of g.members.values()) if (!m.pendingJoin) return;
    this.completeJoin(g);
  }

  private completeJoin(g: Group): void {
    clearTimeout(g.rebalanceTimer);
    g.rebalanceTimer = undefined;
    g.generation++;
    if (g.members.size === 0) {
      g.state = 'Empty';
      g.leader = null;
      g.protocol = null;
      return;
    }
    g.protocol = this.commonProtocol(g);
    if (!g.leader || !g.members.has(g.leader)) g.leader = g.members.keys().next().value!;
    g.state = 'CompletingRebalance';
    const all = [...g.members.values()].map((m) => ({
      memberId: m.id,
      metadata: m.protocols.find((p) => p.name === g.protocol)?.metadata ?? EMPTY,
    }));
    this.logger.info({ group: g.id, generation: g.generation, members: g.members.size }, 'group rebalanced');
    for (const m of g.members.values()) {
      const resolve = m.pendingJoin!;
      m.pendingJoin = undefined;
      m.assignment = EMPTY;
      this.touch(g, m);
      resolve({
        errorCode: ErrorCode.NONE,
        generationId: g.generation,
        protocol: g.protocol,
        leaderId: g.leader,
        memberId: m.id,
        members: m.id === g.leader ? all : [],
      });
    }
  }

  sync(
    groupId: string,
    generation: number,
    memberId: string,
    assignments: { memberId: string; assignment: Buffer }[],
  ): Promise<SyncResult> {
    const answer = (errorCode: number, assignment = EMPTY) => Promise.resolve({ errorCode, assignment });
    const g = this.groups.get(groupId);
    const m = g?.members.get(memberId);
    if (!g || !m) return answer(ErrorCode.UNKNOWN_MEMBER_ID);
    if (generation !== g.generation) return answer(ErrorCode.ILLEGAL_GENERATION);
    this.touch(g, m);
    if (g.state === 'PreparingRebalance') return answer(ErrorCode.REBALANCE_IN_PROGRESS);
    if (g.state === 'Stable') return answer(ErrorCode.NONE, m.assignment);
    // CompletingRebalance
    if (memberId === g.leader) {
      for (const a of assignments) {
        const target = g.members.get(a.memberId);
        if (target) target.assignment = Buffer.from(a.assignment); // the request frame is not kept
      }
      g.state = 'Stable';
      for (const other of g.members.values()) this.answerSync(g, other, ErrorCode.NONE, other.assignment);
      return answer(ErrorCode.NONE, m.assignment);
    }
    m.pendingSync?.({ errorCode: ErrorCode.REBALANCE_IN_PROGRESS, assignment: EMPTY });
    return new Promise((resolve) => (m.pendingSync = resolve));
  }

  /**
   * Answers a member's waiting SyncGroup. Its session starts again from the answer, as in Kafka: it
   * sent no heartbeat while it waited, and its session timer may have run out meanwhile (`expire`).
   */
  private answerSync(g: Group, m: Member, errorCode: number, assignment = EMPTY): void {
    if (!m.pendingSync) return;
    m.pendingSync({ errorCode, assignment });
    m.pendingSync = undefined;
    this.touch(g, m);
  }

  heartbeat(groupId: string, generation: number, memberId: string): number {
    const g = this.groups.get(groupId);
    const m = g?.members.get(memberId);
    if (!g || !m) return ErrorCode.UNKNOWN_MEMBER_ID;
    this.touch(g, m);
    if (g.state === 'PreparingRebalance') return ErrorCode.REBALANCE_IN_PROGRESS;
    if (generation !== g.generation) return ErrorCode.ILLEGAL_GENERATION;
    return ErrorCode.NONE;
  }

  leave(groupId: string, memberId: string): number {
    const g = this.groups.get(groupId);
    const m = g?.members.get(memberId);
    if (!g || !m) return ErrorCode.UNKNOWN_MEMBER_ID;
    this.removeMember(g, m, 'left the group');
    this.afterRemoval(g);
    return ErrorCode.NONE;
  }

  /**
   * Whether a member may commit offsets for this generation. Generation -1 is a standalone commit
   * (an offsets tool's), taken only while the group has no members, as Kafka takes it: not moving
   * a running group's offsets under it.
   */
  checkCommit(groupId: string, generation: number, memberId: string): number {
    if (generation < 0 && !this.hasMembers(groupId)) return ErrorCode.NONE;
    const g = this.groups.get(groupId);
    const m = g?.members.get(memberId);
    if (!g || !m) return ErrorCode.UNKNOWN_MEMBER_ID;
    if (generation !== g.generation) return ErrorCode.ILLEGAL_GENERATION;
    this.touch(g, m);
    if (g.state === 'CompletingRebalance') return ErrorCode.REBALANCE_IN_PROGRESS;
    return ErrorCode.NONE;
  }

  describe(groupId: string) {
    const g = this.groups.get(groupId);
    if (!g) return { state: 'Dead' as GroupState, protocolType: '', protocol: '', members: [] };
    return {
      state: g.state,
      protocolType: g.protocolType ?? '',
      protocol: g.protocol ?? '',
      members: [...g.members.values()].map((m) => ({
        memberId: m.id,
        clientId: m.clientId,
        clientHost: m.clientHost,
        metadata: m.protocols.find((p) => p.name === g.protocol)?.metadata ?? EMPTY,
        assignment: m.assignment,
      })),
    };
  }

  hasMembers(groupId: string): boolean {
    return (this.groups.get(groupId)?.members.size ?? 0) > 0;
  }

  /** Every group the coordinator knows, with its protocol type ('' before any member joined). */
  list(): { groupId: string; protocolType: string }[] {
    return [...this.groups.values()].map((g) => ({ groupId: g.id, protocolType: g.protocolType ?? '' }));
  }

  /**
   * Forgets the empty groups (no members, no rebalance under way) that `keep` does not claim (in
   * Kafka: those without offsets left, which become Dead); returns how many.
   */
  forgetEmpty(keep: (groupId: string) => boolean): number {
    let forgotten = 0;
    for (const g of [...this.groups.values()]) {
      if (g.state !== 'Empty' || g.members.size > 0 || keep(g.id)) continue;
      clearTimeout(g.rebalanceTimer);
      this.groups.delete(g.id);
      forgotten++;
    }
    return forgotten;
  }

  private touch(g: Group, m: Member): void {
    if (m.session) m.session.refresh();
    else m.session = setTimeout(() => this.expire(g, m), m.sessionTimeout);
  }

  private expire(g: Group, m: Member): void {
    if (g.members.get(m.id) !== m) return;
    if (m.pendingJoin) return; // waiting in the barrier: the rebalance timeout decides
    // Waiting in SyncGroup for the leader's assignment, which can take longer than this member's
    // session (Kafka keeps such a member too): the leader's own session bounds the wait.
    if (m.pendingSync) return;
    this.removeMember(g, m, 'session timed out');
    this.afterRemoval(g);
  }

  private removeMember(g: Group, m: Member, reason: string): void {
    clearTimeout(m.session);
    m.session = undefined;
    g.members.delete(m.id);
    this.logger.info({ group: g.id, member: m.id, reason }, 'member removed');
    if (g.members.size === 0) this.options.onEmptyChange?.(g.id, true);
    answerJoinAsUnknown(m);
    m.pendingJoin = undefined;
    m.pendingSync?.({ errorCode: ErrorCode.UNKNOWN_MEMBER_ID, assignment: EMPTY });
    m.pendingSync = undefined;
    if (g.leader === m.id) g.leader = null;
  }

  private afterRemoval(g: Group): void {
    if (g.state === 'PreparingRebalance') return this.maybeCompleteJoin(g);
    if (g.members.size === 0) {
      clearTimeout(g.rebalanceTimer);
      g.state = 'Empty';
      g.generation++;
      g.leader = null;
      return;
    }
    this.prepareRebalance(g, 'member removed');
  }

  close(): void {
    for (const g of this.groups.values()) {
      clearTimeout(g.rebalanceTimer);
      for (const m of g.members.values()) clearTimeout(m.session);
    }
    this.groups.clear();
  }
}

/** A member's pending JoinGroup, if any, is answered UNKNOWN_MEMBER_ID: it was replaced or removed. */
function answerJoinAsUnknown(m: Member): void {
  m.pendingJoin?.({
    errorCode: ErrorCode.UNKNOWN_MEMBER_ID,
    generationId: -1,
    protocol: null,
    leaderId: '',
    memberId: m.id,
    members: [],
  });
}
