/**
 * What each operation decides, the same for both embedded engines: a plan runs on one queue's state
 * (the rules of `queue/ring.ts` and `queue/leases.ts`) and says what changes through a `Draft`,
 * which the engine turns into its own writes (LMDB keys, journal records).
 */
import { DEAD, FIRST_SLOT, isDead, leaseToken, putPosition, slotFor, take, type Lease, type LeaseTable } from '../queue/leases.js';
import { canSetMaxqueue, MAX_PASSED_OVER, type QueueState } from '../queue/ring.js';
import type { Delivery } from './store.js';

/** One operation on one queue, as an engine runs it. */
export interface Draft {
  readonly q: { s: QueueState; leases: LeaseTable };
  /** The message stored at `pos`, if any. */
  read(pos: number): Buffer | undefined;
  /** A message stored at `pos`, the queue's new put position. */
  put(pos: number, message: Buffer): void;
  /** A message stored at a slot past the ring (leases.ts); the ring does not change. */
  store(pos: number, message: Buffer): void;
  /** The message at a slot is deleted (its last lease ended). */
  drop(pos: number): void;
  /** A take moved the read position: `next` is the queue's state after it. */
  advance(next: QueueState): void;
  maxqueue(num: number): void;
  maxdeliveries(num: number): void;
  /** The lease at `pos` is now `lease`, or ended (undefined). */
  lease(pos: number, lease: Lease | undefined): void;
  /** A take at `at` hands out the message at `pos` (for an engine that may have to undo it). */
  took?(pos: number, message: Buffer, at: number): void;
}

export type Plan<T> = (d: Draft) => T;

/** Stores messages in order, as many as fit; their positions. Delayed (`dueAt`, ms since the
 * epoch), they wait at slots past the ring until then; their slots. */
export const putPlan =
  (messages: Buffer[], dueAt?: number): Plan<number[]> =>
  (d) => {
    const positions: number[] = [];
    for (const message of messages) {
      const pos = dueAt === undefined ? putPosition(d.q.s, d.q.leases) : slotFor(d.q.s, d.q.leases);
      if (!pos) break;
      if (dueAt === undefined) d.put(pos, message);
      else {
        d.store(pos, message);
        d.lease(pos, { deadline: dueAt, deliveries: 0 });
      }
      positions.push(pos);
    }
    return positions;
  };

/** The lease at `pos` (holding `message`) ended for the last time allowed: the message becomes a
 * dead letter, at a slot. False when no slot is free (it is then handed out again). */
function bury(d: Draft, pos: number, message: Buffer, deliveries: number, at: number): boolean {
  const dead: Lease = { deadline: DEAD + at, deliveries };
  if (pos >= FIRST_SLOT) {
    d.lease(pos, dead);
    return true;
  }
  const slot = slotFor(d.q.s, d.q.leases);
  if (!slot) return false;
  d.store(slot, message);
  d.lease(slot, dead);
  d.lease(pos, undefined);
  return true;
}

/** Whether a message that went out `deliveries` times, and came back each time, is done for. */
const spent = (d: Draft, deliveries: number): boolean => !!d.q.s.maxdeliveries && deliveries >= d.q.s.maxdeliveries;

/** The leases a take at `at` of up to `limit` messages may turn into dead letters (due, their last
 * delivery allowed ended), or a nack of `pos` may: for the room an engine counts their writes need
 * before it runs the plan. An upper bound: the due leases are looked at in the order the take
 * meets them, until `limit` others that it would hand out (`stored`: their message is there), so
 * that a get costs O(log n) a lease it takes, not a walk of every lease held. Nothing without a
 * maxdeliveries. */
export function spentLeases(q: Draft['q'], at: number, pos?: number, limit = Infinity, stored: (pos: number) => boolean = () => true): Array<[number, Lease]> {
  const md = q.s.maxdeliveries;
  const out: Array<[number, Lease]> = [];
  if (!md) return out;
  const spent = (l: Lease) => l.deliveries >= md && !isDead(l);
  if (pos !== undefined) {
    const l = q.leases.get(pos);
    if (l && spent(l)) out.push([pos, l]);
    return out;
  }
  let handedOut = 0;
  for (const [p, l] of q.leases.dueInOrder(at)) {
    if (handedOut >= limit) break;
    if (spent(l)) out.push([p, l]);
    else if (stored(p)) handedOut++;
  }
  return out;
}

/** Hands out up to `limit` messages (due leases first); with `maxBytes`, as many as fit in that
 * many bytes, the first whatever its size. */
export const takePlan =
  (limit: number, now: () => number, leaseMs: number | undefined, maxBytes: number, onTaken?: (bytes: number) => void): Plan<Delivery[]> =>
  (d) => {
    const at = now();
    const out: Delivery[] = [];
    let bytes = 0;
    let passed = 0;
    while (out.length < limit) {
      const t = take(d.q.s, d.q.leases, at, leaseMs);
      if (!t) break;
      let message: Buffer | undefined;
      try {
        message = d.read(t.pos);
      } catch (err) {
        // Stored but not readable now (the engine said why): it stays where it is, for later.
        if (out.length > 0) break;
        throw err;
      }
      // Decided before anything changes: a message that does not fit stays where it is.
      if (message && out.length > 0 && bytes + message.length > maxBytes) break;
      if (t.next !== d.q.s) d.advance(t.next);
      if (!message) {
        // A position whose put failed while a later one was written: that put was answered with
        // an error, so there is nothing to deliver here.
        if (d.q.leases.has(t.pos)) d.lease(t.pos, undefined);
        if (++passed >= MAX_PASSED_OVER) break;
        continue;
      }
      if (spent(d, t.deliveries - 1) && bury(d, t.pos, message, t.deliveries - 1, at)) continue;
      bytes += message.length;
      if (t.lease || d.q.leases.has(t.pos)) d.lease(t.pos, t.lease);
      if (!t.lease && t.pos >= FIRST_SLOT) d.drop(t.pos);
      d.took?.(t.pos, message, at);
      const delivery: Delivery = { pos: t.pos, message, deliveries: t.deliveries };
      if (t.lease) delivery.lease = leaseToken(t.lease);
      out.push(delivery);
    }
    if (bytes) onTaken?.(bytes);
    return out;
  };

/** Written even when the queue has it already: that may be a setting whose write is still on its
 * way (a retry of a request not yet answered), and the answer must not come before it is stored. */
export const maxdeliveriesPlan =
  (num: number): Plan<void> =>
  (d) => {
    d.maxdeliveries(num);
  };

/** Makes up to `max` dead letters deliverable again (those that died first first), as new
 * messages: due at once, ahead of newer ones, their deliveries counted afresh. How many it moved. */
export const redrivePlan =
  (max: number): Plan<number> =>
  (d) => {
    const dead = d.q.leases.deadLetters(max);
    for (const [pos] of dead) d.lease(pos, { deadline: 0, deliveries: 0 });
    return dead.length;
  };

/** Deletes the dead letter at `pos`; false when there is none there. */
export const discardPlan =
  (pos: number): Plan<boolean> =>
  (d) => {
    const l = d.q.leases.get(pos);
    if (!l || !isDead(l)) return false;
    d.lease(pos, undefined);
    d.drop(pos);
    return true;
  };

export const maxqueuePlan =
  (num: number): Plan<boolean> =>
  (d) => {
    if (!canSetMaxqueue(d.q.s, num)) return false;
    d.maxqueue(num);
    return true;
  };

/** A lease a consumer holds at `pos` (not a delayed message, a dead letter or a message given
 * back by a nack, deadline 0), of `token` if given. */
function held(d: Draft, pos: number, token: string | undefined): Lease | undefined {
  const l = d.q.leases.get(pos);
  return l && l.deliveries > 0 && l.deadline !== 0 && !isDead(l) && (token === undefined || token === leaseToken(l)) ? l : undefined;
}

/** Ends the lease at `pos` (ack), or makes it due now (nack; a dead letter when that was its last
 * delivery allowed); false when no lease of `token` is there. */
export const settlePlan =
  (pos: number, outcome: 'ack' | 'nack', token: string | undefined, now: () => number): Plan<boolean> =>
  (d) => {
    const l = held(d, pos, token);
    if (!l) return false;
    if (outcome === 'nack') {
      const message = spent(d, l.deliveries) ? d.read(pos) : undefined;
      if (!message || !bury(d, pos, message, l.deliveries, now())) d.lease(pos, { deadline: 0, deliveries: l.deliveries });
      return true;
    }
    d.lease(pos, undefined);
    if (pos >= FIRST_SLOT) d.drop(pos);
    return true;
  };

/** Extends a running lease to `leaseMs` from now; its token (the grant's, unchanged), or null. */
export const touchPlan =
  (pos: number, leaseMs: number, now: () => number, token: string | undefined): Plan<string | null> =>
  (d) => {
    const l = held(d, pos, token);
    const at = now();
    if (!l || l.deadline <= at) return null;
    const lease = { deadline: at + leaseMs, deliveries: l.deliveries, granted: l.granted ?? l.deadline };
    d.lease(pos, lease);
    return leaseToken(lease);
  };
