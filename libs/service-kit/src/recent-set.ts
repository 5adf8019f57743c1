import { randomInt } from 'node:crypto';

/**
 * Keys seen recently (with a value each, in a RecentMap), each forgotten after `ttlMs` or, past `maxEntries`, oldest first. Bounded
 * memory, no timers: expiry happens on use.
 *
 * Keys are kept in generations of up to an eighth of `maxEntries`, and a whole generation is
 * forgotten at once. Evicting one key at a time from the front of one large Map would leave a
 * growing run of deleted slots that every later eviction walks again: at 200,000 keys that cost
 * 150 µs per add. So a key is remembered for at least the ttl and at most an eighth longer, and the
 * set holds from about seven eighths of `maxEntries` (exactly, for a multiple of 8) up to
 * `maxEntries` once full; a key added again counts twice until its older copy's generation goes.
 *
 * A generation keeps its keys as UTF-8 bytes in typed arrays (`KeyTable`), not as strings in a Map:
 * a million keys held as strings are some 200 MB of small objects that every full GC walks (220 ms
 * a collection, measured), where bytes in array buffers are some 40 MB that it does not look into.
 */
export interface RecentSet {
  has(key: string): boolean;
  add(key: string): void;
  readonly size: number;
}

/** A RecentSet whose keys carry a value: what is known of each (the last value set wins). */
export interface RecentMap<V> {
  get(key: string): V | undefined;
  has(key: string): boolean;
  set(key: string, value: V): void;
  readonly size: number;
}

/** At most this many distinct values are stored (each key holds the index of its value in a byte). */
export const MAX_RECENT_MAP_VALUES = 256;

export function createRecentSet(ttlMs: number, maxEntries: number, now: () => number = Date.now): RecentSet {
  const map = createRecentMap<true>(ttlMs, maxEntries, now);
  return {
    has: (key) => map.has(key),
    add: (key) => map.set(key, true),
    get size() {
      return map.size;
    },
  };
}

interface Generation {
  keys: KeyTable;
  /** When the last of its keys expires. */
  expires: number;
  /** After this it takes no more keys, so its first keys are not remembered much past their ttl. */
  closesAt: number;
}

export function createRecentMap<V>(
  ttlMs: number,
  maxEntries: number,
  now: () => number = Date.now,
): RecentMap<V> {
  const generationSize = Math.max(1, Math.floor(maxEntries / 8));
  const generations: Generation[] = [];
  const encoder = new KeyEncoder();
  const values = new ValueIndex<V>();
  let size = 0;

  const openGeneration = (at: number): Generation => {
    const generation = { keys: new KeyTable(generationSize), expires: at, closesAt: at + ttlMs / 8 };
    generations.push(generation);
    // Make room for a full new generation: drop the expired and, past maxEntries, the oldest.
    while (generations.length > 1) {
      const oldest = generations[0];
      if (oldest.expires > at && size + generationSize <= maxEntries) break;
      size -= oldest.keys.size;
      generations.shift();
    }
    return generation;
  };

  /** The value index `key` holds in the generation that decides for it (the newest holding it), if live. */
  const lookUp = (key: string): number => {
    const encoded = encoder.encode(key);
    for (let i = generations.length - 1; i >= 0; i--) {
      const slot = generations[i].keys.find(encoded);
      if (slot >= 0) return generations[i].expires > now() ? generations[i].keys.valueAt(slot) : -1;
    }
    return -1;
  };
  return {
    has: (key) => lookUp(key) >= 0,
    get(key) {
      const index = lookUp(key);
      return index >= 0 ? values.valueAt(index) : undefined;
    },
    set(key, value) {
      // First, so that a value refused (past MAX_RECENT_MAP_VALUES) opens no generation and evicts nothing.
      const index = values.indexOf(value);
      const at = now();
      let newest = generations[generations.length - 1];
      if (!newest || newest.keys.size >= generationSize || at >= newest.closesAt) newest = openGeneration(at);
      if (newest.keys.set(encoder.encode(key), index)) size += 1;
      newest.expires = at + ttlMs;
    },
    get size() {
      return size;
    },
  };
}

/** A key's UTF-8 bytes and their hash, in a buffer reused from one call to the next. */
interface EncodedKey {
  bytes: Buffer;
  length: number;
  hash: number;
}

class KeyEncoder {
  /** Random per map, so which keys share a run of slots differs from one map (and process) to the next. */
  readonly seed = randomInt(2 ** 32) >>> 0;
  private readonly encoded: EncodedKey = { bytes: Buffer.allocUnsafe(256), length: 0, hash: 0 };

  /**
   * UTF-8, which tells well-formed strings apart; one with a lone surrogate (UTF-8 writes each as
   * U+FFFD) as 0xFF, a byte no UTF-8 holds, then its UTF-16 code units.
   */
  encode(key: string): EncodedKey {
    const encoded = this.encoded;
    if (key.length * 3 + 1 > encoded.bytes.length) encoded.bytes = Buffer.allocUnsafe(key.length * 3 + 1);
    if (isWellFormed(key)) encoded.length = encoded.bytes.write(key, 'utf8');
    else {
      encoded.bytes[0] = 0xff;
      encoded.length = 1 + encoded.bytes.write(key, 1, 'utf16le');
    }
    encoded.hash = fnv1a(encoded.bytes, encoded.length, this.seed);
    return encoded;
  }
}

/** String.prototype.isWellFormed (ES2024, in Node 20; the project's lib is ES2023). */
const isWellFormed = (text: string): boolean =>
  (text as unknown as { isWellFormed(): boolean }).isWellFormed();

/** FNV-1a over the first `length` bytes, from a seeded basis. */
function fnv1a(bytes: Buffer, length: number, seed: number): number {
  let hash = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < length; i++) hash = Math.imul(hash ^ bytes[i], 0x01000193);
  return hash >>> 0;
}

/** Values as byte-sized indexes: the first value seen is 0, the next distinct one 1, and so on. */
class ValueIndex<V> {
  private readonly values: V[] = [];
  private readonly indexes = new Map<V, number>();

  indexOf(value: V): number {
    let index = this.indexes.get(value);
    if (index === undefined) {
      if (this.values.length >= MAX_RECENT_MAP_VALUES)
        throw new RangeError(`a RecentMap holds at most ${MAX_RECENT_MAP_VALUES} distinct values`);
      index = this.values.push(value) - 1;
      this.indexes.set(value, index);
    }
    return index;
  }

  valueAt(index: number): V {
    return this.values[index];
  }
}

/**
 * Up to `capacity` keys with a byte each, append-only: open addressing (linear probing) over a table
 * at most half full, each key's bytes in one growing buffer. Nothing in it is an object the GC walks.
 */
class KeyTable {
  private readonly slots: Int32Array;
  private readonly hashes: Uint32Array;
  private readonly starts: Uint32Array;
  private readonly values: Uint8Array;
  private bytes = Buffer.allocUnsafe(4096);
  private used = 0;
  size = 0;

  constructor(capacity: number) {
    let tableSize = 8;
    while (tableSize < capacity * 2) tableSize *= 2;
    this.slots = new Int32Array(tableSize).fill(-1);
    this.hashes = new Uint32Array(capacity);
    this.starts = new Uint32Array(capacity + 1);
    this.values = new Uint8Array(capacity);
  }

  /** The entry holding `key`, or -1. */
  find(key: EncodedKey): number {
    return this.slots[this.slotOf(key)];
  }

  valueAt(entry: number): number {
    return this.values[entry];
  }

  /** Sets the key's value; true when the key is new here. The caller keeps `size` under the capacity. */
  set(key: EncodedKey, value: number): boolean {
    const slot = this.slotOf(key);
    const held = this.slots[slot];
    if (held >= 0) {
      this.values[held] = value;
      return false;
    }
    const entry = this.size++;
    this.slots[slot] = entry;
    this.hashes[entry] = key.hash;
    this.values[entry] = value;
    this.append(key);
    return true;
  }

  /** The slot holding `key`'s entry, else the empty slot where it would go. */
  private slotOf(key: EncodedKey): number {
    const mask = this.slots.length - 1;
    let slot = key.hash & mask;
    for (let entry = this.slots[slot]; entry >= 0; entry = this.slots[slot]) {
      if (this.hashes[entry] === key.hash && this.holds(entry, key)) return slot;
      slot = (slot + 1) & mask;
    }
    return slot;
  }

  private holds(entry: number, key: EncodedKey): boolean {
    const start = this.starts[entry];
    if (this.starts[entry + 1] - start !== key.length) return false;
    for (let i = 0; i < key.length; i++) if (this.bytes[start + i] !== key.bytes[i]) return false;
    return true;
  }

  private append(key: EncodedKey): void {
    if (this.used + key.length > this.bytes.length) {
      const grown = Buffer.allocUnsafe(Math.max(this.bytes.length * 2, this.used + key.length));
      this.bytes.copy(grown, 0, 0, this.used);
      this.bytes = grown;
    }
    key.bytes.copy(this.bytes, this.used, 0, key.length);
    this.used += key.length;
    this.starts[this.size] = this.used;
  }
}
