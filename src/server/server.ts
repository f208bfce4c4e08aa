/**
 * The HTTP front: socket -> parse -> one store call -> reply. No ports are bound here and
 * nothing exits the process; the CLI does that.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { Socket } from 'node:net';
import { atoi, decodeBytes, decodeComponent, parseQuery, type Params } from '../protocol/query.js';
import * as R from '../protocol/reply.js';
import { MAX_POSITION, MIN_MAXQUEUE } from '../queue/ring.js';
import type { Store } from '../store/store.js';

export interface ServerOptions {
  /** Password clients must send as `auth=`; none when undefined. */
  auth?: string | undefined;
  /** Seconds an idle keep-alive connection is kept open. */
  keepAliveTimeout: number;
  /** Largest accepted request body; larger ones get HTTP 413. */
  maxMessageBytes: number;
  /** Called after `opt=synctime` changed this process's interval (to tell other workers). */
  onSynctime?: ((seconds: number) => void) | undefined;
  /** Where operational errors go (never message contents). */
  log?: (line: string) => void;
}

export interface HttpsqsServer {
  server: http.Server;
  /** Stops accepting, lets in-flight requests finish, then closes every connection. */
  close(): Promise<void>;
}

const MAX_NAME_BYTES = 256;
const MAX_CHARSET_BYTES = 40;
const EMPTY = Buffer.alloc(0);
const SMALL_BODY = 16 * 1024;
const SERVED_METHODS = new Set(['GET', 'POST', 'PUT', 'DELETE']);

/** Thrown while reading a request to answer it with a plain HTTP error instead of a token. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'latin1').digest();
}

export function createHttpsqsServer(store: Store, options: ServerOptions): HttpsqsServer {
  const log = options.log ?? ((line: string) => process.stderr.write(`httpsqs: ${line}\n`));
  // Compare digests so the comparison takes the same time whatever the length or content.
  const authDigest = options.auth === undefined ? undefined : digest(options.auth);
  let closing = false;

  function reply(res: http.ServerResponse, body: string | Buffer, type: string, pos = 0): void {
    // Spelled exactly as the reference does: some clients search header lines case-sensitively.
    const headers = [
      'Content-Type', type,
      'Content-Length', String(body.length), // strings here are byte strings: length is bytes
      'Connection', res.shouldKeepAlive && !closing ? 'keep-alive' : 'close',
      'Cache-Control', 'no-cache',
    ];
    if (pos > 0) headers.push('Pos', String(pos));
    res.writeHead(200, headers);
    // node:http sends a latin1 string body in the same write as the headers (a Buffer costs a
    // second one), so small bodies go as byte strings; large ones as they are, without a copy.
    if (typeof body === 'string' || body.length > SMALL_BODY) res.end(body, 'latin1');
    else res.end(body.toString('latin1'), 'latin1');
  }

  function plainError(res: http.ServerResponse, status: number, message: string): void {
    const body = `${message}\n`;
    res.writeHead(status, [
      'Content-Type', 'text/plain',
      'Content-Length', String(Buffer.byteLength(body)),
      'Connection', 'close',
      'Cache-Control', 'no-cache',
      ...(status === 405 ? ['Allow', 'GET, POST, PUT, DELETE'] : []),
    ]);
    res.end(body);
  }

  async function command(p: Params, body: Buffer): Promise<{ body: string | Buffer; pos?: number }> {
    if (authDigest && (p.auth === undefined || !timingSafeEqual(digest(p.auth), authDigest))) {
      return { body: R.AUTH_FAILED };
    }
    const { name, opt } = p;
    if (name === undefined || opt === undefined || name.length > MAX_NAME_BYTES) return { body: R.ERROR };
    switch (opt) {
      case 'put': {
        let message: Buffer;
        if (body.length > 0) message = decodeBytes(body);
        // The reference URL-decodes `data` once more after the query parser did.
        else if (p.data !== undefined) message = Buffer.from(decodeComponent(p.data), 'latin1');
        else return { body: R.PUT_ERROR };
        const pos = await store.put(name, message).catch((err) => {
          log(`put to a queue failed: ${(err as Error).message}`);
          return -1;
        });
        if (pos < 0) return { body: R.PUT_ERROR };
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

  const tooLarge = () =>
    new HttpError(413, `Request body over the limit of ${options.maxMessageBytes} bytes (--max-message-bytes)`);
  const declaredTooLarge = (req: http.IncomingMessage) =>
    Number(req.headers['content-length'] ?? 0) > options.maxMessageBytes;

  function readBody(req: http.IncomingMessage): Promise<Buffer> {
    const declared = req.headers['content-length'];
    if (declared === undefined && req.headers['transfer-encoding'] === undefined) return Promise.resolve(EMPTY);
    if (declaredTooLarge(req)) return Promise.reject(tooLarge());
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > options.maxMessageBytes) {
          req.removeAllListeners('data');
          reject(tooLarge());
        } else chunks.push(chunk);
      });
      req.on('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)));
      req.on('error', reject);
    });
  }

  async function onRequest(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (!SERVED_METHODS.has(req.method!)) return plainError(res, 405, `Method ${req.method} is not served`);
    const params = parseQuery(req.url ?? '/');
    const charset = params.charset;
    const type = charset && charset.length <= MAX_CHARSET_BYTES ? `text/plain; charset=${charset}` : 'text/plain';
    try {
      const body = await readBody(req);
      const out = await command(params, body);
      if (!res.destroyed) reply(res, out.body, type, out.pos);
    } catch (err) {
      if (res.headersSent || res.destroyed) return;
      if (err instanceof HttpError) return plainError(res, err.status, err.message);
      log(`request failed: ${(err as Error).message}`);
      reply(res, R.ERROR, type);
    }
  }

  const server = http.createServer(
    { keepAliveTimeout: options.keepAliveTimeout * 1000, requestTimeout: 120_000, headersTimeout: 30_000 },
    (req, res) => void onRequest(req, res),
  );
  // `Expect: 100-continue`: refuse an oversized body before the client sends it.
  server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (declaredTooLarge(req)) return plainError(res, 413, tooLarge().message);
    res.writeContinue();
    void onRequest(req, res);
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (!socket.writable || (err as { code?: string }).code === 'ECONNRESET') return socket.destroy();
    const tooBig = err.code === 'HPE_HEADER_OVERFLOW';
    const status = tooBig ? '431 Request Header Fields Too Large' : '400 Bad Request';
    const body = tooBig ? 'Request headers too large\n' : 'Malformed HTTP request\n';
    socket.end(
      `HTTP/1.1 ${status}\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n` +
        `Connection: close\r\nCache-Control: no-cache\r\n\r\n${body}`,
    );
  });

  let closed: Promise<void> | undefined;
  return {
    server,
    close() {
      closing = true;
      closed ??= new Promise<void>((resolve) => {
        if (!server.listening) return resolve();
        server.close(() => resolve());
        server.closeIdleConnections();
        // Connections busy now get `Connection: close` with their reply; any that linger are cut.
        const idle = setInterval(() => server.closeIdleConnections(), 100);
        const hard = setTimeout(() => server.closeAllConnections(), 10_000);
        server.once('close', () => (clearInterval(idle), clearTimeout(hard)));
      });
      return closed;
    },
  };
}
