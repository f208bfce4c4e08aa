/**
 * The embedded store: one LMDB environment in the data directory.
 *
 * Layout: database `meta` maps a queue name to 12 bytes (putpos, getpos, maxqueue as big-endian
 * uint32); database `msg` maps [u16 name length][name][u32 position] to the raw message bytes.
 * A queue without a meta record is in its initial state.
 *
 * Durability: every operation runs in an lmdb-js async transaction, and lmdb-js groups all the
 * transactions queued while the previous commit is in progress into one commit. In 'durable'
 * mode the environment is opened with `overlappingSync: false` and without `noSync`, so that
 * commit includes the fdatasync and the promise resolves only once the data is on disk. (The
 * lmdb-js default, overlappingSync, resolves at commit and flushes later: committed, not yet
 * flushed, which is not what we acknowledge.) In 'interval' mode the environment uses `noSync`
 * and a timer flushes every `syncInterval` seconds, as the reference does.
 */
import { mkdirSync } from 'node:fs';
import { open, type Database, type RootDatabase } from 'lmdb';
import {
  canSetMaxqueue,
  emptyQueue,
  nextGetPos,
  nextPutPos,
  type QueueState,
} from '../queue/ring.js';
import { StoreError, type Store, type SyncMode } from './store.js';

export interface LmdbOptions {
  path: string;
  syncMode?: SyncMode;
  /** Seconds between flushes in 'interval' mode. */
  syncInterval?: number;
  /** Upper bound of the memory map in bytes; the default lets LMDB grow as needed. */
  mapSize?: number;
}

const META_BYTES = 12;

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
  const n = Buffer.byteLength(name, 'latin1');
  const k = Buffer.allocUnsafe(n + 6);
  k.writeUInt16BE(n, 0);
  k.write(name, 2, 'latin1');
  k.writeUInt32BE(pos, n + 2);
  return k;
}

export class LmdbStore implements Store {
  readonly syncMode: SyncMode;
  private readonly env: RootDatabase;
  private readonly meta: Database<Buffer, Buffer>;
  private readonly msg: Database<Buffer, Buffer>;
  private syncSeconds: number;
  private timer: NodeJS.Timeout | undefined;
  private closing: Promise<void> | undefined;

  constructor(opts: LmdbOptions) {
    this.syncMode = opts.syncMode ?? 'durable';
    this.syncSeconds = opts.syncInterval ?? 5;
    mkdirSync(opts.path, { recursive: true });
    this.env = open({
      path: opts.path,
      maxDbs: 4,
      overlappingSync: false,
      noSync: this.syncMode === 'interval',
      ...(opts.mapSize ? { mapSize: opts.mapSize } : {}),
    });
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

  private async txn<T>(fn: () => T): Promise<T> {
    try {
      return await this.env.transaction(fn);
    } catch (err) {
      throw new StoreError(`LMDB write failed: ${(err as Error).message}`, { cause: err });
    }
  }

  private state(nameKey: Buffer): QueueState {
    return decodeMeta(this.meta.get(nameKey));
  }

  put(name: string, message: Buffer): Promise<number> {
    const nameKey = Buffer.from(name, 'latin1');
    return this.txn(() => {
      const s = this.state(nameKey);
      const pos = nextPutPos(s);
      if (pos === 0) return 0;
      this.msg.put(msgKey(name, pos), message);
      this.meta.put(nameKey, encodeMeta({ ...s, putpos: pos }));
      return pos;
    });
  }

  get(name: string): Promise<{ pos: number; message: Buffer } | null> {
    const nameKey = Buffer.from(name, 'latin1');
    return this.txn(() => {
      const s = this.state(nameKey);
      const pos = nextGetPos(s);
      if (pos === 0) return null;
      this.meta.put(nameKey, encodeMeta({ ...s, getpos: pos }));
      return { pos, message: this.msg.get(msgKey(name, pos)) ?? Buffer.alloc(0) };
    });
  }

  // Reads outside a write transaction use lmdb-js's shared read snapshot, renewed once per event
  // loop turn; renewing it here lets a read see a commit another worker process made a moment ago.
  async status(name: string): Promise<QueueState> {
    this.env.resetReadTxn();
    return decodeMeta(this.meta.get(Buffer.from(name, 'latin1')));
  }

  async view(name: string, pos: number): Promise<Buffer | null> {
    this.env.resetReadTxn();
    return this.msg.get(msgKey(name, pos)) ?? null;
  }

  reset(name: string): Promise<void> {
    const nameKey = Buffer.from(name, 'latin1');
    return this.txn(() => {
      this.meta.remove(nameKey);
      const range = { start: msgKey(name, 0), end: msgKey(name, 0xffffffff), limit: 10_000 };
      for (;;) {
        const keys = Array.from(this.msg.getKeys(range));
        if (keys.length === 0) break;
        for (const k of keys) this.msg.remove(k);
      }
    });
  }

  maxqueue(name: string, num: number): Promise<boolean> {
    const nameKey = Buffer.from(name, 'latin1');
    return this.txn(() => {
      const s = this.state(nameKey);
      if (!canSetMaxqueue(s, num)) return false;
      this.meta.put(nameKey, encodeMeta({ ...s, maxqueue: num }));
      return true;
    });
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
    })();
    return this.closing;
  }
}
