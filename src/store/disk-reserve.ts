/**
 * `--disk-reserve`: puts are refused while the disk of the data directory has less free space
 * than the reserve, so that a full disk is met here, with a clear answer, rather than as a failed
 * commit. Free space is read every second; in between, what puts write is counted against it
 * (twice its size: LMDB's pages are copied on write and split half full). Puts are accepted again
 * once an eighth more than the reserve is free.
 */
import { statfs, statfsSync } from 'node:fs';
import { DiskLowError } from './store.js';

const mib = (n: number) => `${Math.floor(Math.max(n, 0) / 2 ** 20)} MiB`;

export class DiskReserve {
  private free = Infinity;
  private spent = 0;
  private low: DiskLowError | undefined;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly path: string,
    private readonly reserve: number,
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

  /** Reads the free space now (also after a failed write, when the disk is likely full). */
  check(): void {
    statfs(this.path, (err, st) => err || this.update(st.bavail * st.bsize));
  }

  /** Why a put of `bytes` is refused, or undefined when it may go ahead (and is counted). */
  refuse(bytes: number): DiskLowError | undefined {
    if (!this.low) {
      this.spent += 2 * (bytes + 64);
      if (this.free - this.spent < this.reserve) this.update();
    }
    return this.low;
  }

  /** The refusal in force, if any. */
  get refusal(): DiskLowError | undefined {
    return this.low;
  }

  close(): void {
    clearInterval(this.timer);
  }

  private update(free?: number): void {
    if (free !== undefined) [this.free, this.spent] = [free, 0];
    const left = this.free - this.spent;
    const wasLow = this.low !== undefined;
    // Back only with an eighth more than the reserve: no flapping at its edge.
    const low = left < this.reserve * (wasLow ? 1.125 : 1);
    if (low === wasLow) return;
    this.low = low ? new DiskLowError(`${mib(left)} free on the disk of the data directory, below the reserve of ${mib(this.reserve)}: puts are refused until there is room`) : undefined;
    this.told?.(low, left);
  }
}
