import net from 'node:net';

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
