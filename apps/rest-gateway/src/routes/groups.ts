import type { FastifyInstance } from 'fastify';
import {
  AddMembersBody,
  CreateGroupBody,
  Group,
  GroupList,
  GroupListQuery,
  GroupMemberParams,
  GroupParams,
} from '@parley/contracts';
import { bodyErrors, errorAnswer, errors, s, secured } from '../schemas';
import { Upstreams } from '../upstream';
import { forwarder, params, query } from './forward';

/** `/v1/groups…`, owned by group-ms. */
export function registerGroupRoutes(api: FastifyInstance, upstreams: Upstreams): void {
  const forward = forwarder(upstreams);
  const groupSchema = { tags: ['groups'], security: secured };
  api.post(
    '/v1/groups',
    {
      schema: {
        ...groupSchema,
        operationId: 'createGroup',
        description: 'Create a group; the creator is a member and admin',
        body: s(CreateGroupBody),
        response: { 201: s(Group), 409: errorAnswer(409), ...bodyErrors },
      },
    },
    forward('group-ms', 'POST', () => '/internal/groups', true),
  );
  api.get(
    '/v1/groups',
    {
      schema: {
        ...groupSchema,
        operationId: 'listGroups',
        description:
          'Groups the user belongs to, oldest first; with `limit` (or `after`) a page of them and the `next` cursor',
        querystring: s(GroupListQuery),
        response: { 200: s(GroupList), ...errors },
      },
    },
    forward('group-ms', 'GET', (r) => `/internal/groups?${query(r)}`),
  );
  api.get(
    '/v1/groups/:id',
    {
      schema: {
        ...groupSchema,
        operationId: 'getGroup',
        description: 'A group the user is a member of',
        params: s(GroupParams),
        response: { 200: s(Group), ...errors },
      },
    },
    forward('group-ms', 'GET', (r) => `/internal/groups/${params(r).id}`),
  );
  api.post(
    '/v1/groups/:id/members',
    {
      schema: {
        ...groupSchema,
        operationId: 'addGroupMembers',
        description: 'Add members (any member may add)',
        params: s(GroupParams),
        body: s(AddMembersBody),
        response: { 200: s(Group), 409: errorAnswer(409), ...bodyErrors },
      },
    },
    forward('group-ms', 'POST', (r) => `/internal/groups/${params(r).id}/members`, true),
  );
  api.delete(
    '/v1/groups/:id/members/:user',
    {
      schema: {
        ...groupSchema,
        operationId: 'removeGroupMember',
        description: 'Leave (self) or remove a member (admins only)',
        params: s(GroupMemberParams),
        response: { 200: s(Group), ...errors },
      },
    },
    forward('group-ms', 'DELETE', (r) => `/internal/groups/${params(r).id}/members/${params(r).user}`),
  );
}
