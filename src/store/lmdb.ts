/**
 * The embedded store: one LMDB environment in the data directory.
 *
 * Layout: database `meta` maps a queue name to 12 bytes (putpos, getpos, maxqueue as big-endian
 * uint32); database `msg` maps [u16 name length][name][u32 position] to the raw message bytes.
 * A queue without a meta record is in its initial state.
 *
 * Durability: lmdb-js queues writes for its write thread, which commits everything queued while
 * the previous commit was in progress in one transaction (group commit). In 'durable' mode the
 * environment is opened with `overlappingSync: false` and without `noSync`, so a commit includes
 * the fdatasync and a write's promise resolves only once it is on disk. (The lmdb-js default,
 * overlappingSync, resolves at commit and flushes later: committed, not yet flushed, which is not
 * what we acknowledge.) In 'interval' mode the environment uses `noSync` and a timer flushes
 * every `syncInterval` seconds, as the reference does.
 *
 * Two ways to run an operation, with the same rules (`Plan`s over `queue/ring.ts`):
 * - exclusive (one server process owns the directory, enforced by `lock.ts`): queue positions
 *   live in memory, an operation is decided at once and its writes are queued in order. The
 *   write thread never waits for JavaScript, which is what makes durable acks cheap.
 * - shared (`--workers`): each operation is an lmdb-js transaction callback that reads the
 *   positions inside the write transaction, which LMDB serializes across processes.
 */
import { mkdirSync } from 'node:fs';
import { open, type Database, type RootDatabase } from 'lmdb';
import { canSetMaxqueue, emptyQueue, nextGetPos, nextPutPos, type QueueState } from '../queue/ring.js';
import { lockDirectory } from './lock.js';
import { StoreError, type Store, type SyncMode } from './store.js';

export interface LmdbOptions {
  path: string;
  syncMode?: SyncMode;
  /** Seconds between flushes in 'interval' mode. */
  syncInterval?: number;
  /** Other processes write to the same environment (`--workers`); no directory lock is taken. */
  shared?: boolean;
  /** Upper bound of the memory map in bytes; the default lets LMDB grow as needed. */
  mapSize?: number;
}

const META_BYTES = 12;
const EMPTY = Buffer.alloc(0);

function decodeMeta(v: Buffer | undefined): QueueState {
  if (!v || v.length < META_BYTES) return emptyQueue();
  return { putpos: v.readUInt32BE(0), getpos: v.readUInt32BE(4), maxqueue: v.readUInt32BE(8) };
}

function encodeMeta(s: QueueState): Buffer {
  const b = Buffer.allocUnsafe(META_BYTES);
  b.writeUInt32BE(s.putpos, 0);
  b.writeUInt32BE(s.getpos, 4);
  b.writeUInt32BE(s.maxqueue, 8);
  return b;
}

function msgKey(name: string, pos: number): Buffer {
  const n = name.length; // a byte string: one char a byte
  const k = Buffer.allocUnsafe(n + 6);
  k.writeUInt16BE(n, 0);
  k.write(name, 2, 'latin1');
  k.writeUInt32BE(pos, n + 2);
  return k;
}

/** For writes whose failure the operation learns from its last write (or its transaction): their
 * own rejection must not go unhandled, which would end the process. */
function quiet(p: Promise<unknown>): void {
  p.catch(() => {});
}

/** What an operation decides from the queue's state: new state, a message to store, an answer. */
interface Decision<T> {
  next?: QueueState;
  store?: { pos: number; message: Buffer };
  result: T;
}
type Plan<T> = (s: QueueState, read: (pos: number) => Buffer | undefined) => Decision<T>;

export class LmdbStore implements Store {
  readonly syncMode: SyncMode;
  private readonly env: RootDatabase;
  private readonly meta: Database<Buffer, Buffer>;
  private readonly msg: Database<Buffer, Buffer>;
  private readonly release: (() => void) | undefined;
  /** Exclusive mode: every queue's positions including queued writes, and messages not yet committed. */
  private readonly cache: Map<string, QueueState> | undefined;
  private readonly uncommitted = new Map<string, Buffer>();
  private syncSeconds: number;
  private timer: NodeJS.Timeout | undefined;
  private closing: Promise<void> | undefined;

  constructor(opts: LmdbOptions) {
    this.syncMode = opts.syncMode ?? 'durable';
    this.syncSeconds = opts.syncInterval ?? 5;
    mkdirSync(opts.path, { recursive: true });
    if (!opts.shared) {
      this.release = lockDirectory(opts.path);
      this.cache = new Map();
    }
    try {
      this.env = open({
        path: opts.path,
        maxDbs: 4,
        overlappingSync: false,
        noSync: this.syncMode === 'interval',
        ...(opts.mapSize ? { mapSize: opts.mapSize } : {}),
      });
    } catch (err) {
      this.release?.();
      throw err;
    }
    const dbOpts = { encoding: 'binary', keyEncoding: 'binary' } as const;
    this.meta = this.env.openDB<Buffer, Buffer>('meta', dbOpts);
    this.msg = this.env.openDB<Buffer, Buffer>('msg', dbOpts);
    if (this.syncMode === 'interval') this.schedule();
  }


  private schedule(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.flush().finally(() => this.closing || this.schedule());
    }, this.syncSeconds * 1000);
    this.timer.unref();
  }

  private flush(): Promise<void> {
    return new Promise((resolve) => {
      // `sync` exists on the root database at run time but is missing from lmdb's typings.
      (this.env as unknown as { sync(cb: (err?: Error) => void): void }).sync((err) => {
        if (err) process.emitWarning(`LMDB flush failed: ${err.message}`);
        resolve();
      });
    });
  }

  private failed(err: unknown): StoreError {
    // lmdb-js rejects a separate promise with the cause (e.g. ENOSPC); handled here, it carries it.
    const cause = (err as { commitError?: Promise<unknown> }).commitError;
    cause?.catch(() => {});
    // Positions in memory may now be ahead of the disk: forget them and read the disk again.
    this.cache?.clear();
    this.uncommitted.clear();
    return new StoreError(`LMDB write failed: ${(err as Error).message}`, { cause: err });
  }

  private run<T>(name: string, plan: Plan<T>): Promise<T> {
    const nameKey = Buffer.from(name, 'latin1');
    if (!this.cache) {
      return this.env
        .transaction(() => {
          const d = plan(decodeMeta(this.meta.get(nameKey)), (pos) => this.msg.get(msgKey(name, pos)));
          if (d.store) quiet(this.msg.put(msgKey(name, d.store.pos), d.store.message));
          if (d.next) quiet(this.meta.put(nameKey, encodeMeta(d.next)));
          return d.result;
        })
        .catch((err) => Promise.reject(this.failed(err)));
    }
    let s = this.cache.get(name);
    if (!s) this.cache.set(name, (s = decodeMeta(this.meta.get(nameKey))));
    const d = plan(s, (pos) => this.uncommitted.get(`${pos}:${name}`) ?? this.readCommitted(name, pos));
    if (!d.next) return Promise.resolve(d.result);
    this.cache.set(name, d.next);
    let pending: string | undefined;
    if (d.store) {
      // Until it is committed, a get or view of this position must find it here.
      pending = `${d.store.pos}:${name}`;
      this.uncommitted.set(pending, d.store.message);
      quiet(this.msg.put(msgKey(name, d.store.pos), d.store.message));
    }
    // Queued after the message, so it commits in the same transaction or a later one.
    return this.meta.put(nameKey, encodeMeta(d.next)).then(
      () => {
        if (pending && this.uncommitted.get(pending) === d.store!.message) this.uncommitted.delete(pending);
        return d.result;
      },
      (err) => Promise.reject(this.failed(err)),
    );
  }

  /** A committed message. lmdb-js renews its read snapshot after each commit it resolves; should a
   * snapshot still predate the commit of a message no longer in `uncommitted`, renew and look again. */
  private readCommitted(name: string, pos: number): Buffer | undefined {
    const key = msgKey(name, pos);
    const found = this.msg.get(key);
    if (found) return found;
    this.env.resetReadTxn();
    return this.msg.get(key);
  }

  put(name: string, message: Buffer): Promise<number> {
    return this.run(name, (s) => {
      const pos = nextPutPos(s);
      return pos ? { next: { ...s, putpos: pos }, store: { pos, message }, result: pos } : { result: 0 };
    });
  }

  get(name: string): Promise<{ pos: number; message: Buffer } | null> {
    return this.run(name, (s, read) => {
      const pos = nextGetPos(s);
      return pos ? { next: { ...s, getpos: pos }, result: { pos, message: read(pos) ?? EMPTY } } : { result: null };
    });
  }

  maxqueue(name: string, num: number): Promise<boolean> {
    return this.run(name, (s) => (canSetMaxqueue(s, num) ? { next: { ...s, maxqueue: num }, result: true } : { result: false }));
  }

  // Reads outside a write transaction use lmdb-js's shared read snapshot, renewed once per event
  // loop turn; renewing it here lets a read see a commit another worker process made a moment ago.
  async status(name: string): Promise<QueueState> {
    const cached = this.cache?.get(name);
    if (cached) return cached;
    this.env.resetReadTxn();
    return decodeMeta(this.meta.get(Buffer.from(name, 'latin1')));
  }

  async view(name: string, pos: number): Promise<Buffer | null> {
    const pending = this.uncommitted.get(`${pos}:${name}`);
    if (pending) return pending;
    this.env.resetReadTxn();
    return this.msg.get(msgKey(name, pos)) ?? null;
  }

  async reset(name: string): Promise<void> {
    const nameKey = Buffer.from(name, 'latin1');
    const range = { start: msgKey(name, 0), end: msgKey(name, 0xffffffff) };
    if (!this.cache) {
      return this.env
        .transaction(() => {
          quiet(this.meta.remove(nameKey));
          for (const k of Array.from(this.msg.getKeys(range))) quiet(this.msg.remove(k));
        })
        .catch((err) => Promise.reject(this.failed(err)));
    }
    this.cache.set(name, emptyQueue());
    this.env.resetReadTxn();
    // Every stored position is either committed (in the snapshot) or queued (in `uncommitted`);
    // the removals are queued behind both, and a put after this reset is queued behind them.
    for (const k of this.msg.getKeys(range)) quiet(this.msg.remove(k));
    for (const key of this.uncommitted.keys()) {
      const colon = key.indexOf(':');
      if (key.slice(colon + 1) === name) {
        quiet(this.msg.remove(msgKey(name, Number(key.slice(0, colon)))));
        this.uncommitted.delete(key);
      }
    }
    await this.meta.remove(nameKey).catch((err) => Promise.reject(this.failed(err)));
  }

  setSyncInterval(seconds: number): void {
    this.syncSeconds = seconds;
    if (this.syncMode === 'interval' && !this.closing) this.schedule();
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      clearTimeout(this.timer);
      await this.env.committed;
      await this.flush();
      await this.env.close();
      this.release?.();
    })();
    return this.closing;
  }
}
