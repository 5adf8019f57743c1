import {
  AckFrame,
  ClientFrame,
  GroupAddFrame,
  GroupCreateFrame,
  GroupLeaveFrame,
  GroupRemoveFrame,
  GroupRenameFrame,
  MessageFrame,
  PingFrame,
  ReadFrame,
  SENDABLE_TYPES,
  SendableFrame,
  TypingFrame,
} from './client-frames';
import { ErrorCode } from './errors';
import { DEFAULT_MAX_FRAME_BYTES, MAX_BODY_DEPTH } from './limits';
import { compile, jsonDepth, nestingRefusal, Validator } from './validation';

export type FrameResult<T> =
  { ok: true; frame: T } | { ok: false; code: ErrorCode; message: string; id?: string };

const byType: Record<string, Validator<ClientFrame>> = {
  message: compile(MessageFrame),
  ack: compile(AckFrame),
  read: compile(ReadFrame),
  typing: compile(TypingFrame),
  ping: compile(PingFrame),
};
const groupByOp: Record<string, Validator<ClientFrame>> = {
  create: compile(GroupCreateFrame),
  add: compile(GroupAddFrame),
  remove: compile(GroupRemoveFrame),
  leave: compile(GroupLeaveFrame),
  rename: compile(GroupRenameFrame),
};

const CLIENT_TYPES = [...Object.keys(byType), 'group'];

export interface FrameLimits {
  maxBytes?: number;
  maxDepth?: number;
  /** Frame types allowed on this edge (REST accepts no `typing` or `ping`). */
  types?: readonly string[];
}

/**
 * How much longer JSON text can come out of `JSON.stringify` than went into `JSON.parse`: numbers
 * are written in full (`1e20`, 4 bytes, as `100000000000000000000`, 21); nothing else grows.
 */
const MAX_JSON_GROWTH = 21 / 4;

/** Parse and validate one client frame from its raw text (WebSocket) . */
export function parseClientFrame(raw: string | Buffer, limits: FrameLimits = {}): FrameResult<ClientFrame> {
  const maxBytes = limits.maxBytes ?? DEFAULT_MAX_FRAME_BYTES;
  const size = typeof raw === 'string' ? Buffer.byteLength(raw) : raw.length;
  if (size > maxBytes) return refuse('too_large', tooLarge(maxBytes, size));
  let value: unknown;
  try {
    value = JSON.parse(withoutByteOrderMark(raw.toString()));
  } catch (err) {
    return refuse('invalid_frame', `frame: is not valid JSON (${(err as Error).message})`);
  }
  // The frame travels as the server writes it, as POST /v1/send measures it: one of numbers such as
  // 1e20 grew five times its size there, past a Kafka record at the largest MAX_FRAME_BYTES, and
  // every publish of it failed (answered unavailable, sent again for good). Validation refuses a
  // frame too deep to serialize.
  const maxDepth = limits.maxDepth ?? MAX_BODY_DEPTH;
  if (size * MAX_JSON_GROWTH > maxBytes && jsonDepth(value, maxDepth + 2) <= maxDepth + 1) {
    const written = Buffer.byteLength(JSON.stringify(value));
    if (written > maxBytes)
      return refuse('too_large', `${tooLarge(maxBytes, written)} as the server writes it`, idOf(value));
  }
  return validateClientFrame(value, limits);
}

const tooLarge = (maxBytes: number, size: number) => `frame: must be at most ${maxBytes} bytes (got ${size})`;
/** The frame's `id`, where it has one: refusals echo it. */
const idOf = (value: unknown) => {
  const id = (value as { id?: unknown } | null)?.id;
  return typeof id === 'string' ? id : undefined;
};

/**
 * JSON text without a leading byte-order mark: a BOM is no JSON, but some clients send one. Both
 * edges read a frame through it (the WebSocket's text frames, REST bodies), so it is taken on each.
 */
export function withoutByteOrderMark(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/** Validate an already-parsed client frame: type first, then the schema of that type. */
export function validateClientFrame(value: unknown, limits: FrameLimits = {}): FrameResult<ClientFrame> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return refuse('invalid_frame', 'frame: must be a JSON object');
  }
  const candidate = value as Record<string, unknown>;
  const id = idOf(candidate);
  // Every field, not only the body: the event is serialized, and the sender would be told to try again.
  const maxDepth = limits.maxDepth ?? MAX_BODY_DEPTH;
  const tooDeep = nestingRefusal(candidate, maxDepth);
  if (tooDeep !== undefined) return refuse('invalid_frame', tooDeep, id);
  const types = limits.types ?? CLIENT_TYPES;
  if (typeof candidate.type !== 'string' || !types.includes(candidate.type)) {
    const missing = candidate.type === undefined ? 'is required and ' : '';
    return refuse('invalid_frame', `type: ${missing}must be one of ${types.join(', ')}`, id);
  }
  const validator = candidate.type === 'group' ? groupValidator(candidate.op) : byType[candidate.type];
  if (!validator)
    return refuse('invalid_frame', `op: must be one of ${Object.keys(groupByOp).join(', ')}`, id);
  const result = validator(stripUntrusted(candidate));
  if (!result.ok) return refuse('invalid_frame', result.errors.join('; '), id);
  return { ok: true, frame: result.value };
}

/** The REST edge: the frame types `POST /v1/send` takes. */
export function validateSendableFrame(
  value: unknown,
  limits: Omit<FrameLimits, 'types'> = {},
): FrameResult<SendableFrame> {
  return validateClientFrame(value, { ...limits, types: SENDABLE_TYPES }) as FrameResult<SendableFrame>;
}

function groupValidator(op: unknown): Validator<ClientFrame> | undefined {
  // Own keys only: `constructor` or `toString` would find what every object inherits.
  return typeof op === 'string' && Object.hasOwn(groupByOp, op) ? groupByOp[op] : undefined;
}

/** The sender is whoever authenticated: a client-supplied `from` or `sentAt` is dropped, never trusted. */
function stripUntrusted(frame: Record<string, unknown>): Record<string, unknown> {
  if (!('from' in frame) && !('sentAt' in frame)) return frame;
  const { from: _from, sentAt: _sentAt, ...rest } = frame;
  return rest;
}

function refuse(code: ErrorCode, message: string, id?: string): FrameResult<never> {
  return id === undefined ? { ok: false, code, message } : { ok: false, code, message, id };
}
