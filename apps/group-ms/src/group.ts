import { Group, GroupOp, ParleyError } from '@parley/contracts';

/** A group as group-ms keeps it. Members are in the order they joined. */
export type Role = 'admin' | 'member';

export interface Member {
  user: string;
  role: Role;
}

export interface GroupState {
  id: string;
  name: string;
  createdBy: string;
  createdAt: number;
  updatedAt: number;
  members: Member[];
}

export type GroupOperation =
  | { op: 'create'; name: string; members: string[] }
  | { op: 'add'; members: string[] }
  | { op: 'remove'; members: string[] }
  | { op: 'leave' }
  | { op: 'rename'; name: string };

/** One requested change: who asks, when, and what. */
export interface ChangeRequest {
  group: string;
  by: string;
  at: number;
  operation: GroupOperation;
}

/** What a change did: the new state, the op it reads as, and the users it affected. */
export interface Change {
  op: GroupOp;
  next: GroupState;
  /** For create: every member; add: those added; remove/leave: those removed; rename: none. */
  affected: string[];
  /** The users it makes members (create: every member; add: those added): each joins one more group. */
  joined: string[];
  /** Members that are no longer members: they are told too. */
  removed: string[];
  /** Set when the change made someone admin (the last admin left): the admins after it. */
  admins?: string[];
}

export interface GroupRules {
  maxMembers: number;
  maxGroupsPerUser: number;
}

/**
 * The rules of PROTOCOL.md as a pure decision: the change a request makes to the current state,
 * `null` when it changes nothing (an idempotent repeat), or a ParleyError when it is refused.
 * The creator is a member and admin; any member may add; a member may leave; only admins remove
 * others; non-members see the group as missing.
 */
export function decideChange(
  current: GroupState | undefined,
  request: ChangeRequest,
  rules: GroupRules,
): Change | null {
  const { operation } = request;
  if (operation.op === 'create') return decideCreate(current, request, operation, rules);
  const group = visibleTo(current, request.by, request.group);
  switch (operation.op) {
    case 'add':
      return decideAdd(group, request, operation.members, rules);
    case 'remove':
      return decideRemove(group, request, operation.members);
    case 'leave':
      return decideRemove(group, request, [request.by]);
    case 'rename':
      return decideRename(group, request, operation.name);
  }
}

export function isMember(group: GroupState, user: string): boolean {
  return group.members.some((m) => m.user === user);
}

/** For checks of many users at once: one pass over the members instead of one per user. */
function memberSet(group: GroupState): Set<string> {
  return new Set(group.members.map((m) => m.user));
}

export function isAdmin(group: GroupState, user: string): boolean {
  return group.members.some((m) => m.user === user && m.role === 'admin');
}

/** The group as the protocol shows it, or not_found when `user` may not see it. */
export function visibleTo(group: GroupState | undefined, user: string, id: string): GroupState {
  if (!group || !isMember(group, user)) throw new ParleyError('not_found', `group ${id}: no such group`);
  return group;
}

export function toGroup(state: GroupState): Group {
  return {
    id: state.id,
    name: state.name,
    members: state.members.map((m) => m.user),
    admins: adminsOf(state.members),
    createdAt: state.createdAt,
  };
}

function decideCreate(
  current: GroupState | undefined,
  request: ChangeRequest,
  operation: { name: string; members: string[] },
  rules: GroupRules,
): Change | null {
  const users = unique([request.by, ...operation.members]);
  // A group its last member left is gone: its id may be used again.
  if (current && current.members.length > 0) {
    const member = isMember(current, request.by);
    const creator = member && current.createdBy === request.by;
    if (creator && sameGroup(current, operation.name, users)) return null; // the same create again (a retry)
    throw new ParleyError(
      'conflict',
      `group ${request.group}: already exists${conflictReason(member, creator)}`,
    );
  }
  checkSize(users.length, rules, request.group);
  const members: Member[] = users.map((user) => ({ user, role: user === request.by ? 'admin' : 'member' }));
  const next: GroupState = {
    id: request.group,
    name: operation.name,
    createdBy: request.by,
    createdAt: request.at,
    updatedAt: request.at,
    members,
  };
  return { op: 'create', next, affected: users, joined: users, removed: [] };
}

function decideAdd(
  group: GroupState,
  request: ChangeRequest,
  users: string[],
  rules: GroupRules,
): Change | null {
  const current = memberSet(group);
  const added = unique(users).filter((user) => !current.has(user));
  if (added.length === 0) return null;
  checkSize(group.members.length + added.length, rules, group.id);
  const members = [...group.members, ...added.map((user): Member => ({ user, role: 'member' }))];
  const next = { ...group, members, updatedAt: request.at };
  return { op: 'add', next, affected: added, joined: added, removed: [] };
}

function decideRemove(group: GroupState, request: ChangeRequest, users: string[]): Change | null {
  const others = users.filter((user) => user !== request.by);
  if (others.length > 0 && !isAdmin(group, request.by)) {
    throw new ParleyError('forbidden', `group ${group.id}: only admins remove other members`);
  }
  const current = memberSet(group);
  const removed = unique(users).filter((user) => current.has(user));
  if (removed.length === 0) return null;
  const leaving = new Set(removed);
  const remaining = group.members.filter((m) => !leaving.has(m.user));
  const op: GroupOp = removed.length === 1 && removed[0] === request.by ? 'leave' : 'remove';
  const members = keepAnAdmin(remaining);
  const next = { ...group, members, updatedAt: request.at };
  const promoted = members.length > 0 && members[0].role !== remaining[0].role;
  return { op, next, affected: removed, joined: [], removed, ...(promoted && { admins: adminsOf(members) }) };
}

function decideRename(group: GroupState, request: ChangeRequest, name: string): Change | null {
  if (group.name === name) return null;
  const next = { ...group, name, updatedAt: request.at };
  return { op: 'rename', next, affected: [], joined: [], removed: [] };
}

function adminsOf(members: Member[]): string[] {
  return members.filter((m) => m.role === 'admin').map((m) => m.user);
}

function sameGroup(group: GroupState, name: string, users: string[]): boolean {
  const members = memberSet(group);
  return group.name === name && users.length === members.size && users.every((user) => members.has(user));
}

/** When the last admin leaves, the longest-standing member becomes admin, so the group stays manageable. */
function keepAnAdmin(members: Member[]): Member[] {
  if (members.length === 0 || members.some((m) => m.role === 'admin')) return members;
  return [{ ...members[0], role: 'admin' }, ...members.slice(1)];
}

/** Why a create of an existing group is refused, told only to its members (others learn no more than that it exists). */
function conflictReason(member: boolean, creator: boolean): string {
  if (!member) return '';
  return creator ? ' with another name or other members' : ', created by another user';
}

function checkSize(size: number, rules: GroupRules, id: string): void {
  if (size > rules.maxMembers) {
    throw new ParleyError('group_full', `group ${id}: at most ${rules.maxMembers} members`);
  }
}

/**
 * Refuses a change that would make a user a member of more groups than the rules allow.
 * `groupsOf`: how many groups each user the change makes a member is in already.
 */
export function checkGroupsPerUser(group: string, groupsOf: Map<string, number>, rules: GroupRules): void {
  const full = [...groupsOf].filter(([, groups]) => groups >= rules.maxGroupsPerUser).map(([user]) => user);
  if (full.length === 0) return;
  throw new ParleyError(
    'too_many_groups',
    `group ${group}: ${namedFew(full)} already in the most groups one user may be in (${rules.maxGroupsPerUser})`,
  );
}

/** The refusal of a change that would add users who blocked its author: whole, naming them. */
export function cannotAdd(group: string, blockers: string[]): ParleyError {
  return new ParleyError('forbidden', `group ${group}: you cannot add ${namedFew(blockers)}`);
}

/** The first few users of a list, for a message: a create may name a thousand. */
function namedFew(users: string[], few = 5): string {
  const more = users.length - few;
  return users.slice(0, few).join(', ') + (more > 0 ? ` and ${more} more` : '');
}

function unique(users: string[]): string[] {
  return [...new Set(users)];
}
