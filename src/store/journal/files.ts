/**
 * The journal's files in `DIR/journal/`: segments `0000000001.seg`, ..., `checkpoint`, and
 * `checkpoint.room`.
 *
 * A segment is made whole before it is used: its full size written with zeros and flushed, under a
 * temporary name, then renamed. Writes into it never extend the file, so a flush of a write (the
 * file opened with O_DSYNC) has no metadata to flush and can never meet a full disk. The zeros
 * also end the data: a record's length is never 0.
 *
 * A checkpoint is what lets the segments read through go, so it must be written on a full disk too:
 * it is written into `checkpoint.room`, room on the disk taken ahead (`growRoom`), and cut to its
 * length; the checkpoint it replaces becomes the room for the next one.
 */
import { closeSync, constants, fdatasync, fstatSync, fsync, fsyncSync, ftruncateSync, openSync, readSync, renameSync, rmSync, write, writeSync } from 'node:fs';
import { link, open, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Lease } from '../../queue/leases.js';
import type { QueueState } from '../../queue/ring.js';
import { crc32 } from './crc32.js';
import type { EntrySource } from './positions.js';
import { BATCH_BYTES, decode, T, type Decoded } from './records.js';

export const segmentFile = (dir: string, id: number): string => join(dir, `${String(id).padStart(10, '0')}.seg`);
export const SEGMENT_NAME = /^(\d{10})\.seg$/;
export const roomFile = (dir: string): string => join(dir, 'checkpoint.room');

const ZEROS = Buffer.alloc(4 * 2 ** 20);
const CHUNK = ZEROS.length;
const PREALLOCATE_STEP = 2 ** 20;

export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Makes segment `id` of `size` bytes of zeros, flushed, under its final name. */
export async function preallocate(dir: string, id: number, size: number): Promise<void> {
  const file = segmentFile(dir, id);
  const tmp = `${file}.tmp`;
  try {
    const fh = await open(tmp, 'w');
    try {
      // Flushed a MiB at a time: a flush of the whole segment at the end held every acknowledged
      // write queued behind it for tens of ms (durable 1 KiB puts: p99 18-26 ms, 8-10 ms this way).
      for (let o = 0; o < size; o += PREALLOCATE_STEP) {
        const n = Math.min(PREALLOCATE_STEP, size - o);
        // A full disk may take part of a write without an error (tmpfs does): a segment shorter
        // than its size must never be put in place, where its cut end would read as lost records.
        const { bytesWritten } = await fh.write(ZEROS, 0, n, o);
        if (bytesWritten < n) throw Object.assign(new Error(`ENOSPC: no space left on device, a short write to ${tmp}`), { code: 'ENOSPC' });
        await fh.datasync();
      }
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
    fsyncDir(dir);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export function readAt(fd: number, buf: Buffer, at: number): void {
  for (let o = 0; o < buf.length; ) {
    const n = readSync(fd, buf, o, buf.length - o, at + o);
    if (n === 0) throw new Error(`unexpected end of file at ${at + o}`);
    o += n;
  }
}

export function writeAt(fd: number, buf: Buffer, at: number, len = buf.length): void {
  for (let o = 0; o < len; ) o += writeSync(fd, buf, o, len - o, at + o);
}

/** Reads a segment through a window of a few MiB, or of one batch where a batch is larger. */
class Reader {
  buf = Buffer.alloc(0);
  start = 0;
  constructor(
    readonly fd: number,
    readonly size: number,
  ) {}

  /** Makes [at, at + len) readable in `buf` (at `at - start`); false past the end. */
  have(at: number, len: number): boolean {
    if (at + len > this.size) return false;
    if (at >= this.start && at + len <= this.start + this.buf.length) return true;
    const n = Math.min(Math.max(CHUNK, len), this.size - at);
    if (this.buf.length !== n) this.buf = Buffer.allocUnsafe(n);
    readAt(this.fd, this.buf, at);
    this.start = at;
    return true;
  }
}

/** Where the batch whose header at `at` of segment `id` is valid says it ends (its records may
 * not be whole); undefined when no valid header is there. */
function batchEnd(r: Reader, id: number, at: number): number | undefined {
  if (!r.have(at, BATCH_BYTES)) return undefined;
  const h = decode(r.buf, at - r.start, at - r.start + BATCH_BYTES);
  return h && h.type === T.batch && h.fields[0] === id && h.fields[1] === at ? at + BATCH_BYTES + h.fields[2]! : undefined;
}

/** The records of the whole valid batch at `at` of segment `id`, and where it ends; undefined when
 * there is none. */
function batchAt(r: Reader, id: number, at: number): { records: Decoded[]; end: number } | undefined {
  const end = batchEnd(r, id, at);
  if (end === undefined || !r.have(at, end - at)) return undefined;
  const records: Decoded[] = [];
  const stop = end - r.start;
  let o = at + BATCH_BYTES - r.start;
  while (o < stop) {
    const rec = decode(r.buf, o, stop);
    if (!rec || rec.type === T.batch) return undefined;
    records.push(rec);
    o = rec.next;
  }
  return { records, end };
}

/** Hands every record of the whole valid batches of segment `id` from `from` to `apply` (with the
 * buffer it is in and that buffer's offset in the file), a batch at a time; returns where the
 * first batch that is not whole and valid starts (the end of the data, when all is well). */
export function replay(fd: number, id: number, size: number, from: number, apply: (rec: Decoded, buf: Buffer, base: number) => void): number {
  const r = new Reader(fd, size);
  let at = from;
  for (let b = batchAt(r, id, at); b; b = batchAt(r, id, at)) {
    for (const rec of b.records) apply(rec, r.buf, r.start);
    at = b.end;
  }
  return at;
}

/** What follows the data of segment `id` at `end`: `dirtyTo` is past the last byte that is not
 * zero (`end` when there is none), `intact` the offset of a whole valid batch further on, if any.
 * When the batch at `end` has a valid header (a write cut short after it), a batch is looked for
 * only past the end that header gives: one inside it is a copy carried by a message, which a
 * client can make to look valid, and must not turn a torn tail into a refusal to start. */
export function tailOf(fd: number, id: number, size: number, end: number): { dirtyTo: number; intact?: number } {
  const r = new Reader(fd, size);
  const from = batchEnd(r, id, end) ?? end + 1;
  let dirtyTo = end;
  const header = Buffer.from([BATCH_BYTES - 8, 0, 0, 0]);
  // One buffer for the whole scan: a segment is read to its end (mostly zeros) at every start.
  const whole = Buffer.allocUnsafe(Math.min(CHUNK, size - end));
  for (let at = end; at < size; at += CHUNK) {
    const n = Math.min(CHUNK, size - at);
    const chunk = whole.subarray(0, n);
    readAt(fd, chunk, at);
    if (chunk.equals(ZEROS.subarray(0, n))) continue;
    let last = n;
    while (chunk[last - 1] === 0) last--;
    dirtyTo = at + last;
    for (let o = chunk.indexOf(header, Math.max(0, from - at)); o >= 0; o = chunk.indexOf(header, o + 1)) {
      if (batchAt(r, id, at + o)) return { dirtyTo, intact: at + o };
    }
    // A header across the chunk's end is found from the next chunk's start.
    if (at + n < size) for (let o = Math.max(from - at, n - BATCH_BYTES); o < n; o++) if (batchAt(r, id, at + o)) return { dirtyTo, intact: at + o };
  }
  return { dirtyTo };
}

/** Whether segment `id` holds a whole valid batch at its start. */
export const hasData = (fd: number, id: number, size: number): boolean => batchAt(new Reader(fd, size), id, 0) !== undefined;

/** Writes zeros over [from, to), the last piece first: a crash meanwhile leaves the start (a torn
 * batch's header, which says where it ends) to the end, so that a batch forged inside its message
 * never reads as intact records after it (see `tailOf`). */
export function zero(fd: number, from: number, to: number): void {
  for (let at = from + Math.floor((to - from - 1) / CHUNK) * CHUNK; at >= from; at -= CHUNK) {
    writeAt(fd, ZEROS, at, Math.min(CHUNK, to - at));
    fsyncSync(fd);
  }
}

/** Opens `file` to write into it in place (made if missing), unless it is linked elsewhere too
 * (to the checkpoint in place, by a crash inside `installCheckpoint`): then it is made anew. */
function openUnshared(file: string): number {
  const fd = openSync(file, constants.O_RDWR | constants.O_CREAT);
  if (fstatSync(fd).nlink === 1) return fd;
  closeSync(fd);
  rmSync(file);
  return openSync(file, 'w+');
}

/** Makes `checkpoint.room` `size` bytes, at least, what it gains written with zeros and flushed (a
 * MiB at a time, as a segment); a piece that fails is cut off again (a full disk), the pieces
 * before it stay. Resolves to its size. */
export async function growRoom(dir: string, size: number): Promise<number> {
  const fd = openUnshared(roomFile(dir));
  let o = fstatSync(fd).size;
  const step = (f: (done: (err: Error | null) => void) => void) => new Promise<void>((resolve, reject) => f((err) => (err ? reject(err) : resolve())));
  try {
    for (; o < size; o += PREALLOCATE_STEP) {
      const n = Math.min(PREALLOCATE_STEP, size - o);
      await step((done) => write(fd, ZEROS, 0, n, o, (err, wrote) => done(err ?? (wrote < n ? new Error('short write') : null))));
      await step((done) => fdatasync(fd, done));
    }
    return fstatSync(fd).size;
  } catch (err) {
    ftruncateSync(fd, o);
    throw err;
  } finally {
    closeSync(fd);
  }
}

/** The state of the journal up to a point (`seg`, `off`): replay goes on from there. */
export interface Checkpoint<Entries = Uint32Array> {
  seg: number;
  off: number;
  segments: Array<{ id: number; size: number; live: number }>;
  /** Each queue's index entries (dead entries included), as [pos, seg, off, len | LIVE]: read back
   * as one array; written from a snapshot of the index. Those of ring positions, and (`slots`) those
   * of slots past the ring. */
  queues: Array<{ name: string; s: QueueState; slotCursor: number; leases: Array<[number, Lease]>; entries: Entries; slots: Entries }>;
}

/** Bytes a checkpoint takes, at most (entries are aligned to 4 bytes): its own, and those each
 * queue adds (by its name); a segment and an index entry add `item` each, a lease `lease`. */
export const CHECKPOINT_BYTES = { fixed: 28, queue: (name: string) => 40 + name.length, item: 16, lease: 24 };

const MAGIC = 0x4a515348; // "HSQJ"
/** Version 2 added, per queue, maxdeliveries (after maxqueue) and the entries of slots (after those
 * of ring positions); version 3 the last slot taken (after maxdeliveries); version 4 each lease's
 * granted deadline (f64 after deliveries, 0 for none). Versions 1 to 3 are still read (no
 * maxdeliveries, no slots; slots are then taken after the highest held). */
export const CHECKPOINT_VERSION = 4;
/** Bytes of entries written (and checksummed) per event-loop turn. */
const CHECKPOINT_STEP = 2 ** 20;

/**
 * Writes a checkpoint to `checkpoint.tmp`, a piece per event-loop turn, so that a large index
 * (16 bytes a stored message) never holds up requests; the state it writes is a copy taken at once
 * by the caller. It is written into the room taken ahead for it, if there is one, and the file is
 * cut to its length (a room too small grows as it is written, as a new file does). Resolves to the
 * open file, for `installCheckpoint`. The layout: [magic][version]
 * [seg][off][segments][queues][crc32 of all before it], little endian. A queue: [u16 name length]
 * [name][putpos][getpos][maxqueue][maxdeliveries][last slot taken][lease count][leases: pos, f64 deadline,
 * deliveries, f64 granted][entry u32 count][entries][slot entry u32 count][slot entries]; entries start at a
 * multiple of 4 bytes, as the host's u32s (little endian on the platforms Node runs on), so that
 * they are read back without a copy.
 */
export async function writeCheckpoint(dir: string, c: Checkpoint<EntrySource>): Promise<number> {
  let fd: number | undefined;
  try {
    const tmp = join(dir, 'checkpoint.tmp');
    try {
      renameSync(roomFile(dir), tmp);
    } catch {
      // No room taken: a new file.
    }
    fd = openUnshared(tmp);
    const file = fd;
    const stage = Buffer.allocUnsafe(64 * 1024);
    const piece = new Uint32Array(CHECKPOINT_STEP / 4);
    let used = 0;
    let at = 0;
    let crc = 0;
    const out = async (buf: Buffer, len = buf.length) => {
      crc = crc32(buf, 0, len, crc);
      for (let o = 0; o < len; )
        o += await new Promise<number>((resolve, reject) => write(file, buf, o, len - o, at + o, (err, n) => (err ? reject(err) : resolve(n))));
      at += len;
    };
    const flush = async () => {
      await out(stage, used);
      used = 0;
    };
    // Small fields go through the stage; it is flushed before it could overflow.
    const put = (n: number, f: (v: number, o: number) => number) => void (used = f.call(stage, n, used));
    const u32 = (n: number) => put(n, stage.writeUInt32LE);
    const f64 = (n: number) => put(n, stage.writeDoubleLE);
    const room = async (n: number) => {
      if (used + n > stage.length) await flush();
    };
    await room(20);
    for (const n of [MAGIC, CHECKPOINT_VERSION, c.seg, c.off, c.segments.length]) u32(n);
    for (const s of c.segments) {
      await room(16);
      [u32(s.id), u32(s.size), f64(s.live)];
    }
    await room(4);
    u32(c.queues.length);
    for (const q of c.queues) {
      await room(2 + q.name.length + 24);
      used = stage.writeUInt16LE(q.name.length, used);
      used += stage.write(q.name, used, 'latin1');
      for (const n of [q.s.putpos, q.s.getpos, q.s.maxqueue, q.s.maxdeliveries ?? 0, q.slotCursor, q.leases.length]) u32(n);
      for (const [pos, l] of q.leases) {
        await room(24);
        [u32(pos), f64(l.deadline), u32(l.deliveries), f64(l.granted ?? 0)];
      }
      for (const entries of [q.entries, q.slots]) {
        await room(7);
        u32(entries.length);
        while ((at + used) % 4) stage[used++] = 0;
        // A small index (most queues hold a few messages) goes through the stage with the fields:
        // a write of its own for each would make a checkpoint of 100,000 queues take 300,000
        // writes (16 s, the clean stop included).
        if (4 * entries.length <= stage.length / 4) {
          await room(4 * entries.length);
          const view = piece.subarray(0, entries.length);
          entries.read(0, view);
          used += Buffer.from(view.buffer, view.byteOffset, view.byteLength).copy(stage, used);
        } else {
          await flush();
          for (let o = 0; o < entries.length; o += piece.length) {
            const view = piece.subarray(0, Math.min(piece.length, entries.length - o));
            entries.read(o, view);
            await out(Buffer.from(view.buffer, view.byteOffset, view.byteLength));
          }
        }
        entries.release();
      }
    }
    await room(4);
    u32(crc32(stage, 0, used, crc));
    await flush();
    ftruncateSync(file, at);
    return file;
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    throw err;
  } finally {
    for (const q of c.queues) [q.entries.release(), q.slots.release()];
  }
}

/** Flushes a checkpoint written by `writeCheckpoint` and puts it in place, so that a crash
 * leaves the old one or the new one, whole. The old one's file becomes `checkpoint.room` (linked to
 * it first: its space is not given back to the disk, where another writer could take it). Resolves
 * to the bytes of that room (0: none, as on a file system without hard links). */
export async function installCheckpoint(dir: string, fd: number): Promise<number> {
  try {
    await new Promise<void>((resolve, reject) => fsync(fd, (err) => (err ? reject(err) : resolve())));
  } finally {
    closeSync(fd);
  }
  const [file, room] = [join(dir, 'checkpoint'), roomFile(dir)];
  let kept = 0;
  try {
    await link(file, room);
    kept = (await stat(room)).size;
  } catch {
    // The first checkpoint, or no hard links: the room is made of zeros.
  }
  try {
    await rename(join(dir, 'checkpoint.tmp'), file);
  } catch (err) {
    if (kept) await rm(room, { force: true }); // still the checkpoint in place
    throw err;
  }
  fsyncDir(dir);
  return kept;
}

export function decodeCheckpoint(b: Buffer): Checkpoint & { version: number } {
  const version = b.length < 28 || b.readUInt32LE(0) !== MAGIC ? 0 : b.readUInt32LE(4);
  if (version < 1 || version > CHECKPOINT_VERSION) throw new Error(`not a journal checkpoint of version 1 to ${CHECKPOINT_VERSION}`);
  if (crc32(b, 0, b.length - 4) !== b.readUInt32LE(b.length - 4)) throw new Error('its checksum does not match');
  let o = 8;
  const u32 = () => ((o += 4), b.readUInt32LE(o - 4));
  const f64 = () => ((o += 8), b.readDoubleLE(o - 8));
  const seg = u32();
  const off = u32();
  const segments = Array.from({ length: u32() }, () => ({ id: u32(), size: u32(), live: f64() }));
  const queues = [];
  for (let n = u32(); n > 0; n--) {
    const len = b.readUInt16LE(o);
    const name = b.toString('latin1', o + 2, o + 2 + len);
    o += 2 + len;
    const s: QueueState = { putpos: u32(), getpos: u32(), maxqueue: u32() };
    const maxdeliveries = version >= 2 ? u32() : 0;
    if (maxdeliveries) s.maxdeliveries = maxdeliveries;
    const slotCursor = version >= 3 ? u32() : 0;
    const leases = Array.from({ length: u32() }, (): [number, Lease] => {
      const pos = u32();
      const l: Lease = { deadline: f64(), deliveries: u32() };
      const granted = version >= 4 ? f64() : 0;
      if (granted) l.granted = granted;
      return [pos, l];
    });
    const entries = () => {
      const count = u32();
      while (o % 4) o++;
      const e =
        (b.byteOffset + o) % 4 === 0
          ? new Uint32Array(b.buffer, b.byteOffset + o, count)
          : new Uint32Array(b.buffer.slice(b.byteOffset + o, b.byteOffset + o + 4 * count));
      o += 4 * count;
      return e;
    };
    queues.push({ name, s, slotCursor, leases, entries: entries(), slots: version >= 2 ? entries() : new Uint32Array(0) });
  }
  return { version, seg, off, segments, queues };
}
