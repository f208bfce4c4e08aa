import type { QueueState } from '../queue/ring.js';

/** How acknowledgements relate to the disk. */
export type SyncMode =
  /** Default: a change is acknowledged only after it has been flushed (fdatasync) to disk. */
  | 'durable'
  /** Like the reference: acknowledge at once, flush every `syncInterval` seconds. */
  | 'interval';

/**
 * A queue engine. Every method is ONE atomic operation applying the rules of `queue/ring.ts`;
 * the server never combines two calls into one command, so any engine that can run a small
 * transaction (LMDB, a Redis script) fits. Queue names are byte strings (latin1, one char a
 * byte). A resolved promise from a mutating call means the change is as durable as the store's
 * sync mode promises.
 */
export interface Store {
  /** Stores a message at the next position; resolves to that position, or 0 when full. */
  put(name: string, message: Buffer): Promise<number>;
  /** Moves the read position on; resolves to what was there, or null when all is read. */
  get(name: string): Promise<{ pos: number; message: Buffer } | null>;
  status(name: string): Promise<QueueState>;
  /** The message stored at `pos` (read or not), or null when there is none. */
  view(name: string, pos: number): Promise<Buffer | null>;
  /** Positions and maxqueue back to their defaults, stored messages deleted. */
  reset(name: string): Promise<void>;
  /** Sets maxqueue when the ring rules allow it; resolves to whether it did. */
  maxqueue(name: string, num: number): Promise<boolean>;
  /** Seconds between flushes in 'interval' mode (kept, but unused, in 'durable' mode). */
  setSyncInterval(seconds: number): void;
  readonly syncMode: SyncMode;
  /** Flushes and closes; safe to call twice. */
  close(): Promise<void>;
}

/** A failure of the storage engine itself (disk full, I/O error), as opposed to a queue rule. */
export class StoreError extends Error {
  override name = 'StoreError';
}
