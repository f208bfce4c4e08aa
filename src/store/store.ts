import type { Lease, LeaseTable } from '../queue/leases.js';
import { DEFAULT_MAXQUEUE, type QueueState } from '../queue/ring.js';

/** How acknowledgements relate to the disk. */
export type SyncMode =
  /** Default: a change is acknowledged only after it has been flushed (fdatasync) to disk. */
  | 'durable'
  /** Like the reference: acknowledge at once, flush every `syncInterval` seconds. */
  | 'interval';

export interface QueueStatus extends QueueState {
  /** Messages handed out under a lease and not yet acked. */
  leased: number;
  /** Messages waiting outside the ring to be handed out: delayed puts not yet taken (due or not),
   * and dead letters moved back. */
  delayed: number;
  /** Dead letters (leases.ts): messages whose lease ended `maxdeliveries` times. */
  dead: number;
}

/** A message handed out by a get. */
export interface Delivery {
  pos: number;
  message: Buffer;
  /** 1 on the first delivery; more when a lease ended and the message came back. */
  deliveries: number;
  /** When handed out under a lease: the grant's token, for ack and nack. */
  lease?: string;
}

/**
 * A queue engine. Every method is ONE atomic operation applying the rules of `queue/ring.ts`
 * and `queue/leases.ts`; the server never combines two calls into one command, so any engine that
 * can run a small transaction (LMDB, a Redis script) fits. Queue names are byte strings (latin1,
 * one char a byte). A resolved promise from a mutating call means the change is as durable as the
 * store's sync mode promises. The store contract (test/store.test.ts) runs the same cases on
 * every store.
 */
export interface Store {
  /** Stores a message at the next position; resolves to that position, or 0 when full. With
   * `delayMs`, it waits at a slot past the ring (leases.ts) until then: resolves to that slot, or
   * 0 when the queue already keeps maxqueue messages there. */
  put(name: string, message: Buffer, delayMs?: number): Promise<number>;
  /** Stores messages in order, all in one commit, as many as fit; resolves to their positions
   * (their slots, with `delayMs`). */
  putMany(name: string, messages: Buffer[], delayMs?: number): Promise<number[]>;
  /** Hands out the next message (a due lease first); null when there is none. With `leaseMs`
   * the message is leased for that long (ack or nack it by position). `onTaken` is told the bytes
   * of the messages handed out as soon as the take is decided, before it is durable (an embedded
   * engine decides within the call): the server counts them in its memory for replies at once,
   * so that takes begun together cannot each find room. */
  get(name: string, leaseMs?: number, onTaken?: (bytes: number) => void): Promise<Delivery | null>;
  /** Up to `max` messages in one operation, as `max` gets would hand them out; with `maxBytes`,
   * only as many as fit in that many bytes of messages (the first is taken whatever its size), so
   * that the reply can always be built before anything is consumed. `onTaken` as for `get`. */
  getMany(name: string, max: number, leaseMs?: number, maxBytes?: number, onTaken?: (bytes: number) => void): Promise<Delivery[]>;
  status(name: string): Promise<QueueStatus>;
  /** The message stored at `pos` (read or not; a slot too), or null when there is none. */
  view(name: string, pos: number): Promise<Buffer | null>;
  /** Positions and maxqueue back to their defaults, stored messages and leases deleted. */
  reset(name: string): Promise<void>;
  /** Sets maxqueue when the ring rules allow it; resolves to whether it did. */
  maxqueue(name: string, num: number): Promise<boolean>;
  /** Sets the queue's maxdeliveries (0: none), which later lease endings apply. */
  maxdeliveries(name: string, num: number): Promise<void>;
  /** Makes up to `max` dead letters deliverable again, those that died first first (due at once,
   * deliveries counted afresh); resolves to how many. */
  redrive(name: string, max: number): Promise<number>;
  /** Deletes the dead letter at `pos`; resolves to false when there is none there. */
  discard(name: string, pos: number): Promise<boolean>;
  /** Seconds between flushes in 'interval' mode (kept, but unused, in 'durable' mode). */
  setSyncInterval(seconds: number): void;
  /** Rejects with a StoreError when the store cannot serve (it cannot be read, or its last write failed). */
  check(): Promise<void>;
  readonly syncMode: SyncMode;
  /** Flushes and closes; safe to call twice. */
  close(): Promise<void>;
  /** Resolves once the store answers (at once for a local one); rejects with a StoreError saying why. */
  ready(): Promise<this>;
  /** What it is, in a few words, for the start line and the dashboard. */
  describe(): StoreDescription;
  /** A store that several servers share (Redis) tells each of the others' puts, for long polls. */
  readonly wakes?: {
    /** From now on, tell this server of puts to `name` (resolves once that holds); or stop. */
    watch(name: string, on: boolean): Promise<void>;
    /** Where puts made elsewhere are told. */
    onWake(waker: (name: string, count: number) => void): void;
  };
  /** Servers using a shared store now (an import must not write under them). */
  frontendsRunning?(): Promise<number>;
  /** Pauses its writes while another process opens the database (LMDB: lmdb/open-turn.ts);
   * resolves, once none is in progress, to the function that lets them go on. */
  pauseWrites?(): Promise<() => void>;
  /** Ends the lease at `pos`: 'ack' (done with it) or 'nack' (deliver it again now). False when
   * there is no lease at `pos`, or `token` is given and names another grant (`leaseToken`). */
  settle(name: string, pos: number, outcome: 'ack' | 'nack', token?: string): Promise<boolean>;
  /** Extends a running lease at `pos` to `leaseMs` from now; resolves to the grant's token (a touch
   * keeps it, so that one whose answer was lost leaves the consumer's good), or
   * null when no lease runs there (none, already ended or given back) or `token` names another. */
  touch(name: string, pos: number, leaseMs: number, token?: string): Promise<string | null>;
  /** When the queue's next lease ends (ms since the epoch), if any is held. */
  nextExpiry(name: string): Promise<number | undefined>;
  /** The stored messages at positions pos..pos+num-1 (read or not), in order; with `maxBytes`, as
   * many as fit in that many bytes (at least the first found). */
  range(name: string, pos: number, num: number, maxBytes?: number): Promise<Array<{ pos: number; message: Buffer }>>;
  /** Queues that hold state, in byte order of their names: those starting with `prefix`, after
   * the name `after` (from the first when undefined; `''` is a name too), at most `limit`. */
  list(prefix: string, after: string | undefined, limit: number): Promise<Array<{ name: string; status: QueueStatus }>>;
  /** Every stored message of a queue (read or not), for export; position order where the store
   * keeps one. Streams: memory stays flat however many there are. */
  dump(name: string): AsyncIterable<{ pos: number; message: Buffer }>;
  /** A queue's leases, for export. */
  leases(name: string): Promise<Array<{ pos: number; lease: Lease }>>;
  /** For export, where the store can: a queue's status, then its stored messages, then its leases,
   * all read from one snapshot, so that they agree while servers write (LMDB). Streams. */
  exportRecords?(name: string): AsyncIterable<QueueRecord>;
  /** Up to `limit` of a queue's dead letters at positions after `after`, in position order (a
   * page of `opt=dead`: its cost follows the page, not the leases held). */
  deadLetters(name: string, after: number, limit: number): Promise<Array<{ pos: number; lease: Lease }>>;
  /** For import, where a queue's records can outlive a missing state: whether a queue that
   * holds no state still has stored messages or leases, left by an import that stopped before
   * writing its state. Cheap: reads at most one record of each kind. */
  leftovers?(name: string): Promise<boolean>;
  /** Writes records as they are, for import: stored messages, then leases (in as many calls as
   * need be), and last the queue's state, which counts every lease written. No queue rule is
   * applied; the importer checks what it writes. */
  restore(
    name: string,
    records: { messages?: Array<{ pos: number; message: Buffer }>; state?: QueueState; leases?: Array<{ pos: number; lease: Lease }> },
  ): Promise<void>;
}

/** What `exportRecords` yields of a queue, in this order: its status, its messages, its leases. */
export type QueueRecord = { status: QueueStatus } | { pos: number; message: Buffer } | { pos: number; lease: Lease };

export interface StoreDescription {
  /** `LMDB`, or the Redis URL without its password. */
  store: string;
  /** How acknowledgements relate to the disk. */
  durability: string;
}

/** What every store takes besides its own options. */
export interface StoreHooks {
  /** Told how long each write took (an operation's name, seconds), on the store's one write path. */
  observe?: ((op: string, seconds: number) => void) | undefined;
  /** The time, in ms since the epoch (lease deadlines); `Date.now` (on Redis, Redis's clock) unless a
   * test gives another. */
  now?: (() => number) | undefined;
}

/** What both embedded engines (LMDB, the journal) take. */
export interface EmbeddedOptions extends StoreHooks {
  /** The data directory. */
  path: string;
  syncMode?: SyncMode;
  /** Seconds between flushes in 'interval' mode. */
  syncInterval?: number;
  /** The PID the directory lock names to a contender, as the process to stop (a worker's master). */
  owner?: number;
  /** Told that the directory is held by a server that is stopping, which is waited for. */
  onLockWait?: (pid: number) => void;
  /** Puts are refused while the directory's disk has less free space than this (disk-reserve.ts). */
  reserveBytes?: number;
  /** Told when free space falls below the reserve, and when it is back. */
  onDiskSpace?: (low: boolean, freeBytes: number) => void;
  /** Told when puts start being refused because the disk has no room left for their writes, and
   * when one fits again. */
  onDiskFull?: (full: boolean) => void;
  /** Where the store reports a problem no request hears of (a failed background flush, a torn
   * journal tail dropped). */
  warn?: (message: string) => void;
}

/** Times `p` for `observe`, when there is one. */
export function timed<T>(observe: StoreHooks['observe'], op: string, p: Promise<T>): Promise<T> {
  if (!observe) return p;
  const started = performance.now();
  const done = () => observe(op, (performance.now() - started) / 1000);
  return p.then(
    (v) => (done(), v),
    (err: unknown) => (done(), Promise.reject(err)),
  );
}

/** The single put and get of an engine whose batch operations do the work: the first position, or 0;
 * the first delivery, or null. */
/** The mode of a data directory an engine makes: messages are nobody else's to read. */
export const DATA_DIR_MODE = 0o700;

export const firstPosition = (positions: number[]): number => positions[0] ?? 0;
export const firstDelivery = (got: Delivery[]): Delivery | null => got[0] ?? null;

/** A queue in its initial state holds nothing: stores keep no record of it, and lists skip it. */
export const isInitial = (s: QueueStatus): boolean =>
  s.putpos === 0 && s.getpos === 0 && s.leased === 0 && s.delayed === 0 && s.dead === 0 && s.maxqueue === DEFAULT_MAXQUEUE && !s.maxdeliveries;

/** A queue's status from its state and its lease table. */
export function statusOf(s: QueueState, leases: LeaseTable): QueueStatus {
  // Field by field: a spread of the state costs more than the rest of a status call.
  const status: QueueStatus = { putpos: s.putpos, getpos: s.getpos, maxqueue: s.maxqueue, leased: leases.leased, delayed: leases.delayed, dead: leases.dead };
  if (s.maxdeliveries) status.maxdeliveries = s.maxdeliveries;
  return status;
}

/** Every queue that holds state (those starting with `prefix`), in order, a page of `list` at a time. */
export async function* everyQueue(store: Store, prefix = ''): AsyncGenerator<{ name: string; status: QueueStatus }> {
  const PAGE = 1000;
  for (let after: string | undefined; ; ) {
    const page = await store.list(prefix, after, PAGE);
    yield* page;
    if (page.length < PAGE) return;
    after = page.at(-1)!.name;
  }
}

/** A failure of the storage engine itself (disk full, I/O error), as opposed to a queue rule. */
export class StoreError extends Error {
  override name = 'StoreError';
}

/** A put refused because the disk of the data directory is short of space (its reserve). The
 * store tells when that starts and ends, so refused requests need not each be logged. */
export class DiskLowError extends StoreError {
  override name = 'DiskLowError';
}
