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

/** One queue's leases, by position. */
export class LeaseTable {
  private readonly byPos = new Map<number, Lease>();
  /** No deadline is earlier than this; it saves a scan on most gets. */
  private earliest = Infinity;

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
    if (lease.deadline < this.earliest) this.earliest = lease.deadline;
  }

  delete(pos: number): boolean {
    return this.byPos.delete(pos);
  }

  entries(): IterableIterator<[number, Lease]> {
    return this.byPos.entries();
  }

  /** The lease that ended first by `now` (ties: the lower position), if any has. */
  due(now: number): [number, Lease] | undefined {
    if (now < this.earliest) return undefined;
    let best: [number, Lease] | undefined;
    let min = Infinity;
    for (const entry of this.byPos) {
      const [pos, l] = entry;
      if (l.deadline < min) min = l.deadline;
      if (l.deadline <= now && (!best || l.deadline < best[1].deadline || (l.deadline === best[1].deadline && pos < best[0]))) best = entry;
    }
    this.earliest = min;
    return best;
  }

  /** When the next lease ends, if any is held. */
  nextDeadline(): number | undefined {
    let min = Infinity;
    for (const l of this.byPos.values()) if (l.deadline < min) min = l.deadline;
    this.earliest = min;
    return min === Infinity ? undefined : min;
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
