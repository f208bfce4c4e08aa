/**
 * Leases (an extension, docs/EXTENSIONS.md): a message handed out with `lease=S` stays owned by
 * the consumer for S seconds. Acked, the lease goes; given back (nack) or expired, the message is
 * delivered again before any newer one. A put never writes over a leased position. These are the
 * rules, as pure functions over a queue's ring state and its lease table; stores apply them
 * inside one atomic operation, as they do the ring rules.
 */
import { MAX_POSITION, moved, nextGetPos, nextPutPos, type QueueState } from './ring.js';

export interface Lease {
  /** When the lease ends, in ms since the epoch; 0 when given back. */
  deadline: number;
  /** How many times the message has been handed out. */
  deliveries: number;
  /** Once a touch has moved `deadline`: the deadline the lease was granted with, which still names
   * the grant in its token (a touch whose answer was lost leaves the consumer's token good). */
  granted?: number;
}

export const MAX_LEASE_SECONDS = 86_400;
/** The most lease endings `opt=maxdeliveries` takes before a message becomes a dead letter. */
export const MAX_DELIVERIES = 1000;
/** Longest delay of a delayed put (`delay=S`), in seconds: 30 days. */
export const MAX_DELAY_SECONDS = 30 * 86_400;

/**
 * Messages that wait outside the ring (delayed puts, dead letters, and those moved back) are kept
 * at positions past it, FIRST_SLOT..LAST_SLOT, each with a lease-table entry saying why it waits:
 * - a delayed message: `deliveries` 0, `deadline` the time it is due (0: at once, after a redrive);
 * - a dead letter: `deadline` DEAD + the time it died, `deliveries` how often it went out. It is
 *   never due: only a redrive makes it deliverable again.
 * A due one is handed out as a lease that ended is (ahead of newer messages); its message is
 * deleted once its last lease ends (ack, or a plain get). Dead letters of a ring position are
 * copied to a slot, so that they hold no ring position.
 */
export const FIRST_SLOT = MAX_POSITION + 1;
export const LAST_SLOT = 0xfffffffe;
/** A lease deadline at or past this marks a dead letter (DEAD + when it died, in ms). */
export const DEAD = 2 ** 50;

export const isDead = (l: Lease): boolean => l.deadline >= DEAD;
/** When a dead letter died (ms since the epoch). */
export const diedAt = (l: Lease): number => l.deadline - DEAD;
/** Waiting to be handed out the first time (a delayed put, or a dead letter moved back). */
export const isDelayed = (l: Lease): boolean => l.deliveries === 0 && !isDead(l);

/** Names one grant of a lease (the `Lease` header), so that an ack or nack from a consumer whose
 * lease ended cannot settle the lease of whoever has the position now. A touch keeps it. */
export function leaseToken(l: Lease): string {
  return `${l.deliveries}-${l.granted ?? l.deadline}`;
}

/** One queue's leases, by position, with their deadlines in a min-heap, so that finding the lease
 * that ended first costs O(log n) however many are held (a scan made an mget of many over
 * 100,000 expired leases quadratic). A lease replaced or removed leaves its heap entry behind;
 * such entries are dropped when they reach the top, or all at once when they outnumber the live.
 *
 * Delayed messages and dead letters are leases too, so a queue may hold millions: they are kept
 * in columns (typed arrays, a row a lease), not as an object each: under 100 bytes a lease (the
 * position's map entry, its row and a heap entry; about 70 at a million) where objects took 184.
 * `get` and the walks hand out a new `Lease` each time, which the caller may keep. */
/** The columns of a table that never held a lease: most queues never do, and seven arrays of their
 * own took about 1.4 KiB a queue. Empty, they are never written; the first row grows them. */
const NO_F64 = new Float64Array(0);
const NO_U32 = new Uint32Array(0);

export class LeaseTable {
  /** Position → its row in the columns. */
  private readonly rows = new Map<number, number>();
  private deadlines = NO_F64;
  private delivered = NO_U32;
  private positions = NO_U32;
  /** Bumped when a row is set or freed: a heap entry is live while its row has the generation it
   * was pushed with. */
  private gens = NO_U32;
  /** The deadlines touched leases were granted with, by row (few leases are touched). */
  private readonly grants = new Map<number, number>();
  /** Rows freed, for reuse; rows past `end` were never used. */
  private free: number[] = [];
  private end = 0;
  /** The heap: an entry's deadline, position, row and that row's generation when it was pushed.
   * The position is the entry's own: a stale entry's row may hold another position by now, and
   * ordering by that would break the heap's order among equal deadlines. */
  private hDeadline = NO_F64;
  private hPos = NO_U32;
  private hRow = NO_U32;
  private hGen = NO_U32;
  private hLen = 0;
  /** How many of the leases are delayed messages, dead letters, and at slots (outside the ring). */
  delayed = 0;
  dead = 0;
  slots = 0;
  /** The last slot taken (`slotCursor`): new slots are taken after it. */
  private lastSlot = FIRST_SLOT - 1;
  /** The positions of the dead letters, for paging through them: in order while each new one comes
   * at a higher slot than the last (as they do), sorted again when one does not; a position no
   * longer dead stays until the next sort, which comes once such positions outnumber the dead. */
  private deadPositions: number[] = [];
  private deadSorted = true;

  get size(): number {
    return this.rows.size;
  }

  /** Leases held by consumers (neither delayed nor dead). */
  get leased(): number {
    return this.rows.size - this.delayed - this.dead;
  }

  /** The last slot taken. Stores keep it across restarts, so that a slot is not handed out again
   * while a client may still know another message by it (not before the slots wrap around). */
  get slotCursor(): number {
    return this.lastSlot;
  }

  /** Where the store said the last slot taken was (a table built again from what it kept). */
  setSlotCursor(slot: number): void {
    if (slot >= FIRST_SLOT && slot <= LAST_SLOT) this.lastSlot = slot;
  }

  /** Takes a slot for a message to wait at: the one after the last taken, and past LAST_SLOT the
   * first again, skipping those still held, as ring positions wrap. The caller keeps fewer than
   * maxqueue (at most 10^9) held, so one is free. */
  takeSlot(): number {
    let slot = this.lastSlot;
    do slot = slot >= LAST_SLOT ? FIRST_SLOT : slot + 1;
    while (this.rows.has(slot));
    this.lastSlot = slot;
    return slot;
  }

  /** The lease of a row, as a new object. */
  private leaseAt(row: number): Lease {
    const l: Lease = { deadline: this.deadlines[row]!, deliveries: this.delivered[row]! };
    const granted = this.grants.size === 0 ? undefined : this.grants.get(row);
    if (granted !== undefined) l.granted = granted;
    return l;
  }

  /** The first `max` dead letters, those that died first first (ties: lower position first). One
   * pass keeps the first `max` seen so far in a heap (the last of them on top): O(dead log max)
   * time and O(max) memory, however many dead letters the queue holds (a redrive takes 1000 at
   * most; sorting them all took a second and an array as large at a million). */
  deadLetters(max = Number.POSITIVE_INFINITY): Array<[number, Lease]> {
    const kept: number[] = [];
    if (this.dead === 0 || max < 1) return [];
    const d = this.deadlines;
    const first = (a: number, b: number) => d[a]! < d[b]! || (d[a] === d[b] && this.positions[a]! < this.positions[b]!);
    const later = (a: number, b: number) => first(b, a);
    for (const row of this.rows.values()) {
      if (d[row]! < DEAD) continue;
      if (kept.length < max) heapPush(kept, row, later);
      else if (first(row, kept[0]!)) {
        heapPop(kept, later);
        heapPush(kept, row, later);
      }
    }
    return kept.sort((a, b) => (first(a, b) ? -1 : 1)).map((row) => [this.positions[row]!, this.leaseAt(row)]);
  }

  private count(pos: number, l: Lease, by: number): void {
    if (isDead(l)) {
      this.dead += by;
      if (by > 0) {
        const last = this.deadPositions.at(-1);
        if (last !== undefined && last >= pos) this.deadSorted = false;
        this.deadPositions.push(pos);
      }
    } else if (l.deliveries === 0) this.delayed += by;
    if (pos >= FIRST_SLOT) this.slots += by;
  }

  /** Up to `limit` dead letters at positions after `after`, in position order: O(log n + limit)
   * while they come in order. */
  deadAfter(after: number, limit: number): Array<[number, Lease]> {
    if (!this.deadSorted || this.deadPositions.length > 2 * this.dead + 64) {
      this.deadPositions = [];
      for (const [pos, row] of this.rows) if (this.deadlines[row]! >= DEAD) this.deadPositions.push(pos);
      this.deadPositions.sort((a, b) => a - b);
      this.deadSorted = true;
    }
    const d = this.deadPositions;
    let lo = 0;
    for (let hi = d.length; lo < hi; ) {
      const mid = (lo + hi) >> 1;
      if (d[mid]! <= after) lo = mid + 1;
      else hi = mid;
    }
    const out: Array<[number, Lease]> = [];
    for (let i = lo; i < d.length && out.length < limit; i++) {
      const pos = d[i]!;
      const l = this.get(pos);
      if (l && isDead(l)) out.push([pos, l]); // else no longer dead (redriven, discarded)
    }
    return out;
  }

  has(pos: number): boolean {
    return this.rows.has(pos);
  }

  get(pos: number): Lease | undefined {
    const row = this.rows.get(pos);
    return row === undefined ? undefined : this.leaseAt(row);
  }

  set(pos: number, lease: Lease): void {
    let row = this.rows.get(pos);
    if (row !== undefined) this.count(pos, this.leaseAt(row), -1);
    // A table built again, or an import: slots are taken after the highest held (before a wrap).
    else if (pos > this.lastSlot) this.lastSlot = pos;
    if (row === undefined) {
      row = this.free.pop() ?? this.newRow();
      this.rows.set(pos, row);
    }
    this.deadlines[row] = lease.deadline;
    this.delivered[row] = lease.deliveries;
    this.positions[row] = pos;
    this.gens[row] = (this.gens[row]! + 1) >>> 0;
    if (lease.granted === undefined) this.grants.delete(row);
    else this.grants.set(row, lease.granted);
    this.count(pos, lease, 1);
    // A dead letter is never due: it stays out of the heap.
    if (!isDead(lease)) this.push(row);
    this.compact();
  }

  delete(pos: number): boolean {
    const row = this.rows.get(pos);
    if (row === undefined) return false;
    this.count(pos, this.leaseAt(row), -1);
    this.rows.delete(pos);
    this.grants.delete(row);
    this.gens[row] = (this.gens[row]! + 1) >>> 0;
    this.free.push(row);
    this.compact();
    return true;
  }

  *entries(): IterableIterator<[number, Lease]> {
    for (const [pos, row] of this.rows) yield [pos, this.leaseAt(row)];
  }

  /** The lease that ended first by `now` (ties: the lower position), if any has. */
  due(now: number): [number, Lease] | undefined {
    const row = this.top();
    return row !== undefined && this.deadlines[row]! <= now ? [this.positions[row]!, this.leaseAt(row)] : undefined;
  }

  /** When the next lease ends, if any is held. */
  nextDeadline(): number | undefined {
    const row = this.top();
    return row === undefined ? undefined : this.deadlines[row];
  }

  private newRow(): number {
    if (this.end === this.deadlines.length) {
      const n = Math.max(8, this.end * 2);
      [this.deadlines, this.delivered, this.positions, this.gens] = [
        grown(this.deadlines, n),
        grown(this.delivered, n),
        grown(this.positions, n),
        grown(this.gens, n),
      ];
    }
    return this.end++;
  }

  private live(i: number): boolean {
    return this.gens[this.hRow[i]!] === this.hGen[i];
  }

  /** The row of the earliest live entry, after dropping dead ones above it. */
  private top(): number | undefined {
    while (this.hLen > 0) {
      if (this.live(0)) return this.hRow[0];
      this.pop();
    }
    return undefined;
  }

  /** Drops the dead heap entries once they outnumber the live ones, and packs the rows once most
   * are free, so that a queue that held many leases keeps no room for them (amortized O(1) a
   * change). */
  private compact(): void {
    const live = this.rows.size;
    if (this.end > 4 * live + 64) {
      const n = Math.max(8, 2 * live);
      const [deadlines, delivered, positions] = [new Float64Array(n), new Uint32Array(n), new Uint32Array(n)];
      const grants = new Map(this.grants);
      this.grants.clear();
      let row = 0;
      for (const [pos, old] of this.rows) {
        [deadlines[row], delivered[row], positions[row]] = [this.deadlines[old]!, this.delivered[old]!, pos];
        const granted = grants.get(old);
        if (granted !== undefined) this.grants.set(row, granted);
        this.rows.set(pos, row++);
      }
      [this.deadlines, this.delivered, this.positions, this.gens, this.free, this.end] = [deadlines, delivered, positions, new Uint32Array(n), [], row];
      this.hLen = 0; // every entry named the old rows
    } else if (this.hLen <= 2 * live + 64) return;
    if (this.hDeadline.length > 4 * live + 64) {
      const n = 2 * live + 8;
      [this.hDeadline, this.hPos, this.hRow, this.hGen] = [new Float64Array(n), new Uint32Array(n), new Uint32Array(n), new Uint32Array(n)];
    }
    this.hLen = 0;
    for (const row of this.rows.values()) if (this.deadlines[row]! < DEAD) this.push(row);
  }

  /** Whether heap entry `a` comes before `b`: the earlier deadline, then the lower position. */
  private before(a: number, b: number): boolean {
    const da = this.hDeadline[a]!;
    const db = this.hDeadline[b]!;
    return da < db || (da === db && this.hPos[a]! < this.hPos[b]!);
  }

  private swap(a: number, b: number): void {
    const { hDeadline: d, hPos: p, hRow: r, hGen: g } = this;
    const da = d[a]!;
    const pa = p[a]!;
    const ra = r[a]!;
    const ga = g[a]!;
    d[a] = d[b]!;
    p[a] = p[b]!;
    r[a] = r[b]!;
    g[a] = g[b]!;
    d[b] = da;
    p[b] = pa;
    r[b] = ra;
    g[b] = ga;
  }

  private push(row: number): void {
    if (this.hLen === this.hDeadline.length) {
      const n = Math.max(8, this.hLen * 2);
      [this.hDeadline, this.hPos, this.hRow, this.hGen] = [grown(this.hDeadline, n), grown(this.hPos, n), grown(this.hRow, n), grown(this.hGen, n)];
    }
    let i = this.hLen++;
    this.hDeadline[i] = this.deadlines[row]!;
    this.hPos[i] = this.positions[row]!;
    this.hRow[i] = row;
    this.hGen[i] = this.gens[row]!;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  private pop(): void {
    const last = --this.hLen;
    if (last === 0) return;
    this.swap(0, last);
    for (let i = 0; ; ) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < last && this.before(l, m)) m = l;
      if (r < last && this.before(r, m)) m = r;
      if (m === i) return;
      this.swap(i, m);
      i = m;
    }
  }

  /** The leases that have ended by `now`, in the order `due` hands them out one after another
   * (those that ended first first; ties: the lower position), without changing the table: the
   * heap is walked from its top, O(log n) a lease however many are held. */
  *dueInOrder(now: number): Generator<[number, Lease]> {
    const before = (a: number, b: number) => this.before(a, b);
    // The walk's frontier: heap indexes, themselves in a heap by their entries.
    const frontier: number[] = [];
    const reach = (i: number) => i < this.hLen && this.hDeadline[i]! <= now && heapPush(frontier, i, before);
    reach(0);
    for (let i = heapPop(frontier, before); i !== undefined; i = heapPop(frontier, before)) {
      if (this.live(i)) yield [this.positions[this.hRow[i]!]!, this.leaseAt(this.hRow[i]!)];
      reach(2 * i + 1);
      reach(2 * i + 2);
    }
  }
}

/** `a` in a typed array of `n` elements (at least its own). */
function grown<T extends Float64Array | Uint32Array>(a: T, n: number): T {
  const b = new (a.constructor as new (n: number) => T)(n);
  b.set(a);
  return b;
}

/** Adds `e` to the binary min-heap `h` (ordered by `before`). */
function heapPush<T>(h: T[], e: T, before: (a: T, b: T) => boolean): void {
  let i = h.push(e) - 1;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (!before(h[i]!, h[parent]!)) break;
    [h[i], h[parent]] = [h[parent]!, h[i]!];
    i = parent;
  }
}

/** Removes and returns the least entry of the binary min-heap `h`. */
function heapPop<T>(h: T[], before: (a: T, b: T) => boolean): T | undefined {
  const top = h[0];
  const last = h.pop();
  if (h.length === 0) return top;
  h[0] = last!;
  for (let i = 0; ; ) {
    const l = 2 * i + 1;
    const r = l + 1;
    let m = i;
    if (l < h.length && before(h[l]!, h[m]!)) m = l;
    if (r < h.length && before(h[r]!, h[m]!)) m = r;
    if (m === i) return top;
    [h[i], h[m]] = [h[m]!, h[i]!];
    i = m;
  }
}

/** A slot for one more message to wait outside the ring, or 0: a queue keeps at most maxqueue there. */
export function slotFor(s: QueueState, leases: LeaseTable): number {
  return leases.slots < s.maxqueue ? leases.takeSlot() : 0;
}

/** The position the next put writes, or 0 when full: the ring's answer, unless that position is leased. */
export function putPosition(s: QueueState, leases: LeaseTable): number {
  const pos = nextPutPos(s);
  return pos && !leases.has(pos) ? pos : 0;
}

export interface Take {
  pos: number;
  /** Counting this one. */
  deliveries: number;
  /** The queue's next state (getpos moves only for a first delivery). */
  next: QueueState;
  /** The lease to hold from now, or undefined to hold none (a plain get). */
  lease: Lease | undefined;
}

/**
 * What a get takes at `now`: first a message whose lease ended (it is due again), else the next
 * unread one; undefined when there is neither. With `leaseMs` the message is leased for that
 * long, without it the get is the reference's at-most-once get (a redelivery then ends the lease).
 */
export function take(s: QueueState, leases: LeaseTable, now: number, leaseMs?: number): Take | undefined {
  const due = leases.due(now);
  if (due) {
    const deliveries = due[1].deliveries + 1;
    return { pos: due[0], deliveries, next: s, lease: leaseMs ? { deadline: now + leaseMs, deliveries } : undefined };
  }
  const pos = nextGetPos(s);
  if (!pos) return undefined;
  return { pos, deliveries: 1, next: moved(s, s.putpos, pos), lease: leaseMs ? { deadline: now + leaseMs, deliveries: 1 } : undefined };
}
