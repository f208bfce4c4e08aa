/**
 * What each operation decides, the same for both embedded engines: a plan runs on one queue's state
 * (the rules of `queue/ring.ts` and `queue/leases.ts`) and says what changes through a `Draft`,
 * which the engine turns into its own writes (LMDB keys, journal records).
 */
import { leaseToken, putPosition, take, type Lease, type LeaseTable } from '../queue/leases.js';
import { canSetMaxqueue, type QueueState } from '../queue/ring.js';
import type { Delivery } from './store.js';

/** One operation on one queue, as an engine runs it. */
export interface Draft {
  readonly q: { s: QueueState; leases: LeaseTable };
  /** The message stored at `pos`, if any. */
  read(pos: number): Buffer | undefined;
  /** A message stored at `pos`, the queue's new put position. */
  put(pos: number, message: Buffer): void;
  /** A take moved the read position: `next` is the queue's state after it. */
  advance(next: QueueState): void;
  maxqueue(num: number): void;
  /** The lease at `pos` is now `lease`, or ended (undefined). */
  lease(pos: number, lease: Lease | undefined): void;
}

export type Plan<T> = (d: Draft) => T;

/** Stores messages in order, as many as fit; their positions. */
export const putPlan =
  (messages: Buffer[]): Plan<number[]> =>
  (d) => {
    const positions: number[] = [];
    for (const message of messages) {
      const pos = putPosition(d.q.s, d.q.leases);
      if (!pos) break;
      d.put(pos, message);
      positions.push(pos);
    }
    return positions;
  };

/** Hands out up to `limit` messages (due leases first); with `maxBytes`, as many as fit in that
 * many bytes, the first whatever its size. */
export const takePlan =
  (limit: number, now: () => number, leaseMs: number | undefined, maxBytes: number): Plan<Delivery[]> =>
  (d) => {
    const at = now();
    const out: Delivery[] = [];
    let bytes = 0;
    while (out.length < limit) {
      const t = take(d.q.s, d.q.leases, at, leaseMs);
      if (!t) break;
      const message = d.read(t.pos);
      // Decided before anything changes: a message that does not fit stays where it is.
      if (message && out.length > 0 && bytes + message.length > maxBytes) break;
      if (t.next !== d.q.s) d.advance(t.next);
      if (!message) {
        // A position whose put failed while a later one was written: that put was answered with
        // an error, so there is nothing to deliver here.
        if (d.q.leases.has(t.pos)) d.lease(t.pos, undefined);
        continue;
      }
      bytes += message.length;
      if (t.lease || d.q.leases.has(t.pos)) d.lease(t.pos, t.lease);
      const delivery: Delivery = { pos: t.pos, message, deliveries: t.deliveries };
      if (t.lease) delivery.lease = leaseToken(t.lease);
      out.push(delivery);
    }
    return out;
  };

export const maxqueuePlan =
  (num: number): Plan<boolean> =>
  (d) => {
    if (!canSetMaxqueue(d.q.s, num)) return false;
    d.maxqueue(num);
    return true;
  };

/** Ends the lease at `pos` (ack), or makes it due now (nack); false when no lease of `token` is there. */
export const settlePlan =
  (pos: number, outcome: 'ack' | 'nack', token: string | undefined): Plan<boolean> =>
  (d) => {
    const held = d.q.leases.get(pos);
    if (!held || (token !== undefined && token !== leaseToken(held))) return false;
    d.lease(pos, outcome === 'ack' ? undefined : { deadline: 0, deliveries: held.deliveries });
    return true;
  };

/** Extends a running lease to `leaseMs` from now; its new token, or null. */
export const touchPlan =
  (pos: number, leaseMs: number, now: () => number, token: string | undefined): Plan<string | null> =>
  (d) => {
    const held = d.q.leases.get(pos);
    const at = now();
    if (!held || held.deadline <= at || (token !== undefined && token !== leaseToken(held))) return null;
    const lease = { deadline: at + leaseMs, deliveries: held.deliveries };
    d.lease(pos, lease);
    return leaseToken(lease);
  };
