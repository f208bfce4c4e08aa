/**
 * The httpsqs front: request -> parse -> one store call -> reply. No ports are bound here and
 * nothing exits the process; the CLI does that.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { MAX_NAME_BYTES, parseQuery, type Params } from '../protocol/query.js';
import * as R from '../protocol/reply.js';
import { systemClock, type Clock } from '../queue/clock.js';
import { DiskLowError, type Store } from '../store/store.js';
import { extensionOps } from './extensions.js';
import { RateHistory, type HistorySnapshot } from '../dashboard/history.js';
import type { ServerFacts } from '../dashboard/index.js';
import { createEndpoints, isEndpoint, type ServerMetrics } from './endpoints.js';
import { referenceOps, type Answer, type Ops, type ServerEvents, whenRoom } from './ops.js';
import { createHttpServer, type HttpReply, type HttpRequest, type HttpServer } from './http.js';
import { Waiters, type Peers } from './waiters.js';
import { errorMessage } from '../errors.js';

export interface ServerOptions {
  /** Password clients must send as `auth=` (a string stands for its UTF-8 bytes); none when undefined. */
  auth?: string | Uint8Array | undefined;
  /** When set, the only password accepted for the admin opts (reset, maxqueue, synctime, maxdeliveries, redrive, discard; a string as UTF-8). */
  adminAuth?: string | Uint8Array | undefined;
  /** Seconds an idle keep-alive connection is kept open. */
  keepAliveTimeout: number;
  /** Largest accepted request body; larger ones get HTTP 413. */
  maxMessageBytes: number;
  /** Largest request line plus headers (so also the largest `data=`); larger ones get HTTP 431. */
  maxHeaderBytes?: number;
  /** Open connections allowed; more are closed as soon as they arrive. */
  maxConnections?: number;
  /** Called after `opt=synctime` changed this process's interval (to tell other workers). */
  onSynctime?: ((seconds: number) => void) | undefined;
  /** Where operational errors go (never message contents). */
  log?: (line: string) => void;
  /** Longest long poll (`wait=`) accepted, in seconds. */
  maxWait?: number;
  /** Most message bytes in one batch reply (mget, view with num); at least one message goes. */
  maxReplyBytes?: number;
  /** Memory for bodies and replies over 64 KiB, all connections together; unlimited when undefined. */
  maxBufferedBytes?: number | undefined;
  /** Time for long polls and lease alarms (the store has its own; give both the same in tests). */
  clock?: Clock | undefined;
  /** Other processes serving the same store, for long polls (`--workers`). */
  peers?: Peers | undefined;
  /** Counts and timings for /metrics; /metrics answers 404 without it. */
  metrics?: ServerMetrics | undefined;
  /** Host names the dashboard answers to besides IP literals and `localhost`. */
  allowedHosts?: readonly string[] | undefined;
  /** Facts for /dashboard; no dashboard without them. */
  facts?: (() => Omit<ServerFacts, 'connections'>) | undefined;
  /** Puts and gets counted for the dashboard's charts; a new one when there is a dashboard and none is given. */
  history?: RateHistory | undefined;
  /** What /dashboard/history answers under `--workers`: every worker's history added up. */
  historyFromCluster?: (() => Promise<HistorySnapshot>) | undefined;
}

/** What `createHttpsqsServer` gives: the HTTP server, and the waiters to wake from other processes. */
export interface HttpsqsServer extends HttpServer {
  waiters: Waiters;
}

/** A charset goes into a header line as given when it is at most 40 bytes (empty too), as the
 * reference does, and made of the characters a charset name has (RFC 2978) or an HTTP token may
 * have (RFC 9110: also `.`, as in `ANSI_X3.4-1968`, the registered name of US-ASCII, and `*`, `|`);
 * any other is dropped: a control byte would split the header, and a comma or slash add a media
 * type (`a,text/html`) that a browser takes, running a stored message as a page. */
const CHARSET = /^[A-Za-z0-9!#$%&'*+.^_`{|}~-]{0,40}$/;
/** Bodies up to this size are sent as byte strings, in the same write as the headers. */
const SMALL_BODY = 16 * 1024;
const SERVED_METHODS = new Set(['GET', 'POST', 'PUT', 'DELETE']);
const unchanged = (reply: HttpReply) => reply;

function digest(bytes: Uint8Array): Buffer {
  return createHash('sha256').update(bytes).digest();
}

/** Passwords are compared as bytes: the configured one's (UTF-8 for a string), against what the
 * client sent, which the query parser hands over as a byte string (one char a byte). */
const passwordDigest = (password: string | Uint8Array | undefined) =>
  password === undefined ? undefined : digest(typeof password === 'string' ? Buffer.from(password, 'utf8') : password);

export function createHttpsqsServer(store: Store, options: ServerOptions): HttpsqsServer {
  const log = options.log ?? ((line: string) => process.stderr.write(`httpsqs: ${line}\n`));
  const metrics = options.metrics;
  const history = options.facts ? (options.history ?? new RateHistory()) : undefined;
  const events: ServerEvents = {
    onSettled: metrics?.onSettled,
    onWaited: metrics?.onWaited,
    onReset: metrics?.onReset,
    onPut: (name: string, count: number) => {
      metrics?.onPut?.(name, count);
      history?.record(name, count, 0);
    },
    onTaken: (name: string, count: number, leased: boolean) => {
      metrics?.onTaken?.(name, count, leased);
      history?.record(name, 0, count);
    },
  };
  const clock = options.clock ?? systemClock;
  const waiters = new Waiters(options.peers, clock);
  // A put refused for want of disk space is not logged each time: the store says when that starts and ends.
  const putFailed = (what: string, err: unknown) => err instanceof DiskLowError || log(`${what} failed: ${errorMessage(err)}`);
  const context = { store, clock, waiters, events, putFailed, onSynctime: options.onSynctime };
  const reference = referenceOps(context);
  const ops: Ops = {
    ...reference,
    ...extensionOps(
      { ...context, maxWait: options.maxWait ?? R.DEFAULTS.maxWait, maxReplyBytes: options.maxReplyBytes ?? R.DEFAULTS.maxReplyBytes },
      reference,
    ),
  };
  // Compare digests so the comparison takes the same time whatever the length or content.
  const authDigest = passwordDigest(options.auth);
  const adminDigest = passwordDigest(options.adminAuth);
  const matches = (given: string | undefined, want: Buffer) => given !== undefined && timingSafeEqual(digest(Buffer.from(given, 'latin1')), want);
  const endpoint = createEndpoints({
    store,
    metrics,
    dashboard: options.facts &&
      history && {
        facts: () => ({ ...options.facts!(), connections: http.connections() }),
        history: options.historyFromCluster ?? (async () => history.snapshot()),
      },
    authorized: (auth) => !authDigest || matches(auth, authDigest),
    allowedHosts: options.allowedHosts,
  });

  function command(p: Params, req: HttpRequest): Promise<Answer> {
    const op = p.opt !== undefined && Object.hasOwn(ops, p.opt) ? ops[p.opt] : undefined;
    // The password first, as the reference checks it, whatever the rest says.
    const required = adminDigest && op?.admin ? adminDigest : authDigest;
    if (required && !matches(p.auth, required)) return Promise.resolve({ body: R.AUTH_FAILED });
    const { name } = p;
    if (!op || (!op.nameless && (name === undefined || name.length > MAX_NAME_BYTES))) return Promise.resolve({ body: R.ERROR });
    // A reply that may carry messages waits while the memory for large replies is used up.
    return op.large ? whenRoom(op, name ?? '', p, req) : op.run(name ?? '', p, req);
  }

  // Promises chained rather than async functions, and as few steps as can be: a request passes
  // through each of these, and on two cores every step between the HTTP loop and the store shows
  // (BENCHMARKS.md). The metrics are counted in the step that renders the reply.
  function handle(req: HttpRequest): Promise<HttpReply> {
    const params = parseQuery(req.target);
    const end = req.target.search(/[?#]/);
    // The absolute form (`http://host/metrics`, which a proxy sends) names the same path (RFC 9112 3.2.2).
    let path = end < 0 ? req.target : req.target.slice(0, end);
    if (path.charCodeAt(0) !== 47) path = path.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/]*/i, '');
    const served = isEndpoint(path);
    if (!metrics) return answer(req, path, served, params, unchanged);
    const started = performance.now();
    return answer(req, path, served, params, (reply) => {
      // Labelled by opt, or by path for the other endpoints (the dashboard's pages under one).
      metrics.onRequest(served ? path.replace(/^\/dashboard.*/, '/dashboard') : (params.opt ?? ''), (performance.now() - started) / 1000);
      return reply;
    });
  }

  const refused = (method: string): HttpReply => ({
    status: 405,
    head: 'Content-Type: text/plain\r\nAllow: GET, POST, PUT, DELETE\r\nCache-Control: no-cache\r\n',
    body: `Method ${method} is not served\n`,
  });

  /** `endpointPath`: the path is one of endpoints.ts's (they answer it, or let the queues do).
   * `finish`: what is done with the reply before it goes (the metrics). */
  function answer(req: HttpRequest, path: string, endpointPath: boolean, params: Params, finish: (r: HttpReply) => HttpReply): Promise<HttpReply> {
    // HEAD is for the endpoints (a load balancer's health check); it never runs a queue operation.
    const headOnly = req.method === 'HEAD';
    if (!headOnly && !SERVED_METHODS.has(req.method)) return Promise.resolve(finish(refused(req.method)));
    const queue = () => (headOnly ? Promise.resolve(finish(refused(req.method))) : reply(params, req, finish));
    return endpointPath ? endpoint(path, params.auth, req.headers.host, req.room).then((other) => (other ? finish(other) : queue())) : queue();
  }

  /** The reply to a queue operation. */
  function reply(params: Params, req: HttpRequest, finish: (r: HttpReply) => HttpReply): Promise<HttpReply> {
    let out: Promise<Answer>;
    try {
      out = command(params, req);
    } catch (err) {
      out = Promise.reject(err);
    }
    const charset = params.charset;
    const render = (out: Answer): HttpReply => {
      const type = out.json ? 'application/json' : charset !== undefined && CHARSET.test(charset) ? `text/plain; charset=${charset}` : 'text/plain';
      // Spelled exactly as the reference does: some clients search header lines case-sensitively.
      const head = `Content-Type: ${type}\r\nCache-Control: no-cache\r\n${out.pos ? `Pos: ${out.pos}\r\n` : ''}${out.head ?? ''}`;
      const body = Buffer.isBuffer(out.body) && out.body.length <= SMALL_BODY ? out.body.toString('latin1') : out.body;
      return finish({ status: 200, head, body });
    };
    return out.then(render, (err: unknown) => {
      log(`request failed: ${errorMessage(err)}`);
      return render({ body: R.ERROR });
    });
  }

  const maxHeaderBytes = options.maxHeaderBytes ?? R.DEFAULTS.maxHeaderBytes;
  const http = createHttpServer(handle, {
    maxHeaderBytes,
    maxBodyBytes: options.maxMessageBytes,
    maxBufferedBytes: options.maxBufferedBytes,
    maxConnections: options.maxConnections,
    keepAliveMs: options.keepAliveTimeout * 1000,
    headersMs: 30_000,
    bodyMs: 60_000,
    messages: {
      413: `Request body over the limit of ${options.maxMessageBytes} bytes (--max-message-bytes)`,
      431: `Request line and headers over the limit of ${maxHeaderBytes} bytes (--max-header-bytes)`,
    },
  });
  return {
    ...http,
    waiters,
    close() {
      waiters.close(); // long polls answer now, so that their connections can close
      return http.close();
    },
  };
}
