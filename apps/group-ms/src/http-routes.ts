import {
  AddMembersBody,
  BlockersResponse,
  BlockList,
  BlockParams,
  CreateGroupBody,
  ErasedCount,
  Group,
  GROUP_LIST_DEFAULT_LIMIT,
  GROUP_LIST_MAX_LIMIT,
  GroupList,
  GroupListQuery,
  GroupCommandEvent,
  GroupCommandsRequest,
  GroupCommandsResponse,
  GroupMemberParams,
  GroupParams,
  parseUserList,
  ParleyError,
  PresenceQuery,
  serverMid,
  TopicPosition,
} from '@parley/contracts';
import type { FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import { actingUser, contractsBodyValidator, HttpServer } from '@parley/service-kit';
import { groupCursor, GroupPosition } from './cursor';
import { ChangeRequest, GroupOperation, GroupState, toGroup, visibleTo } from './group';
import { GroupEffects, GroupService } from './group-service';
import { GroupStore } from './group-store';
import type { ReportStore } from './reports';

export interface GroupRoutesDeps {
  groups: GroupService;
  publish: (effects: GroupEffects) => Promise<void>;
  /** Applies ops from the pipe in order (at these places in the group topic), and publishes what they tell. */
  applyCommands: (commands: GroupCommandEvent[], positions?: TopicPosition[]) => Promise<void>;
  clock: () => number;
  newId: () => string;
  logger: Logger;
  /** Groups listed at a time while an erased user leaves them all. */
  erasePageSize: number;
  /** How long one call of an erasure leaves groups before it answers 503 (call again). */
  eraseBudgetMs: number;
  /** Members of all groups together past which a list asked without paging is refused (page instead). */
  maxListedMembers: number;
  /** Where a user's blocks are kept. */
  blocks: Pick<GroupStore, 'block' | 'unblock' | 'blocksOf' | 'blockersAmong' | 'forgetBlocksOf'>;
  /** Where group-message-router records the group messages it routed (an erasure forgets the user's). */
  routed: Pick<GroupStore, 'forgetRoutedOf'>;
  /** Users one user may block (MAX_BLOCKS_PER_USER). */
  maxBlocksPerUser: number;
  /** Where reports of users are kept (an erasure forgets those by and about the user). */
  reports: Pick<ReportStore, 'forgetReportsOf'>;
}

/**
 * Lists asked without paging that pass one page (GROUP_PAGE_MAX_BYTES) answered at once; past them
 * such a list is refused 503 unavailable, to be asked again (or paged).
 */
export const LARGE_LISTS_AT_ONCE = 2;

/** A server mid unique per REST change; `~group-rest:` cannot collide with pipe notices (`~group:`). */
const restNoticeMid = (by: string, newId: () => string) => serverMid('group-rest', by, newId());

/** The internal API behind the rest-gateway's `/v1/groups…` (the caller checks the internal secret). */
export function registerGroupRoutes(app: HttpServer, deps: GroupRoutesDeps): void {
  const change = async (group: string, by: string, operation: GroupOperation, unnotified?: string) => {
    const request: ChangeRequest = { group, by, at: deps.clock(), operation };
    const mid = restNoticeMid(by, deps.newId);
    const outcome = await deps.groups.change(request, { opMid: mid, noticeMid: mid, unnotified });
    // Committed before it is published: if this publish fails, the outbox publishes it later. The
    // caller hears what was done; a 503 would say nothing was, and its retry would find it done.
    try {
      await deps.publish(outcome.effects);
      if (outcome.effects.notices.length > 0) await deps.groups.published([mid]);
    } catch (err) {
      deps.logger.warn({ err, group, mid }, 'group change committed; its notice is left to the outbox');
    }
    return outcome.state!;
  };

  /** The user's groups, a page of `limit` (and GROUP_PAGE_MAX_BYTES) at a time, oldest first. */
  async function* pagesOf(
    user: string,
    limit: number,
  ): AsyncGenerator<{ groups: GroupState[]; more: boolean }> {
    for (let after: GroupPosition | undefined; ;) {
      const page = await deps.groups.listForMember(user, { after, limit });
      yield page;
      if (!page.more) return;
      after = { createdAt: page.groups.at(-1)!.createdAt, id: page.groups.at(-1)!.id };
    }
  }

  /** Lists asked without paging that pass one page, under way now (at most LARGE_LISTS_AT_ONCE). */
  let largeLists = 0;
  /**
   * Lets a list that passes one page go on, or refuses it. It counts until both its reading is over
   * (the call returned) and its answer is sent or its caller gone.
   */
  const admitLargeList = (reply: FastifyReply): (() => void) => {
    if (largeLists >= LARGE_LISTS_AT_ONCE)
      throw new ParleyError(
        'unavailable',
        `${LARGE_LISTS_AT_ONCE} lists of more than one page are under way: try again, or page with ?limit= and ?after=`,
      );
    // Its caller gone already (timed out), its 'close' came and went: nobody to answer.
    if (reply.raw.closed) throw new ParleyError('unavailable', 'the caller is gone');
    largeLists++;
    let open = 2;
    const done = () => {
      if (--open === 0) largeLists--;
    };
    reply.raw.once('close', done);
    return done;
  };

  /**
   * Every group of the user, for a list asked without paging: read a page at a time, and refused
   * once it holds more members than the largest page can (GROUP_LIST_MAX_LIMIT full groups). Read
   * in one go, a user put in thousands of full groups (anyone may create a group naming anyone)
   * made one request load and serialize millions of member rows. One that passes a page is admitted
   * only while few others are under way: each holds up to some 14 MB of JSON, here and in the
   * rest-gateway that asked, and 17 at once took a rest-gateway past its 512 MiB.
   */
  const allGroupsOf = async (user: string, reply: FastifyReply): Promise<GroupState[]> => {
    const all: GroupState[] = [];
    let members = 0;
    let admitted: (() => void) | undefined;
    try {
      for await (const { groups, more } of pagesOf(user, GROUP_LIST_MAX_LIMIT)) {
        for (const group of groups) {
          all.push(group);
          members += group.members.length;
        }
        if (members > deps.maxListedMembers)
          throw new ParleyError(
            'invalid_request',
            `more groups than one answer holds: their members pass ${deps.maxListedMembers}; page with ?limit= (at most ${GROUP_LIST_MAX_LIMIT}) and ?after=`,
          );
        if (more) admitted ??= admitLargeList(reply);
      }
      return all;
    } finally {
      admitted?.();
    }
  };

  // group-message-router, on meeting ops in the group topic: applied before it routes the messages
  // behind them, so a message sent after an op finds the membership that op made. Its ops are a
  // union told apart by `op`: checked by the contracts' validator, a bad one is named once.
  app.post(
    '/internal/group-commands',
    {
      schema: { body: GroupCommandsRequest, response: { 200: GroupCommandsResponse } },
      validatorCompiler: contractsBodyValidator,
    },
    async (request) => {
      await deps.applyCommands(request.body.commands, request.body.positions);
      return { applied: request.body.commands.length };
    },
  );

  app.post(
    '/internal/groups',
    { schema: { body: CreateGroupBody, response: { 201: Group } } },
    async (request, reply) => {
      const by = actingUser(request);
      const { id = deps.newId(), name, members = [] } = request.body;
      const state = await change(id, by, { op: 'create', name, members });
      return reply.code(201).send(toGroup(state));
    },
  );

  app.get(
    '/internal/groups',
    { schema: { querystring: GroupListQuery, response: { 200: GroupList } } },
    async (request, reply): Promise<GroupList> => {
      const user = actingUser(request);
      const { after, limit } = request.query;
      if (limit === undefined && after === undefined)
        return { groups: (await allGroupsOf(user, reply)).map(toGroup) };
      const { groups, more } = await deps.groups.listForMember(user, {
        after: groupCursor.decode(after, user),
        limit: limit ?? GROUP_LIST_DEFAULT_LIMIT,
      });
      const last = groups.at(-1);
      return {
        groups: groups.map(toGroup),
        next: more && last ? groupCursor.encode({ createdAt: last.createdAt, id: last.id }, user) : null,
      };
    },
  );

  app.get(
    '/internal/groups/:id',
    { schema: { params: GroupParams, response: { 200: Group } } },
    async (request) => {
      const user = actingUser(request);
      return toGroup(visibleTo(await deps.groups.find(request.params.id), user, request.params.id));
    },
  );

  app.post(
    '/internal/groups/:id/members',
    { schema: { params: GroupParams, body: AddMembersBody, response: { 200: Group } } },
    async (request) =>
      toGroup(
        await change(request.params.id, actingUser(request), { op: 'add', members: request.body.members }),
      ),
  );

  // DELETE /v1/account: the user leaves every group, as one by one; the members get the notice, not
  // the user (it would be stored for them after their storage is erased). A user in more groups than
  // leave within eraseBudgetMs is answered 503 once it has passed, the groups left so far left: the
  // caller's next call goes on from there. Run on past its caller's timeout (the rest-gateway's
  // 10 s), the loop would go on unseen while each call again started another over the same groups.
  app.delete(
    '/internal/account',
    { schema: { response: { 200: ErasedCount } } },
    async (request): Promise<ErasedCount> => {
      const user = actingUser(request);
      // Whom they blocked, the group messages they sent as routed, and the reports they filed. Others' blocks of them and reports about them
      // are those users' and the moderators' (the forget calls say why they stay).
      // First and on every call: a call after a 503 erases those made meanwhile too.
      await deps.blocks.forgetBlocksOf(user, deps.clock());
      await deps.routed.forgetRoutedOf(user);
      await deps.reports.forgetReportsOf(user);
      const startedAt = performance.now();
      let left = 0;
      for await (const { groups } of pagesOf(user, deps.erasePageSize))
        for (const group of groups) {
          // At least one group a call, so that calls again always get further.
          if (left > 0 && performance.now() - startedAt >= deps.eraseBudgetMs) {
            deps.logger.info({ user, left }, 'account erasure: more groups to leave, answered 503');
            throw new ParleyError('unavailable', `left ${left} groups, more to leave: call again to go on`);
          }
          if (await leaveIfMember(group.id, user)) left++;
        }
      return { erased: left };
    },
  );

  /** False when the user is no member by now (removed since the group was listed). */
  const leaveIfMember = async (group: string, user: string): Promise<boolean> => {
    try {
      await change(group, user, { op: 'leave' }, user);
      return true;
    } catch (err) {
      if (err instanceof ParleyError && err.code === 'not_found') return false;
      throw err;
    }
  };

  app.delete(
    '/internal/groups/:id/members/:user',
    { schema: { params: GroupMemberParams, response: { 200: Group } } },
    async (request) => {
      const by = actingUser(request);
      const { id, user } = request.params;
      const operation: GroupOperation = user === by ? { op: 'leave' } : { op: 'remove', members: [user] };
      return toGroup(await change(id, by, operation));
    },
  );

  registerBlockRoutes(app, deps);
}

/**
 * The internal API behind the rest-gateway's `/v1/blocks…` (App Store guideline 1.2), and what it
 * asks to hide presence from a blocked user. message-router reads the same rows to drop a blocked
 * sender's 1:1 messages, typing notices and read receipts to the blocker.
 */
function registerBlockRoutes(app: HttpServer, deps: GroupRoutesDeps): void {
  app.put('/internal/blocks/:user', { schema: { params: BlockParams } }, async (request, reply) => {
    const user = actingUser(request);
    const blocked = request.params.user;
    if (blocked === user) throw new ParleyError('invalid_request', 'user: you cannot block yourself');
    const outcome = await deps.blocks.block(user, blocked, deps.clock(), deps.maxBlocksPerUser);
    if (outcome === 'too_many')
      throw new ParleyError(
        'too_many_blocks',
        `at most ${deps.maxBlocksPerUser} users may be blocked; unblock one first`,
      );
    return reply.code(204).send();
  });

  app.delete('/internal/blocks/:user', { schema: { params: BlockParams } }, async (request, reply) => {
    await deps.blocks.unblock(actingUser(request), request.params.user, deps.clock());
    return reply.code(204).send();
  });

  app.get(
    '/internal/blocks',
    { schema: { response: { 200: BlockList } } },
    async (request): Promise<BlockList> => ({ blocked: await deps.blocks.blocksOf(actingUser(request)) }),
  );

  // The rest-gateway's GET /v1/presence: the users asked about who blocked the caller, whom it shows
  // offline. The same list as session-ms takes (repeats count once), refused alike.
  app.get(
    '/internal/blocks/blockers',
    { schema: { querystring: PresenceQuery, response: { 200: BlockersResponse } } },
    async (request): Promise<BlockersResponse> => ({
      blockers: await deps.blocks.blockersAmong(actingUser(request), parseUserList(request.query.users)),
    }),
  );
}
