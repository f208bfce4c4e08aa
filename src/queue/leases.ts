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
 * such entries are dropped when they reach the top, or all at once when they outnumber the live. */
export class LeaseTable {
  private readonly byPos = new Map<number, Lease>();
  /** [deadline, pos, the lease itself]: an entry is live while `byPos` still holds that lease. */
  private heap: Array<[number, number, Lease]> = [];
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
    return this.byPos.size;
  }

  /** Leases held by consumers (neither delayed nor dead). */
  get leased(): number {
    return this.byPos.size - this.delayed - this.dead;
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
    while (this.byPos.has(slot));
    this.lastSlot = slot;
    return slot;
  }

  /** The first `max` dead letters, those that died first first (ties: lower position first). One
   * pass keeps the first `max` seen so far in a heap (the last of them on top): O(dead log max)
   * time and O(max) memory, however many dead letters the queue holds (a redrive takes 1000 at
   * most; sorting them all took a second and an array as large at a million). */
  deadLetters(max = Number.POSITIVE_INFINITY): Array<[number, Lease]> {
    const kept: Array<[number, Lease]> = [];
    if (this.dead === 0 || max < 1) return kept;
    const first = (a: [number, Lease], b: [number, Lease]) => a[1].deadline < b[1].deadline || (a[1].deadline === b[1].deadline && a[0] < b[0]);
    const later = (a: [number, Lease], b: [number, Lease]) => first(b, a);
    for (const e of this.byPos) {
      if (!isDead(e[1])) continue;
      if (kept.length < max) heapPush(kept, e, later);
      else if (first(e, kept[0]!)) {
        heapPop(kept, later);
        heapPush(kept, e, later);
      }
    }
    return kept.sort((a, b) => (first(a, b) ? -1 : 1));
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
      for (const [pos, l] of this.byPos) if (isDead(l)) this.deadPositions.push(pos);
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
      const l = this.byPos.get(pos);
      if (l && isDead(l)) out.push([pos, l]); // else no longer dead (redriven, discarded)
    }
    return out;
  }

  has(pos: number): boolean {
    return this.byPos.has(pos);
  }

  get(pos: number): Lease | undefined {
    return this.byPos.get(pos);
  }

  set(pos: number, lease: Lease): void {
    const old = this.byPos.get(pos);
    if (old) this.count(pos, old, -1);
    this.byPos.set(pos, lease);
    this.count(pos, lease, 1);
    // A table built again, or an import: slots are taken after the highest held (before a wrap).
    if (!old && pos > this.lastSlot) this.lastSlot = pos;
    // A dead letter is never due: it stays out of the heap.
    if (!isDead(lease)) this.push([lease.deadline, pos, lease]);
    this.compact();
  }

  delete(pos: number): boolean {
    const old = this.byPos.get(pos);
    if (!old) return false;
    this.count(pos, old, -1);
    this.byPos.delete(pos);
    this.compact();
    return true;
  }

  entries(): IterableIterator<[number, Lease]> {
    return this.byPos.entries();
  }

  /** The lease that ended first by `now` (ties: the lower position), if any has. */
  due(now: number): [number, Lease] | undefined {
    const top = this.top();
    return top && top[0] <= now ? [top[1], top[2]] : undefined;
  }

  /** When the next lease ends, if any is held. */
  nextDeadline(): number | undefined {
    return this.top()?.[0];
  }

  /** The earliest live entry, after dropping dead ones above it. */
  private top(): [number, number, Lease] | undefined {
    for (let t = this.heap[0]; t; t = this.heap[0]) {
      if (this.byPos.get(t[1]) === t[2]) return t;
      this.pop();
    }
    return undefined;
  }

  /** Drops the dead entries once they outnumber the live ones (amortized O(1) a change). */
  private compact(): void {
    if (this.heap.length <= 2 * this.byPos.size + 64) return;
    this.heap = [];
    for (const [pos, lease] of this.byPos) if (!isDead(lease)) this.push([lease.deadline, pos, lease]);
  }

  private static before(a: [number, number, Lease], b: [number, number, Lease]): boolean {
    return a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
  }

  private push(e: [number, number, Lease]): void {
    heapPush(this.heap, e, LeaseTable.before);
  }

  private pop(): void {
    heapPop(this.heap, LeaseTable.before);
  }

  /** The leases that have ended by `now`, in the order `due` hands them out one after another
   * (those that ended first first; ties: the lower position), without changing the table: the
   * heap is walked from its top, O(log n) a lease however many are held. */
  *dueInOrder(now: number): Generator<[number, Lease]> {
    const h = this.heap;
    const before = (a: number, b: number) => LeaseTable.before(h[a]!, h[b]!);
    // The walk's frontier: heap indexes, themselves in a heap by their entries.
    const frontier: number[] = [];
    const reach = (i: number) => i < h.length && h[i]![0] <= now && heapPush(frontier, i, before);
    reach(0);
    for (let i = heapPop(frontier, before); i !== undefined; i = heapPop(frontier, before)) {
      const [, pos, lease] = h[i]!;
      if (this.byPos.get(pos) === lease) yield [pos, lease];
      reach(2 * i + 1);
      reach(2 * i + 2);
    }
  }
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
