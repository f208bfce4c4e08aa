/**
 * Puts and gets over the last minutes, for the dashboard's charts, so that a page opened just now
 * has something to draw. Counts go into fixed-size buckets (5 s each, 15 minutes in all) in a
 * ring, in total and for the busiest queues; every other queue is summed as one. Each process
 * counts its own requests; under `--workers` the snapshots of all of them are added up with
 * `mergeHistories`. Buckets are numbered from the epoch, so those of different processes line up.
 */

/** Counts per bucket, oldest first. */
export interface Series {
  put: number[];
  get: number[];
}

export interface HistorySnapshot {
  bucketMs: number;
  /** Number of the newest bucket (its start / bucketMs), still filling at `now`; series end with it. */
  last: number;
  /** When the snapshot was taken, in ms since the epoch. */
  now: number;
  total: Series;
  /** Queues counted one by one (names as byte strings, one char a byte), busiest first. */
  queues: Array<{ name: string } & Series>;
  /** Every queue not in `queues`, summed. */
  other: Series;
}

export interface HistoryOptions {
  /** The clock, in ms since the epoch. @default Date.now */
  now?: () => number;
  /** @default 5000 */
  bucketMs?: number;
  /** Buckets kept. @default 180 (15 minutes of 5 s) */
  buckets?: number;
  /** Queues counted one by one, at most. @default 100 */
  maxQueues?: number;
}

export const HISTORY_MAX_QUEUES = 100;

class Ring {
  readonly put: Float64Array;
  readonly get: Float64Array;

  /** `since`: the bucket from which this ring has counted. */
  constructor(
    size: number,
    readonly since: number,
  ) {
    this.put = new Float64Array(size);
    this.get = new Float64Array(size);
  }

  clear(i: number): void {
    this.put[i] = 0;
    this.get[i] = 0;
  }

  sum(): number {
    let s = 0;
    for (let i = 0; i < this.put.length; i++) s += this.put[i]! + this.get[i]!;
    return s;
  }

  /** The buckets up to `last`, oldest first. */
  series(last: number): Series {
    const n = this.put.length;
    const put: number[] = [];
    const get: number[] = [];
    for (let b = last - n + 1; b <= last; b++) {
      const i = slot(b, n);
      put.push(this.put[i]!);
      get.push(this.get[i]!);
    }
    return { put, get };
  }
}

/** A queue's counts in the current bucket while it is not counted one by one; `over`: what it may
 * have had before it became a candidate. */
interface Candidate {
  put: number;
  get: number;
  over: number;
}
const estimate = (c: Candidate) => c.put + c.get + c.over;

const slot = (bucket: number, size: number) => ((bucket % size) + size) % size;
const sumOf = (s: Series) => s.put.reduce((a, b) => a + b, 0) + s.get.reduce((a, b) => a + b, 0);

export class RateHistory {
  private readonly now: () => number;
  private readonly bucketMs: number;
  private readonly size: number;
  private readonly maxQueues: number;
  private current: number;
  private readonly total: Ring;
  private readonly queues = new Map<string, Ring>();
  /** Queues not counted one by one, with their counts in the current bucket: at the next bucket,
   * those busier than the quietest counted queues take their places. */
  private pending = new Map<string, Candidate>();

  constructor(opts: HistoryOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.bucketMs = opts.bucketMs ?? 5000;
    this.size = opts.buckets ?? 180;
    this.maxQueues = opts.maxQueues ?? HISTORY_MAX_QUEUES;
    this.current = Math.floor(this.now() / this.bucketMs);
    this.total = new Ring(this.size, this.current);
  }

  /** `name` as a byte string, as the server has it. */
  record(name: string, puts: number, gets: number): void {
    this.advance();
    const i = slot(this.current, this.size);
    this.total.put[i]! += puts;
    this.total.get[i]! += gets;
    let ring = this.queues.get(name);
    if (!ring && this.queues.size < this.maxQueues) this.queues.set(name, (ring = new Ring(this.size, this.current)));
    if (ring) {
      ring.put[i]! += puts;
      ring.get[i]! += gets;
      return;
    }
    const p = this.pending.get(name);
    if (p) {
      p.put += puts;
      p.get += gets;
      return;
    }
    let over = 0;
    if (this.pending.size >= this.maxQueues) {
      // Full: the new name takes the place of the least counted candidate, and is assumed to have
      // had as many as it (the Space-Saving algorithm: whatever queue has more than 1/maxQueues of
      // these counts is sure to be among the candidates). A scan of maxQueues entries, only here.
      let least: [string, Candidate] | undefined;
      for (const e of this.pending) if (!least || estimate(e[1]) < estimate(least[1])) least = e;
      this.pending.delete(least![0]);
      over = estimate(least![1]);
    }
    this.pending.set(name, { put: puts, get: gets, over });
  }

  snapshot(): HistorySnapshot {
    this.advance();
    const queues = [...this.queues]
      .map(([name, ring]) => ({ name, ...ring.series(this.current), sum: ring.sum() }))
      .sort((a, b) => b.sum - a.sum)
      .map(({ sum: _, ...q }) => q);
    const total = this.total.series(this.current);
    return { bucketMs: this.bucketMs, last: this.current, now: this.now(), total, queues, other: remainder(total, queues) };
  }

  /** Names held (counted queues and candidates): bounded by twice maxQueues. */
  get names(): number {
    return this.queues.size + this.pending.size;
  }

  /** Moves to the clock's bucket. A clock that went back keeps counting into the current one. */
  private advance(): void {
    const to = Math.floor(this.now() / this.bucketMs);
    if (to <= this.current) return;
    const closed = this.current;
    for (let b = Math.max(closed + 1, to - this.size + 1); b <= to; b++) {
      const i = slot(b, this.size);
      this.total.clear(i);
      for (const ring of this.queues.values()) ring.clear(i);
    }
    this.current = to;
    const rate = new Map<string, number>();
    for (const [name, ring] of this.queues) {
      const sum = ring.sum();
      if (sum === 0)
        this.queues.delete(name); // idle for the whole window
      else rate.set(name, sum / Math.min(to - ring.since, this.size));
    }
    // Ranked, and moved, by the counts surely theirs: `other` never goes below zero.
    const candidates = [...this.pending].sort(([, a], [, b]) => b.put + b.get - a.put - a.get);
    this.pending = new Map();
    if (to - closed >= this.size) return;
    // A candidate's count in the bucket just closed against a counted queue's mean per bucket:
    // a queue that just got busy soon gets its own chart, and one busy long ago gives way.
    const quietest = [...rate].sort(([, a], [, b]) => a - b);
    let k = 0;
    for (const [name, c] of candidates) {
      if (this.queues.size >= this.maxQueues) {
        const q = quietest[k++];
        if (!q || q[1] >= c.put + c.get) break;
        this.queues.delete(q[0]); // its counts fall into `other`
      }
      const ring = new Ring(this.size, closed);
      ring.put[slot(closed, this.size)] = c.put;
      ring.get[slot(closed, this.size)] = c.get;
      this.queues.set(name, ring);
    }
  }
}

/** `total` less every queue's counts. */
function remainder(total: Series, queues: Series[]): Series {
  const put = [...total.put];
  const get = [...total.get];
  for (const q of queues) {
    for (const [i, v] of q.put.entries()) put[i]! -= v;
    for (const [i, v] of q.get.entries()) get[i]! -= v;
  }
  return { put, get };
}

/**
 * The sum of several processes' snapshots, lined up by bucket number (a snapshot taken just
 * before a bucket began ends one bucket earlier). A queue counted one by one in some processes
 * and summed in others' `other` shows only the first part; the total is exact. At most
 * `maxQueues` queues, the busiest; the rest go into `other`.
 */
export function mergeHistories(snapshots: readonly HistorySnapshot[], maxQueues = HISTORY_MAX_QUEUES): HistorySnapshot {
  const first = snapshots[0];
  if (!first) throw new Error('mergeHistories needs one snapshot at least');
  const { bucketMs } = first;
  const size = first.total.put.length;
  const last = Math.max(...snapshots.map((s) => s.last));
  const empty = (): Series => ({ put: new Array<number>(size).fill(0), get: new Array<number>(size).fill(0) });
  const add = (into: Series, from: Series, shift: number) => {
    for (let i = shift; i < from.put.length; i++) {
      into.put[i - shift]! += from.put[i]!;
      into.get[i - shift]! += from.get[i]!;
    }
  };
  const total = empty();
  const byName = new Map<string, Series>();
  for (const s of snapshots) {
    if (s.bucketMs !== bucketMs || s.total.put.length !== size) throw new Error('snapshots with different buckets');
    const shift = last - s.last; // this many of its oldest buckets are out of the window
    add(total, s.total, shift);
    for (const q of s.queues) {
      let into = byName.get(q.name);
      if (!into) byName.set(q.name, (into = empty()));
      add(into, q, shift);
    }
  }
  const queues = [...byName]
    .map(([name, series]) => ({ name, ...series, sum: sumOf(series) }))
    .sort((a, b) => b.sum - a.sum)
    .slice(0, maxQueues)
    .map(({ sum: _, ...q }) => q);
  return { bucketMs, last, now: Math.max(...snapshots.map((s) => s.now)), total, queues, other: remainder(total, queues) };
}
