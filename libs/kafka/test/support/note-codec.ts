import { Type } from '@sinclair/typebox';
import type { TopicSpec } from '@parley/contracts';
import { TopicCodec } from '../../src/codec';

/** A small event keyed by its recipient, and its topic's codec: for the codec and packing tests. */
const Note = Type.Object({
  kind: Type.Literal('note'),
  v: Type.Literal(1),
  to: Type.String(),
  n: Type.Integer(),
});
export type Note = typeof Note.static;

export const noteTopic: TopicSpec<Note> = {
  name: 'notes',
  schema: Note,
  key: (e) => e.to,
  description: 'test',
  partitions: 4,
  retentionMs: 1000,
};
export const codec = new TopicCodec(noteTopic);
export const note = (to: string, n: number): Note => ({ kind: 'note', v: 1, to, n });
