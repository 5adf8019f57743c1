import net from 'node:net';
import { Reader } from '../../src/broker/protocol/reader';
import { Writer } from '../../src/broker/protocol/writer';

/** A bare Kafka protocol client for tests: frames requests, matches responses by correlation id. */
export class RawClient {
  private buffered = Buffer.alloc(0);
  private correlation = 0;
  private readonly waiting = new Map<number, (body: Buffer) => void>();
  readonly closed: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      while (this.buffered.length >= 4 && this.buffered.length >= 4 + this.buffered.readInt32BE(0)) {
        const size = this.buffered.readInt32BE(0);
        const frame = this.buffered.subarray(4, 4 + size);
        this.buffered = this.buffered.subarray(4 + size);
        const id = frame.readInt32BE(0);
        this.waiting.get(id)?.(frame.subarray(4));
        this.waiting.delete(id);
      }
    });
    this.closed = new Promise((resolve) => socket.on('close', () => resolve()));
    socket.on('error', () => undefined);
  }

  static connect(address: string): Promise<RawClient> {
    const [host, port] = address.split(':');
    return new Promise((resolve, reject) => {
      const socket = net.connect(Number(port), host, () => resolve(new RawClient(socket)));
      socket.once('error', reject);
    });
  }

  /** Sends one request (header v1, client id "raw") and resolves with the response body. */
  request(apiKey: number, apiVersion: number, body: Buffer): Promise<Buffer> {
    const id = ++this.correlation;
    const clientId = Buffer.from('raw');
    const header = Buffer.alloc(14 + clientId.length);
    header.writeInt32BE(10 + clientId.length + body.length, 0);
    header.writeInt16BE(apiKey, 4);
    header.writeInt16BE(apiVersion, 6);
    header.writeInt32BE(id, 8);
    header.writeInt16BE(clientId.length, 12);
    clientId.copy(header, 14);
    const answered = new Promise<Buffer>((resolve) => this.waiting.set(id, resolve));
    this.socket.write(Buffer.concat([header, body]));
    return answered;
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  close(): void {
    this.socket.destroy();
  }
}

/**
 * An OffsetCommit v2 body committing `offset` for one partition, as `memberId` of `generation`
 * (-1 and '' make a standalone commit, the group not managed by the coordinator).
 */
export function offsetCommitV2(
  groupId: string,
  generation: number,
  memberId: string,
  { topic, partition, offset }: { topic: string; partition: number; offset: number },
): Buffer {
  const [group, member, name] = [groupId, memberId, topic].map((s) => Buffer.from(s));
  const body = Buffer.alloc(
    2 + group.length + 4 + 2 + member.length + 8 + 4 + 2 + name.length + 4 + 4 + 8 + 2,
  );
  let at = body.writeInt16BE(group.length, 0);
  at += group.copy(body, at);
  at = body.writeInt32BE(generation, at);
  at = body.writeInt16BE(member.length, at);
  at += member.copy(body, at);
  body.writeBigInt64BE(-1n, at); // retention time: the broker's
  at = body.writeInt32BE(1, at + 8); // one topic
  at = body.writeInt16BE(name.length, at);
  at += name.copy(body, at);
  at = body.writeInt32BE(1, at); // one partition
  at = body.writeInt32BE(partition, at);
  body.writeBigInt64BE(BigInt(offset), at);
  body.writeInt16BE(-1, at + 8); // null metadata
  return body;
}

/** The error code of the only partition of an OffsetCommit v2 answer to `offsetCommitV2`. */
export function offsetCommitError(answer: Buffer): number {
  // [topics: name, [partition, error]]
  return answer.readInt16BE(4 + 2 + answer.readInt16BE(4) + 4 + 4);
}

/** A Fetch v4 body for partition 0 of `topic` from offset 0, up to 64 MiB. */
export function fetchRequest(
  topic: string,
  { maxWaitMs, minBytes }: { maxWaitMs: number; minBytes: number },
): Buffer {
  const name = Buffer.from(topic);
  const body = Buffer.alloc(4 + 4 + 4 + 4 + 1 + 4 + 2 + name.length + 4 + 4 + 8 + 4);
  let at = body.writeInt32BE(-1, 0); // replica
  at = body.writeInt32BE(maxWaitMs, at);
  at = body.writeInt32BE(minBytes, at);
  at = body.writeInt32BE(64 << 20, at); // max bytes
  at = body.writeInt8(0, at); // isolation level
  at = body.writeInt32BE(1, at); // one topic
  at = body.writeInt16BE(name.length, at);
  at += name.copy(body, at);
  at = body.writeInt32BE(1, at); // one partition
  at = body.writeInt32BE(0, at);
  body.writeBigInt64BE(0n, at);
  body.writeInt32BE(64 << 20, at + 8);
  return body;
}

const body = (w: Writer) => Buffer.concat(w.finish());

/** A Metadata v4 body asking for `topic`, letting the broker create it. */
export function metadataV4(topic: string): Buffer {
  return body(new Writer().array([topic], (w, name) => w.string(name)).bool(true));
}

/** A JoinGroup v0 body for `memberId` ('' for a new member) of `groupId`, consumer protocol "range". */
export function joinGroupV0(
  groupId: string,
  memberId: string,
  sessionMs: number,
  metadata = Buffer.alloc(0),
): Buffer {
  const w = new Writer().string(groupId).int32(sessionMs).string(memberId).string('consumer');
  return body(w.array([metadata], (w, m) => w.string('range').bytes(m)));
}

/** What a JoinGroup v0 answer says (its member list left out). */
export function joinAnswer(answer: Buffer) {
  const r = new Reader(answer);
  const errorCode = r.int16();
  const generation = r.int32();
  r.string(); // protocol
  return { errorCode, generation, leaderId: r.string(), memberId: r.string() };
}

/** A SyncGroup v0 body for `memberId` of `generation`, assigning nothing (a leader's or a follower's). */
export function syncGroupV0(groupId: string, generation: number, memberId: string): Buffer {
  return body(new Writer().string(groupId).int32(generation).string(memberId).int32(0));
}

/** The error code of a Heartbeat, SyncGroup or JoinGroup v0 answer (their first field). */
export const errorCodeOf = (answer: Buffer): number => answer.readInt16BE(0);

/** An OffsetFetch v1 body for one partition. */
export function offsetFetchV1(groupId: string, topic: string, partition: number): Buffer {
  const w = new Writer().string(groupId);
  return body(w.array([topic], (w, name) => w.string(name).array([partition], (w, p) => w.int32(p))));
}

/** The committed offset (-1: none) in an OffsetFetch v1 answer to `offsetFetchV1`. */
export function committedOffset(answer: Buffer): number {
  const r = new Reader(answer);
  r.int32(); // one topic
  r.string();
  r.int32(); // one partition
  r.int32();
  return r.int64();
}
