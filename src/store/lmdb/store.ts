/**
 * The embedded store: one LMDB environment in the data directory (its records: codec.ts).
 *
 * Durability: lmdb-js queues writes for its write thread, which commits everything queued while
 * the previous commit was in progress in one transaction (group commit). In 'durable' mode the
 * environment is opened with `overlappingSync: false` and without `noSync`, so a commit includes
 * the fdatasync and a write's promise resolves only once it is on disk. (The lmdb-js default,
 * overlappingSync, resolves at commit and flushes later: committed, not yet flushed, which is not
 * what we acknowledge.) In 'interval' mode the environment uses `noSync` and a timer flushes
 * every `syncInterval` seconds, as the reference does.
 *
 * Two ways to run an operation, with the same rules (`Plan`s over `queue/ring.ts` and
 * `queue/leases.ts`):
 * - exclusive (one server process owns the directory, enforced by `lock.ts`): the positions and
 *   leases of the queues in use live in memory, an operation is decided at once and its writes are
 *   queued in order. The write thread never waits for JavaScript, which is what makes durable
 *   acks cheap.
 * - shared (`--workers`): each operation is an lmdb-js transaction callback that reads the
 *   positions (and, when the queue holds any, its leases) inside the write transaction, which
 *   LMDB serializes across processes.
 *
 * Disk space: in both, an operation's writes are queued only once the data file has room for
 * them at worst, taken from the disk ahead of LMDB (`room.ts`): no commit may meet a full disk.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { open, type Database, type RootDatabase } from 'lmdb';
import { MAX_TIMER_MS } from '../../queue/clock.js';
import { FIRST_SLOT, LeaseTable, slotFor, type Lease } from '../../queue/leases.js';
import { emptyQueue, isUnread, moved, unread, type QueueState } from '../../queue/ring.js';
import { lockDirectory } from '../lock.js';
import { giveOpenTurns, openInTurn, type TakeTurn, turns } from './open-turn.js';
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
  DATA_DIR_MODE,
  DiskLowError,
  firstDelivery,
  firstPosition,
  isInitial,
  StoreError,
  statusOf,
  type Delivery,
  type QueueRecord,
  type QueueStatus,
  type Store,
  type StoreDescription,
  type StoreHooks,
  type SyncMode,
  timed,
} from '../store.js';
import { decodeLease, decodeMeta, EMPTY_NAME_KEY, encodeLease, encodeMeta, keyBytes, keyRange, LAST_POS, metaKey, msgKey, posOf } from './codec.js';
import { catchUp, type KeptLeases, logChange, nextVersion } from './lease-log.js';
import { checkDataFile } from './datafile.js';
import { DiskReserve, lmdbFreeBytes } from './disk-reserve.js';
import { Pending } from './pending.js';
import { Room, type Need } from './room.js';
import { errorMessage } from '../../errors.js';

export interface LmdbOptions extends EmbeddedOptions {
  /** Other processes write to the same environment (`--workers`); no directory lock is taken. */
  shared?: boolean;
  /** Upper bound of the memory map in bytes; the default lets LMDB grow as needed. */
  mapSize?: number;
  /** Shared: how it gets its turn to open the environment (a worker asks its primary); by default,
   * from the process holding the directory lock, if any (open-turn.ts). */
  takeTurn?: TakeTurn;
}

/** Room in the data file that puts leave to the other writes (gets, acks, resets), so that
 * consumers go on when the disk is full. */
const KEEP_FOR_OTHERS = 512 * 1024;
/** Exclusive mode: room kept past what is queued, grown in the background, so that writes seldom
 * wait for the file to grow. */
const AHEAD = 8 * 2 ** 20;
/** The most the file grows by past what a write needs, in one transaction: the zeros are written
 * while LMDB's writer waits, and flushed with the next commit. */
const STEP = 2 * 2 ** 20;
const NOTHING: Need = { paths: 0, pages: 0, nodeBytes: 0, freed: 0 };
/** What a transaction callback returns when the disk has no room for its writes. */
const NO_ROOM = Symbol('no room');

/** For writes whose failure the operation learns from its last write (or its transaction): their
 * own rejection must not go unhandled, which would end the process. */
export function quiet(p: Promise<unknown>): void {
  p.catch(() => {});
}

/**
 * Write transactions in progress in this process, in any store. lmdb-js's write thread runs a
 * transaction's callback on the JavaScript thread, and waits for it holding LMDB's writer lock;
 * node's exit first joins the thread pool's threads, that one included. A process that exits then
 * (a worker whose primary died, an uncaught exception) would wait for ever, ignoring SIGTERM and
 * holding the writer lock: every other process's writes would wait with it. So it is killed
 * instead; LMDB takes back the transaction of a writer that died.
 */
let writing = 0;
process.on('exit', () => {
  if (writing > 0) process.kill(process.pid, 'SIGKILL');
});

/** Opens the environment (lmdb-js's root database) after checking its data file. */
function openEnv(opts: LmdbOptions): RootDatabase {
  // Before lmdb-js maps it (datafile.ts). Shared: others may be committing as it is read.
  checkDataFile(opts.path, opts.shared ? 3 : 1);
  return open({
    path: opts.path,
    // The data directory is a directory even when its name has a dot (lmdb-js would otherwise
    // take `/var/lib/httpsqs.data` for a file name).
    noSubdir: false,
    maxDbs: 4,
    overlappingSync: false,
    noSync: (opts.syncMode ?? 'durable') === 'interval',
    ...(opts.mapSize ? { mapSize: opts.mapSize } : {}),
  });
}

/** A queue as operations see it: its ring state and its leases. */
interface Queue {
  s: QueueState;
  leases: LeaseTable;
  /** Exclusive mode: writes queued and not yet settled (until then it must stay in memory). */
  writes: number;
  /** The version of its leases it was read at (codec.ts); shared mode. */
  version: bigint;
}

/** Exclusive mode: queues kept in memory at most, beyond those with writes in progress. The
 * others are read from disk again when next used, so memory does not grow with every name used. */
const CACHED_QUEUES = 10_000;
/** Shared mode: queues whose lease tables are kept, the last used. */
const KEPT_LEASE_TABLES = 1000;

/** One operation on one queue (plans.ts): reads, and records what must be written. */
class Draft implements PlanDraft {
  changed = false;
  readonly stored: Array<[number, Buffer]> = [];
  /** Slots whose message is deleted. */
  readonly dropped: number[] = [];
  readonly leased = new Set<number>();
  /** Messages handed out: [pos, message, when]. */
  taken: Array<[number, Buffer, number]> | undefined;
  constructor(
    readonly q: Queue,
    readonly read: (pos: number) => Buffer | undefined,
  ) {}

  state(s: QueueState): void {
    this.q.s = s;
    this.changed = true;
  }

  store(pos: number, message: Buffer): void {
    this.stored.push([pos, message]);
    this.changed = true;
  }

  put(pos: number, message: Buffer): void {
    this.state(moved(this.q.s, pos, this.q.s.getpos));
    this.store(pos, message);
  }

  advance(next: QueueState): void {
    this.state(next);
  }

  drop(pos: number): void {
    this.dropped.push(pos);
    this.changed = true;
  }

  maxqueue(num: number): void {
    this.state(moved(this.q.s, this.q.s.putpos, this.q.s.getpos, num));
  }

  maxdeliveries(num: number): void {
    const { maxdeliveries: _, ...s } = this.q.s;
    this.state(num ? { ...s, maxdeliveries: num } : s);
  }

  lease(pos: number, lease: Lease | undefined): void {
    if (lease) this.q.leases.set(pos, lease);
    else this.q.leases.delete(pos);
    this.leased.add(pos);
    this.changed = true;
  }

  took(pos: number, message: Buffer, at: number): void {
    (this.taken ??= []).push([pos, message, at]);
  }
}
type Plan<T> = (d: Draft) => T;

export class LmdbStore implements Store {
  readonly syncMode: SyncMode;
  private readonly env: RootDatabase;
  private readonly meta: Database<Buffer, Buffer>;
  private readonly msg: Database<Buffer, Buffer>;
  private readonly lease: Database<Buffer, Buffer>;
  private readonly log: Database<Buffer, Buffer>;
  private readonly release: (() => void) | undefined;
  /** Exclusive mode: the state of the queues in use, including queued writes (see `remember`), and
   * messages not yet committed. */
  private readonly cache: Map<string, Queue> | undefined;
  /** Shared mode: lease tables as read or written by this process, by queue, with their version;
   * one is used while the meta record still has its version, instead of reading every lease
   * again for each operation (430 ms a put with 100,000 delayed messages). */
  private readonly kept = new Map<string, KeptLeases>();
  private readonly pending = new Pending();
  private writeError: StoreError | undefined;
  /** Exclusive mode, after a failed commit, its error: writes queued behind it (decided on a state
   * that assumed it had succeeded) may still commit. Until they have settled, operations are refused
   * with it; then every queue is read from disk again (the state in memory was dropped at the
   * failure). */
  private fence: StoreError | undefined;
  /** Exclusive mode: queues with writes in a failed commit, and the messages those handed out
   * ([pos, message, when]). Writes queued behind the failure were decided as if it had succeeded:
   * their meta record may count its takes and leases, and a put may have written over a position
   * it freed. `repair` puts that right before the fence lifts. */
  private readonly lost = new Map<string, Array<[number, Buffer, number]>>();
  private repairing: Promise<void> | undefined;
  /** Puts whose commit failed (their producers were told so), by queue and position, with the
   * message a get may have taken from memory: the repair does not hand it out again. */
  private readonly unstored = new Pending();
  private readonly room: Room;
  /** Puts are refused for want of room on the disk (said once), and what the last one needed. */
  private full: DiskLowError | undefined;
  private fullNeed = NOTHING;
  private readonly onDiskFull: ((full: boolean) => void) | undefined;
  /** Exclusive mode: operations wait behind one waiting for room until this settles, so that they
   * are still decided in the order they came (reads too, so that they see the ones called before). */
  private waiting: Promise<void> | undefined;
  /** The transaction growing the data file, while one is queued. */
  private growing: Promise<void> | undefined;
  /** Exclusive mode: no growth is tried in the background before then (the disk was full). */
  private retryAt = 0;
  /** Cache size that makes `remember` look for queues to forget. */
  private evictAt = CACHED_QUEUES;
  private syncSeconds: number;
  private readonly warn: (message: string) => void;
  private readonly observe: StoreHooks['observe'];
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private readonly disk: DiskReserve | undefined;
  private closing: Promise<void> | undefined;
  /** Stops giving other processes their turns to open the environment (open-turn.ts). */
  private stopTurns = () => {};
  /** While another process opens the environment, new transactions wait for this. */
  private paused: Promise<void> | undefined;
  /** Write transactions started and not settled. */
  private readonly transactions = new Set<Promise<unknown>>();

  /** Opens a store; one that owns the directory (not `shared`) takes its lock first, and gives
   * other processes their turns to open the environment; a shared one opens it in such a turn
   * (open-turn.ts). */
  static async open(opts: LmdbOptions): Promise<LmdbStore> {
    mkdirSync(opts.path, { recursive: true, mode: DATA_DIR_MODE });
    if (opts.shared) {
      const env = await openInTurn(opts.path, () => openEnv(opts), opts.takeTurn);
      return new LmdbStore(opts, env, undefined);
    }
    const release = await lockDirectory(opts.path, opts.owner, opts.onLockWait);
    let store: LmdbStore | undefined;
    try {
      const opened = (store = new LmdbStore(opts, openEnv(opts), release));
      opened.stopTurns = await giveOpenTurns(
        opts.path,
        turns(() => opened.pauseWrites()),
      );
      return opened;
    } catch (err) {
      if (store) await store.close();
      else release();
      throw err;
    }
  }

  private constructor(opts: LmdbOptions, env: RootDatabase, release: (() => void) | undefined) {
    this.syncMode = opts.syncMode ?? 'durable';
    this.syncSeconds = opts.syncInterval ?? 5;
    this.warn = opts.warn ?? ((message) => process.stderr.write(`httpsqs: ${message}\n`));
    this.observe = opts.observe;
    this.now = opts.now ?? Date.now;
    this.release = release;
    if (!opts.shared) this.cache = new Map();
    this.env = env;
    const dbOpts = { encoding: 'binary', keyEncoding: 'binary' } as const;
    this.meta = this.env.openDB<Buffer, Buffer>('meta', dbOpts);
    this.msg = this.env.openDB<Buffer, Buffer>('msg', dbOpts);
    this.lease = this.env.openDB<Buffer, Buffer>('lease', dbOpts);
    this.log = this.env.openDB<Buffer, Buffer>('leaselog', dbOpts);
    this.room = new Room(opts.path, this.env, [this.meta, this.msg, this.lease, this.log], opts.shared ?? false);
    this.onDiskFull = opts.onDiskFull;
    if (this.syncMode === 'interval') this.schedule();
    // Pages LMDB does not use, and the room past its last page, take no more of the disk.
    const inside = () => lmdbFreeBytes(this.env, [this.meta, this.msg, this.lease, this.log]) + this.room.tail();
    if (opts.reserveBytes) this.disk = new DiskReserve(opts.path, opts.reserveBytes, inside, opts.onDiskSpace);
  }

  private schedule(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.flush().finally(() => this.closing || this.schedule()), Math.min(this.syncSeconds * 1000, MAX_TIMER_MS));
    this.timer.unref();
  }

  private flush(): Promise<void> {
    return new Promise((resolve) => {
      // `sync` exists on the root database at run time but is missing from lmdb's typings.
      (this.env as unknown as { sync(cb: (err?: Error) => void): void }).sync((err) => {
        if (err) this.warn(`LMDB flush failed: ${err.message}`);
        resolve();
      });
    });
  }

  private failed(err: unknown): StoreError {
    // lmdb-js rejects a separate promise with the cause (e.g. ENOSPC); handled here, it carries it.
    const cause = (err as { commitError?: Promise<unknown> }).commitError;
    cause?.catch(() => {});
    this.disk?.check();
    // State in memory may now be ahead of the disk: forget it and read the disk again.
    this.cache?.clear();
    this.pending.clear();
    const error = (this.writeError = new StoreError(`LMDB write failed: ${errorMessage(err)}`, { cause: err }));
    if (this.cache && !this.fence) {
      this.fence = error;
      const lift = (): void => {
        if (this.closing) return;
        this.repairing = this.repair().then(
          (wrote) => {
            if (this.fence !== error) return;
            this.fence = undefined;
            // The repair committed: the disk takes writes again.
            if (wrote) this.writeError = undefined;
          },
          (err: unknown) => {
            this.warn(`repair after a failed write failed (tried again in a second): ${errorMessage(err)}`);
            setTimeout(lift, 1000).unref();
          },
        );
      };
      Promise.resolve(this.env.committed).then(lift, lift);
    }
    return error;
  }

  /**
   * Exclusive mode, once the writes queued behind a failed commit have settled, for each queue that
   * had writes in it. A message it handed out (to a get answered with the failure) goes back:
   * - still at its position with no lease, which the meta record on disk now counts as read: a
   *   lease due at once is put there (as for a message not yet handed out);
   * - written over by a put behind the failure: it is stored again at a slot, due at once, and
   *   the lease it had there (due when taken) is removed.
   * The meta record's lease counts are then those of the lease records. Each queue in one
   * transaction; what fails stays to be repaired. Whether it wrote anything.
   */
  private async repair(): Promise<boolean> {
    const wrote = this.lost.size > 0;
    for (const [name, taken] of this.lost) {
      const key = metaKey(name);
      let again = 0;
      const messages = taken.map(([, m]) => m);
      await this.transact(this.room.need(1 + 2 * taken.length, keyBytes(name), messages), false, () => {
        const stored = this.meta.get(key);
        const { s, slotCursor } = decodeMeta(stored);
        const leases = new LeaseTable();
        for (const { key: k, value } of this.lease.getRange(keyRange(name))) leases.set(posOf(k), decodeLease(value));
        leases.setSlotCursor(slotCursor);
        const due = (p: number) => {
          const lease: Lease = { deadline: 0, deliveries: 0 };
          leases.set(p, lease);
          quiet(this.lease.put(msgKey(name, p), encodeLease(lease)));
          again++;
        };
        for (const [pos, message, at] of taken) {
          if (this.unstored.get(name, pos) === message) continue;
          const l = leases.get(pos);
          if (this.msg.get(msgKey(name, pos))?.equals(message)) {
            if (!l && pos < FIRST_SLOT && !isUnread(s, pos)) due(pos);
            continue;
          }
          if (l && pos < FIRST_SLOT && l.deadline <= at) {
            leases.delete(pos);
            quiet(this.lease.remove(msgKey(name, pos)));
          }
          const slot = slotFor(s, leases);
          if (!slot) {
            this.warn(`queue ${JSON.stringify(name)}: no slot left for a message a failed get took; it is lost`);
            continue;
          }
          quiet(this.msg.put(msgKey(name, slot), message));
          due(slot);
        }
        if (stored || leases.size) quiet(this.meta.put(key, encodeMeta(s, leases)));
      });
      this.lost.delete(name);
      this.cache?.delete(name);
      this.warn(`queue ${JSON.stringify(name)} repaired after a failed write${again ? `: ${again} message(s) it took will be delivered again` : ''}`);
    }
    this.unstored.clear();
    return wrote;
  }

  /** A write committed. While fenced, it is one queued before the failure: the store is not
   * healthy again until the fence lifts. */
  private succeeded(): void {
    if (!this.fence) this.writeError = undefined;
  }

  /** The refusal of a write the disk has no room for. A put's is said once, until one fits again. */
  private noRoom(put: boolean, need: Need): StoreError {
    const why = 'no room for the write: the disk of the data directory is full';
    if (!put) return new StoreError(why);
    this.fullNeed = need;
    if (!this.full) {
      this.full = new DiskLowError(`${why}; puts are refused until there is room`);
      this.onDiskFull?.(true);
    }
    return this.full;
  }

  private putFits(): void {
    if (!this.full) return;
    this.full = undefined;
    this.onDiskFull?.(false);
  }

  /** Starts a write transaction, once no other process is opening the environment. A child of
   * lmdb-js's batch transaction, so that a callback that throws takes back what it wrote: a plain
   * `transaction()` commits the writes made before the throw. */
  private txn<T>(body: () => T): Promise<T> {
    if (this.paused) return this.paused.then(() => this.txn(body));
    const p = this.env.childTransaction(body);
    this.transactions.add(p);
    writing++;
    const drop = () => {
      writing--;
      this.transactions.delete(p);
    };
    p.then(drop, drop);
    return p;
  }

  /** Pauses this store's writes while another process opens the environment (open-turn.ts);
   * resolves, once none is in progress, to the function that lets them go on. */
  async pauseWrites(): Promise<() => void> {
    let resume = () => {};
    const paused = new Promise<void>((go) => (resume = go));
    const before = this.waiting;
    // Exclusive mode: operations wait behind the pause, still in the order they came.
    if (this.cache) this.waitFor((before ?? Promise.resolve()).then(() => paused));
    // Those that came before queue their writes first (one may be growing the file to make room).
    await before;
    this.paused = paused;
    await Promise.allSettled([...this.transactions]);
    // A commit that failed has nothing more in progress either.
    await Promise.resolve(this.env.committed).catch(() => {});
    return () => {
      if (this.paused === paused) this.paused = undefined;
      resume();
    };
  }

  /** Queues a transaction that grows the data file to `target` (one at a time). */
  private extend(target: number): Promise<void> {
    this.growing ??= this.txn(() => {
      if (!this.room.grow(target)) this.retryAt = Date.now() + 1000;
    })
      .then(
        () => {},
        () => {},
      )
      .finally(() => (this.growing = undefined));
    return this.growing;
  }

  /** Exclusive mode, after a write was queued: grows the file in the background once half of the
   * room kept ahead is taken. */
  private ahead(): void {
    if (this.growing || this.closing || Date.now() < this.retryAt) return;
    const needed = this.room.needed(NOTHING, KEEP_FOR_OTHERS);
    if (this.room.end - needed >= AHEAD / 2) return;
    if (this.room.diskHas(this.room.pageSize)) void this.extend(Math.min(needed + AHEAD, this.room.end + STEP));
    else this.retryAt = Date.now() + 1000;
  }

  /** Exclusive mode: waits until `need` fits in the data file, growing it; rejects with the
   * refusal when the disk has no room for it. */
  private async makeRoom(need: Need, keep: number, put: boolean): Promise<void> {
    for (let tries = 0; tries < 3 && !this.room.fits(need, keep); tries++) {
      const needed = this.room.needed(need, keep);
      if (!this.room.diskHas(needed - this.room.end)) break;
      await this.extend(needed + STEP);
    }
    if (!this.room.fits(need, keep)) throw this.noRoom(put, need);
  }

  /** Exclusive mode: calls `queue` (which decides an operation and queues its writes) once the
   * data file has room for what `size` says it needs; a commit must never meet a full disk
   * (room.ts). Behind other operations (an open turn, a write waiting for room), `size` is called
   * when the turn comes, after theirs: an operation sized on the queue (an mget, a redrive, a nack
   * that buries) must see those called before it. With `holds`, operations called after this one
   * wait until its writes have settled, not only until they are queued. */
  private inTurn<T>(size: () => Need, put: boolean, queue: (need: Need) => Promise<T>, holds = false): Promise<T> {
    if (this.fence) return Promise.reject(this.fence);
    const keep = put ? KEEP_FOR_OTHERS : 0;
    let need = this.waiting ? undefined : size();
    if (need && this.room.fits(need, keep)) {
      // the usual case
      const queued = queue(need);
      if (holds) this.waitFor(queued);
      return queued;
    }
    const turn = (this.waiting ?? Promise.resolve())
      .then(() => this.makeRoom((need ??= size()), keep, put))
      .then(() => {
        if (this.fence) throw this.fence;
        // Wrapped, so that the turn ends once the writes are queued, not once they commit.
        const queued = queue(need!);
        const wrapped = { queued };
        return holds
          ? queued.then(
              () => wrapped,
              () => wrapped,
            )
          : wrapped;
      });
    this.waitFor(turn);
    return turn.then(({ queued }) => queued);
  }

  /** Exclusive mode: operations called from now on wait until `p` settles. */
  private waitFor(p: Promise<unknown>): void {
    const waiting = (this.waiting = p.then(
      () => {},
      () => {},
    ));
    void waiting.then(() => this.waiting === waiting && (this.waiting = undefined));
  }

  /** Runs `body` in a write transaction once the data file has room for `need`, growing it there
   * when it has not (any mode: other processes are held off by LMDB's writer lock). */
  private transact<T>(need: Need, put: boolean, body: () => T): Promise<T> {
    const keep = put ? KEEP_FOR_OTHERS : 0;
    let taken = false;
    return this.txn(() => {
      if (!this.room.fits(need, keep)) this.room.grow(this.room.needed(need, keep) + STEP);
      if (!this.room.fits(need, keep)) return NO_ROOM;
      this.room.take(need);
      taken = true;
      return body();
    }).then(
      (result) => {
        if (taken) this.room.release(need);
        if (result === NO_ROOM) throw this.noRoom(put, need);
        this.succeeded();
        if (put) this.putFits();
        return result as T;
      },
      (err) => {
        if (taken) this.room.release(need);
        throw this.failed(err);
      },
    );
  }

  /** A queue's state as stored (or as the current write transaction sees it). */
  private load(name: string): Queue {
    const { s, held, slotCursor, version } = decodeMeta(this.meta.get(metaKey(name)));
    const kept = held > 0 && version !== 0n ? this.kept.get(name) : undefined;
    let leases = kept?.version === version ? kept.leases : undefined;
    // Another process changed them since: brought up to date from the lease log (lease-log.ts).
    if (kept && !leases) {
      this.kept.delete(name);
      if (catchUp(this.log, this.lease, name, kept, version, held)) this.keep(name, version, (leases = kept.leases));
    }
    if (!leases) {
      leases = new LeaseTable();
      if (held > 0) {
        for (const { key, value } of this.lease.getRange(keyRange(name))) {
          leases.set(posOf(key), decodeLease(value));
        }
      }
      if (held > 0 && version !== 0n && !this.cache) this.keep(name, version, leases);
    }
    leases.setSlotCursor(slotCursor);
    return { s, leases, writes: 0, version };
  }

  private keep(name: string, version: bigint, leases: LeaseTable): void {
    this.kept.delete(name);
    this.kept.set(name, { version, leases });
    if (this.kept.size > KEPT_LEASE_TABLES) this.kept.delete(this.kept.keys().next().value!);
  }

  /** Queues an operation's writes; the meta record goes last, so its promise is the operation's. */
  private write(name: string, d: Draft): Promise<boolean> {
    for (const [pos, message] of d.stored) quiet(this.msg.put(msgKey(name, pos), message));
    for (const pos of d.dropped) quiet(this.msg.remove(msgKey(name, pos)));
    for (const pos of d.leased) {
      const l = d.q.leases.get(pos);
      quiet(l ? this.lease.put(msgKey(name, pos), encodeLease(l)) : this.lease.remove(msgKey(name, pos)));
    }
    // Shared mode: leases changed get a new version, which tells the other processes that the
    // table they keep is stale, and an entry in the lease log, which tells them what changed (the
    // random half of a version: a reset starts a queue's meta record, and its count, again).
    let version = 0n;
    if (!this.cache) {
      version = d.q.version;
      if (d.leased.size) {
        version = nextVersion(d.q.version, randomBytes(4).readUInt32BE(0));
        for (const p of logChange(this.log, name, d.q.version, version, d.leased)) quiet(p);
        this.keep(name, version, d.q.leases);
      }
    }
    return this.meta.put(metaKey(name), encodeMeta(d.q.s, d.q.leases, version));
  }

  /** Runs on queue `name` the plan `size` gives, with what bounds its writes (room.ts; sized in
   * its turn, see `inTurn`); `put` says whether it adds messages (puts leave room to the others). */
  private run<T>(op: string, name: string, size: () => [Plan<T>, Need], put = false): Promise<T> {
    return timed(this.observe, op, this.runPlan(name, size, put));
  }

  private runPlan<T>(name: string, size: () => [Plan<T>, Need], put: boolean): Promise<T> {
    if (!this.cache) {
      const [plan, need] = size();
      return this.transact(need, put, () => {
        const d = new Draft(this.load(name), (pos) => this.msg.get(msgKey(name, pos)));
        try {
          const result = plan(d);
          if (d.changed) quiet(this.write(name, d));
          return result;
        } catch (err) {
          // The plan, or a write that threw, may have changed the kept table before it failed.
          this.kept.delete(name);
          throw err;
        }
      });
    }
    let plan: Plan<T>;
    const sized = () => {
      const [p, need] = size();
      plan = p;
      return need;
    };
    return this.inTurn(sized, put, (need) => this.decide(name, plan, need, put));
  }

  /** Exclusive mode: decides an operation on the state in memory and queues its writes. */
  private decide<T>(name: string, plan: Plan<T>, need: Need, put: boolean): Promise<T> {
    if (put) this.putFits();
    const cached = this.cache!.get(name);
    const q = cached ?? this.fromDisk(name);
    const d = new Draft(q, (pos) => this.pending.get(name, pos) ?? this.readCommitted(name, pos));
    let result: T;
    try {
      result = plan(d);
    } catch (err) {
      // A message that could not be read: the plans stop before they change anything for it.
      return Promise.reject(err);
    }
    if (!d.changed) return Promise.resolve(result); // a queue only looked at is not kept
    q.writes++;
    if (!cached) this.remember(name, q);
    // Until they are committed, a get or view of these positions must find them here.
    for (const [pos, message] of d.stored) this.pending.set(name, pos, message);
    const written = this.write(name, d);
    this.room.take(need);
    this.ahead();
    return written.then(
      () => {
        this.room.release(need);
        q.writes--;
        this.succeeded();
        for (const [pos, message] of d.stored) this.pending.committed(name, pos, message);
        // Decided behind a failed commit, it took a message whose put failed there (its producer
        // was told so): answered as a failed get, its other messages come back with the repair (a
        // leased one when its lease ends).
        if (this.fence && d.taken?.some(([pos, m]) => this.unstored.get(name, pos) === m)) return this.lose(name, d.taken, this.fence);
        return result;
      },
      (err) => {
        this.room.release(need);
        // Its producer is told it failed: a get that took it in the same commit does not bring it back.
        if (put) for (const [pos, message] of d.stored) this.unstored.set(name, pos, message);
        return this.lose(name, d.taken, this.failed(err));
      },
    );
  }

  /** A get answered with `error`: the repair gives back the messages it took. */
  private lose(name: string, taken: Array<[number, Buffer, number]> | undefined, error: StoreError): Promise<never> {
    const lost = this.lost.get(name) ?? [];
    if (taken) lost.push(...taken);
    this.lost.set(name, lost);
    return Promise.reject(error);
  }

  /** Keeps a queue in memory; past the limit, forgets the oldest whose writes have all settled.
   * When too few have (a burst of writes to many queues), the next look waits for a tenth of the
   * limit more, so that a burst does not scan the cache on every new queue. */
  private remember(name: string, q: Queue): void {
    const cache = this.cache!;
    cache.set(name, q);
    if (cache.size <= this.evictAt) return;
    for (const [other, o] of cache) {
      if (cache.size <= CACHED_QUEUES * 0.9) break;
      if (o.writes === 0) cache.delete(other);
    }
    this.evictAt = Math.max(CACHED_QUEUES, cache.size + CACHED_QUEUES / 10);
  }

  /** A committed message. lmdb-js renews its read snapshot after each commit it resolves; should a
   * snapshot still predate the commit of a message no longer in `pending`, renew and look again. */
  private readCommitted(name: string, pos: number): Buffer | undefined {
    const key = msgKey(name, pos);
    const found = this.msg.get(key);
    if (found) return found;
    this.env.resetReadTxn();
    return this.msg.get(key);
  }

  /** A queue's state: the one in memory, or else the one on disk. */
  private current(name: string): Queue {
    return this.cache?.get(name) ?? this.fromDisk(name);
  }

  /** Reads outside a write transaction use lmdb-js's shared read snapshot, renewed once per event
   * loop turn; renewing it here lets a read see a commit another worker process made a moment ago. */
  private fromDisk(name: string): Queue {
    this.env.resetReadTxn();
    return this.load(name);
  }

  put(name: string, message: Buffer, delayMs?: number): Promise<number> {
    return this.putMany(name, [message], delayMs).then(firstPosition);
  }

  putMany(name: string, messages: Buffer[], delayMs?: number): Promise<number[]> {
    const refused = this.disk?.refuse(messages.reduce((n, m) => n + m.length, 0));
    if (refused) return Promise.reject(refused);
    const leases = delayMs ? messages.length : 0;
    const plan = putPlan(messages, delayMs ? this.now() + delayMs : undefined);
    return this.run('put', name, () => [plan, this.room.need(1 + leases, keyBytes(name), messages)], true);
  }

  /** The messages a take of up to `limit` or a nack of `pos` may copy to slots as dead letters
   * (`spentLeases` at ring positions), for the room their writes need (with a second's margin, as
   * the journal counts, for leases that come due before the take is decided). */
  private burying(name: string, q: Queue, pos?: number, limit?: number): Buffer[] {
    const read = (p: number) => this.pending.get(name, p) ?? this.msg.get(msgKey(name, p));
    const out: Buffer[] = [];
    for (const [p] of spentLeases(q, this.now() + 1000, pos, limit, (p) => read(p) !== undefined)) {
      const m = p < FIRST_SLOT ? read(p) : undefined;
      if (m) out.push(m);
    }
    return out;
  }

  /** A queue's maxdeliveries: from memory, or else its meta record alone (not its leases). */
  private maxdeliveriesOf(name: string): number | undefined {
    const q = this.cache?.get(name);
    return q ? q.s.maxdeliveries : decodeMeta(this.meta.get(metaKey(name))).s.maxdeliveries;
  }

  get(name: string, leaseMs?: number, onTaken?: (bytes: number) => void): Promise<Delivery | null> {
    return this.getMany(name, 1, leaseMs, Infinity, onTaken).then(firstDelivery);
  }

  getMany(name: string, max: number, leaseMs?: number, maxBytes = Infinity, onTaken?: (bytes: number) => void): Promise<Delivery[]> {
    // Room is counted for the meta record and a lease record for each message taken (new ones in a
    // run, due ones anywhere), so no more are taken than the queue has to hand out now (an mget
    // asks for up to 1,000, whatever it holds).
    return this.run('get', name, () => {
      let limit = max;
      let due = max;
      let buried: Buffer[] = [];
      if (max > 1 || this.maxdeliveriesOf(name)) {
        const q = this.current(name);
        due = (q.leases.nextDeadline() ?? Infinity) <= this.now() ? Math.min(max, q.leases.size) : 0;
        limit = Math.min(max, unread(q.s) + due);
        // A dead letter is copied to a slot and leases it, and does not count against `max`.
        buried = due ? this.burying(name, q, undefined, limit) : [];
        due += 2 * buried.length;
      }
      return [takePlan(limit, this.now, leaseMs, maxBytes, onTaken), this.room.need(1 + due, keyBytes(name), buried, limit)];
    });
  }

  maxqueue(name: string, num: number): Promise<boolean> {
    return this.run('maxqueue', name, () => [maxqueuePlan(num), this.room.need(1, keyBytes(name))]);
  }

  async status(name: string): Promise<QueueStatus> {
    await this.waiting;
    const q = this.cache?.get(name);
    if (q) return statusOf(q.s, q.leases);
    // The meta record counts the leases: they need not be read.
    this.env.resetReadTxn();
    return decodeMeta(this.meta.get(metaKey(name))).status;
  }

  async view(name: string, pos: number): Promise<Buffer | null> {
    await this.waiting;
    const pending = this.pending.get(name, pos);
    if (pending) return pending;
    this.env.resetReadTxn();
    return this.msg.get(msgKey(name, pos)) ?? null;
  }

  reset(name: string): Promise<void> {
    return timed(this.observe, 'reset', this.resetQueue(name));
  }

  private async resetQueue(name: string): Promise<void> {
    const nameKey = metaKey(name);
    // Writes queued together share lmdb-js's promise for their batch: one handler per batch.
    let batch: Promise<unknown> | undefined;
    const remove = (db: Database<Buffer, Buffer>, k: Buffer) => {
      const p = db.remove(k);
      if (p !== batch) quiet((batch = p));
    };
    // Memory stays flat however many there are: from a read snapshot the keys are read as they are
    // removed; inside the write transaction, where a removal shows at once, a chunk at a time.
    const removeStored = (inTransaction: boolean) => {
      for (const db of [this.msg, this.lease, this.log]) {
        if (!inTransaction) for (const k of db.getKeys(keyRange(name))) remove(db, k);
        else for (let keys: Buffer[]; (keys = Array.from(db.getKeys({ ...keyRange(name), limit: 10_000 }))).length > 0; ) for (const k of keys) remove(db, k);
      }
    };
    const need = this.room.resetNeed();
    if (!this.cache) {
      this.kept.delete(name);
      return this.transact(need, false, () => {
        quiet(this.meta.remove(nameKey));
        removeStored(true);
      });
    }
    const cache = this.cache;
    // What is decided on this queue after it waits until it has committed: should its commit fail,
    // nothing may have been decided on the empty queue (a put there would commit over the records
    // the reset did not remove).
    return this.inTurn(
      () => need,
      false,
      () => {
        // Leases in memory include ones whose writes are still queued: their removals queue behind them.
        for (const [pos] of cache.get(name)?.leases.entries() ?? []) quiet(this.lease.remove(msgKey(name, pos)));
        const q: Queue = { s: emptyQueue(), leases: new LeaseTable(), writes: 1, version: 0n };
        cache.delete(name);
        this.remember(name, q);
        this.env.resetReadTxn();
        // Every stored position is either committed (in the snapshot) or queued (in `pending`);
        // the removals are queued behind both, and a put after this reset is queued behind them.
        removeStored(false);
        for (const pos of this.pending.drop(name)) quiet(this.msg.remove(msgKey(name, pos)));
        const removed = this.meta.remove(nameKey);
        this.room.take(need);
        return removed.then(
          () => {
            this.room.release(need);
            q.writes--;
            this.succeeded();
            // A failed get before it took messages the reset has now removed: none comes back.
            this.lost.delete(name);
          },
          (err) => {
            this.room.release(need);
            return Promise.reject(this.failed(err));
          },
        );
      },
      true,
    );
  }

  settle(name: string, pos: number, outcome: 'ack' | 'nack', token?: string): Promise<boolean> {
    return this.run('settle', name, () => {
      const buried = outcome === 'nack' && this.maxdeliveriesOf(name) ? this.burying(name, this.current(name), pos) : [];
      return [settlePlan(pos, outcome, token, this.now), this.room.need(3, keyBytes(name), buried)];
    });
  }

  maxdeliveries(name: string, num: number): Promise<void> {
    return this.run('maxdeliveries', name, () => [maxdeliveriesPlan(num), this.room.need(1, keyBytes(name))]);
  }

  discard(name: string, pos: number): Promise<boolean> {
    return this.run('discard', name, () => [discardPlan(pos), this.room.need(3, keyBytes(name))]);
  }

  redrive(name: string, max: number): Promise<number> {
    return this.run('redrive', name, () => {
      const n = Math.min(max, this.current(name).leases.dead);
      return [redrivePlan(n), this.room.need(1 + n, keyBytes(name))];
    });
  }

  touch(name: string, pos: number, leaseMs: number, token?: string): Promise<string | null> {
    return this.run('touch', name, () => [touchPlan(pos, leaseMs, this.now, token), this.room.need(2, keyBytes(name))]);
  }

  async nextExpiry(name: string): Promise<number | undefined> {
    await this.waiting;
    return this.current(name).leases.nextDeadline();
  }

  async range(name: string, pos: number, num: number, maxBytes = Infinity): Promise<Array<{ pos: number; message: Buffer }>> {
    await this.waiting;
    const out: Array<{ pos: number; message: Buffer }> = [];
    let bytes = 0;
    this.env.resetReadTxn();
    for (let p = pos; p < pos + num && p <= LAST_POS; p++) {
      const message = this.pending.get(name, p) ?? this.msg.get(msgKey(name, p));
      if (!message) continue;
      if (out.length > 0 && bytes + message.length > maxBytes) break;
      bytes += message.length;
      out.push({ pos: p, message });
    }
    return out;
  }

  async list(prefix: string, after: string | undefined, limit: number): Promise<Array<{ name: string; status: QueueStatus }>> {
    await this.waiting;
    const wanted = (name: string) => name.startsWith(prefix) && (after === undefined || name > after);
    const found = new Map<string, QueueStatus>();
    this.env.resetReadTxn();
    const start = Buffer.from(after !== undefined && after >= prefix ? after : prefix, 'latin1');
    // Queues in memory: their state is newer than the committed one (a reset one may still have its
    // record), and a new one may not be committed yet, so it is added after the scan.
    const newer = (name: string): QueueStatus | undefined => {
      const q = this.cache?.get(name);
      return q && statusOf(q.s, q.leases);
    };
    const add = (name: string, value: Buffer | undefined) => {
      const status = newer(name) ?? decodeMeta(value).status;
      if (!isInitial(status)) found.set(name, status);
    };
    // The empty name comes first, though its key sorts elsewhere (see `metaKey`).
    if (wanted('')) add('', this.meta.get(EMPTY_NAME_KEY));
    for (const { key, value } of this.meta.getRange({ start })) {
      if (found.size >= limit) break;
      if (key.equals(EMPTY_NAME_KEY)) continue;
      const name = key.toString('latin1');
      if (!name.startsWith(prefix) && name > prefix) break;
      if (wanted(name)) add(name, value);
    }
    for (const name of this.cache?.keys() ?? []) if (wanted(name) && !found.has(name)) found.set(name, newer(name)!);
    return [...found]
      .filter(([, s]) => !isInitial(s))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .slice(0, limit)
      .map(([name, status]) => ({ name, status }));
  }

  async *dump(name: string): AsyncIterable<{ pos: number; message: Buffer }> {
    await this.waiting;
    this.env.resetReadTxn();
    for (const { key, value } of this.msg.getRange(keyRange(name))) yield { pos: posOf(key), message: value };
  }

  /**
   * For export: a queue's status, then its stored messages, then its leases, all read in one read
   * transaction, so that they agree while servers write (`status`, `dump` and `leases` each read
   * the latest commit: a nack between them could leave a dead letter's lease without its message).
   * Leases come from their records, not from a table in memory; what is committed only (in
   * exclusive mode, writes still queued are not in it). Memory stays flat: records are read as
   * they are yielded.
   */
  async *exportRecords(name: string): AsyncGenerator<QueueRecord> {
    await this.waiting;
    const transaction = this.env.useReadTransaction();
    try {
      yield { status: decodeMeta(this.meta.get(metaKey(name), { transaction })).status };
      for (const { key, value } of this.msg.getRange({ ...keyRange(name), transaction })) yield { pos: posOf(key), message: value };
      for (const { key, value } of this.lease.getRange({ ...keyRange(name), transaction })) yield { pos: posOf(key), lease: decodeLease(value) };
    } finally {
      transaction.done();
    }
  }

  async leases(name: string): Promise<Array<{ pos: number; lease: Lease }>> {
    await this.waiting;
    return [...this.current(name).leases.entries()].map(([pos, lease]) => ({ pos, lease }));
  }

  async deadLetters(name: string, after: number, limit: number): Promise<Array<{ pos: number; lease: Lease }>> {
    await this.waiting;
    return this.current(name)
      .leases.deadAfter(after, limit)
      .map(([pos, lease]) => ({ pos, lease }));
  }

  async leftovers(name: string): Promise<boolean> {
    await this.waiting;
    this.env.resetReadTxn();
    return [this.msg, this.lease, this.log].some((db) => Array.from(db.getKeys({ ...keyRange(name), limit: 1 })).length > 0);
  }

  async restore(
    name: string,
    r: { messages?: Array<{ pos: number; message: Buffer }>; state?: QueueState; leases?: Array<{ pos: number; lease: Lease }> },
  ): Promise<void> {
    const messages = r.messages ?? [];
    const need = this.room.need(
      1 + (r.leases?.length ?? 0),
      keyBytes(name),
      messages.map((m) => m.message),
    );
    await timed(
      this.observe,
      'restore',
      this.transact(need, false, () => {
        for (const m of messages) quiet(this.msg.put(msgKey(name, m.pos), m.message));
        for (const l of r.leases ?? []) quiet(this.lease.put(msgKey(name, l.pos), encodeLease(l.lease)));
        if (r.state) {
          // Its meta record counts every lease record of the queue: those written here, and those
          // an import wrote before, in calls of their own (the transaction reads its own writes).
          const held = new LeaseTable();
          for (const { key, value } of this.lease.getRange(keyRange(name))) held.set(posOf(key), decodeLease(value));
          quiet(this.meta.put(metaKey(name), encodeMeta(r.state, held)));
        }
      }),
    );
    this.cache?.delete(name);
    this.kept.delete(name);
  }

  async ready(): Promise<this> {
    return this;
  }

  describe(): StoreDescription {
    return { store: 'LMDB', durability: this.syncMode === 'durable' ? 'durable (ack after flush)' : `flush every ${this.syncSeconds}s` };
  }

  async check(): Promise<void> {
    if (this.closing) throw new StoreError('the store is closed');
    if (this.writeError) throw this.writeError;
    if (this.disk?.refusal) throw this.disk.refusal;
    // No put may come to find that there is room again (a load balancer took this server out).
    if (this.full && this.room.diskHas(this.room.needed(this.fullNeed, KEEP_FOR_OTHERS) - this.room.end)) this.putFits();
    if (this.full) throw this.full;
    this.env.resetReadTxn();
    this.meta.get(Buffer.alloc(1));
  }

  setSyncInterval(seconds: number): void {
    this.syncSeconds = seconds;
    if (this.syncMode === 'interval' && !this.closing) this.schedule();
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      clearTimeout(this.timer);
      this.disk?.close();
      await this.growing;
      this.stopTurns();
      await Promise.resolve(this.env.committed).catch(() => {});
      await this.repairing;
      // A failed commit that came as it closed: repaired now, or the next start reads it unrepaired.
      if (this.lost.size) await this.repair().catch((err: unknown) => this.warn(`repair after a failed write failed: ${errorMessage(err)}`));
      await this.flush();
      await this.env.close();
      this.room.close();
      this.release?.();
    })();
    return this.closing;
  }
}
