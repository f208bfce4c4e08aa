/**
 * The journal's records. Each is framed as [u32 length][u32 crc32][u8 type][payload], little
 * endian; `length` counts the type byte and the payload, and the CRC covers the length field, the
 * type and the payload. A payload is [u16 name length][name bytes][u32 fields...][bytes], with a
 * fixed number of u32 fields per type; the name is a queue name as bytes (a latin1 string here).
 *
 * Records go to disk in batches, one write each: a BATCH record [segment id][its own offset][bytes
 * of the records that follow] heads every batch. Recovery applies whole batches only, so that an
 * operation's records (a get's advance and its lease) are applied together or not at all; the
 * segment id and offset in the header tell a batch from a copy of one inside a message.
 */
import { crc32 } from './crc32.js';

/**
 * What each type says (the first field is a position, except for batch, maxqueue and maxdeliveries):
 * put [pos] (the new put position) and store [pos] (the ring does not move: an import, a copy made
 * by compaction, or a message at a slot past the ring) carry a message; advance [getpos];
 * maxqueue [num]; reset []; lease [pos, deadline hi, deadline lo, deliveries]; unlease [pos] (at a
 * slot, the message there is deleted as well: a slot holds a message only while it is leased);
 * state [putpos, getpos, maxqueue] (an import; maxdeliveries is cleared, a maxdeliveries record
 * follows when it is set); maxdeliveries [num] (0: none); touched [pos, deadline hi, deadline lo,
 * deliveries, granted hi, granted lo] (a lease a touch moved, with the deadline it was granted with).
 */
export const T = { batch: 1, put: 2, advance: 3, maxqueue: 4, reset: 5, lease: 6, unlease: 7, store: 8, state: 9, maxdeliveries: 10, touched: 11 } as const;
/** The u32 fields of each type, by type. Types are only ever added (at the end), so that a journal
 * written before a type existed reads as it did; one that holds a newer type is refused by an
 * older version as damaged. */
const FIELDS = [0, 3, 1, 1, 1, 0, 4, 1, 1, 3, 1, 6];
/** Types that carry a message after their fields. */
const CARRIES = (type: number) => type === T.put || type === T.store;

export const FRAME = 9;
export const BATCH_BYTES = FRAME + 2 + 12;

/** The bytes of a record of `type` on queue `name` carrying `bytes` of message. */
export const recordBytes = (type: number, name: string, bytes = 0): number => FRAME + 2 + name.length + 4 * FIELDS[type]! + bytes;

/** Where the message starts inside a put or store record of queue `name`. */
export const messageStart = (name: string): number => FRAME + 2 + name.length + 4;

export interface Decoded {
  at: number;
  type: number;
  name: string;
  fields: number[];
  /** The message (put, store): where it starts and ends in the buffer. */
  from: number;
  to: number;
  /** Where the next record starts. */
  next: number;
}

/** The record at `at`, if a whole valid one is there before `end`. */
export function decode(buf: Buffer, at: number, end: number): Decoded | undefined {
  if (at + FRAME + 2 > end) return undefined;
  const length = buf.readUInt32LE(at);
  const next = at + 8 + length;
  const type = buf[at + 8]!;
  if (length < 3 || next > end || type < 1 || type >= FIELDS.length) return undefined;
  const nameEnd = at + FRAME + 2 + buf.readUInt16LE(at + FRAME);
  const from = nameEnd + 4 * FIELDS[type]!;
  if (from > next || (!CARRIES(type) && from !== next)) return undefined;
  if (crc32(buf, at + 8, next, crc32(buf, at, at + 4)) !== buf.readUInt32LE(at + 4)) return undefined;
  const fields: number[] = [];
  for (let o = nameEnd; o < from; o += 4) fields.push(buf.readUInt32LE(o));
  return { at, type, name: buf.toString('latin1', at + FRAME + 2, nameEnd), fields, from, to: next, next };
}

/** A lease deadline (whole ms since the epoch; a dead letter's is DEAD + ms, below 2^51) as two
 * u32 fields, and back. */
export const split = (n: number): [number, number] => [Math.floor(n / 2 ** 32), n % 2 ** 32];
export const join = (hi: number, lo: number): number => hi * 2 ** 32 + lo;

/**
 * Records on their way to one write: they go to `seg` from offset `start`, behind the BATCH header
 * written when the batch is sealed. Until its write completes the messages are read from here.
 */
export class Batch {
  buf = Buffer.allocUnsafeSlow(4096);
  used = BATCH_BYTES;
  readonly done: Promise<void>;
  resolve!: () => void;
  reject!: (err: Error) => void;

  constructor(
    readonly seg: number,
    readonly start: number,
  ) {
    this.done = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    this.done.catch(() => {}); // its operations hear of a failure; this promise itself need not
  }

  /** Appends a record; returns its offset in the segment and its length. */
  add(type: number, name: string, fields: readonly number[], message?: Buffer): [number, number] {
    const len = recordBytes(type, name, message?.length ?? 0);
    if (this.used + len > this.buf.length) {
      const grown = Buffer.allocUnsafeSlow(Math.max(2 * this.buf.length, this.used + len));
      this.buf.copy(grown, 0, 0, this.used);
      this.buf = grown;
    }
    const at = this.used;
    this.frame(at, type, name, fields, message);
    this.used += len;
    return [this.start + at, len];
  }

  /** Writes the header, once no record is added any more. */
  seal(): void {
    this.frame(0, T.batch, '', [this.seg, this.start, this.used - BATCH_BYTES]);
  }

  private frame(at: number, type: number, name: string, fields: readonly number[], message?: Buffer): void {
    const b = this.buf;
    let o = at + FRAME;
    b.writeUInt16LE(name.length, o);
    o += 2 + b.write(name, o + 2, 'latin1');
    for (const f of fields) o = b.writeUInt32LE(f, o);
    if (message) o += message.copy(b, o);
    b.writeUInt32LE(o - at - 8, at);
    b[at + 8] = type;
    b.writeUInt32LE(crc32(b, at + 8, o, crc32(b, at, at + 4)), at + 4);
  }
}
