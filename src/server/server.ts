/**
 * The httpsqs front: request -> parse -> one store call -> reply. No ports are bound here and
 * nothing exits the process; the CLI does that.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { atoi, decodeBytes, decodeComponent, parseQuery, type Params } from '../protocol/query.js';
import * as R from '../protocol/reply.js';
import { MAX_POSITION, MIN_MAXQUEUE } from '../queue/ring.js';
import type { Store } from '../store/store.js';
import { createHttpServer, type HttpReply, type HttpRequest, type HttpServer } from './http.js';

export interface ServerOptions {
  /** Password clients must send as `auth=`; none when undefined. */
  auth?: string | undefined;
  /** When set, the only password accepted for reset, maxqueue and synctime. */
  adminAuth?: string | undefined;
  /** Seconds an idle keep-alive connection is kept open. */
  keepAliveTimeout: number;
  /** Largest accepted request body; larger ones get HTTP 413. */
  maxMessageBytes: number;
  /** Open connections allowed; more are closed as soon as they arrive. */
  maxConnections?: number;
  /** Called after `opt=synctime` changed this process's interval (to tell other workers). */
  onSynctime?: ((seconds: number) => void) | undefined;
  /** Where operational errors go (never message contents). */
  log?: (line: string) => void;
}

const MAX_NAME_BYTES = 256;
/** A charset goes into a header line: only visible ASCII, at most 40 bytes, as the reference. */
const CHARSET = /^[\x21-\x7e]{1,40}$/;
const EMPTY = Buffer.alloc(0);
/** Bodies up to this size are sent as byte strings, in the same write as the headers. */
const SMALL_BODY = 16 * 1024;
const SERVED_METHODS = new Set(['GET', 'POST', 'PUT', 'DELETE']);
const ADMIN_OPS = new Set(['reset', 'maxqueue', 'synctime']);

type Answer = { body: string | Buffer; pos?: number };

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'latin1').digest();
}

export function createHttpsqsServer(store: Store, options: ServerOptions): HttpServer {
  const log = options.log ?? ((line: string) => process.stderr.write(`httpsqs: ${line}\n`));
  // Compare digests so the comparison takes the same time whatever the length or content.
  const authDigest = options.auth === undefined ? undefined : digest(options.auth);
  const adminDigest = options.adminAuth === undefined ? undefined : digest(options.adminAuth);
  const matches = (given: string | undefined, want: Buffer) => given !== undefined && timingSafeEqual(digest(given), want);

  async function command(p: Params, body: Buffer): Promise<Answer> {
    const required = adminDigest && p.opt !== undefined && ADMIN_OPS.has(p.opt) ? adminDigest : authDigest;
    if (required && !matches(p.auth, required)) return { body: R.AUTH_FAILED };
    const { name, opt } = p;
    if (name === undefined || opt === undefined || name.length > MAX_NAME_BYTES) return { body: R.ERROR };
    switch (opt) {
      case 'put': {
        let message: Buffer;
        if (body.length > 0) message = decodeBytes(body);
        // The reference URL-decodes `data` once more after the query parser did.
        else if (p.data !== undefined) message = Buffer.from(decodeComponent(p.data), 'latin1');
        else return { body: R.PUT_ERROR };
        let pos: number;
        try {
          pos = await store.put(name, message);
        } catch (err) {
          log(`put failed: ${(err as Error).message}`);
          return { body: R.PUT_ERROR };
        }
        return pos === 0 ? { body: R.PUT_END } : { body: R.PUT_OK, pos };
      }
      case 'get': {
        const got = await store.get(name);
        return got ? { body: got.message, pos: got.pos } : { body: R.GET_END };
      }
      case 'status':
        return { body: R.statusText(name, await store.status(name)) };
      case 'status_json':
        return { body: R.statusJson(name, await store.status(name)) };
      case 'view': {
        const pos = atoi(p.pos);
        if (pos < 1 || pos > MAX_POSITION) return { body: R.ERROR };
        return { body: (await store.view(name, pos)) ?? EMPTY };
      }
      case 'reset':
        await store.reset(name);
        return { body: R.RESET_OK };
      case 'maxqueue': {
        const num = atoi(p.num);
        if (num < MIN_MAXQUEUE || num > MAX_POSITION) return { body: R.ERROR };
        return { body: (await store.maxqueue(name, num)) ? R.MAXQUEUE_OK : R.MAXQUEUE_CANCEL };
      }
      case 'synctime': {
        const num = atoi(p.num);
        if (num < 1 || num > MAX_POSITION) return { body: R.ERROR };
        store.setSyncInterval(num);
        options.onSynctime?.(num);
        return { body: R.SYNCTIME_OK };
      }
      default:
        return { body: R.ERROR };
    }
  }

  async function handle(req: HttpRequest): Promise<HttpReply> {
    if (!SERVED_METHODS.has(req.method)) {
      return {
        status: 405,
        head: 'Content-Type: text/plain\r\nAllow: GET, POST, PUT, DELETE\r\nCache-Control: no-cache\r\n',
        body: `Method ${req.method} is not served\n`,
      };
    }
    const params = parseQuery(req.target);
    const charset = params.charset;
    let out: Answer;
    try {
      out = await command(params, req.body);
    } catch (err) {
      log(`request failed: ${(err as Error).message}`);
      out = { body: R.ERROR };
    }
    // Spelled exactly as the reference does: some clients search header lines case-sensitively.
    const head =
      `Content-Type: ${charset && CHARSET.test(charset) ? `text/plain; charset=${charset}` : 'text/plain'}\r\n` +
      `Cache-Control: no-cache\r\n${out.pos ? `Pos: ${out.pos}\r\n` : ''}`;
    const body = typeof out.body === 'string' || out.body.length > SMALL_BODY ? out.body : out.body.toString('latin1');
    return { status: 200, head, body };
  }

  return createHttpServer(handle, {
    maxHeaderBytes: 16 * 1024,
    maxBodyBytes: options.maxMessageBytes,
    maxConnections: options.maxConnections,
    keepAliveMs: options.keepAliveTimeout * 1000,
    headersMs: 30_000,
    bodyMs: 60_000,
    messages: { 413: `Request body over the limit of ${options.maxMessageBytes} bytes (--max-message-bytes)` },
  });
}
