/** API keys the broker implements and the versions it advertises (request header v1, response header v0). */
export const ApiKey = {
  Produce: 0,
  Fetch: 1,
  ListOffsets: 2,
  Metadata: 3,
  OffsetCommit: 8,
  OffsetFetch: 9,
  FindCoordinator: 10,
  JoinGroup: 11,
  Heartbeat: 12,
  LeaveGroup: 13,
  SyncGroup: 14,
  DescribeGroups: 15,
  ListGroups: 16,
  ApiVersions: 18,
  CreateTopics: 19,
  DeleteTopics: 20,
  InitProducerId: 22,
} as const;

/**
 * [min, max] per API. kafkajs 2.2.4 uses min(its highest, our max): Produce v3 and Fetch v4 carry
 * record batches with headers; JoinGroup stays at v3 (v4 adds the MEMBER_ID_REQUIRED round trip);
 * OffsetFetch starts at v1 (kafkajs has no v0).
 */
export const SUPPORTED_VERSIONS: ReadonlyMap<number, readonly [number, number]> = new Map([
  [ApiKey.Produce, [3, 3]],
  [ApiKey.Fetch, [4, 4]],
  [ApiKey.ListOffsets, [1, 2]],
  [ApiKey.Metadata, [1, 4]],
  [ApiKey.OffsetCommit, [2, 3]],
  [ApiKey.OffsetFetch, [1, 3]],
  [ApiKey.FindCoordinator, [0, 1]],
  [ApiKey.JoinGroup, [0, 3]],
  [ApiKey.Heartbeat, [0, 1]],
  [ApiKey.LeaveGroup, [0, 1]],
  [ApiKey.SyncGroup, [0, 1]],
  [ApiKey.DescribeGroups, [0, 1]],
  [ApiKey.ListGroups, [0, 2]],
  [ApiKey.ApiVersions, [0, 2]],
  [ApiKey.CreateTopics, [0, 2]],
  [ApiKey.DeleteTopics, [0, 1]],
  [ApiKey.InitProducerId, [0, 1]],
] as const);

export function isSupported(apiKey: number, version: number): boolean {
  const range = SUPPORTED_VERSIONS.get(apiKey);
  return !!range && version >= range[0] && version <= range[1];
}
