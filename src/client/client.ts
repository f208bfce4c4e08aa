/**
 * The TypeScript client. The reference operations (put, get, status, statusJson, view, reset,
 * maxqueue, synctime) use only the HTTPSQS 1.7 protocol, so they work against the C server too
 * (with `reference: true`); the rest needs this server's extensions (docs/EXTENSIONS.md).
 */
import { setMaxListeners } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Dispatcher, Pool } from 'undici';
import * as R from '../protocol/reply.js';
import { MAX_LEASE_SECONDS } from '../queue/leases.js';
import { MAX_POSITION } from '../queue/ring.js';
import { AuthError, HttpsqsError, LeaseLostError, NetworkError, ProtocolError, QueueFullError } from './errors.js';
import { errorMessage } from '../errors.js';

export interface ClientOptions {
  /** Where the server is: `http://host:port`, or with a path (any path reaches the queues, so a
   * server behind a proxy under `/queue/` works). A URL that is not one throws a TypeError.
   * @default 'http://127.0.0.1:1218' */
  url?: string | undefined;
  /** The server's password (`-a`), sent as `auth=`. */
  auth?: string | undefined;
  /** Milliseconds the server may stay silent, before its answer and between its parts; a long poll
   * gets its `wait` on top; at least 1. @default 10000 */
  timeout?: number | undefined;
  /** Keep-alive connections held open to the server at most, a whole number, at least 1. By default
   * there is no limit, so that long polls never hold up other requests (consume() keeps one open
   * per unit of concurrency). */
  connections?: number | undefined;
  /** The server is the C HTTPSQS: messages are sent percent-encoded (it URL-decodes every body and
   * knows no `application/octet-stream`). Otherwise they go as they are, as octet-stream. */
  reference?: boolean | undefined;
  /** The most bytes a reply's body may have: one over it is not read further (the connection is
   * dropped) and the call throws a `ProtocolError` saying the reply was over the limit. It is
   * above the server's 32 MiB limits on a message and on a reply by default, with room for the
   * base64 and JSON of mget, dead and view with num; raise it with the server's
   * `--max-message-bytes` or `--max-reply-bytes`. At least 1. @default 67108864 (64 MiB) */
  maxReplyBytes?: number | undefined;
}

/** A queue's state, as `status_json` gives it. The extensions' counts are 0 where the server
 * leaves them out (it does while they are 0, and a server without them always does). */
export interface QueueStatus {
  name: string;
  maxqueue: number;
  putpos: number;
  putlap: number;
  getpos: number;
  getlap: number;
  unread: number;
  /** Messages handed out under a lease and not settled: those a consumer holds, and those nacked
   * or whose lease ran out, which the next gets take first (they are not in `unread`). */
  leased: number;
  /** Messages waiting outside the ring: delayed puts not handed out yet (due or not), and dead
   * letters a redrive made deliverable again. */
  delayed: number;
  /** Dead letters: messages whose lease ended `maxdeliveries` times (see `dead()`, `redrive()`). */
  dead: number;
  /** Lease endings after which a message becomes a dead letter; 0: never (see `maxDeliveries()`). */
  maxdeliveries: number;
  /** From `list`, for a name whose bytes are not UTF-8: those bytes, base64 (`name` lost some). */
  name64?: string;
}

/** A queue name: text (sent as UTF-8), or its bytes, for a name in another charset (such as GBK;
 * `list` and `queues()` give those bytes as `name64`). */
export type QueueName = string | Uint8Array;

/** A message handed out by get or mget. */
export class Message {
  constructor(
    /** The queue it came from, as it was named in the call. */
    readonly queue: QueueName,
    /** Its position: what ack and nack need. A message that waited outside the ring (a delayed
     * put, a redriven dead letter) has the one it waited at, over 1,000,000,000. */
    readonly pos: number,
    /** Its bytes, exactly as stored. */
    readonly body: Buffer,
    /** 1 the first time; more when a lease ended or it was given back (counted afresh after a
     * redrive). With a maxdeliveries on the queue, the delivery whose lease ends as the last one
     * allowed makes it a dead letter. */
    readonly deliveries = 1,
    /** The token of its lease, when it was taken with one. */
    readonly lease?: string,
  ) {}

  /** The body as UTF-8 text. */
  text(): string {
    return this.body.toString('utf8');
  }
}

export interface PutOptions {
  /** Whole seconds (up to 2,592,000: 30 days) before the message is handed out. It is stored at
   * once, outside the ring, and the schedule id returned is the `pos` it is delivered with later;
   * 0 or absent: a plain put. */
  delay?: number | undefined;
  signal?: AbortSignal | undefined;
}

/** A dead letter (`dead()`): a message whose lease ended `maxdeliveries` times. */
export interface DeadLetter {
  /** Where it waits (past the ring, over 1,000,000,000): what `after` pages with. */
  pos: number;
  /** How often it was handed out. */
  deliveries: number;
  /** When it died, in ms since the epoch. */
  died: number;
  /** Its bytes, exactly as stored. */
  message: Buffer;
}

export interface GetOptions {
  /** Seconds to wait for a message when the queue is empty (long polling). */
  wait?: number | undefined;
  /** Seconds to lease the message for: it comes back unless acked in time. */
  lease?: number | undefined;
  signal?: AbortSignal | undefined;
}

/** The default wait of a long poll, refused by a server whose `--max-wait` is lower (it answers
 * `HTTPSQS_ERROR`): the next one to ask for, half of it, down to 1 s. Undefined when `err` is not
 * that refusal, or 1 s was refused. */
export function shorterWait(wait: number, err: unknown): number | undefined {
  return wait > 1 && err instanceof ProtocolError && err.reply === R.ERROR ? Math.max(1, Math.floor(wait / 2)) : undefined;
}

/** The default of `maxReplyBytes`. */
export const MAX_REPLY_BYTES = 64 * 2 ** 20;

/** The first pause before settling again (doubled after each failure, up to SETTLE_PAUSE_MAX_MS). */
const SETTLE_PAUSE_MS = 250;
const SETTLE_PAUSE_MAX_MS = 4000;

/** An answer that says the server was not reached, or not for now: network trouble, or a proxy in
 * front of a server that is restarting (502, 503, 504). */
export function unavailable(err: unknown): err is NetworkError | ProtocolError {
  return err instanceof NetworkError || (err instanceof ProtocolError && [502, 503, 504].includes(err.status));
}

/**
 * Acks or nacks a leased message, trying again while the server cannot be reached (network
 * trouble, a proxy's 502/503/504), with a growing pause, until the lease's `deadline` (ms since the
 * epoch by `now`, from the get or the last touch that succeeded): past it an ack would find no
 * lease. Used by consume() and by httpsqs-cli's get. Resolves to whether the lease was held; a
 * retry that finds the lease gone counts as held when an earlier try may have reached the server
 * (and settled it). A failure that remains at the deadline, or when `signal` aborts (no more tries),
 * is thrown: the lease then runs out and the message comes back.
 */
export async function settleUntil(
  q: Pick<HttpsqsClient, 'ack' | 'nack'>,
  how: 'ack' | 'nack',
  name: QueueName,
  pos: number,
  token: string | undefined,
  deadline: number,
  now: () => number = Date.now,
  signal?: AbortSignal,
): Promise<boolean> {
  let reached = false;
  for (let pause = SETTLE_PAUSE_MS; ; pause = Math.min(pause * 2, SETTLE_PAUSE_MAX_MS)) {
    try {
      return (await q[how](name, pos, token)) || reached;
    } catch (err) {
      if (!unavailable(err) || now() + pause >= deadline || signal?.aborted) throw err;
      // It may have reached the server unless the connection was refused, or a proxy said the
      // server is unavailable (503).
      const status = err instanceof ProtocolError ? err.status : 0;
      reached ||= status ? status !== 503 : ((err as Error).cause as { code?: string } | undefined)?.code !== 'ECONNREFUSED';
      await sleep(pause, undefined, { signal }).catch(() => {
        throw err;
      });
    }
  }
}

/** A long poll's wait and lease for consume() and messages(): whole seconds, the wait at least 1
 * (0 would poll an empty queue in a tight loop), the lease 1 to MAX_LEASE_SECONDS (what the server
 * takes: its refusal would read as one of the wait, see `shorterWait`). */
function pollOptions(what: string, o: { wait?: number; lease?: number }): void {
  const { wait, lease } = o;
  if (wait !== undefined && (!Number.isInteger(wait) || wait < 1)) throw new RangeError(`${what}: wait must be whole seconds, at least 1, not ${wait}`);
  if (lease !== undefined && (!Number.isInteger(lease) || lease < 1 || lease > MAX_LEASE_SECONDS))
    throw new RangeError(`${what}: lease must be whole seconds, 1 to ${MAX_LEASE_SECONDS}, not ${lease}`);
}

export interface ConsumeOptions {
  /** Messages handled at the same time. @default 1 */
  concurrency?: number | undefined;
  /** Seconds a message is leased for: whole seconds, 1 to 86,400 (another throws a RangeError).
   * While its handler runs the lease is extended every half of that, so a long job keeps its
   * message; a consumer that dies lets it come back within that time. @default 60 */
  lease?: number | undefined;
  /** Seconds each long poll waits, at least 1. @default 20 */
  wait?: number | undefined;
  /** Stops consuming: polls end at once, running handlers finish and are acked. */
  signal?: AbortSignal | undefined;
  /** Called with what a handler threw (the message is then given back: see consume()), with a
   * failed ack or nack (one tried again, with a growing pause, until the message's lease would
   * end) or extension (the lease then runs out and the message comes back), and with
   * a `LeaseLostError` when a message's lease ended before it was settled (it may be delivered
   * again); by default they are ignored. */
  onError?: ((err: unknown, message: Message) => void) | undefined;
}

type Reply = { status: number; body: Buffer; headers: Record<string, string | string[] | undefined> };

const text = (b: Buffer) => b.toString('latin1');
const bytes = (data: string | Uint8Array) =>
  typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data.buffer, data.byteOffset, data.byteLength);

const HEX = Buffer.from('0123456789abcdef');
const UNRESERVED = new Uint8Array(256).map((_, c) =>
  Number((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e),
);

/** A URL to quote in a message, its user and password (if any) shown as `***`. */
const masked = (url: string) => url.replace(/^([a-z][a-z\d+.-]*:\/\/)[^/?#]*@/i, '$1***@');

/** JSON shapes of the replies (`HttpsqsClient.json`). */
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const listOf = (item: (v: unknown) => boolean) => (v: unknown) => Array.isArray(v) && v.every(item);
/** An item of mget, view with num, dead: its bytes in `data`, base64. */
const withData = (v: unknown) => isObject(v) && typeof v.data === 'string';

/** A queue's status with the extensions' counts a server left out (while 0, or knowing none) as 0. */
const counted = (s: Partial<QueueStatus>): QueueStatus =>
  ({ ...s, leased: s.leased ?? 0, delayed: s.delayed ?? 0, dead: s.dead ?? 0, maxdeliveries: s.maxdeliveries ?? 0 }) as QueueStatus;

/** The `delay` to send: none for 0 (a plain put, which the C server knows too). */
function delayOf(o: PutOptions): number | undefined {
  if (o.delay === undefined) return undefined;
  if (!Number.isInteger(o.delay) || o.delay < 0) throw new RangeError(`put: delay must be whole seconds, not ${o.delay}`);
  return o.delay || undefined;
}

/** Percent-encodes every byte that is not unreserved, so the reference's URL-decoding gives it back. */
function percentEncode(b: Buffer): Buffer {
  const out = Buffer.allocUnsafe(b.length * 3);
  let n = 0;
  for (const c of b) {
    if (UNRESERVED[c]) out[n++] = c;
    else (out[n++] = 0x25), (out[n++] = HEX[c >> 4]!), (out[n++] = HEX[c & 15]!);
  }
  return out.subarray(0, n);
}

/**
 * A client for one httpsqs (or HTTPSQS) server, over a pool of keep-alive connections.
 *
 * ```ts
 * const q = new HttpsqsClient({ url: 'http://127.0.0.1:1218' });
 * await q.put('mail', 'hello');
 * const m = await q.get('mail');
 * ```
 */
export class HttpsqsClient {
  private readonly pool: Pool;
  private readonly path: string;
  private readonly timeout: number;
  private readonly maxReplyBytes: number;
  /** Aborted by `close()`: leased long polls end, and consume() and messages() stop. */
  private readonly closing = new AbortController();
  /** consume() calls still running: close() lets them settle what their handlers finished. */
  private readonly consuming = new Set<Promise<void>>();
  /** The messages messages() loops hold: close() lets them be settled, until their lease ends. */
  private readonly holding = new Set<{ settled: Promise<void>; leaseEnds: () => number }>();
  /** Set once close() has let them finish: requests are refused from then on. */
  private closed: Promise<void> | undefined;
  private shut = false;
  /** The wait of consume()'s and messages()' long polls when none is given: 20 s, or less once a
   * server whose `--max-wait` is lower answered a shorter one (see `shorterWait`, `poll`). */
  private defaultWait = 20;

  constructor(private readonly options: ClientOptions = {}) {
    const given = options.url ?? 'http://127.0.0.1:1218';
    const url = URL.canParse(given) ? new URL(given) : undefined;
    if (!url || !/^https?:$/.test(url.protocol) || url.search || url.hash || url.username || url.password) {
      throw new TypeError(
        `not a server URL: "${masked(given)}" (give one like http://127.0.0.1:1218, with a path if you like, without a query or credentials: the password is the auth option)`,
      );
    }
    // undici takes 0 as no limit, a fraction as the next whole number, and refuses less than 0 with
    // an error of its own.
    const { connections } = options;
    if (connections !== undefined && !(Number.isSafeInteger(connections) && connections >= 1))
      throw new RangeError(`connections must be a whole number, at least 1, not ${connections}`);
    this.pool = new Pool(url.origin, { connections: connections ?? null, pipelining: 1 });
    this.path = url.pathname;
    this.timeout = options.timeout ?? 10_000;
    // 0 would be no limit at all (undici's): a server that stops answering would hang the caller.
    if (!(this.timeout >= 1 && this.timeout <= 2 ** 31 - 1)) throw new RangeError(`timeout must be 1..${2 ** 31 - 1} ms, not ${this.timeout}`);
    this.maxReplyBytes = options.maxReplyBytes ?? MAX_REPLY_BYTES;
    if (!(Number.isSafeInteger(this.maxReplyBytes) && this.maxReplyBytes >= 1))
      throw new RangeError(`maxReplyBytes must be a whole number of bytes, at least 1, not ${this.maxReplyBytes}`);
    setMaxListeners(0, this.closing.signal); // one listener per long poll in flight
  }

  /** One request. With `message`, a 200 reply is a stored message whatever it says (see `view`). */
  private async call(
    params: Record<string, string | number | Uint8Array | undefined>,
    o: { body?: Buffer | string; type?: string; signal?: AbortSignal | undefined; waitSeconds?: number; leased?: boolean; message?: boolean } = {},
  ): Promise<Reply> {
    let query = '';
    for (const [k, v] of Object.entries({ ...params, auth: this.options.auth }))
      if (v !== undefined) query += `${query ? '&' : '?'}${k}=${typeof v === 'object' ? percentEncode(bytes(v)).toString('latin1') : encodeURIComponent(v)}`;
    const timeout = this.timeout + (o.waitSeconds ?? 0) * 1000;
    if (this.shut) throw new NetworkError('the client is closed');
    // A leased long poll ends when the client is closed: a message the server was handing out
    // just then comes back when its lease ends. (A plain one is let finish: its message would be lost.)
    let signal = o.signal;
    let unlink = () => {};
    if (o.waitSeconds && o.leased) {
      const both = new AbortController();
      const abort = (e: Event) => both.abort((e.target as AbortSignal).reason);
      for (const s of [o.signal, this.closing.signal]) s?.addEventListener('abort', abort);
      if (o.signal?.aborted) both.abort(o.signal.reason);
      else if (this.closing.signal.aborted) both.abort(this.closing.signal.reason);
      unlink = () => {
        for (const s of [o.signal, this.closing.signal]) s?.removeEventListener('abort', abort);
      };
      signal = both.signal;
    }
    try {
      const res = await this.pool.request({
        path: `${this.path}${query}`,
        method: o.body === undefined ? 'GET' : 'POST',
        ...(o.body !== undefined ? { body: o.body, headers: { 'content-type': o.type ?? 'application/x-www-form-urlencoded' } } : {}),
        signal,
        headersTimeout: timeout,
        bodyTimeout: timeout,
      });
      const body = await this.bodyOf(res);
      const reply = { status: res.statusCode, body, headers: res.headers };
      // A message can say anything: the token counts only where no message (no Pos) came back.
      if (reply.status === 401 || (reply.status === 200 && !o.message && res.headers.pos === undefined && text(body) === R.AUTH_FAILED)) {
        throw new AuthError('the server refused the password (auth)');
      }
      if (reply.status !== 200) throw new ProtocolError(`HTTP ${reply.status}: ${text(body).trim()}`, text(body), reply.status);
      return reply;
    } catch (err) {
      if (err instanceof HttpsqsError) throw err;
      if (o.signal?.aborted) throw err; // the caller's own abort, as it is
      if (this.closing.signal.aborted) throw new NetworkError('the client is closed', { cause: err });
      throw new NetworkError(`no answer from the server: ${errorMessage(err)}`, { cause: err });
    } finally {
      unlink();
    }
  }

  /** A reply's body, read up to `maxReplyBytes`: one over it is dropped, and a ProtocolError. */
  private async bodyOf(res: Dispatcher.ResponseData): Promise<Buffer> {
    const limit = this.maxReplyBytes;
    const over = () => {
      // A body not yet read has no 'error' listener: the abort that destroying it emits (when the
      // whole reply had already arrived) would otherwise be an uncaught exception.
      res.body.on('error', () => {});
      res.body.destroy();
      return new ProtocolError(`the reply was over the limit of ${limit} bytes (maxReplyBytes)`, '', res.statusCode);
    };
    if (Number(res.headers['content-length']) > limit) throw over();
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) throw over();
      chunks.push(chunk);
    }
    return Buffer.concat(chunks, size);
  }

  /** A reply that must be one of `tokens`, or `HTTPSQS_ERROR`-like and thrown. */
  private expect(reply: Reply, ...tokens: string[]): string {
    const t = text(reply.body);
    if (!tokens.includes(t)) throw new ProtocolError(`the server answered ${t.slice(0, 60)}`, t);
    return t;
  }

  /** A JSON reply of the shape `valid` checks (valid JSON of another shape, such as `null`, is
   * an answer this client does not understand too). */
  private json<T>(reply: Reply, valid: (v: unknown) => boolean): T {
    let v: unknown;
    try {
      v = JSON.parse(reply.body.toString('utf8'));
    } catch {}
    if (v === undefined || !valid(v)) throw new ProtocolError(`the server answered ${text(reply.body).slice(0, 60)}`, text(reply.body));
    return v as T;
  }

  /** Stores a message; resolves to its position. Strings are stored as UTF-8. Throws
   * `QueueFullError` when the queue is full.
   *
   * With `delay` (seconds), the message is stored now but handed out only from then on: resolves
   * to its schedule id (the server's `Scheduled` header), which is the `pos` it is delivered with,
   * to ack or nack it by. `QueueFullError` then means that the queue already keeps maxqueue
   * messages outside its ring (delayed ones and dead letters). A delay that is not a whole number
   * of seconds throws a `RangeError`; one the server refuses (over 2592000) is a `ProtocolError`
   * (`HTTPSQS_PUT_ERROR`). A server without delayed messages (the C server) ignores `delay` and
   * stores the message at once. */
  async put(name: QueueName, data: string | Uint8Array, o: PutOptions = {}): Promise<number> {
    // Sent as they are (this server stores an octet-stream body exactly), or, to the C server,
    // percent-encoded (it URL-decodes every body).
    const raw = !this.options.reference;
    const b = bytes(data);
    const delay = delayOf(o);
    // An empty body means "no message" to the server; an empty `data=` is an empty message.
    const reply = b.length
      ? await this.call({ name, opt: 'put', delay }, { body: raw ? b : percentEncode(b), type: raw ? 'application/octet-stream' : undefined, signal: o.signal })
      : await this.call({ name, opt: 'put', delay, data: '' }, { signal: o.signal });
    if (this.expect(reply, R.PUT_OK, R.PUT_END) === R.PUT_END) throw new QueueFullError(name);
    return Number(reply.headers.scheduled ?? reply.headers.pos);
  }

  /** The next message, or null when the queue has none (after `wait` seconds, if given). */
  async get(name: QueueName, o: GetOptions = {}): Promise<Message | null> {
    const reply = await this.call({ name, opt: 'get', wait: o.wait, lease: o.lease }, { signal: o.signal, waitSeconds: o.wait, leased: o.lease !== undefined });
    if (reply.headers.pos === undefined) {
      this.expect(reply, R.GET_END);
      return null;
    }
    const lease = reply.headers.lease;
    return new Message(name, Number(reply.headers.pos), reply.body, Number(reply.headers.deliveries ?? 1), typeof lease === 'string' ? lease : undefined);
  }

  /** The reference's status text (the queue name in it decoded as UTF-8). */
  async status(name: QueueName): Promise<string> {
    return (await this.call({ name, opt: 'status' })).body.toString('utf8');
  }

  async statusJson(name: QueueName): Promise<QueueStatus> {
    return counted(this.json<Partial<QueueStatus>>(await this.call({ name, opt: 'status_json' }), isObject));
  }

  /** The message stored at `pos`, read or not (an empty buffer when there is none). `pos` is a
   * ring position, 1 to 1000000000: another throws a `RangeError` (a delayed message's schedule id
   * is past the ring; a dead letter is read with `dead()`). */
  async view(name: QueueName, pos: number): Promise<Buffer> {
    // The server answers HTTPSQS_ERROR, which would read as the message.
    if (!Number.isInteger(pos) || pos < 1 || pos > MAX_POSITION) throw new RangeError(`view: pos must be a whole number from 1 to ${MAX_POSITION}, not ${pos}`);
    const { body } = await this.call({ name, opt: 'view', pos }, { message: true });
    // A refused password and a stored message of that text read the same: ask again in a way
    // that cannot be a message, which throws AuthError only if the password is refused.
    if (text(body) === R.AUTH_FAILED) await this.call({ name, opt: 'status_json' });
    return body;
  }

  /** Empties the queue and sets maxqueue back to its default. */
  async reset(name: QueueName): Promise<void> {
    this.expect(await this.call({ name, opt: 'reset' }), R.RESET_OK);
  }

  /** Sets the ring size; false when the ring rules do not allow it now. */
  async maxqueue(name: QueueName, num: number): Promise<boolean> {
    return this.expect(await this.call({ name, opt: 'maxqueue', num }), R.MAXQUEUE_OK, R.MAXQUEUE_CANCEL) === R.MAXQUEUE_OK;
  }

  /** Sets the seconds between flushes of `--sync interval` servers. */
  async synctime(seconds: number): Promise<void> {
    this.expect(await this.call({ name: '', opt: 'synctime', num: seconds }), R.SYNCTIME_OK);
  }

  /** Confirms a leased message; false when that lease is not held (any more). */
  async ack(name: QueueName, pos: number, token?: string): Promise<boolean> {
    return this.expect(await this.call({ name, opt: 'ack', pos, token }), R.ACK_OK, R.LEASE_NOT_FOUND) === R.ACK_OK;
  }

  /** Gives a leased message back, to be delivered again at once; false when that lease is not held. */
  async nack(name: QueueName, pos: number, token?: string): Promise<boolean> {
    return this.expect(await this.call({ name, opt: 'nack', pos, token }), R.NACK_OK, R.LEASE_NOT_FOUND) === R.NACK_OK;
  }

  /** Extends a running lease to `seconds` from now. Resolves to the lease's token (use it to ack
   * or nack from now on: this server keeps it, one before this version gave a new one), or null
   * when that lease no longer runs. */
  async touch(name: QueueName, pos: number, seconds: number, token?: string): Promise<string | null> {
    const reply = await this.call({ name, opt: 'touch', pos, lease: seconds, token });
    if (this.expect(reply, R.TOUCH_OK, R.LEASE_NOT_FOUND) !== R.TOUCH_OK) return null;
    return String(reply.headers.lease ?? '') || null;
  }

  /** Stores messages in one atomic call; `positions` holds those that fitted (`full` when not all
   * did). With `delay` (seconds, as for `put`) they are all handed out only from then on, and
   * `positions` are their schedule ids. */
  async mput(name: QueueName, messages: ReadonlyArray<string | Uint8Array>, o: PutOptions = {}): Promise<{ positions: number[]; full: boolean }> {
    const base64 = messages.some((m) => typeof m !== 'string');
    const body = JSON.stringify(messages.map((m) => (base64 ? bytes(m).toString('base64') : m)));
    const reply = await this.call(
      { name, opt: 'mput', encoding: base64 ? 'base64' : undefined, delay: delayOf(o) },
      { body, type: 'application/json', signal: o.signal },
    );
    if (text(reply.body) === R.PUT_ERROR) throw new ProtocolError('the server refused the batch', R.PUT_ERROR);
    const r = this.json<{ positions: number[]; full: boolean }>(reply, (v) => isObject(v) && Array.isArray(v.positions));
    return { positions: r.positions, full: r.full };
  }

  /** Up to `num` messages in one call ([] when there are none, after `wait` seconds if given). */
  async mget(name: QueueName, num: number, o: GetOptions = {}): Promise<Message[]> {
    const reply = await this.call(
      { name, opt: 'mget', num, wait: o.wait, lease: o.lease, encoding: 'base64' },
      { signal: o.signal, waitSeconds: o.wait, leased: o.lease !== undefined },
    );
    type Item = { pos: number; deliveries: number; lease?: string; data: string };
    return this.json<Item[]>(reply, listOf(withData)).map((m) => new Message(name, m.pos, Buffer.from(m.data, 'base64'), m.deliveries, m.lease));
  }

  /** The stored messages at positions pos..pos+num-1, read or not. */
  async viewRange(name: QueueName, pos: number, num: number): Promise<Array<{ pos: number; body: Buffer }>> {
    const found = this.json<Array<{ pos: number; data: string }>>(await this.call({ name, opt: 'view', pos, num, encoding: 'base64' }), listOf(withData));
    return found.map((m) => ({ pos: m.pos, body: Buffer.from(m.data, 'base64') }));
  }

  /** One page of queues, in name order. `after` is a name, or the bytes of one (from `name64`). */
  async list(o: { prefix?: string | undefined; after?: string | Uint8Array | undefined; limit?: number | undefined } = {}): Promise<QueueStatus[]> {
    return this.json<Array<Partial<QueueStatus>>>(await this.call({ opt: 'list', prefix: o.prefix, after: o.after, limit: o.limit }), listOf(isObject)).map(
      counted,
    );
  }

  /** Sets how many times a message's lease may end (a nack, or a lease that ran out) before the
   * message becomes a dead letter instead of coming back: `num` 0..1000, 0 turning it off. It
   * applies to lease endings from then on. Needs the admin password when the server has one. */
  async maxDeliveries(name: QueueName, num: number): Promise<void> {
    this.expect(await this.call({ name, opt: 'maxdeliveries', num }), R.MAXDELIVERIES_OK);
  }

  /** Makes up to `num` (1..1000, by default 1000) dead letters deliverable again, those that died
   * first first: they are handed out ahead of newer messages, their deliveries counted afresh.
   * Resolves to how many (`count`) and how many dead letters are left (`dead`). Needs the admin
   * password when the server has one. */
  async redrive(name: QueueName, o: { num?: number | undefined } = {}): Promise<{ count: number; dead: number }> {
    const r = this.json<{ count: number; dead: number }>(await this.call({ name, opt: 'redrive', num: o.num }), isObject);
    return { count: r.count, dead: r.dead };
  }

  /** Deletes the dead letter at `pos` for good; false when there is none there (never one, already
   * discarded, or moved back by a redrive). Needs the admin password when the server has one. */
  async discard(name: QueueName, pos: number): Promise<boolean> {
    return this.expect(await this.call({ name, opt: 'discard', pos }), R.DISCARD_OK, R.DEAD_NOT_FOUND) === R.DISCARD_OK;
  }

  /** The queue's dead letters in `pos` order, those after `after` (a `pos`), up to `num` (1..1000,
   * by default 100; fewer when their bytes make a large reply): page on with the last one's `pos`,
   * until none come. They stay dead letters: this only reads them. */
  async dead(name: QueueName, o: { num?: number | undefined; after?: number | undefined; signal?: AbortSignal | undefined } = {}): Promise<DeadLetter[]> {
    const reply = await this.call({ name, opt: 'dead', num: o.num, after: o.after, encoding: 'base64' }, { signal: o.signal });
    type Item = { pos: number; deliveries: number; died: number; data: string };
    return this.json<Item[]>(
      reply,
      listOf((v) => withData(v) && typeof (v as Item).died === 'number'),
    ).map((m) => ({ pos: m.pos, deliveries: m.deliveries, died: m.died, message: Buffer.from(m.data, 'base64') }));
  }

  /** Every queue (starting with `prefix`), page by page. */
  async *queues(prefix?: string | undefined): AsyncGenerator<QueueStatus> {
    for (let after: string | Buffer | undefined; ; ) {
      const page = await this.list({ prefix, after, limit: R.MAX_BATCH });
      yield* page;
      if (page.length < R.MAX_BATCH) return;
      const last = page.at(-1)!;
      after = last.name64 ? Buffer.from(last.name64, 'base64') : last.name;
    }
  }

  /**
   * Messages as they arrive, each leased: call `ack()` or `nack()` on them (an unsettled one comes
   * back when its lease ends; both are retried while the server cannot be reached, until the lease
   * would end, as consume()'s are), and `touch(seconds)` to extend a lease while working on one (unlike
   * consume(), nothing extends it by itself). Ends when `signal` aborts or the client is closed.
   */
  async *messages(
    name: QueueName,
    o: Omit<ConsumeOptions, 'concurrency' | 'onError'> = {},
  ): AsyncGenerator<Message & { ack(): Promise<boolean>; nack(): Promise<boolean>; touch(seconds: number): Promise<boolean> }> {
    pollOptions('messages', o);
    while (!o.signal?.aborted && !this.closing.signal.aborted) {
      const m = await this.poll(name, o);
      if (!m) continue;
      let token = m.lease;
      // Until the loop settles it or asks for the next one, close() waits for it (as for consume()'s
      // handlers), so that its ack still goes through; not past its lease, after which an ack
      // would find none (a loop that keeps it without a word does not hold close() for ever).
      let leaseEnds = Date.now() + (o.lease ?? 60) * 1000;
      const touch = async (seconds: number) => {
        const renewed = await this.touch(name, m.pos, seconds, token);
        if (renewed) [token, leaseEnds] = [renewed, Date.now() + seconds * 1000];
        return renewed !== null;
      };
      let settled!: () => void;
      const holding = { settled: new Promise<void>((r) => (settled = r)), leaseEnds: () => leaseEnds };
      this.holding.add(holding);
      try {
        yield Object.assign(m, {
          // Retried while the server cannot be reached, as consume()'s are, until the lease would end.
          ack: () => settleUntil(this, 'ack', name, m.pos, token, leaseEnds).finally(settled),
          nack: () => settleUntil(this, 'nack', name, m.pos, token, leaseEnds).finally(settled),
          touch,
        });
      } finally {
        settled();
        this.holding.delete(holding);
      }
    }
  }

  /**
   * Runs `handler` on every message of the queue, `concurrency` at a time, until `signal` aborts:
   * long polls, leases each message, acks it when the handler resolves and gives it back when it
   * throws. Resolves once stopped and every running handler has finished; a handler learns of the
   * stop through the `signal` it is given (one that throws then gives its message back).
   *
   * A handler that throws: `onError` gets what it threw, and the message is nacked. It comes back
   * at once, ahead of newer messages, with `deliveries` one more, and is handed out again (to this
   * consumer or another; consume does not wait before taking it). So a message its handler always
   * throws on comes back forever, unless the queue has a maxdeliveries (`maxDeliveries()`): then
   * the nack of its last allowed delivery makes it a dead letter, which is not handed out again
   * (see `dead()`, and `redrive()` to bring it back). A lease that runs out, when the nack got no
   * answer, counts as a delivery ended too.
   */
  async consume(name: QueueName, handler: (message: Message, context: { signal: AbortSignal }) => unknown, o: ConsumeOptions = {}): Promise<void> {
    const concurrency = o.concurrency ?? 1;
    if (!Number.isInteger(concurrency) || concurrency < 1)
      throw new RangeError(`consume: concurrency must be a whole number of at least 1, not ${concurrency}`);
    pollOptions('consume', o);
    if (this.closing.signal.aborted) throw new NetworkError('the client is closed');
    let finished!: () => void;
    const tracked = new Promise<void>((resolve) => (finished = resolve));
    this.consuming.add(tracked);
    // One worker failing (the server refuses the password, say) stops them all, then consume throws.
    const stop = new AbortController();
    setMaxListeners(0, stop.signal); // one listener per worker's poll
    const stopAll = () => stop.abort();
    for (const s of [o.signal, this.closing.signal]) s?.addEventListener('abort', stopAll);
    if (o.signal?.aborted || this.closing.signal.aborted) stop.abort();
    // What onError throws must not stop the other messages: it is reported as a warning.
    const report = (err: unknown, m: Message) => {
      try {
        o.onError?.(err, m);
      } catch (thrown) {
        process.emitWarning(`consume: onError threw: ${errorMessage(thrown)}`);
      }
    };
    const polling = { ...o, signal: stop.signal };
    let failure: unknown;
    const worker = async () => {
      try {
        while (!stop.signal.aborted) {
          const m = await this.poll(name, polling);
          if (!m) continue;
          // Ack and nack wait for the last extension, and use the token it answered (this server
          // keeps it, so a touch whose answer was lost leaves it good; an older one gave a new one).
          const lease = o.lease ?? 60;
          let token = m.lease;
          // When the lease ends, as far as this client knows: from the get, then from each touch.
          let leaseEnds = Date.now() + lease * 1000;
          let lost = false;
          const gone = () => {
            lost = true;
            clearInterval(timer);
            report(new LeaseLostError(name, m.pos), m);
          };
          let extending = Promise.resolve();
          const extend = () => {
            extending = extending.then(() => {
              if (lost) return;
              const asked = Date.now();
              return this.touch(name, m.pos, lease, token).then(
                (t) => (t ? void ([token, leaseEnds] = [t, asked + lease * 1000]) : gone()),
                (err: unknown) => report(err, m),
              );
            });
          };
          const timer = setInterval(extend, lease * 500);
          let ok = true;
          try {
            await handler(m, { signal: stop.signal });
          } catch (err) {
            ok = false;
            report(err, m);
          } finally {
            clearInterval(timer);
          }
          await extending;
          if (lost) continue; // said once already; settling it now could only fail
          await settleUntil(this, ok ? 'ack' : 'nack', name, m.pos, token, leaseEnds).then(
            (held) => held || gone(),
            (err: unknown) => report(err, m),
          );
        }
      } catch (err) {
        failure ??= err;
        stop.abort();
      }
    };
    try {
      await Promise.all(Array.from({ length: concurrency }, worker));
    } finally {
      for (const s of [o.signal, this.closing.signal]) s?.removeEventListener('abort', stopAll);
      this.consuming.delete(tracked);
      finished();
    }
    if (failure !== undefined) throw failure;
  }

  /** One leased long poll; null when stopped or nothing came. Network trouble, and the HTTP errors
   * of a proxy in front of a server that is restarting (502, 503, 504), are waited out. Without a
   * `wait` given, a refused one is asked again shorter (`shorterWait`), and kept as the default only
   * once the server answered a poll with it: a refusal down to 1 s is thrown, the default left as
   * it was. */
  private async poll(name: QueueName, o: Omit<ConsumeOptions, 'concurrency' | 'onError'>): Promise<Message | null> {
    for (let wait = o.wait ?? this.defaultWait; ; ) {
      try {
        const m = await this.get(name, { wait, lease: o.lease ?? 60, signal: o.signal });
        if (o.wait === undefined) this.defaultWait = wait;
        return m;
      } catch (err) {
        if (o.signal?.aborted || this.closing.signal.aborted) return null;
        const shorter = o.wait === undefined ? shorterWait(wait, err) : undefined;
        if (shorter) {
          wait = shorter;
          continue;
        }
        if (!unavailable(err)) throw err;
        await sleep(1000, undefined, { signal: o.signal ?? this.closing.signal }).catch(() => {});
        return null;
      }
    }
  }

  /** Closes the connections. consume() and messages() stop (their leased long polls end at once),
   * and what consume()'s handlers finish is still acked, as is the message a messages() loop holds
   * (it resolves once that loop acks or nacks it, or asks for the next, or its lease has ended);
   * other requests in flight are answered first. Calls made once it resolved throw a NetworkError. */
  close(): Promise<void> {
    this.closing.abort();
    const held = [...this.holding].map((h) => {
      const over = new AbortController(); // the timer goes once the message is settled
      const ended = sleep(h.leaseEnds() - Date.now(), undefined, { signal: over.signal }).catch(() => {});
      return Promise.race([h.settled, ended]).finally(() => over.abort());
    });
    this.closed ??= Promise.allSettled([...this.consuming, ...held]).then(() => {
      this.shut = true;
      return this.pool.close();
    });
    return this.closed;
  }
}
