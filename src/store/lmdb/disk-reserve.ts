/**
 * `--disk-reserve`: puts are refused while the disk of the data directory has less free space
 * than the reserve, so that a full disk is met here, with a clear answer, rather than as a failed
 * commit. Free space is read every second, and after every sixteenth of the reserve that puts
 * brought in, so that a burst of puts cannot cross the reserve unseen. Puts are accepted again
 * once an eighth more than the reserve is free (no flapping at its edge). Pages inside the LMDB
 * file that hold nothing now (freed by a reset, or by a ring that came round) count as free:
 * LMDB writes into them before it grows the file; so does the room the store took past LMDB's
 * last page (room.ts).
 */
import { statfs, statfsSync } from 'node:fs';
import type { Database, RootDatabase } from 'lmdb';
import { DiskLowError } from '../store.js';

type Stats = { treeBranchPageCount: number; treeLeafPageCount: number; overflowPages: number };

/** Bytes of the pages inside an LMDB file that hold nothing now. */
export function lmdbFreeBytes(env: RootDatabase, dbs: Database[]): number {
  const root = env.getStats() as Stats & { lastPageNumber: number; pageSize: number; free: Stats };
  let used = 2; // the meta pages
  for (const s of [root, root.free, ...dbs.map((db) => db.getStats() as Stats)]) used += s.treeBranchPageCount + s.treeLeafPageCount + s.overflowPages;
  return Math.max(0, root.lastPageNumber + 1 - used) * root.pageSize;
}

export const mib = (n: number): string => `${Math.floor(n / 2 ** 20)} MiB`;

export class DiskReserve {
  private low: DiskLowError | undefined;
  /** Bytes put since free space was last read. */
  private brought = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly path: string,
    private readonly reserve: number,
    /** Bytes free inside the store's own files, counted with the disk's. */
    private readonly inside: () => number,
    /** Told when free space falls below the reserve, and when it is back. */
    private readonly told?: (low: boolean, freeBytes: number) => void,
  ) {
    try {
      const st = statfsSync(path);
      this.update(st.bavail * st.bsize);
    } catch {
      // Not known yet: read again every second.
    }
    this.timer = setInterval(() => this.check(), 1000);
    this.timer.unref();
  }

  /** Reads the free space (also after a failed write, when the disk is likely full). */
  check(): void {
    this.brought = 0;
    statfs(this.path, (err, st) => err || this.update(st.bavail * st.bsize));
  }

  /** Why a put of `bytes` is refused now, or undefined when it may go ahead. */
  refuse(bytes: number): DiskLowError | undefined {
    if (!this.low && (this.brought += bytes) >= this.reserve / 16) this.check();
    return this.low;
  }

  /** The refusal in force, if any. */
  get refusal(): DiskLowError | undefined {
    return this.low;
  }

  close(): void {
    clearInterval(this.timer);
  }

  private update(onDisk: number): void {
    if (!this.low && onDisk >= this.reserve) return; // enough on the disk alone: nothing can change
    let free = onDisk;
    try {
      free += this.inside();
    } catch {
      // The store is closing: the disk alone.
    }
    const wasLow = this.low !== undefined;
    const low = free < this.reserve * (wasLow ? 1.125 : 1);
    if (low === wasLow) return;
    this.low = low
      ? new DiskLowError(`${mib(free)} free for the data directory, below the reserve of ${mib(this.reserve)}: puts are refused until there is room`)
      : undefined;
    this.told?.(low, free);
  }
}
