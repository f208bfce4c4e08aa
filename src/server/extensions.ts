/**
 * What HTTPSQS users used to build around it, as new opts and new optional parameters that old
 * clients never send (docs/EXTENSIONS.md): long polling (`wait`), leases (`lease`, `ack`, `nack`),
 * batches (`mput`, `mget`, `view` with `num`) and listing (`list`). Same reply style as the
 * reference: HTTP 200, `HTTPSQS_*` tokens for outcomes and errors; lists of things come as JSON.
 */
import { isUtf8 } from 'node:buffer';
import { atoi, isBase64, type Params } from '../protocol/query.js';
import * as R from '../protocol/reply.js';
import { diedAt, LAST_SLOT, MAX_DELAY_SECONDS, MAX_DELIVERIES, MAX_LEASE_SECONDS } from '../queue/leases.js';
import { MAX_POSITION } from '../queue/ring.js';
import type { Delivery } from '../store/store.js';
import { batchBody, batchShaped, type Encoding } from './batch.js';
import type { HttpRequest } from './http.js';
import { messageOf, type Answer, type OpContext, type Ops, whenRoom } from './ops.js';

export interface ExtensionContext extends OpContext {
  /** Longest `wait` accepted, in seconds. */
  maxWait: number;
  /** Most message bytes in one batch reply (mget, view with num); at least one message goes. */
  maxReplyBytes: number;
}

/** The lease token of ack, nack and touch; an empty one means none. */
const tokenOf = (p: Params): string | undefined => p.extra?.get('token') || undefined;

/** A whole number in [min, max], in plain digits; NaN for anything else. Unlike the reference's
 * numbers (C atoi), new parameters are strict: `wait=1e3` is an error, not 1. */
function whole(v: string | undefined, min: number, max: number): number {
  if (v === undefined || !/^\d{1,10}$/.test(v)) return NaN;
  const n = Number(v);
  return n >= min && n <= max ? n : NaN;
}

/** An optional parameter: `fallback` when absent, NaN when malformed or out of range. */
function optional(p: Params, key: string, min: number, max: number, fallback: number): number {
  const v = p.extra?.get(key);
  return v === undefined ? fallback : whole(v, min, max);
}

function encodingOf(p: Params): Encoding | undefined {
  const e = p.extra?.get('encoding') ?? 'utf8';
  return e === 'utf8' || e === 'base64' ? e : undefined;
}

/** A list entry: `name` is the name read as UTF-8; when its bytes are not UTF-8 that reading
 * loses some, and `name64` carries them (base64), to address the queue and to page after it. */
function listed(name: string, object: string): string {
  const bytes = Buffer.from(name, 'latin1');
  return isUtf8(bytes) ? object : `${object.slice(0, -1)},"name64":"${bytes.toString('base64')}"}`;
}

/** Whether a large reply may be built: at once, or once there is room (false: the client went, or
 * `stop` came first). */
const inRoom = async (req: HttpRequest, stop?: AbortSignal): Promise<boolean> => (await req.room(stop)) ?? true;

/** A UTF-16 surrogate without its pair (with the `u` flag, a pair reads as one code point). */
const LONE_SURROGATE = /\p{Cs}/u;

const json = (body: string): Answer => ({ body: Buffer.from(`${body}\n`), json: true });

/** The extensions' opts, and the reference's `get` and `view` widened by their new parameters
 * (`reference` answers a request without them, as before). */
export function extensionOps(ctx: ExtensionContext, reference: Ops): Ops {
  const { store, waiters, events } = ctx;

  /** Runs `attempt` once, or as a long poll of `wait` seconds. Each try waits for room for large
   * replies (as server.ts does for the other large ops), a long poll's no longer than its `wait`;
   * one that finds nothing lets the next take go while this one sleeps. Resolves to what it found,
   * and whether it found it after waiting (a look after the first). */
  async function taking<T>(name: string, wait: number, req: HttpRequest, attempt: () => Promise<T | undefined>): Promise<[T | undefined, boolean]> {
    if (!wait) return [(await inRoom(req)) ? await attempt() : undefined, false];
    const started = performance.now();
    const timeUp = new AbortController();
    const timer = ctx.clock.setTimeout(() => timeUp.abort(), wait * 1000);
    let looks = 0;
    const inTurn = async () => {
      looks++;
      if (!(await inRoom(req, timeUp.signal))) return undefined;
      const got = await attempt();
      if (got === undefined) req.roomDone();
      return got;
    };
    try {
      const got = await waiters.wait(name, ctx.clock.now() + wait * 1000, req.gone(), inTurn, () => store.nextExpiry(name));
      events.onWaited?.((performance.now() - started) / 1000, got !== undefined);
      return [got, looks > 1];
    } finally {
      timer.cancel();
    }
  }

  /** A leased long poll that waited, whose client went away (or half-closed) while its store call
   * took messages (a slow store): they are given back at once, as a nack would, instead of waiting
   * out a lease nobody holds, and the answer is that nothing came. What the first look takes is
   * sent, as for a get without `wait`: a client that half-closed right after its request (as
   * `nc -N` does) still reads it, and one whose every long poll found its queue at once must not
   * spend a delivery on each, unseen. A plain get's message is sent all the same (a half-closed
   * client still reads it); gone with a client that is gone, as for any plain get. */
  function unheard(name: string, waited: boolean, req: HttpRequest, got: Delivery[]): boolean {
    if (!waited || !got[0]?.lease || !req.gone().aborted) return false;
    for (const d of got)
      if (d.lease)
        void store.settle(name, d.pos, 'nack', d.lease).then(
          (back) => back && waiters.notify(name, 1),
          () => {},
        );
    return true;
  }

  /** `wait` and `lease`, shared by get and mget; undefined when either is malformed. */
  function waitAndLease(p: Params): { wait: number; leaseMs: number | undefined } | undefined {
    const wait = optional(p, 'wait', 0, ctx.maxWait, 0);
    const lease = optional(p, 'lease', 1, MAX_LEASE_SECONDS, 0);
    if (Number.isNaN(wait) || Number.isNaN(lease)) return undefined;
    return { wait, leaseMs: lease ? lease * 1000 : undefined };
  }

  async function get(name: string, p: Params, req: HttpRequest): Promise<Answer> {
    const o = waitAndLease(p);
    if (!o) return { body: R.ERROR };
    const [got, waited] = await taking(name, o.wait, req, async () => (await store.get(name, o.leaseMs, req.hold)) ?? undefined);
    if (!got || unheard(name, waited, req, [got])) return { body: R.GET_END };
    events.onTaken?.(name, 1, !!o.leaseMs);
    if (o.leaseMs) waiters.leased(name, ctx.clock.now() + o.leaseMs);
    const head = `Deliveries: ${got.deliveries}\r\n${got.lease ? `Lease: ${got.lease}\r\n` : ''}`;
    const answer: Answer = { body: got.message, pos: got.pos };
    if (o.leaseMs || got.deliveries > 1) answer.head = head;
    return answer;
  }

  async function mget(name: string, p: Params, req: HttpRequest): Promise<Answer> {
    const o = waitAndLease(p);
    const num = whole(p.num, 1, R.MAX_BATCH);
    const enc = encodingOf(p);
    if (!o || Number.isNaN(num) || !enc) return { body: R.ERROR };
    const [taken, waited] = await taking(name, o.wait, req, async () => {
      const batch = await store.getMany(name, num, o.leaseMs, ctx.maxReplyBytes, req.hold);
      return batch.length ? batch : undefined;
    });
    let got = taken ?? [];
    if (unheard(name, waited, req, got)) got = [];
    if (got.length) events.onTaken?.(name, got.length, !!o.leaseMs);
    if (got.length && o.leaseMs) waiters.leased(name, ctx.clock.now() + o.leaseMs);
    const lease = (d: Delivery) => (d.lease ? `,"lease":"${d.lease}"` : '');
    return {
      body: batchBody(
        got.map((d) => ({ fields: `"pos":${d.pos},"deliveries":${d.deliveries}${lease(d)}`, message: d.message })),
        enc,
      ),
      json: true,
    };
  }

  /** `delay` in ms (0 when absent), NaN when malformed. */
  const delayOf = (p: Params): number => optional(p, 'delay', 0, MAX_DELAY_SECONDS, 0) * 1000;

  /** Delayed messages were stored: a long poll (here, in another worker or frontend) that finds
   * nothing on waking sets its alarm for the earliest due one. */
  const scheduled = (name: string) => waiters.notify(name, 1);

  /** A put with `delay=S`: stored now, handed out from S seconds on. */
  async function delayedPut(name: string, p: Params, req: HttpRequest): Promise<Answer> {
    const delayMs = delayOf(p);
    const message = messageOf(p, req);
    if (!message || Number.isNaN(delayMs)) return { body: R.PUT_ERROR };
    if (!delayMs) return reference.put!.run(name, p, req);
    let slot: number;
    try {
      slot = await store.put(name, message, delayMs);
    } catch (err) {
      ctx.putFailed('put', err);
      return { body: R.PUT_ERROR };
    }
    if (!slot) return { body: R.PUT_END };
    scheduled(name);
    events.onPut?.(name, 1);
    return { body: R.PUT_OK, head: `Scheduled: ${slot}\r\n` };
  }

  async function mput(name: string, p: Params, body: Buffer): Promise<Answer> {
    const enc = encodingOf(p);
    const delayMs = delayOf(p);
    if (Number.isNaN(delayMs)) return { body: R.PUT_ERROR };
    let items: unknown;
    // Bytes that are not UTF-8, and a `\ud800` escape without its pair, would be stored as U+FFFD:
    // a message altered without a word. They are refused.
    if (!batchShaped(body, R.MAX_BATCH) || !isUtf8(body)) return { body: R.PUT_ERROR };
    try {
      items = JSON.parse(body.toString('utf8'));
    } catch {
      return { body: R.PUT_ERROR };
    }
    if (!enc || !Array.isArray(items) || items.length > R.MAX_BATCH) return { body: R.PUT_ERROR };
    if (!items.every((m) => typeof m === 'string' && (enc === 'utf8' ? !LONE_SURROGATE.test(m) : isBase64(m)))) return { body: R.PUT_ERROR };
    let positions: number[];
    try {
      positions = await store.putMany(
        name,
        (items as string[]).map((m) => Buffer.from(m, enc)),
        delayMs || undefined,
      );
    } catch (err) {
      ctx.putFailed('mput', err);
      return { body: R.PUT_ERROR };
    }
    if (positions.length) {
      if (delayMs) scheduled(name);
      else waiters.notify(name, positions.length);
      events.onPut?.(name, positions.length);
    }
    return json(`{"count":${positions.length},"positions":[${positions.join(',')}],"full":${positions.length < items.length}}`);
  }

  async function viewRange(name: string, p: Params): Promise<Answer> {
    const pos = atoi(p.pos);
    const num = whole(p.num, 1, R.MAX_BATCH);
    const enc = encodingOf(p);
    if (pos < 1 || pos > MAX_POSITION || Number.isNaN(num) || !enc) return { body: R.ERROR };
    // Within the ring: the slots past it hold delayed messages and dead letters, which view does not show.
    const found = await store.range(name, pos, Math.min(num, MAX_POSITION - pos + 1), ctx.maxReplyBytes);
    return {
      body: batchBody(
        found.map((m) => ({ fields: `"pos":${m.pos}`, message: m.message })),
        enc,
      ),
      json: true,
    };
  }

  async function settle(name: string, p: Params, outcome: 'ack' | 'nack'): Promise<Answer> {
    const pos = whole(p.pos, 1, LAST_SLOT);
    if (Number.isNaN(pos)) return { body: R.ERROR };
    if (!(await store.settle(name, pos, outcome, tokenOf(p)))) return { body: R.LEASE_NOT_FOUND };
    events.onSettled?.(name, outcome);
    if (outcome === 'nack') waiters.notify(name, 1);
    return { body: outcome === 'ack' ? R.ACK_OK : R.NACK_OK };
  }

  /** Extends a running lease; the answer carries the grant's token (a touch keeps it). */
  async function touch(name: string, p: Params): Promise<Answer> {
    const pos = whole(p.pos, 1, LAST_SLOT);
    const lease = whole(p.extra?.get('lease'), 1, MAX_LEASE_SECONDS);
    if (Number.isNaN(pos) || Number.isNaN(lease)) return { body: R.ERROR };
    const token = await store.touch(name, pos, lease * 1000, tokenOf(p));
    if (token === null) return { body: R.LEASE_NOT_FOUND };
    // A lease made shorter ends before the alarms set for it: long polls must wake then.
    waiters.retimed(name, ctx.clock.now() + lease * 1000);
    return { body: R.TOUCH_OK, head: `Lease: ${token}\r\n` };
  }

  async function list(p: Params): Promise<Answer> {
    const limit = optional(p, 'limit', 1, R.MAX_BATCH, 100);
    if (Number.isNaN(limit)) return { body: R.ERROR };
    const queues = await store.list(p.extra?.get('prefix') ?? '', p.extra?.get('after'), limit);
    return json(`[${queues.map((q) => listed(q.name, R.statusObject(q.name, q.status))).join(',')}]`);
  }

  async function maxdeliveries(name: string, p: Params): Promise<Answer> {
    const num = whole(p.num, 0, MAX_DELIVERIES);
    if (Number.isNaN(num)) return { body: R.ERROR };
    await store.maxdeliveries(name, num);
    return { body: R.MAXDELIVERIES_OK };
  }

  /** Dead letters back on their queue, up to `num` (1000) of them, those that died first first. */
  async function redrive(name: string, p: Params): Promise<Answer> {
    const num = p.num === undefined ? R.MAX_BATCH : whole(p.num, 1, R.MAX_BATCH);
    if (Number.isNaN(num)) return { body: R.ERROR };
    const count = await store.redrive(name, num);
    if (count) waiters.notify(name, count);
    return json(`{"count":${count},"dead":${(await store.status(name)).dead}}`);
  }

  /** Deletes one dead letter, for good. */
  async function discard(name: string, p: Params): Promise<Answer> {
    const pos = whole(p.pos, 1, LAST_SLOT);
    if (Number.isNaN(pos)) return { body: R.ERROR };
    return { body: (await store.discard(name, pos)) ? R.DISCARD_OK : R.DEAD_NOT_FOUND };
  }

  /** The queue's dead letters in slot order, after slot `after`, with their deliveries and when
   * they died; as many as `num` (100) and the reply budget allow. */
  async function dead(name: string, p: Params): Promise<Answer> {
    const num = p.num === undefined ? 100 : whole(p.num, 1, R.MAX_BATCH);
    const after = optional(p, 'after', 0, LAST_SLOT, 0);
    const enc = encodingOf(p);
    if (Number.isNaN(num) || Number.isNaN(after) || !enc) return { body: R.ERROR };
    const items: Array<{ fields: string; message: Buffer }> = [];
    let bytes = 0;
    // A page of the store's at a time: one whose message is gone is skipped, and the next read.
    let cursor = after;
    pages: while (items.length < num) {
      const letters = await store.deadLetters(name, cursor, num - items.length);
      if (letters.length === 0) break;
      for (const { pos, lease } of letters) {
        cursor = pos;
        const message = await store.view(name, pos);
        if (!message) continue;
        if (items.length > 0 && bytes + message.length > ctx.maxReplyBytes) break pages;
        bytes += message.length;
        items.push({ fields: `"pos":${pos},"deliveries":${lease.deliveries},"died":${diedAt(lease)}`, message });
      }
    }
    return { body: batchBody(items, enc), json: true };
  }

  return {
    put: { run: (name, p, req) => (p.extra?.has('delay') ? delayedPut(name, p, req) : reference.put!.run(name, p, req)) },
    // Widened, as the reference's ops they are. A get waits for room itself (`taking`), so that a
    // long poll waits no longer than its `wait`.
    get: {
      run: (name, p, req) => (p.extra?.has('wait') || p.extra?.has('lease') ? get(name, p, req) : whenRoom(reference.get!, name, p, req)),
    },
    view: { ...reference.view, run: (name, p, req) => (p.num !== undefined ? viewRange(name, p) : reference.view!.run(name, p, req)) },
    mget: { run: mget },
    mput: { run: (name, p, req) => mput(name, p, req.body) },
    ack: { run: (name, p) => settle(name, p, 'ack') },
    nack: { run: (name, p) => settle(name, p, 'nack') },
    touch: { run: touch },
    list: { nameless: true, run: (_name, p) => list(p) },
    maxdeliveries: { admin: true, run: maxdeliveries },
    redrive: { admin: true, run: redrive },
    discard: { admin: true, run: discard },
    dead: { large: true, run: dead },
  };
}
