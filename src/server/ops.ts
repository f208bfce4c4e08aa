/**
 * The op table: each `opt` and what runs it. The reference's opts are here; the extensions add
 * theirs (and widen `get` and `view`) in extensions.ts, and server.ts dispatches through the one
 * table. An op gets a checked name (at most 256 bytes) unless it says it needs none.
 */
import { atoi, decodeBytes, decodeComponent, type Params } from '../protocol/query.js';
import * as R from '../protocol/reply.js';
import type { Clock } from '../queue/clock.js';
import { MAX_POSITION, MIN_MAXQUEUE } from '../queue/ring.js';
import type { Store } from '../store/store.js';
import type { HttpRequest, Streamed } from './http.js';
import type { Waiters } from './waiters.js';

export interface Answer {
  body: string | Buffer | Streamed;
  /** The `Pos` header. */
  pos?: number;
  /** More header lines, each ending in CRLF. */
  head?: string;
  /** The body is JSON (application/json). */
  json?: boolean;
}

export interface Op {
  /** Needs the admin password (`--admin-auth`) when the server has one. */
  admin?: boolean;
  /** Runs without a queue name (`list`). */
  nameless?: boolean;
  /** Its reply may carry messages, so it waits for room in the memory for large replies. */
  large?: boolean;
  run(name: string, p: Params, req: HttpRequest): Promise<Answer>;
}

export type Ops = Record<string, Op>;

/** What happened, for /metrics and the dashboard's charts. */
export interface ServerEvents {
  /** Messages were stored. */
  onPut?: ((name: string, count: number) => void) | undefined;
  /** Messages were handed out (`leased` of them under a lease). */
  onTaken?: ((name: string, count: number, leased: boolean) => void) | undefined;
  onSettled?: ((name: string, outcome: 'ack' | 'nack') => void) | undefined;
  /** The queue was reset. */
  onReset?: ((name: string) => void) | undefined;
  /** A long poll ended after `seconds`, with a message or without. */
  onWaited?: ((seconds: number, found: boolean) => void) | undefined;
}

export interface OpContext {
  store: Store;
  clock: Clock;
  waiters: Waiters;
  events: ServerEvents;
  /** A put the store could not make: logged, unless the store reports such refusals itself. */
  putFailed: (what: string, err: unknown) => void;
  /** `opt=synctime` changed this process's interval (to tell other workers). */
  onSynctime?: ((seconds: number) => void) | undefined;
}

/** Runs `op` once the memory for large replies has room, so that nothing is taken before its reply
 * can be held: at once when it has; when the client went meanwhile, nothing is run (ERROR). (No
 * closure: a get passes here.) */
export function whenRoom(op: Op, name: string, p: Params, req: HttpRequest): Promise<Answer> {
  const room = req.room();
  return room ? room.then((here) => (here ? op.run(name, p, req) : { body: R.ERROR })) : op.run(name, p, req);
}

const EMPTY = Buffer.alloc(0);
const BINARY = /^application\/octet-stream\s*(;|$)/i;

/** The message of a put: a binary body as it is, another body URL-decoded once, else `data=`
 * decoded once more after the query parser did (as the reference does). */
export function messageOf(p: Params, req: HttpRequest): Buffer | undefined {
  if (req.body.length > 0) return BINARY.test(req.headers['content-type'] ?? '') ? req.body : decodeBytes(req.body);
  return p.data === undefined ? undefined : Buffer.from(decodeComponent(p.data), 'latin1');
}

/** A reference number (C atoi) in [min, max], or NaN. */
function number(v: string | undefined, min: number, max: number): number {
  const n = atoi(v);
  return n >= min && n <= max ? n : NaN;
}

export function referenceOps({ store, waiters, events, putFailed, onSynctime }: OpContext): Ops {
  return {
    // Promises chained rather than async functions on the hot path (see server.ts).
    put: {
      run(name, p, req) {
        const message = messageOf(p, req);
        if (!message) return Promise.resolve({ body: R.PUT_ERROR });
        return store.put(name, message).then(
          (pos): Answer => {
            if (pos === 0) return { body: R.PUT_END };
            waiters.notify(name, 1);
            events.onPut?.(name, 1);
            return { body: R.PUT_OK, pos };
          },
          (err: unknown) => {
            putFailed('put', err);
            return { body: R.PUT_ERROR };
          },
        );
      },
    },
    get: {
      large: true,
      run: (name, _p, req) =>
        store.get(name, undefined, req.hold).then((got) => {
          if (!got) return { body: R.GET_END };
          events.onTaken?.(name, 1, false);
          // A message whose lease ended comes back to a plain get too, saying how often it went out.
          const answer: Answer = { body: got.message, pos: got.pos };
          if (got.deliveries > 1) answer.head = `Deliveries: ${got.deliveries}\r\n`;
          return answer;
        }),
    },
    status: { run: (name) => store.status(name).then((s) => ({ body: R.statusText(name, s) })) },
    status_json: { run: (name) => store.status(name).then((s) => ({ body: R.statusJson(name, s) })) },
    view: {
      large: true,
      async run(name, p) {
        const pos = number(p.pos, 1, MAX_POSITION);
        return { body: Number.isNaN(pos) ? R.ERROR : ((await store.view(name, pos)) ?? EMPTY) };
      },
    },
    reset: {
      admin: true,
      async run(name) {
        await store.reset(name);
        events.onReset?.(name);
        return { body: R.RESET_OK };
      },
    },
    maxqueue: {
      admin: true,
      async run(name, p) {
        const num = number(p.num, MIN_MAXQUEUE, MAX_POSITION);
        if (Number.isNaN(num)) return { body: R.ERROR };
        return { body: (await store.maxqueue(name, num)) ? R.MAXQUEUE_OK : R.MAXQUEUE_CANCEL };
      },
    },
    synctime: {
      admin: true,
      async run(_name, p) {
        const num = number(p.num, 1, MAX_POSITION);
        if (Number.isNaN(num)) return { body: R.ERROR };
        store.setSyncInterval(num);
        onSynctime?.(num);
        return { body: R.SYNCTIME_OK };
      },
    },
  };
}
