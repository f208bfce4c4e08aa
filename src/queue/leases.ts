/**
 * Leases (an extension, docs/EXTENSIONS.md): a message handed out with `lease=S` stays owned by
 * the consumer for S seconds. Acked, the lease goes; given back (nack) or expired, the message is
 * delivered again before any newer one. A put never writes over a leased position. These are the
 * rules, as pure functions over a queue's ring state and its lease table; stores apply them
 * inside one atomic operation, as they do the ring rules.
 */
import { nextGetPos, nextPutPos, type QueueState } from './ring.js';

export interface Lease {
  /** When the lease ends, in ms since the epoch; 0 when given back. */
  deadline: number;
  /** How many times the message has been handed out. */
  deliveries: number;
}

export const MAX_LEASE_SECONDS = 86_400;

/** Names one grant of a lease (the `Lease` header), so that an ack or nack from a consumer whose
 * lease ended cannot settle the lease of whoever has the position now. */
export function leaseToken(l: Lease): string {
  return `${l.deliveries}-${l.deadline}`;
}

/** One queue's leases, by position, with their deadlines in a min-heap, so that finding the lease
 * that ended first costs O(log n) however many are held (a scan made an mget of many over
 * 100,000 expired leases quadratic). A lease replaced or removed leaves its heap entry behind;
 * such entries are dropped when they reach the top, or all at once when they outnumber the live. */
export class LeaseTable {
  private readonly byPos = new Map<number, Lease>();
  /** [deadline, pos, the lease itself]: an entry is live while `byPos` still holds that lease. */
  private heap: Array<[number, number, Lease]> = [];

  get size(): number {
    return this.byPos.size;
  }

  has(pos: number): boolean {
    return this.byPos.has(pos);
  }

  get(pos: number): Lease | undefined {
    return this.byPos.get(pos);
  }

  set(pos: number, lease: Lease): void {
    this.byPos.set(pos, lease);
    this.push([lease.deadline, pos, lease]);
    this.compact();
  }

  delete(pos: number): boolean {
    const had = this.byPos.delete(pos);
    this.compact();
    return had;
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
    for (const [pos, lease] of this.byPos) this.push([lease.deadline, pos, lease]);
  }

  private static before(a: [number, number, Lease], b: [number, number, Lease]): boolean {
    return a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
  }

  private push(e: [number, number, Lease]): void {
    const h = this.heap;
    let i = h.push(e) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!LeaseTable.before(h[i]!, h[parent]!)) break;
      [h[i], h[parent]] = [h[parent]!, h[i]!];
      i = parent;
    }
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop()!;
    if (h.length === 0) return;
    h[0] = last;
    for (let i = 0; ; ) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && LeaseTable.before(h[l]!, h[m]!)) m = l;
      if (r < h.length && LeaseTable.before(h[r]!, h[m]!)) m = r;
      if (m === i) return;
      [h[i], h[m]] = [h[m]!, h[i]!];
      i = m;
    }
  }
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
  return { pos, deliveries: 1, next: { ...s, getpos: pos }, lease: leaseMs ? { deadline: now + leaseMs, deliveries: 1 } : undefined };
}
