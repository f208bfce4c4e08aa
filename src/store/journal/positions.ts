/**
 * Where a queue's stored messages are: for each position, the segment, offset and length of its
 * record, and whether it is live (unread or leased), in 16 bytes. A small index is one array that
 * doubles as it fills; from `chunk` entries on, the entries go into arrays of `chunk` entries each, added
 * as needed and let go of once every entry in them has left, so that the index never makes a copy of
 * itself to grow (a pause of over 100 ms at millions of messages, and the old array held until the
 * next full garbage collection). Entries are kept in the order
 * they were added, which for puts is position order with a wrap now and then, so the positions
 * form a few runs of increasing numbers (`runs`), mostly consecutive ones; a lookup checks the runs
 * from the newest, at once in a run of consecutive positions, by binary search in one with gaps
 * (messages copied forward by compaction, slots past the ring whose messages went). A
 * position written again (the ring came round) or moved (compaction) gets a new entry and its old
 * one is marked dead (segment 0); dead entries and those whose segment is gone leave from the
 * oldest end, and all at once when they are most of the index (`sweep`). Read messages stay (a view
 * shows them) until their segment goes. An entry's number (`i`) holds until the next `add` or `trim`.
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
  /** Entries in an array of a large index: 2^shift (16,384 by default: 256 KiB). */
  private readonly chunk: number;
  private readonly mask: number;
  /** [pos, seg, off, len | LIVE] per entry: entry i is in chunks[(i >>> shift) - first]; entries
   * [head, tail) are in use. Small, one array of fewer than `chunk` entries (first 0). */
  private chunks: Uint32Array[] = [new Uint32Array(STRIDE * MIN)];
  private first = 0;
  private head = 0;
  private tail = 0;
  /** Counts the times entries were numbered afresh (moved to new arrays). */
  private moves = 0;
  /** Entries held after the last look at every entry (`sweep`). */
  private swept = 0;
  /** [first entry, its position, count] per run of consecutive positions, oldest first. */
  private runs: number[] = [];
  /** A snapshot being read (see `snapshot`). */
  private snap:
    | { chunks: Uint32Array[]; first: number; moves: number; from: number; to: number; next: number; saved: Map<number, [number, number]> }
    | undefined;

  /** `shift` and `renumberAt` (in arrays let go of: numbers stay below 2^32) are there for tests. */
  constructor(
    private readonly shift = 14,
    private readonly renumberAt = 2 ** 16,
  ) {
    this.chunk = 2 ** shift;
    this.mask = this.chunk - 1;
  }

  /** Entries held, dead ones not yet dropped included. */
  get size(): number {
    return this.tail - this.head;
  }

  /** Bytes of memory the entries take. */
  get bytes(): number {
    return this.chunks.reduce((n, c) => n + c.byteLength, 0);
  }

  private at(i: number): Uint32Array {
    return this.chunks[(i >>> this.shift) - this.first]!;
  }

  pos = (i: number): number => this.at(i)[STRIDE * (i & this.mask)]!;
  seg = (i: number): number => this.at(i)[STRIDE * (i & this.mask) + 1]!;
  off = (i: number): number => this.at(i)[STRIDE * (i & this.mask) + 2]!;
  len = (i: number): number => this.at(i)[STRIDE * (i & this.mask) + 3]! & ~LIVE;
  live = (i: number): boolean => (this.at(i)[STRIDE * (i & this.mask) + 3]! & LIVE) !== 0;

  setLive(i: number, live: boolean): void {
    this.keep(i);
    const [a, k] = [this.at(i), STRIDE * (i & this.mask) + 3];
    a[k] = live ? (a[k]! | LIVE) >>> 0 : a[k]! & ~LIVE;
  }

  /** Marks an entry dead for good (replaced, or its queue reset). */
  kill(i: number): void {
    this.keep(i);
    const [a, o] = [this.at(i), STRIDE * (i & this.mask)];
    a[o + 1] = 0;
    a[o + 3] = 0;
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
    const small = this.chunks[0]!.length < STRIDE * this.chunk;
    if (this.tail === (this.first + this.chunks.length) * (small ? this.chunks[0]!.length / STRIDE : this.chunk)) {
      const capacity = this.chunks[0]!.length / STRIDE;
      if (!small) this.chunks.push(new Uint32Array(STRIDE * this.chunk));
      // Small: doubled when three quarters are in use, else the entries move to the front.
      else this.renumber(this.size + 1 > 0.75 * capacity ? 2 * capacity : capacity);
    }
    const i = this.tail++;
    const [a, o] = [this.at(i), STRIDE * (i & this.mask)];
    a[o] = pos;
    a[o + 1] = seg;
    a[o + 2] = off;
    a[o + 3] = len;
    const r = this.runs;
    const k = r.length - 3;
    // A run goes on while positions increase (entries next to each other).
    if (k >= 0 && r[k]! + r[k + 2]! === i && i > this.head && this.pos(i - 1) < pos) r[k + 2]!++;
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
    if (h === this.head) {
      this.sweep(gone);
      return;
    }
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
    // Arrays whose entries have all left go; an index that became small is one array again.
    while (this.chunks.length > 1 && (this.first + 1) * this.chunk <= h) {
      this.chunks.shift();
      this.first++;
    }
    if (this.first >= this.renumberAt && !this.snap) {
      // Entries are numbered from 0 again where they are (numbers stay below 2^32, for `>>>`).
      const shift = this.first * this.chunk;
      this.first = 0;
      this.head -= shift;
      this.tail -= shift;
      this.moves++;
      for (let k = 0; k < r.length; k += 3) r[k]! -= shift;
    }
    this.fit();
    this.sweep(gone);
  }

  /** Trimming stops at the oldest entry still in a segment (one kept by other queues' messages),
   * so entries behind it that are dead or in segments that are `gone` would stay for good: each
   * time the index has doubled since it last looked, it looks at every entry, and if most are
   * such, keeps only the others (numbered afresh; not while a snapshot reads the entries). */
  private sweep(gone: (seg: number) => boolean): void {
    if (this.snap || this.size < 2 * Math.max(this.swept, this.chunk)) return;
    let keep = 0;
    for (let i = this.head; i < this.tail; i++) if (this.seg(i) !== 0 && !gone(this.seg(i))) keep++;
    if (2 * keep < this.size) {
      const [chunks, first, head, tail] = [this.chunks, this.first, this.head, this.tail];
      this.clear();
      for (let i = head; i < tail; i++) {
        const [a, o] = [chunks[(i >>> this.shift) - first]!, STRIDE * (i & this.mask)];
        if (a[o + 1] !== 0 && !gone(a[o + 1]!)) this.add(a[o]!, a[o + 1]!, a[o + 2]!, a[o + 3]!);
      }
    }
    this.swept = this.size;
  }

  /** An index that became small (a quarter of its array, or of one large array) is one array of
   * twice its size. */
  private fit(): void {
    const capacity = this.chunks[0]!.length / STRIDE;
    if (capacity === this.chunk ? 4 * this.size > this.chunk : this.size >= capacity / 4 || capacity <= MIN) return;
    let fit = MIN;
    while (fit < 2 * this.size) fit *= 2;
    this.renumber(fit);
  }

  clear(): void {
    this.chunks = [new Uint32Array(STRIDE * MIN)];
    this.first = this.head = this.tail = 0;
    this.runs = [];
    this.moves++;
  }

  /**
   * The entries as they are now, [pos, seg, off, len | LIVE] each, dead ones included, to be read
   * a piece at a time while the index goes on changing (a checkpoint): no copy is made. Until the
   * snapshot is released, an entry it has not handed out yet keeps its value of now in `saved`
   * before it changes; entries numbered afresh are in new arrays, and the snapshot reads the old.
   */
  snapshot(): EntrySource {
    const snap = {
      chunks: [...this.chunks],
      first: this.first,
      moves: this.moves,
      from: this.head,
      to: this.tail,
      next: this.head,
      saved: new Map<number, [number, number]>(),
    };
    this.snap = snap;
    return {
      length: STRIDE * (snap.to - snap.from),
      read: (at, into) => {
        const start = snap.from + at / STRIDE;
        const n = into.length / STRIDE;
        for (let i = start; i < start + n; ) {
          const a = snap.chunks[(i >>> this.shift) - snap.first]!;
          const run = Math.min(start + n - i, a.length / STRIDE - (i & this.mask));
          into.set(a.subarray(STRIDE * (i & this.mask), STRIDE * ((i & this.mask) + run)), STRIDE * (i - start));
          i += run;
        }
        for (const [i, [seg, len]] of snap.saved) {
          if (i < start || i >= start + n) continue;
          into[STRIDE * (i - start) + 1] = seg;
          into[STRIDE * (i - start) + 3] = len;
          snap.saved.delete(i);
        }
        snap.next = start + n;
      },
      release: () => {
        if (this.snap === snap) this.snap = undefined;
      },
    };
  }

  /** Before entry `i` changes: its value of now, for a snapshot that has not handed it out. */
  private keep(i: number): void {
    const snap = this.snap;
    if (!snap || snap.moves !== this.moves || i < snap.next || i >= snap.to || snap.saved.has(i)) return;
    const [a, o] = [this.at(i), STRIDE * (i & this.mask)];
    snap.saved.set(i, [a[o + 1]!, a[o + 3]!]);
  }

  /** Takes the entries a checkpoint saved as the index itself (no copy: the arrays are views of
   * `saved`, but for the last piece of a large one), keeping them in order but leaving out dead
   * entries and those whose segment is `gone`. */
  load(saved: Uint32Array, gone: (seg: number) => boolean): void {
    const n = saved.length / STRIDE;
    if (n < this.chunk) this.chunks = [n >= MIN ? saved : copyInto(new Uint32Array(STRIDE * MIN), saved)];
    else {
      this.chunks = [];
      for (let k = 0; k * this.chunk < n; k++) {
        const piece = saved.subarray(STRIDE * k * this.chunk, STRIDE * Math.min(n, (k + 1) * this.chunk));
        this.chunks.push(piece.length === STRIDE * this.chunk ? piece : copyInto(new Uint32Array(STRIDE * this.chunk), piece));
      }
    }
    this.first = this.head = this.tail = 0;
    this.runs = [];
    this.moves++;
    // Entries move towards the front as dead ones are left out: never past one not yet read.
    for (let k = 0; k < n; k++) {
      const o = STRIDE * k;
      const [pos, seg, off, len] = [saved[o]!, saved[o + 1]!, saved[o + 2]!, saved[o + 3]!];
      if (seg === 0 || gone(seg)) continue;
      this.add(pos, seg, off, len);
    }
    // Arrays left empty at the end go, and a large index that came out small is one array.
    if (this.chunks.length > 1) this.chunks.length = Math.max(1, Math.ceil(this.tail / this.chunk));
    this.fit();
  }

  /** Moves the entries to the front of one array of `capacity` entries (at most this.chunk): they are
   * numbered from 0 again. In place when the array stays and no snapshot reads it. */
  private renumber(capacity: number): void {
    const n = this.size;
    const old = this.chunks[0]!;
    if (this.chunks.length === 1 && old.length === STRIDE * capacity && !this.snap) {
      const from = this.head - this.first * this.chunk;
      old.copyWithin(0, STRIDE * from, STRIDE * (from + n));
    } else {
      const a = new Uint32Array(STRIDE * Math.min(capacity, this.chunk));
      for (let i = this.head, o = 0; i < this.tail; i++, o += STRIDE)
        a.set(this.at(i).subarray(STRIDE * (i & this.mask), STRIDE * (i & this.mask) + STRIDE), o);
      this.chunks = [a];
    }
    const shift = this.head;
    this.first = this.head = 0;
    this.tail = n;
    this.moves++;
    for (let k = 0; k < this.runs.length; k += 3) this.runs[k]! -= shift;
  }
}

function copyInto(into: Uint32Array, from: Uint32Array): Uint32Array {
  into.set(from);
  return into;
}
