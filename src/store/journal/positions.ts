/**
 * Where a queue's stored messages are: for each position, the segment, offset and length of its
 * record, and whether it is live (unread or leased), in 16 bytes (and up to a quarter more of
 * room to grow). Entries are kept in the order
 * they were added, which for puts is position order with a wrap now and then, so the positions
 * form a few runs of increasing numbers (`runs`), mostly consecutive ones; a lookup checks the runs
 * from the newest, at once in a run of consecutive positions, by binary search in one with gaps
 * (messages copied forward by compaction, slots past the ring whose messages went). A
 * position written again (the ring came round) or moved (compaction) gets a new entry and its old
 * one is marked dead (segment 0); dead entries and those whose segment is gone leave from the
 * oldest end. Read messages stay (a view shows them) until their segment goes.
 */
const STRIDE = 4;

/** Entries read a piece at a time: `length` u32s in all; `read` fills `into` from u32 `at` on (a
 * whole number of entries), pieces in order. */
export interface EntrySource {
  length: number;
  read(at: number, into: Uint32Array): void;
  release(): void;
}
const LIVE = 0x80000000;
const MIN = 8;

export class PositionIndex {
  /** [pos, seg, off, len | LIVE] per entry; entries [head, tail) are in use. */
  private a: Uint32Array = new Uint32Array(STRIDE * MIN);
  private head = 0;
  private tail = 0;
  /** [first entry, its position, count] per run of consecutive positions, oldest first. */
  private runs: number[] = [];
  /** A snapshot being read (see `snapshot`). */
  private snap: { a: Uint32Array; from: number; to: number; next: number; saved: Map<number, [number, number]> } | undefined;

  /** Entries held, dead ones not yet dropped included. */
  get size(): number {
    return this.tail - this.head;
  }

  /** Bytes of memory the entries take. */
  get bytes(): number {
    return this.a.byteLength;
  }

  pos = (i: number): number => this.a[STRIDE * i]!;
  seg = (i: number): number => this.a[STRIDE * i + 1]!;
  off = (i: number): number => this.a[STRIDE * i + 2]!;
  len = (i: number): number => this.a[STRIDE * i + 3]! & ~LIVE;
  live = (i: number): boolean => (this.a[STRIDE * i + 3]! & LIVE) !== 0;

  setLive(i: number, live: boolean): void {
    this.keep(i);
    const k = STRIDE * i + 3;
    this.a[k] = live ? (this.a[k]! | LIVE) >>> 0 : this.a[k]! & ~LIVE;
  }

  /** Marks an entry dead for good (replaced, or its queue reset). */
  kill(i: number): void {
    this.keep(i);
    this.a[STRIDE * i + 1] = 0;
    this.a[STRIDE * i + 3] = 0;
  }

  /** The entry of `pos`, or -1. */
  find(pos: number): number {
    const r = this.runs;
    for (let k = r.length - 3; k >= 0; k -= 3) {
      const [first, d, n] = [r[k]!, pos - r[k + 1]!, r[k + 2]!];
      if (d < 0) continue;
      let i = d < n && this.pos(first + d) === pos ? first + d : -1;
      // Not where a run of consecutive positions has it: in a run with gaps it may be further back.
      if (i < 0 && this.pos(first + n - 1) - r[k + 1]! >= n) i = this.search(first, n, pos);
      if (i >= 0) return this.seg(i) === 0 ? -1 : i;
    }
    return -1;
  }

  /** The entry of `pos` among the `n` from `first` on (their positions increase), or -1. */
  private search(first: number, n: number, pos: number): number {
    let [lo, hi] = [first, first + n - 1];
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const p = this.pos(mid);
      if (p === pos) return mid;
      if (p < pos) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  add(pos: number, seg: number, off: number, len: number): number {
    if (this.tail * STRIDE === this.a.length) {
      const capacity = this.a.length / STRIDE;
      // Grown by a quarter when three quarters are in use; else the entries move to the front.
      this.resize(this.size + 1 > 0.75 * capacity ? Math.ceil(1.25 * capacity) : capacity);
    }
    const i = this.tail++;
    const o = STRIDE * i;
    this.a[o] = pos;
    this.a[o + 1] = seg;
    this.a[o + 2] = off;
    this.a[o + 3] = len;
    const r = this.runs;
    const k = r.length - 3;
    // A run goes on while positions increase (entries next to each other).
    if (k >= 0 && r[k]! + r[k + 2]! === i && i > 0 && this.pos(i - 1) < pos) r[k + 2]!++;
    else r.push(i, pos, 1);
    return i;
  }

  /** Entries in use, oldest first (dead ones skipped). */
  *entries(): Generator<number> {
    for (let i = this.head; i < this.tail; i++) if (this.seg(i) !== 0) yield i;
  }

  /** Drops dead entries and those in segments that are `gone` from the oldest end. */
  trim(gone: (seg: number) => boolean): void {
    let h = this.head;
    while (h < this.tail && (this.seg(h) === 0 || gone(this.seg(h)))) h++;
    if (h === this.head) return;
    this.head = h;
    const r = this.runs;
    let k = 0;
    while (k < r.length && r[k]! + r[k + 2]! <= h) k += 3;
    r.splice(0, k);
    if (r.length && r[0]! < h) {
      r[2]! -= h - r[0]!;
      r[0] = h;
      r[1] = this.pos(h);
    }
    if (this.size < this.a.length / STRIDE / 4 && this.a.length > STRIDE * MIN) this.resize(Math.max(MIN, 2 * this.size));
  }

  clear(): void {
    this.a = new Uint32Array(STRIDE * MIN);
    this.head = this.tail = 0;
    this.runs = [];
  }

  /**
   * The entries as they are now, [pos, seg, off, len | LIVE] each, dead ones included, to be read
   * a piece at a time while the index goes on changing (a checkpoint): no copy is made. Until the
   * snapshot is released, an entry it has not handed out yet keeps its value of now in `saved`
   * before it changes, and the array stays where it is (a resize makes a new one).
   */
  snapshot(): EntrySource {
    const snap = { a: this.a, from: this.head, to: this.tail, next: this.head, saved: new Map<number, [number, number]>() };
    this.snap = snap;
    return {
      length: STRIDE * (snap.to - snap.from),
      read: (at, into) => {
        const first = snap.from + at / STRIDE;
        const n = into.length / STRIDE;
        into.set(snap.a.subarray(STRIDE * first, STRIDE * (first + n)));
        for (const [i, [seg, len]] of snap.saved) {
          if (i < first || i >= first + n) continue;
          into[STRIDE * (i - first) + 1] = seg;
          into[STRIDE * (i - first) + 3] = len;
          snap.saved.delete(i);
        }
        snap.next = first + n;
      },
      release: () => {
        if (this.snap === snap) this.snap = undefined;
      },
    };
  }

  /** Before entry `i` changes: its value of now, for a snapshot that has not handed it out. */
  private keep(i: number): void {
    const snap = this.snap;
    if (!snap || snap.a !== this.a || i < snap.next || i >= snap.to || snap.saved.has(i)) return;
    snap.saved.set(i, [this.a[STRIDE * i + 1]!, this.a[STRIDE * i + 3]!]);
  }

  /** Takes the entries a checkpoint saved as the index itself (no copy: the array becomes the
   * index's), keeping them in order but leaving out dead entries and those whose segment is
   * `gone`. */
  load(saved: Uint32Array, gone: (seg: number) => boolean): void {
    this.a = saved.length >= STRIDE * MIN ? saved : new Uint32Array(STRIDE * MIN);
    if (this.a !== saved) this.a.set(saved);
    this.head = this.tail = 0;
    this.runs = [];
    // Entries move towards the front as dead ones are left out: never past one not yet read.
    const n = saved.length / STRIDE;
    for (let k = 0; k < n; k++) {
      const o = STRIDE * k;
      const [pos, seg, off, len] = [this.a[o]!, this.a[o + 1]!, this.a[o + 2]!, this.a[o + 3]!];
      if (seg === 0 || gone(seg)) continue;
      this.add(pos, seg, off, len);
    }
  }

  /** Moves the entries to the front of an array of `capacity` entries. */
  private resize(capacity: number): void {
    const n = this.size;
    // Moved within the array, unless a snapshot reads it: then into a new one.
    if (capacity * STRIDE === this.a.length && this.snap?.a !== this.a) this.a.copyWithin(0, STRIDE * this.head, STRIDE * this.tail);
    else {
      const a = new Uint32Array(capacity * STRIDE);
      a.set(this.a.subarray(STRIDE * this.head, STRIDE * this.tail));
      this.a = a;
    }
    const shift = this.head;
    this.head = 0;
    this.tail = n;
    for (let k = 0; k < this.runs.length; k += 3) this.runs[k]! -= shift;
  }
}
