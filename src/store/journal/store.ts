/**
 * The journal: an embedded store of one process, in `DIR/journal/` (files.ts, records.ts).
 *
 * Every change is a record appended to the current segment. The queues live in memory: their
 * positions, their leases, and where each stored message is (positions.ts); an operation is decided
 * there at once, in the order operations come, and its records are applied to memory by the same
 * function (`apply`) that replays them at start-up, so memory and disk cannot disagree on what a
 * record means.
 *
 * Group commit: the records of one event-loop turn go out in one write (a `Batch`); in 'durable'
 * mode the segment is opened with O_DSYNC, so the write returns once the data is on the device
 * (one flush, measured faster here than write + fdatasync), and only then do the operations of
 * that batch resolve. While a write is in flight the next batch fills up. Gets write their
 * advance too: a message handed out is never handed out again after a crash (leases aside).
 *
 * Messages that wait outside the ring (delayed puts, dead letters: queue/leases.ts) are stored at
 * slots past it, in an index of their own (`slots`, so that ring positions and slots each form long
 * runs), live while their slot is leased; a slot whose lease ends (its unlease record) holds no
 * message any more.
 *
 * Start-up loads the checkpoint (the whole state at a point of the journal, written when a segment
 * fills and on close) and replays the records after it. Space comes back by deleting sealed
 * segments that hold no live message (unread or leased; imported, until its queue's state is or,
 * if it never is, until the next start-up) once a checkpoint covers them, and, while the sealed
 * segments take more than 1.5 times the live data plus one segment, by copying forward the live
 * messages of one that holds less than two thirds of its size in them, then deleting it
 * (`compact`). On a full disk too: a checkpoint is written into room taken ahead, which puts wait
 * for as for a segment (`growRoom`), so that consumers can still let the segments they read go.
 */
import {
  closeSync,
  constants,
  fdatasync,
  fdatasyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statfsSync,
  statSync,
  truncateSync,
  write,
} from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { MAX_TIMER_MS } from '../../queue/clock.js';
import { FIRST_SLOT, LeaseTable, type Lease } from '../../queue/leases.js';
import { DEFAULT_MAXQUEUE, emptyQueue, isUnread, moved, unread, type QueueState } from '../../queue/ring.js';
import { errorMessage } from '../../errors.js';
import { DiskReserve } from '../lmdb/disk-reserve.js';
import { lockDirectory } from '../lock.js';
import {
  discardPlan,
  spentLeases,
  maxdeliveriesPlan,
  maxqueuePlan,
  putPlan,
  redrivePlan,
  settlePlan,
  takePlan,
  touchPlan,
  type Draft as PlanDraft,
} from '../plans.js';
import {
  type EmbeddedOptions,
  DiskLowError,
  DATA_DIR_MODE,
  firstDelivery,
  firstPosition,
  isInitial,
  statusOf,
  StoreError,
  timed,
  type Delivery,
  type QueueStatus,
  type Store,
  type StoreDescription,
  type StoreHooks,
  type SyncMode,
} from '../store.js';
import {
  CHECKPOINT_BYTES,
  CHECKPOINT_VERSION,
  decodeCheckpoint,
  growRoom,
  installCheckpoint,
  hasData,
  preallocate,
  readAt,
  replay,
  roomFile,
  SEGMENT_NAME,
  segmentFile,
  tailOf,
  writeCheckpoint,
  zero,
  type Checkpoint,
} from './files.js';
import { PositionIndex, type EntrySource } from './positions.js';
import { Batch, BATCH_BYTES, decode, join as joinDeadline, messageStart, recordBytes, split, T, type Decoded } from './records.js';

export interface JournalOptions extends EmbeddedOptions {
  /** Bytes of a segment; by default 64 MiB, less on a small disk. */
  segmentBytes?: number;
  /** Start even though a segment is damaged in the middle: drop the damaged batch and the rest of
   * its segment. */
  repair?: boolean;
  /** Read what is there, next to a running server (export): no lock, no writes. */
  readOnly?: boolean;
  /** Bytes free on the directory's disk (tests give a full disk). */
  diskFree?: (dir: string) => number;
  /** How long the journal waits, idle with no live message, before giving its disk back (`shrink`);
   * Infinity: never. */
  shrinkAfterMs?: number;
}

/** Thrown at start-up for a segment damaged where valid records follow. */
export class JournalDamaged extends StoreError {
  override name = 'JournalDamaged';
}

const SEGMENT = 64 * 2 ** 20;
/** Room at the end of a segment that puts leave to the other writes when no new segment can be
 * made (a full disk), so that consumers go on; as many bytes of the checkpoint's room as well. */
const KEEP_FOR_OTHERS = 256 * 1024;
/** Bytes read from a segment by a read that finds its message in no batch in memory: a queue is
 * read in the order it was written, so the next gets find theirs there, without a system call. */
const READ_AHEAD = 256 * 1024;
/** Entries looked at per event-loop turn by compaction. */
const SCAN_STEP = 100_000;
/** Message bytes copied forward per compaction write. */
const COPY_STEP = 2 ** 20;
/** Idle time after which a drained journal gives its disk back (`shrink`). */
const SHRINK_AFTER_MS = 1000;

interface Queue {
  s: QueueState;
  leases: LeaseTable;
  /** Where the messages at ring positions are. */
  index: PositionIndex;
  /** Where the messages at slots past the ring are, once the queue has had one. */
  slots?: PositionIndex | undefined;
}

const isSlot = (pos: number): boolean => pos >= FIRST_SLOT;
/** The index that holds `pos`, if there is one. */
const indexOf = (q: Queue, pos: number): PositionIndex | undefined => (isSlot(pos) ? q.slots : q.index);
/** Both indexes of a queue. */
const indexes = (q: Queue): PositionIndex[] => (q.slots ? [q.index, q.slots] : [q.index]);

interface Segment {
  id: number;
  size: number;
  /** Bytes of records of live messages (unread or leased). */
  live: number;
  fd: number | undefined;
}

/** One operation on one queue (plans.ts): what it reads, and the records it writes, each applied
 * at once. */
class Draft implements PlanDraft {
  wrote = false;
  constructor(
    private readonly j: JournalStore,
    readonly name: string,
    readonly q: Queue,
  ) {}
  put(pos: number, message: Buffer): void {
    this.emit(T.put, [pos], message);
  }
  store(pos: number, message: Buffer): void {
    this.emit(T.store, [pos], message);
  }
  /** A slot's message goes with its lease (an unlease record at a slot deletes both): the plans
   * end the lease first, so there is nothing left to write, unless the slot still holds either. */
  drop(pos: number): void {
    if (this.q.leases.has(pos) || (this.q.slots?.find(pos) ?? -1) >= 0) this.emit(T.unlease, [pos]);
  }
  advance(next: QueueState): void {
    this.emit(T.advance, [next.getpos]);
  }
  lease(pos: number, lease: Lease | undefined): void {
    if (lease?.granted !== undefined) this.emit(T.touched, [pos, ...split(Math.round(lease.deadline)), lease.deliveries, ...split(Math.round(lease.granted))]);
    else if (lease) this.emit(T.lease, [pos, ...split(Math.round(lease.deadline)), lease.deliveries]);
    else this.emit(T.unlease, [pos]);
  }
  maxqueue(num: number): void {
    this.emit(T.maxqueue, [num]);
  }
  maxdeliveries(num: number): void {
    this.emit(T.maxdeliveries, [num]);
  }
  state(s: QueueState): void {
    this.emit(T.state, [s.putpos, s.getpos, s.maxqueue]);
    if (s.maxdeliveries) this.maxdeliveries(s.maxdeliveries);
  }
  reset(): void {
    this.emit(T.reset, []);
  }
  read(pos: number): Buffer | undefined {
    return this.j.read(this.name, this.q, pos);
  }
  private emit(type: number, fields: number[], message?: Buffer): void {
    this.wrote = true;
    this.j.emit(this.name, this.q, type, fields, message);
  }
}
type Plan<T> = (d: Draft) => T;

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

/** JS strings compare by UTF-16 code unit: for latin1 byte strings, by byte. */
const byBytes = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** The queues by name, and their names in byte order, so that a page of `list` costs a search and
 * the page rather than a sort of every name. Queues that come or go meanwhile are merged in at the
 * next page (a sort of those alone and one pass over the names): a sort of every name after each
 * took 1.3 s at 890,000 queues, and held every request up that long. */
export class Queues extends Map<string, Queue> {
  private sorted: string[] | undefined;
  /** Names that came, and that went, since `sorted` was made (a name in one is not in the other). */
  private readonly came = new Set<string>();
  private readonly went = new Set<string>();
  override set(name: string, q: Queue): this {
    if (this.sorted && !this.has(name)) {
      if (!this.went.delete(name)) this.came.add(name);
      this.settle();
    }
    return super.set(name, q);
  }
  override delete(name: string): boolean {
    const had = super.delete(name);
    if (had && this.sorted) {
      if (!this.came.delete(name)) this.went.add(name);
      this.settle();
    }
    return had;
  }
  override clear(): void {
    this.sorted = undefined;
    this.came.clear();
    this.went.clear();
    super.clear();
  }
  /** Lets the sorted names go once the changes outnumber them: a sort of every name costs less then. */
  private settle(): void {
    if (this.came.size + this.went.size <= (this.sorted?.length ?? 0) / 2 + 1024) return;
    this.sorted = undefined;
    this.came.clear();
    this.went.clear();
  }
  /** The first index in the sorted names whose name is above `name` (`or equal`, when `equal`). */
  from(name: string, equal: boolean): number {
    const names = this.names();
    let [lo, hi] = [0, names.length];
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const c = byBytes(names[mid]!, name);
      if (c < 0 || (c === 0 && !equal)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
  names(): string[] {
    if (!this.sorted) this.sorted = [...this.keys()].sort(byBytes);
    else if (this.came.size || this.went.size) {
      const [old, came] = [this.sorted, [...this.came].sort(byBytes)];
      const names: string[] = [];
      for (let i = 0, j = 0; i < old.length || j < came.length; ) {
        if (j === came.length || (i < old.length && byBytes(old[i]!, came[j]!) < 0)) {
          const name = old[i++]!;
          if (!this.went.has(name)) names.push(name);
        } else names.push(came[j++]!);
      }
      this.sorted = names;
      this.came.clear();
      this.went.clear();
    }
    return this.sorted;
  }
}

/** The entries of an index a queue does not have. */
const NO_ENTRIES: EntrySource = { length: 0, read: () => {}, release: () => {} };

/** The leases of a queue that holds none (never changed). */
const NO_LEASES = new LeaseTable();

const newQueue = (): Queue => ({ s: emptyQueue(), leases: new LeaseTable(), index: new PositionIndex() });

export class JournalStore implements Store {
  readonly syncMode: SyncMode;
  private readonly dir: string;
  private readonly queues = new Queues();
  /** Segments by id, in id order. */
  private readonly segs = new Map<number, Segment>();
  /** The segment being appended to, where the next record goes, and a whole one to go on in. */
  private cur!: Segment;
  private end = 0;
  private spare: Segment | undefined;
  private sparing: Promise<boolean> | undefined;
  /** Segment files being deleted, by id (see `dropSegment`). */
  private readonly deleting = new Map<number, Promise<void>>();
  /** No new segment is tried before then (the disk had no room). */
  private retryAt = 0;
  /** Batches not yet written, oldest first; `open` (the last) takes records. */
  private batches: Batch[] = [];
  private open: Batch | undefined;
  private writing = false;
  private scheduled = false;
  /** Where the journal has been written up to: the end of the last batch written. */
  private writtenTo = { seg: 0, off: 0 };
  /** Bytes of a segment read ahead of the last message read from it (see READ_AHEAD). */
  private ahead: { seg: number; start: number; buf: Buffer } | undefined;
  private window: Buffer | undefined;
  /** Segments written since their last flush ('interval' mode), and the last flush begun. */
  private readonly unflushed = new Set<Segment>();
  private flushed: Promise<void> = Promise.resolve();
  /** The point of the journal the checkpoint on disk covers; segments before it may go. */
  private covered = { seg: 0, off: 0 };
  private checkpointing: Promise<void> | undefined;
  private checkpointAgain = false;
  /** Room on the disk for the next checkpoint (`checkpoint.room`, files.ts): its bytes, and at most
   * the bytes of the next checkpoint (those of the last one, and what records written since add).
   * A put waits for the room to cover what it adds, as for a segment, and is refused when the room
   * cannot grow; what puts leave of it (`ckptKeep`, as many bytes as of a segment) is for the others. */
  private ckptRoom = 0;
  private ckptNeed = 0;
  private readonly ckptKeep: number;
  private growing: Promise<boolean> | undefined;
  /** Checkpoints and the room's growth, one after the other (they write the same file). */
  private ckptFiles: Promise<unknown> = Promise.resolve();
  /** Start-up is over: records are being written, not replayed. */
  private started = false;
  /** The version of the checkpoint found at start-up (0: none). */
  private loadedVersion = 0;
  private compacting: Promise<void> | undefined;
  /** Compaction was asked for while it ran (a checkpoint let more segments go meanwhile): it runs
   * again once done, or those segments would wait for the next read of an old one. */
  private compactAgain = false;
  /** Sparse segments whose copying forward left live bytes behind: not tried again before the
   * next checkpoint, so that a miscount cannot make compaction scan the index over and over. */
  private readonly stuck = new Set<number>();
  private writeError: StoreError | undefined;
  /** `--repair`, or an export (read-only: it reads what can be read): a damaged message record
   * found by a read is left out (said why) rather than refused. */
  private dropDamaged = false;
  /** After a failed write, until memory is read back from disk: every operation is refused. */
  private fence: StoreError | undefined;
  private full: DiskLowError | undefined;
  private waiting: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private syncSeconds: number;
  private readonly segmentBytes: number;
  /** Batches written so far: the idle check tells from it whether the journal was idle. */
  private writes = 0;
  private idle: NodeJS.Timeout | undefined;
  /** The small segment a drained journal went on in (`shrink`), while it is the current or the next. */
  private small: Segment | undefined;
  private readonly warn: (message: string) => void;
  private readonly observe: StoreHooks['observe'];
  private readonly now: () => number;
  private readonly diskFree: (dir: string) => number;
  private readonly disk: DiskReserve | undefined;
  /** Records replayed at start-up (after the checkpoint): what a restart cost. */
  replayed = 0;

  /** Opens the journal in `opts.path`, taking the directory's lock first (unless read-only). */
  static async open(opts: JournalOptions): Promise<JournalStore> {
    mkdirSync(join(opts.path, 'journal'), { recursive: true, mode: DATA_DIR_MODE });
    const release = opts.readOnly ? undefined : await lockDirectory(opts.path, opts.owner, opts.onLockWait);
    for (let tries = 1; ; tries++) {
      let store: JournalStore | undefined;
      try {
        store = new JournalStore(opts, release);
        await store.start(opts.repair ?? false);
        return store;
      } catch (err) {
        store?.abandon();
        // Read-only, next to a server whose compaction deleted a segment as it was looked at.
        if (opts.readOnly && (err as NodeJS.ErrnoException).code === 'ENOENT' && tries < 5) continue;
        release?.();
        throw err;
      }
    }
  }

  private constructor(
    private readonly opts: JournalOptions,
    private readonly release: (() => void) | undefined,
  ) {
    this.dir = join(opts.path, 'journal');
    this.syncMode = opts.syncMode ?? 'durable';
    this.syncSeconds = opts.syncInterval ?? 5;
    this.warn = opts.warn ?? ((message) => process.stderr.write(`httpsqs: ${message}\n`));
    this.observe = opts.observe;
    this.now = opts.now ?? Date.now;
    this.diskFree =
      opts.diskFree ??
      ((dir) => {
        const st = statfsSync(dir);
        return st.bavail * st.bsize;
      });
    // A small disk (a container's volume) gets smaller segments: a sixteenth of it, 1 MiB at least.
    const st = statfsSync(this.dir);
    this.segmentBytes = opts.segmentBytes ?? Math.max(2 ** 20, Math.min(SEGMENT, 2 ** 20 * Math.floor((st.blocks * st.bsize) / 16 / 2 ** 20)));
    this.ckptKeep = Math.min(KEEP_FOR_OTHERS, this.segmentBytes / 8);
    const inside = () => this.cur.size - this.end + (this.spare?.size ?? 0);
    if (opts.reserveBytes && !opts.readOnly) this.disk = new DiskReserve(opts.path, opts.reserveBytes, inside, opts.onDiskSpace);
  }

  // ---- start-up: the checkpoint, then the records after it ----

  private async start(repair: boolean): Promise<void> {
    const ro = this.opts.readOnly;
    this.dropDamaged = repair || ro === true;
    const ids: number[] = [];
    for (const f of readdirSync(this.dir)) {
      const m = SEGMENT_NAME.exec(f);
      if (m) ids.push(Number(m[1]));
      else if (f.endsWith('.tmp') && !ro) rmSync(join(this.dir, f), { force: true }); // a segment or checkpoint never finished
    }
    ids.sort((a, b) => a - b);
    for (const id of ids) this.segs.set(id, { id, size: statSync(segmentFile(this.dir, id)).size, live: 0, fd: undefined });
    // Read-only, next to a server: segments it deletes meanwhile stay readable through descriptors
    // opened now (one deleted already: `open` tries again).
    if (ro) for (const seg of this.segs.values()) this.fd(seg);
    if (ids.length === 0) {
      if (ro) throw new StoreError(`${this.dir}: no journal segments`);
      await preallocate(this.dir, 1, this.segmentBytes);
      this.segs.set(1, { id: 1, size: this.segmentBytes, live: 0, fd: undefined });
      ids.push(1);
    }
    this.covered = { seg: ids[0]!, off: 0 };
    this.loadCheckpoint();
    // Segment 1 goes only once a checkpoint covers it, and a checkpoint is only ever replaced: with
    // none, the records of the segments let go (positions, maxqueue, leases) would be missed.
    if (this.loadedVersion === 0 && ids[0]! > 1) {
      const what = `journal checkpoint ${join(this.dir, 'checkpoint')} is missing, and the segments before ${segmentFile(this.dir, ids[0]!)} are gone`;
      this.refuseUnlessRepair(what, 'go on from the records left');
      this.warn(`${what}: going on from the records left (${ro ? 'read-only' : '--repair'})`);
    }
    // Replay: every segment from the checkpoint's on, each to its last whole batch.
    let last = this.segs.get(this.covered.seg);
    if (!last) {
      const missing = new StoreError(`${this.dir}: the checkpoint covers up to segment ${this.covered.seg}, which is missing`);
      // Read-only, a server's newer checkpoint let that segment go after the listing: `open` tries again.
      if (ro) (missing as NodeJS.ErrnoException).code = 'ENOENT';
      throw missing;
    }
    let lastEnd = this.covered.off;
    const later = ids.filter((id) => id >= this.covered.seg);
    for (const [k, id] of later.entries()) {
      const seg = this.segs.get(id)!;
      const from = id === this.covered.seg ? this.covered.off : 0;
      const fd = this.fd(seg);
      if (ro && k > 0) {
        // A server may be writing: what is read must be all that was written up to one moment,
        // never a later batch without an earlier one. It writes into a segment only once the one
        // before is whole: a segment with no batch yet ends the reading; one with a batch means
        // the one before has grown since it was read, to its end, and it is read on first.
        if (!hasData(fd, id, seg.size)) break;
        const prev = last;
        lastEnd = replay(this.fd(prev), prev.id, prev.size, lastEnd, (rec, _buf, base) => this.replayRecord(rec, prev.id, base));
      }
      const end = replay(fd, id, seg.size, from, (rec, _buf, base) => this.replayRecord(rec, id, base));
      if (end > from || id === this.covered.seg) [last, lastEnd] = [seg, end];
      if (ro) continue; // what is whole is what there is
      // What was replayed may be in the page cache only (written by a process in --sync interval
      // mode, or a write in flight, then killed): flushed before a checkpoint covers it, so that a
      // power cut cannot take records a checkpoint says are there.
      if (end > from) fdatasyncSync(fd);
      const tail = tailOf(fd, id, seg.size, end);
      if (tail.dirtyTo === end) continue;
      const file = segmentFile(this.dir, id);
      const followed = tail.intact ?? later.slice(k + 1).find((n) => hasData(this.fd(this.segs.get(n)!), n, this.segs.get(n)!.size));
      if (followed !== undefined && !repair) {
        throw new JournalDamaged(
          `journal segment ${file} is damaged at offset ${end}, and intact records follow it (at ${tail.intact !== undefined ? `offset ${tail.intact}` : `segment ${followed}`}): ` +
            `restore the data directory from a backup, or start with --repair to drop the damaged records and the rest of that segment (${tail.dirtyTo - end} bytes)`,
        );
      }
      this.warn(
        `${followed === undefined ? 'torn' : 'damaged'} journal tail dropped: ${tail.dirtyTo - end} bytes at offset ${end} of ${file}` +
          `${followed === undefined ? ', from a write the crash cut short (never acknowledged)' : ' (--repair)'}`,
      );
      zero(fd, end, tail.dirtyTo);
    }
    // Restored messages are live until their queue's state comes (`place`). None comes now: an
    // import holds the directory while it writes, so those of a queue whose state never came (an
    // import stopped by a crash, Ctrl-C or a bad line) would hold their segments for good. Every
    // entry is marked by the rule, as a state record would; for the others this changes nothing.
    for (const q of this.queues.values()) this.markAll(q);
    this.ckptNeed = this.checkpointBytes();
    // Writes go on after the last record, never before what the checkpoint covers.
    this.cur = last;
    this.end = lastEnd;
    this.writtenTo = { seg: last.id, off: lastEnd };
    for (const s of this.segs.values()) {
      if (s.id <= this.cur.id) continue;
      if (!this.spare && !ro) this.fd((this.spare = s));
      else if (!ro) this.dropSegment(s);
    }
    if (ro) return; // its descriptors were opened as the segments were listed
    // A room still linked to the checkpoint (a crash inside `installCheckpoint`) is no room.
    const room = statSync(roomFile(this.dir), { throwIfNoEntry: false });
    if (room && room.nlink > 1) rmSync(roomFile(this.dir));
    this.ckptRoom = room?.nlink === 1 ? room.size : 0;
    void this.growRoom();
    if (this.syncMode === 'interval') this.tick();
    this.started = true;
    // A journal without a checkpoint of this version (a new one, one from an earlier version, or
    // one killed before its first checkpoint) gets one before anything is written: an earlier
    // version refuses it, saying which versions it reads. Records it does not know (`touched`)
    // would otherwise read to it as damage, or at the end of the last segment as a write a crash
    // cut short, and it would drop them, and the acknowledged records of their batch.
    if (this.loadedVersion < CHECKPOINT_VERSION) await this.checkpoint();
    this.compactSoon();
    this.idleSoon();
  }

  /** 'interval' mode: flushes every `syncSeconds`. */
  private tick(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.flushSegments().finally(() => this.closing || this.tick()), Math.min(this.syncSeconds * 1000, MAX_TIMER_MS));
    this.timer.unref();
  }

  /** Damage that start-up goes on past only with --repair (or read-only): refused, saying what to do. */
  private refuseUnlessRepair(what: string, goOn: string): void {
    if (!this.dropDamaged) throw new JournalDamaged(`${what}: restore the data directory from a backup, or start with --repair to ${goOn}`);
  }

  /** Segment `seg` is shorter than the `size` it was made with: refused, or with --repair made its
   * size again (what was cut reads as zeros: dropped as a torn tail, or as damaged when read). */
  private cutShort(seg: Segment, size: number): void {
    const file = segmentFile(this.dir, seg.id);
    const what = `journal segment ${file} is ${seg.size} bytes, shorter than the ${size} it was made with: records were cut off its end`;
    this.refuseUnlessRepair(what, 'go on without them');
    if (this.opts.readOnly) {
      this.warn(`${what}; read as it is`);
      return;
    }
    this.warn(`${what}: it is made ${size} bytes again, without them (--repair)`);
    truncateSync(file, size);
    seg.size = size;
  }

  private loadCheckpoint(): void {
    const file = join(this.dir, 'checkpoint');
    let c: ReturnType<typeof decodeCheckpoint>;
    try {
      c = decodeCheckpoint(readFileSync(file));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw new JournalDamaged(`journal checkpoint ${file} cannot be read (${errorMessage(err)}): restore the data directory from a backup`);
    }
    this.covered = { seg: c.seg, off: c.off };
    this.loadedVersion = c.version;
    for (const s of c.segments) {
      const seg = this.segs.get(s.id);
      if (!seg) continue;
      seg.live = s.live;
      // A segment is made whole before it is used and never shrinks: one shorter than the
      // checkpoint says lost records (acknowledged ones), not a write a crash cut short. Replayed
      // as it is, its end would read as a torn tail, and the gets and acks cut off would be undone.
      if (seg.size < s.size) this.cutShort(seg, s.size);
    }
    for (const [id, seg] of this.segs) {
      // A segment before the checkpoint that it does not know had been let go.
      if (id < c.seg && !c.segments.some((s) => s.id === id) && !this.opts.readOnly) this.dropSegment(seg);
    }
    const gone = (id: number) => !this.segs.has(id);
    for (const q of c.queues) {
      const queue = newQueue();
      queue.s = q.s;
      for (const [pos, lease] of q.leases) queue.leases.set(pos, lease);
      queue.leases.setSlotCursor(q.slotCursor);
      queue.index.load(q.entries, gone);
      if (q.slots.length) (queue.slots = new PositionIndex()).load(q.slots, gone);
      this.queues.set(q.name, queue);
    }
  }

  private replayRecord(rec: Decoded, seg: number, base: number): void {
    this.replayed++;
    const q = this.queues.get(rec.name) ?? newQueue();
    this.queues.set(rec.name, q);
    this.apply(rec.name, q, rec.type, rec.fields, seg, base + rec.at, rec.next - rec.at);
    this.forgetIfEmpty(rec.name, q);
  }

  // ---- what a record does: the one place, for operations and for replay ----

  private apply(name: string, q: Queue, type: number, f: readonly number[], seg: number, off: number, len: number): void {
    const pos = f[0]!;
    switch (type) {
      case T.put:
        q.s = moved(q.s, pos, q.s.getpos);
        this.place(q, pos, seg, off, len, false);
        break;
      case T.store:
        this.place(q, pos, seg, off, len, true);
        break;
      case T.maxdeliveries: {
        const { maxdeliveries: _, ...s } = q.s;
        q.s = pos ? { ...s, maxdeliveries: pos } : s;
        break;
      }
      case T.advance:
        q.s = moved(q.s, q.s.putpos, pos);
        this.relive(q, pos);
        break;
      case T.maxqueue:
        q.s = moved(q.s, q.s.putpos, q.s.getpos, pos);
        break;
      case T.lease:
      case T.touched: {
        const lease: Lease = { deadline: joinDeadline(f[1]!, f[2]!), deliveries: f[3]! };
        if (type === T.touched) lease.granted = joinDeadline(f[4]!, f[5]!);
        q.leases.set(pos, lease);
        this.relive(q, pos);
        break;
      }
      case T.unlease:
        q.leases.delete(pos);
        if (isSlot(pos)) this.unstore(q, pos);
        else this.relive(q, pos);
        break;
      case T.state:
        q.s = { putpos: f[0]!, getpos: f[1]!, maxqueue: f[2]! };
        this.markAll(q);
        break;
      case T.reset:
        for (const ix of indexes(q)) for (const i of ix.entries()) this.mark(ix, i, false);
        q.index.clear();
        q.slots = undefined;
        q.leases = new LeaseTable();
        q.s = emptyQueue();
        this.queues.delete(name);
        break;
    }
  }

  /** A message stored at `pos`: the entry of what was there before is dead for good. A store
   * record's message is live as it comes: compaction copies only live ones, a slot's lease follows
   * it, and an import writes its messages before the queue's state (whose record then marks every
   * entry by the rule), so they would otherwise be dead, and their segments deleted, meanwhile
   * (start-up marks those whose state never came: see `start`). */
  private place(q: Queue, pos: number, seg: number, off: number, len: number, stored: boolean): void {
    this.unstore(q, pos);
    const ix = isSlot(pos) ? (q.slots ??= new PositionIndex()) : q.index;
    const i = ix.add(pos, seg, off, len);
    this.mark(ix, i, stored || q.leases.has(pos) || isUnread(q.s, pos));
  }

  /** Marks every entry of a queue by the rule (unread or leased: live). */
  private markAll(q: Queue): void {
    for (const ix of indexes(q)) for (const i of ix.entries()) this.mark(ix, i, q.leases.has(ix.pos(i)) || isUnread(q.s, ix.pos(i)));
  }

  /** The message at `pos` is gone: its entry is dead for good. */
  private unstore(q: Queue, pos: number): void {
    const ix = indexOf(q, pos);
    const old = ix?.find(pos) ?? -1;
    if (old < 0) return;
    this.mark(ix!, old, false);
    ix!.kill(old);
  }

  private relive(q: Queue, pos: number): void {
    const ix = indexOf(q, pos);
    const i = ix?.find(pos) ?? -1;
    if (i >= 0) this.mark(ix!, i, q.leases.has(pos) || isUnread(q.s, pos));
  }

  /** Sets whether an entry of index `ix` is live, counting its bytes in its segment. */
  private mark(ix: PositionIndex, i: number, live: boolean): void {
    if (ix.live(i) === live) return;
    ix.setLive(i, live);
    const seg = this.segs.get(ix.seg(i));
    if (!seg) return;
    seg.live += live ? ix.len(i) : -ix.len(i);
    if (live || !this.started) return;
    if (seg.id < this.covered.seg) {
      if (seg.live < (2 / 3) * seg.size) this.compactSoon();
    } else if (seg.live <= 0 && seg !== this.cur && seg !== this.spare) {
      // A sealed segment whose messages have all been read goes once a checkpoint covers it. Not
      // in the middle of an operation: the checkpoint ends the open batch (see there).
      queueMicrotask(() => void this.checkpoint());
    }
  }

  private forgetIfEmpty(name: string, q: Queue): void {
    if (
      q.index.size === 0 &&
      !q.slots?.size &&
      q.leases.size === 0 &&
      q.leases.slotCursor < FIRST_SLOT &&
      q.s.putpos === 0 &&
      q.s.getpos === 0 &&
      q.s.maxqueue === DEFAULT_MAXQUEUE &&
      !q.s.maxdeliveries
    )
      this.queues.delete(name);
  }

  // ---- deciding an operation, and writing its records ----

  /** Called by a Draft: appends a record to the open batch and applies it. */
  emit(name: string, q: Queue, type: number, fields: number[], message?: Buffer): void {
    if (!this.open) {
      this.open = new Batch(this.cur.id, this.end);
      this.batches.push(this.open);
      this.end += BATCH_BYTES;
      this.schedule();
    }
    const [off, len] = this.open.add(type, name, fields, message);
    this.end = off + len;
    // An index entry or a lease more for the next checkpoint (at most: it may replace one).
    if (type === T.put || type === T.store) this.ckptNeed += CHECKPOINT_BYTES.item;
    else if (type === T.lease || type === T.touched) this.ckptNeed += CHECKPOINT_BYTES.lease;
    this.apply(name, q, type, fields, this.cur.id, off, len);
  }

  /** Runs `plan` on queue `name` once the current segment has room for `need` bytes of records
   * (a function: counted on the state at the time, when that depends on the state). `put`: for a
   * put, the bytes it adds to the next checkpoint at most; false for any other operation. */
  private run<T>(op: string, name: string, need: number | (() => number), put: number | false, plan: Plan<T>): Promise<T> {
    if (this.closing) return Promise.reject(new StoreError('the store is closed'));
    if (this.fence) return Promise.reject(this.fence);
    if (this.opts.readOnly) return Promise.reject(new StoreError('the journal was opened read-only'));
    if (!this.waiting && this.room(need, put)) return this.decide(name, plan, put, op);
    // Waits for a new segment, behind any other operation waiting: operations are still decided
    // in the order they came.
    const turn = (this.waiting ?? Promise.resolve())
      .then(() => this.makeRoom(need, put))
      .then(() => {
        if (this.fence) throw this.fence;
        return { decided: this.decide(name, plan, put) }; // the turn ends once decided, not once written
      });
    const waiting = (this.waiting = turn.then(
      () => {},
      () => {},
    ));
    void waiting.then(() => this.waiting === waiting && (this.waiting = undefined));
    return timed(
      this.observe,
      op,
      turn.then(({ decided }) => decided),
    );
  }

  /** `op`: the operation to time for the store hooks, in the same step as the wait for the write. */
  private decide<T>(name: string, plan: Plan<T>, put: number | false, op?: string): Promise<T> {
    const observe = op === undefined ? undefined : this.observe;
    const started = observe ? performance.now() : 0;
    if (put !== false && this.full) {
      this.full = undefined;
      this.opts.onDiskFull?.(false);
    }
    let q = this.queues.get(name);
    if (!q) {
      this.queues.set(name, (q = newQueue()));
      this.ckptNeed += CHECKPOINT_BYTES.queue(name);
    }
    const d = new Draft(this, name, q);
    let result: T;
    try {
      result = plan(d);
    } catch (err) {
      // A message that could not be read: the plans stop before they change anything for it.
      return Promise.reject(err);
    }
    this.forgetIfEmpty(name, q);
    if (!observe) return d.wrote ? this.open!.done.then(() => result) : Promise.resolve(result);
    const done = () => observe(op!, (performance.now() - started) / 1000);
    if (!d.wrote) return (done(), Promise.resolve(result));
    return this.open!.done.then(
      () => (done(), result),
      (err: unknown) => (done(), Promise.reject(err)),
    );
  }

  /** Whether the room for the next checkpoint covers a put that adds `adds` bytes to it. */
  private roomCovers(adds: number): boolean {
    return this.ckptNeed + adds <= this.ckptRoom - this.ckptKeep;
  }

  /** Whether `need` bytes of records fit now: in the current segment, or in the next one (made
   * already) after rolling over to it; and, for a put, in the room for the next checkpoint. */
  private room(needs: number | (() => number), put: number | false): boolean {
    if (put !== false && !this.roomCovers(put)) {
      if (Date.now() >= this.retryAt) void this.growRoom(put);
      return false;
    }
    const need = typeof needs === 'number' ? needs : needs();
    const left = this.cur.size - this.end - (this.open ? 0 : BATCH_BYTES);
    if (need <= left - (put !== false && !this.spare ? Math.min(KEEP_FOR_OTHERS, this.cur.size / 8) : 0)) return true;
    if (!this.spare || need > this.spare.size - BATCH_BYTES) {
      if (!this.sparing && Date.now() >= this.retryAt) void this.makeSpare(need + BATCH_BYTES);
      return false;
    }
    this.roll();
    return true;
  }

  private async makeRoom(need: number | (() => number), put: number | false): Promise<void> {
    const bytes = () => (typeof need === 'number' ? need : need());
    let ok = this.room(need, put);
    for (let tries = 0; tries < 3 && !ok; tries++) {
      const made = put !== false && !this.roomCovers(put) ? await this.growRoom(put) : await this.makeSpare(bytes() + BATCH_BYTES);
      if (!made) break;
      ok = this.room(need, put);
    }
    if (ok) return;
    const what = put !== false && !this.roomCovers(put) ? 'the next journal checkpoint' : 'a new journal segment';
    const why = `no room for the write: the disk of the data directory has no room for ${what}`;
    if (put === false) throw new StoreError(why);
    if (!this.full) {
      this.full = new DiskLowError(`${why}; puts are refused until there is room`);
      this.opts.onDiskFull?.(true);
    }
    throw this.full;
  }

  /** Makes the next segment (of `min` bytes at least), unless there is one; resolves to whether
   * there is one now. */
  private makeSpare(min = 0, size = Math.max(this.segmentBytes, Math.ceil(min / 2 ** 20) * 2 ** 20)): Promise<boolean> {
    if (this.spare && this.spare.size >= min) return Promise.resolve(true);
    this.sparing ??= (async () => {
      if (this.spare) this.dropSegment(this.spare); // too small for a message larger than a segment
      this.spare = undefined;
      const id = Math.max(...this.segs.keys(), ...this.deleting.keys()) + 1;
      const seg: Segment = { id, size, live: 0, fd: undefined };
      try {
        if (this.diskFree(this.dir) < size) throw new Error('not enough free space');
        await this.makeFile(this.dir, id, size);
        // Opened now, where a failure (no descriptor left) only delays the roll-over: the write
        // that goes on in it has nowhere to report one. A file left unopened is made again.
        this.fd(seg);
      } catch (err) {
        this.retryAt = Date.now() + 1000;
        if (!['ENOSPC', 'EDQUOT'].includes((err as NodeJS.ErrnoException).code ?? '') && !/free space/.test(errorMessage(err)))
          this.warn(`cannot make a journal segment: ${errorMessage(err)}`);
        return false;
      }
      this.segs.set(id, seg);
      this.ckptNeed += CHECKPOINT_BYTES.item;
      if (this.closing) {
        this.dropSegment(seg);
        return false;
      }
      this.spare = seg;
      return true;
    })().finally(() => (this.sparing = undefined));
    return this.sparing;
  }

  /** Goes on in the next segment; the one it leaves is sealed, and the state up to here is
   * checkpointed once everything written before is on disk. */
  private roll(): void {
    this.open = undefined;
    this.cur = this.spare!;
    this.spare = undefined;
    if (this.cur !== this.small) this.small = undefined;
    this.end = 0;
    this.checkpoint();
  }

  /** Writes a checkpoint of the state in memory, which covers every record decided so far (up to
   * `cur`, `end`), once those records are on disk. The state is copied at once (the index too: 16
   * bytes a stored message, for as long as the checkpoint is being written) and written in pieces,
   * so that requests go on meanwhile. One at a time: a roll-over meanwhile has another written once
   * it is done, so that the segments it sealed can go. It is written into the room taken for it
   * (files.ts), whose growth it waits for; the room for the next one is the checkpoint it replaced,
   * grown to cover what the next holds. Until then the room it was given is counted: puts go on. */
  private checkpoint(): Promise<void> {
    if (this.checkpointing) {
      this.checkpointAgain = true;
      return this.checkpointing;
    }
    // The open batch ends here: replay starts at a batch header, so records decided after the
    // snapshot must not go on in a batch that began before the offset it covers.
    this.open = undefined;
    const at = { seg: this.cur.id, off: this.end };
    const snapshot = this.snapshot(at);
    this.ckptNeed = this.checkpointBytes();
    const written = this.batches.at(-1)?.done ?? Promise.resolve();
    this.checkpointing = this.serially(async () => {
      let kept = 0;
      try {
        const fd = await writeCheckpoint(this.dir, snapshot);
        try {
          await written;
          await this.flushSegments();
        } catch (err) {
          closeQuietly(fd);
          throw err;
        }
        kept = await installCheckpoint(this.dir, fd);
        this.covered = at;
        this.stuck.clear();
        this.compactSoon();
      } catch (err) {
        this.warn(`journal checkpoint not written: ${errorMessage(err)}`);
        // What was written of it would hold its room (a full disk) until the next one.
        await rm(join(this.dir, 'checkpoint.tmp'), { force: true }).catch(() => {});
      }
      await this.grow(0, kept);
    }).finally(() => {
      this.checkpointing = undefined;
      if (this.checkpointAgain && !this.closing && !this.fence) void this.checkpoint();
      this.checkpointAgain = false;
    });
    return this.checkpointing;
  }

  /** Bytes of a checkpoint of the state now, at most. */
  private checkpointBytes(): number {
    const c = CHECKPOINT_BYTES;
    let n = c.fixed + c.item * this.segs.size;
    for (const [name, q] of this.queues) n += c.queue(name) + c.lease * q.leases.size + c.item * (q.index.size + (q.slots?.size ?? 0));
    return n;
  }

  /** Runs `task` once the checkpoint files' tasks before it are done. */
  private serially<T>(task: () => Promise<T>): Promise<T> {
    const done = this.ckptFiles.then(task);
    this.ckptFiles = done.catch(() => {});
    return done;
  }

  /** Grows the room for the next checkpoint when it is short of what that one holds, plus `adds`,
   * plus twice what puts leave to the others: by an eighth of the checkpoint as well, so that it
   * grows now and then rather than at every put. Resolves to whether a put that adds `adds` fits. */
  private async growRoom(adds = 0): Promise<boolean> {
    // One growth at a time: one made for a smaller put than this one is followed by another.
    while (this.roomShort(adds) && !this.closing) {
      this.growing ??= this.serially(async () => !this.roomShort(adds) || this.grow(adds)).finally(() => (this.growing = undefined));
      if (!(await this.growing)) break;
    }
    return this.roomCovers(adds);
  }

  /** Whether the room should grow before a put that adds `adds` (see `growRoom`). */
  private roomShort(adds = 0): boolean {
    return this.ckptNeed + adds + 2 * this.ckptKeep > this.ckptRoom;
  }

  /** Grows the room from the `has` bytes it has (see `growRoom`), as far as the disk lets it: after
   * a checkpoint, what the room had past it is given back to the disk as the file is cut (files.ts)
   * and taken again here, so that the room for the next one is there on a full disk too. In turn with
   * checkpoints. Resolves to whether it grew. */
  private async grow(adds: number, has = this.ckptRoom): Promise<boolean> {
    const want = 4096 * Math.ceil((this.ckptNeed * 1.125 + adds + 2 * this.ckptKeep) / 4096);
    try {
      if (this.closing) throw new Error('the store is closing');
      const size = Math.min(want, 4096 * Math.floor((has + this.diskFree(this.dir)) / 4096));
      if (size <= has) throw new Error('not enough free space');
      this.ckptRoom = await growRoom(this.dir, size);
      return true;
    } catch (err) {
      this.ckptRoom = Math.max(has, statSync(roomFile(this.dir), { throwIfNoEntry: false })?.size ?? 0);
      this.retryAt = Date.now() + 1000;
      if (!['ENOSPC', 'EDQUOT'].includes((err as NodeJS.ErrnoException).code ?? '') && !/free space|closing/.test(errorMessage(err)))
        this.warn(`cannot make room for the journal checkpoint: ${errorMessage(err)}`);
      return false;
    }
  }

  private snapshot(at: { seg: number; off: number }): Checkpoint<EntrySource> {
    return {
      ...at,
      segments: [...this.segs.values()].map(({ id, size, live }) => ({ id, size, live })),
      queues: [...this.queues].map(([name, q]) => ({
        name,
        s: q.s,
        slotCursor: q.leases.slotCursor,
        leases: [...q.leases.entries()],
        entries: q.index.snapshot(),
        slots: q.slots?.snapshot() ?? NO_ENTRIES,
      })),
    };
  }

  /** Writes the oldest batch at the end of the turn (so that the turn's records go together). */
  private schedule(): void {
    if (this.writing || this.scheduled || !this.batches.length) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.writeNext();
    });
  }

  private writeNext(): void {
    const b = this.batches[0];
    if (!b || this.writing) return;
    if (b === this.open) this.open = undefined;
    b.seal();
    this.writing = true;
    const seg = this.segs.get(b.seg)!;
    const written = (err: Error | null, n = 0): void => {
      if (!err && n < b.used) {
        this.writeFile(this.fd(seg), b.buf, n, b.used - n, b.start + n, (e, more) => written(e, n + more));
        return;
      }
      this.writing = false;
      if (err) {
        this.failed(err);
        return;
      }
      this.batches.shift();
      this.writtenTo = { seg: b.seg, off: b.start + b.used };
      this.writes++;
      if (this.syncMode === 'interval') this.unflushed.add(seg);
      if (!this.fence) this.writeError = undefined;
      // The next batch goes to the disk before this one's requests are answered: answering them
      // takes a while (a socket write each), and the disk would sit idle meanwhile.
      this.writeNext();
      b.resolve();
      // A small segment (`shrink`) gets a whole one to go on in as soon as writes resume.
      const filling = this.end > 0.75 * this.cur.size || this.cur === this.small;
      if (!this.spare && filling && Date.now() >= this.retryAt && !this.closing) void this.makeSpare();
      if (this.roomShort() && Date.now() >= this.retryAt && !this.closing) void this.growRoom();
      this.idleSoon();
    };
    this.writeFile(this.fd(seg), b.buf, 0, b.used, b.start, written);
  }

  /** After a write (and at start-up): arms the idle check, which gives the disk back (`shrink`) if
   * no batch was written meanwhile. At most one timer runs, so a busy journal pays a comparison a write. */
  private idleSoon(): void {
    if (this.idle) return; // the hot path: one check a write
    const ms = this.opts.shrinkAfterMs ?? SHRINK_AFTER_MS;
    if (!Number.isFinite(ms) || this.opts.readOnly || this.closing) return;
    const seen = this.writes;
    this.idle = setTimeout(() => {
      this.idle = undefined;
      if (this.writes !== seen) this.idleSoon();
      else void this.shrink();
    }, ms);
    this.idle.unref();
  }

  /** A drained journal gives its disk back: a segment takes its whole size from the start, so with
   * no live message left (every message read, no lease held) and nothing written for a while, it
   * goes on in a new segment a quarter of that size, and the one it leaves goes once the roll-over's
   * checkpoint covers it (as any read-through segment does). The next write makes a whole segment
   * to go on in. Read messages stop being viewable then, as they do when their segment goes. */
  private async shrink(): Promise<void> {
    const smallBytes = Math.floor(this.segmentBytes / 4);
    /** A segment being made, a batch on its way, operations waiting for room: for a moment. */
    const busy = () => !!(this.waiting || this.sparing || this.batches.length);
    const drained = () => !busy() && this.cur.size > smallBytes && [...this.segs.values()].every((s) => s.live <= 0);
    if (this.closing || this.fence) return;
    // Looked at again later, or a drain that ended while a segment was being made would keep its
    // whole segments until the next write.
    if (busy()) return this.idleSoon();
    if (!drained()) return;
    const seen = this.writes;
    if (this.spare) void this.dropSegment(this.spare);
    this.spare = undefined;
    if (!(await this.makeSpare(0, smallBytes))) return;
    this.small = this.spare;
    // Writes that came meanwhile went to the current segment: the small one waits as the next.
    if (this.writes === seen && !this.closing && !this.fence && drained()) this.roll();
  }

  /** Makes a segment's file (a test holds it back). */
  private makeFile = preallocate;

  /** fs.write, the one place batches reach the disk (a test makes it fail). */
  private writeFile = write;

  /** fs.openSync, the one place segments are opened (a test makes it fail). */
  private openFile = openSync;

  /** fs.fdatasync, the one place 'interval' mode flushes segments (a test holds it back). */
  private datasync = fdatasync;

  /** A write failed: what was decided after the last good write never happened. Every batch not
   * written fails, and memory is read back from disk. What the failed write may have left there
   * (all of it, in the page cache, when the error came from the flush) is zeroed first: read back,
   * a get whose client was told it failed would count as done. */
  private failed(err: Error): void {
    const error = new StoreError(`journal write failed: ${err.message}`, { cause: err });
    this.writeError = this.fence = error;
    this.disk?.check();
    const torn = this.batches[0];
    for (const b of this.batches) b.reject(error);
    this.batches = [];
    this.open = undefined;
    this.ahead = undefined;
    this.started = false;
    const reload = async () => {
      await Promise.allSettled([this.sparing, this.checkpointing, this.compacting, this.ckptFiles, ...this.deleting.values()]);
      const seg = torn && this.segs.get(torn.seg);
      if (seg) zero(this.fd(seg), torn.start, torn.start + torn.used);
      for (const s of this.segs.values()) if (s.fd !== undefined) closeQuietly(s.fd);
      this.segs.clear();
      this.queues.clear();
      this.spare = undefined;
      await this.start(false);
    };
    reload().then(
      () => {
        this.fence = undefined;
        this.compactSoon(); // the reload's own call came while fenced
      },
      (e: unknown) => this.warn(`journal not read back after a failed write (restart the server): ${errorMessage(e)}`),
    );
  }

  /** In 'interval' mode, flushes what was written since the last flush; resolves once the flushes
   * begun before are done too (what one of them took, this one does not flush again). */
  private flushSegments(): Promise<void> {
    const segs = [...this.unflushed];
    this.unflushed.clear();
    this.flushed = Promise.all([
      this.flushed,
      ...segs.map(
        (s) =>
          new Promise<void>((resolve) => {
            if (s.fd === undefined) return resolve();
            this.datasync(s.fd, (err) => {
              if (err) this.warn(`journal flush failed: ${err.message}`);
              resolve();
            });
          }),
      ),
    ]).then(() => {});
    return this.flushed;
  }

  private fd(seg: Segment): number {
    seg.fd ??= this.openFile(
      segmentFile(this.dir, seg.id),
      this.opts.readOnly ? 'r' : constants.O_RDWR | (this.syncMode === 'durable' ? constants.O_DSYNC : 0),
    );
    return seg.fd;
  }

  /** Lets a segment go. Its file is deleted off the event loop (deleting 64 MiB took about 24 ms
   * here, a pause for every request); until then no new segment takes its id. A crash before the
   * file is gone leaves it to start-up, which deletes the segments a checkpoint let go. */
  private dropSegment(seg: Segment): Promise<void> {
    if (this.ahead?.seg === seg.id) this.ahead = undefined;
    if (seg.fd !== undefined) closeSync(seg.fd);
    seg.fd = undefined;
    this.segs.delete(seg.id);
    const deleted = rm(segmentFile(this.dir, seg.id), { force: true })
      .catch((err: unknown) => this.warn(`journal segment not deleted: ${errorMessage(err)}`))
      .finally(() => this.deleting.delete(seg.id));
    this.deleting.set(seg.id, deleted);
    return deleted;
  }

  /** The message stored at `pos`, from a batch not yet written or from its segment; undefined
   * when there is none, or its segment is gone. Throws when the segment cannot be read now (no file
   * descriptor left, an I/O error) or its record is damaged (unless `--repair`: then undefined,
   * said once per read): the message is there, and must not be taken for missing (a take would
   * step over it, and lose it).
   * Written batches are not kept as a read cache: buffers that live that long reach V8's old
   * generation, where their bytes count towards its next full collection (one every 200 ms under
   * 1 KiB puts, pauses of up to 13 ms); the read-ahead below serves a queue read in order as well. */
  read(name: string, q: Queue, pos: number): Buffer | undefined {
    const ix = indexOf(q, pos);
    const i = ix?.find(pos) ?? -1;
    if (i < 0) return undefined;
    const [id, off, len] = [ix!.seg(i), ix!.off(i), ix!.len(i)];
    // Batches are in journal order: the last one that starts at or before the record.
    const list = this.batches;
    let [lo, hi] = [0, list.length - 1];
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const m = list[mid]!;
      if (m.seg < id || (m.seg === id && m.start <= off)) lo = mid + 1;
      else hi = mid - 1;
    }
    const b = list[hi];
    if (b && b.seg === id && off < b.start + b.used) return b.buf.subarray(off - b.start + messageStart(name), off - b.start + len);
    const seg = this.segs.get(id);
    if (!seg) return undefined;
    let buf: Buffer;
    let at = 0;
    const a = this.ahead;
    if (a && a.seg === id && off >= a.start && off + len <= a.start + a.buf.length) {
      buf = a.buf;
      at = off - a.start;
    } else {
      // Read ahead, up to what has been written: the messages after this one are read next.
      const w = this.writtenTo;
      const limit = id < w.seg ? seg.size : id === w.seg ? w.off : off + len;
      const n = Math.min(READ_AHEAD, limit - off);
      // One window buffer, read into again and again (what is handed out is copied from it), so
      // that reading makes no garbage; a message larger than it gets a buffer of its own.
      this.ahead = undefined;
      buf = len <= n ? (this.window ??= Buffer.allocUnsafeSlow(READ_AHEAD)).subarray(0, n) : Buffer.allocUnsafe(len);
      try {
        readAt(this.fd(seg), buf, off);
      } catch (err) {
        const why = `journal read failed at offset ${off} of ${segmentFile(this.dir, id)}: ${errorMessage(err)}`;
        this.warn(why);
        throw new StoreError(why, { cause: err });
      }
      if (len <= n) this.ahead = { seg: id, start: off, buf };
    }
    const rec = decode(buf, at, at + len);
    if (!rec || rec.name !== name || rec.fields[0] !== pos || (rec.type !== T.put && rec.type !== T.store)) {
      // Records a checkpoint covers are not read again at start: their damage is found here. A
      // message is never stepped over unless `--repair` says so: a get would lose it.
      const what = `damaged journal record at offset ${off} of ${segmentFile(this.dir, id)} (queue ${JSON.stringify(name)}, position ${pos})`;
      if (this.dropDamaged) {
        this.warn(`${what}: ${this.opts.readOnly ? 'left out' : 'dropped (--repair)'}`);
        return undefined;
      }
      const why = `${what}: it stays where it is; restore the data directory from a backup, or restart with --repair to drop it`;
      this.warn(why);
      throw new StoreError(why);
    }
    return this.ahead?.buf === buf ? Buffer.from(buf.subarray(rec.from, rec.to)) : buf.subarray(rec.from, rec.to);
  }

  // ---- space: deleting dead segments, copying the live messages of sparse ones forward ----

  private compactSoon(): void {
    if (this.closing || this.opts.readOnly || this.fence) return;
    if (this.compacting) {
      this.compactAgain = true;
      return;
    }
    this.compacting = nextTurn()
      .then(() => this.compact())
      .catch((err: unknown) => {
        if (!(err instanceof StoreError)) this.warn(`journal compaction stopped: ${errorMessage(err)}`);
      })
      .finally(() => {
        this.compacting = undefined;
        const again = this.compactAgain;
        this.compactAgain = false;
        if (again) this.compactSoon();
      });
  }

  private async compact(): Promise<void> {
    const gone = (id: number) => !this.segs.has(id);
    // A failed write leaves memory ahead of the disk until it is read back: what it says is dead
    // may not be, so compaction stops (as it does on close) at each turn and after each wait.
    const stopped = () => !!(this.closing || this.fence);
    for (;;) {
      if (stopped()) return;
      let sealed = [...this.segs.values()].filter((s) => s.id < this.covered.seg && s !== this.cur && s !== this.spare);
      let dead = sealed.filter((s) => s.live <= 0);
      if (dead.length) {
        // What emptied them goes to the disk first: deleted before, a crash would replay their
        // messages as unread, with nothing left to read them from. In 'interval' mode a batch
        // written is not yet flushed, and the copies compaction made are the only ones left.
        await this.batches.at(-1)?.done;
        if (this.syncMode === 'interval') await this.flushSegments();
        if (stopped()) return;
        dead = dead.filter((s) => this.segs.get(s.id) === s && s.live <= 0);
      }
      const deleted = dead.map((s) => this.dropSegment(s));
      if (dead.length) for (const q of this.queues.values()) for (const ix of indexes(q)) ix.trim(gone);
      await Promise.all(deleted);
      sealed = sealed.filter((s) => this.segs.get(s.id) === s);
      // Copying forward only while the sealed segments take more than 1.5 times the live data plus
      // one segment: a queue drained in order leaves one segment partly read at a time (those read
      // through go as a checkpoint covers them, see `mark`), and copying its unread messages, about
      // to be read, would only write them twice.
      let [sealedBytes, liveBytes] = [0, 0];
      for (const g of this.segs.values()) liveBytes += Math.max(0, g.live);
      for (const g of sealed) sealedBytes += g.size;
      if (sealedBytes <= 1.5 * liveBytes + this.segmentBytes) return;
      const sparse = sealed
        .filter((s) => s.live > 0 && s.live < (2 / 3) * s.size && !this.stuck.has(s.id))
        .sort((a, b) => a.live / a.size - b.live / b.size)[0];
      if (!sparse || stopped()) return;
      await this.copyForward(sparse);
      if (sparse.live > 0) this.stuck.add(sparse.id);
    }
  }

  /** Copies the live messages of `seg` to the current segment, a bounded amount per turn. */
  private async copyForward(seg: Segment): Promise<void> {
    for (const name of [...this.queues.keys()]) {
      let q = this.queues.get(name);
      if (!q) continue;
      // Ring positions, then slots past the ring (kept in order, they stay runs).
      const positions: number[] = [];
      let looked = 0;
      scan: for (const ix of indexes(q)) {
        for (const i of ix.entries()) {
          if (ix.seg(i) === seg.id && ix.live(i)) positions.push(ix.pos(i));
          if (++looked % SCAN_STEP === 0) {
            await nextTurn();
            if (this.queues.get(name) !== q) break scan;
          }
        }
      }
      /** The live entry of `pos` in `seg`, if it is still there. */
      const entry = (q: Queue, pos: number): [PositionIndex, number] | undefined => {
        const ix = indexOf(q, pos);
        const i = ix?.find(pos) ?? -1;
        return i >= 0 && ix!.seg(i) === seg.id && ix!.live(i) ? [ix!, i] : undefined;
      };
      for (let k = 0; k < positions.length; ) {
        if (this.closing || this.fence) return;
        q = this.queues.get(name);
        if (!q) break;
        const chunk: number[] = [];
        let bytes = 0;
        for (; k < positions.length && bytes < COPY_STEP; k++) {
          const e = entry(q, positions[k]!);
          if (!e) continue;
          chunk.push(positions[k]!);
          bytes += e[0].len(e[1]);
        }
        if (!chunk.length) continue;
        await this.run('compact', name, bytes + chunk.length * recordBytes(T.store, name), false, (d) => {
          for (const pos of chunk) {
            if (!entry(d.q, pos)) continue;
            let message: Buffer | undefined;
            try {
              message = d.read(pos);
            } catch {
              continue; // unreadable (said why): it stays, and so does its segment
            }
            if (message) d.store(pos, message);
          }
        });
      }
    }
  }

  // ---- the Store contract ----

  // The single put and get pick their result inside the plan: no promise step of their own.
  put(name: string, message: Buffer, delayMs?: number): Promise<number> {
    return this.puts(name, [message], delayMs, firstPosition);
  }

  putMany(name: string, messages: Buffer[], delayMs?: number): Promise<number[]> {
    return this.puts(name, messages, delayMs, (positions) => positions);
  }

  private puts<T>(name: string, messages: Buffer[], delayMs: number | undefined, pick: (positions: number[]) => T): Promise<T> {
    const bytes = messages.reduce((n, m) => n + m.length, 0);
    const refused = this.disk?.refuse(bytes);
    if (refused) return Promise.reject(refused);
    // Delayed: a store record (as large as a put) and a lease record each.
    const delayed = delayMs !== undefined && delayMs > 0;
    const each = recordBytes(T.put, name) + (delayed ? recordBytes(T.lease, name) : 0);
    // The next checkpoint: an index entry each (and a lease), and the queue, if it is new.
    const adds = messages.length * (delayed ? 2 : 1) * CHECKPOINT_BYTES.item + CHECKPOINT_BYTES.queue(name);
    const plan = putPlan(messages, delayed ? this.now() + delayMs : undefined);
    return this.run('put', name, bytes + messages.length * each, adds, (d) => pick(plan(d)));
  }

  /** Bytes of the records that bury the due leases of a queue whose last delivery allowed ended
   * (plans.ts): a copy of the message to a slot, its dead lease, the end of the old lease. Leases
   * due by `at` that a take of up to `limit` meets, or only the one at `pos`. */
  private burying(q: Queue | undefined, name: string, at: number, pos?: number, limit?: number): number {
    let bytes = 0;
    for (const [p] of q ? spentLeases(q, at, pos, limit, (p) => (indexOf(q, p)?.find(p) ?? -1) >= 0) : []) {
      bytes += recordBytes(T.lease, name);
      if (isSlot(p)) continue;
      const i = q!.index.find(p);
      bytes += (i >= 0 ? q!.index.len(i) : 0) + recordBytes(T.unlease, name);
    }
    return bytes;
  }

  get(name: string, leaseMs?: number, onTaken?: (bytes: number) => void): Promise<Delivery | null> {
    return this.gets(name, 1, leaseMs, Infinity, firstDelivery, onTaken);
  }

  getMany(name: string, max: number, leaseMs?: number, maxBytes = Infinity, onTaken?: (bytes: number) => void): Promise<Delivery[]> {
    return this.gets(name, max, leaseMs, maxBytes, (got) => got, onTaken);
  }

  private gets<T>(
    name: string,
    max: number,
    leaseMs: number | undefined,
    maxBytes: number,
    pick: (got: Delivery[]) => T,
    onTaken: ((bytes: number) => void) | undefined,
  ): Promise<T> {
    // Room is counted for what `max` takes could write at worst, so no more are counted than the
    // queue has to hand out now (an mget asks for up to 1,000, whatever it holds).
    let limit = max;
    if (!this.waiting) {
      const q = this.queues.get(name);
      const due = q && (q.leases.nextDeadline() ?? Infinity) <= this.now() ? q.leases.size : 0;
      limit = Math.min(max, q ? unread(q.s) + due : 0);
      if (limit === 0 && !this.fence && !this.closing) return Promise.resolve(pick([]));
    }
    const each = limit * (recordBytes(T.advance, name) + recordBytes(T.lease, name));
    // Dead letters made on the way do not count against `limit`: counted when decided (a
    // second's margin for leases that come due meanwhile).
    const need = () => each + this.burying(this.queues.get(name), name, this.now() + 1000, undefined, limit);
    const plan = takePlan(limit, this.now, leaseMs, maxBytes, onTaken);
    return this.run('get', name, need, false, (d) => pick(plan(d)));
  }

  maxqueue(name: string, num: number): Promise<boolean> {
    return this.run('maxqueue', name, recordBytes(T.maxqueue, name), false, maxqueuePlan(num));
  }

  maxdeliveries(name: string, num: number): Promise<void> {
    return this.run('maxdeliveries', name, recordBytes(T.maxdeliveries, name), false, maxdeliveriesPlan(num));
  }

  discard(name: string, pos: number): Promise<boolean> {
    return this.run('discard', name, recordBytes(T.unlease, name), false, discardPlan(pos));
  }

  redrive(name: string, max: number): Promise<number> {
    const need = () => Math.min(max, this.queues.get(name)?.leases.dead ?? 0) * recordBytes(T.lease, name);
    return this.run('redrive', name, need, false, redrivePlan(max));
  }

  async status(name: string): Promise<QueueStatus> {
    await this.waiting;
    const q = this.queues.get(name);
    return statusOf(q?.s ?? emptyQueue(), q?.leases ?? NO_LEASES);
  }

  async view(name: string, pos: number): Promise<Buffer | null> {
    await this.waiting;
    const q = this.queues.get(name);
    return (q && this.read(name, q, pos)) ?? null;
  }

  reset(name: string): Promise<void> {
    return this.run('reset', name, recordBytes(T.reset, name), false, (d) => d.reset());
  }

  settle(name: string, pos: number, outcome: 'ack' | 'nack', token?: string): Promise<boolean> {
    const need = () => recordBytes(T.lease, name) + (outcome === 'nack' ? this.burying(this.queues.get(name), name, Infinity, pos) : 0);
    return this.run('settle', name, need, false, settlePlan(pos, outcome, token, this.now));
  }

  touch(name: string, pos: number, leaseMs: number, token?: string): Promise<string | null> {
    return this.run('touch', name, recordBytes(T.touched, name), false, touchPlan(pos, leaseMs, this.now, token));
  }

  async nextExpiry(name: string): Promise<number | undefined> {
    await this.waiting;
    return this.queues.get(name)?.leases.nextDeadline();
  }

  async range(name: string, pos: number, num: number, maxBytes = Infinity): Promise<Array<{ pos: number; message: Buffer }>> {
    await this.waiting;
    const q = this.queues.get(name);
    const out: Array<{ pos: number; message: Buffer }> = [];
    let bytes = 0;
    for (let p = pos; q && p < pos + num && p <= 0xffffffff; p++) {
      const message = this.read(name, q, p);
      if (!message) continue;
      if (out.length > 0 && bytes + message.length > maxBytes) break;
      bytes += message.length;
      out.push({ pos: p, message });
    }
    return out;
  }

  async list(prefix: string, after: string | undefined, limit: number): Promise<Array<{ name: string; status: QueueStatus }>> {
    await this.waiting;
    const names = this.queues.names();
    // Names with the prefix are together in byte order, from the first one at or above it.
    const out: Array<{ name: string; status: QueueStatus }> = [];
    for (
      let i = Math.max(this.queues.from(prefix, true), after === undefined ? 0 : this.queues.from(after, false));
      i < names.length && out.length < limit;
      i++
    ) {
      const name = names[i]!;
      if (!name.startsWith(prefix)) break;
      const q = this.queues.get(name)!;
      const status = statusOf(q.s, q.leases);
      if (!isInitial(status)) out.push({ name, status });
    }
    return out;
  }

  async *dump(name: string): AsyncIterable<{ pos: number; message: Buffer }> {
    await this.waiting;
    const q = this.queues.get(name);
    if (!q) return;
    // Ring positions, then slots (all past the ring); 4 bytes a stored message, not a JS array of them.
    for (const ix of indexes(q)) {
      const all = new Uint32Array(ix.size);
      let n = 0;
      for (const i of ix.entries()) all[n++] = ix.pos(i);
      for (const pos of all.subarray(0, n).sort()) {
        const message = this.read(name, q, pos);
        if (message) yield { pos, message };
      }
    }
  }

  async leases(name: string): Promise<Array<{ pos: number; lease: Lease }>> {
    await this.waiting;
    return [...(this.queues.get(name)?.leases.entries() ?? [])].map(([pos, lease]) => ({ pos, lease }));
  }

  async deadLetters(name: string, after: number, limit: number): Promise<Array<{ pos: number; lease: Lease }>> {
    await this.waiting;
    return (this.queues.get(name)?.leases.deadAfter(after, limit) ?? []).map(([pos, lease]) => ({ pos, lease }));
  }

  async leftovers(name: string): Promise<boolean> {
    await this.waiting;
    const q = this.queues.get(name);
    return !!q && (q.leases.size > 0 || indexes(q).some((ix) => ix.size > 0));
  }

  restore(
    name: string,
    r: { messages?: Array<{ pos: number; message: Buffer }>; state?: QueueState; leases?: Array<{ pos: number; lease: Lease }> },
  ): Promise<void> {
    const messages = r.messages ?? [];
    const need =
      messages.reduce((n, m) => n + recordBytes(T.store, name, m.message.length), 0) +
      (r.leases?.length ?? 0) * recordBytes(T.touched, name) +
      recordBytes(T.state, name) +
      recordBytes(T.maxdeliveries, name);
    return this.run('restore', name, need, false, (d) => {
      for (const m of messages) d.store(m.pos, m.message);
      for (const l of r.leases ?? []) d.lease(l.pos, l.lease);
      if (r.state) d.state(r.state);
    });
  }

  async ready(): Promise<this> {
    return this;
  }

  describe(): StoreDescription {
    return { store: 'journal', durability: this.syncMode === 'durable' ? 'durable (ack after flush)' : `flush every ${this.syncSeconds}s` };
  }

  async check(): Promise<void> {
    if (this.closing) throw new StoreError('the store is closed');
    if (this.fence) throw this.fence;
    if (this.writeError) throw this.writeError;
    if (this.disk?.refusal) throw this.disk.refusal;
    // Puts refused for want of a segment or of the checkpoint's room: see whether there is room now.
    if (this.full && (this.spare || (await this.makeSpare())) && (await this.growRoom())) {
      this.full = undefined;
      this.opts.onDiskFull?.(false);
    }
    if (this.full) throw this.full;
  }

  setSyncInterval(seconds: number): void {
    this.syncSeconds = seconds;
    if (this.syncMode === 'interval' && !this.closing) this.tick();
  }

  /** What a start that failed had opened: its descriptors, the watch on the disk's free space. */
  private abandon(): void {
    this.disk?.close();
    for (const s of this.segs.values()) if (s.fd !== undefined) closeSync(s.fd);
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      clearTimeout(this.timer);
      clearTimeout(this.idle);
      this.disk?.close();
      await Promise.allSettled([this.waiting, this.compacting, this.sparing, this.batches.at(-1)?.done, this.checkpointing, this.ckptFiles]);
      // Start-up replays nothing after a clean close. A checkpoint that covers every record
      // written already does that: none is written again (at a million queues it took seconds).
      const covered = this.covered.seg === this.cur.id && this.covered.off === this.end;
      if (!this.opts.readOnly && !this.writeError && !this.fence && !covered) await this.checkpoint();
      for (const s of this.segs.values()) if (s.fd !== undefined) closeSync(s.fd);
      await Promise.all(this.deleting.values());
      this.release?.();
    })();
    return this.closing;
  }
}
