/**
 * A small HTTP/1.0 and 1.1 server on node:net, made for this protocol: requests are a target plus
 * an optional body, replies always carry Content-Length. node:http spends more than half of its
 * time per request on machinery this protocol never uses (streams, header objects, validation
 * of what we write ourselves); this loop costs a fraction of that (see BENCHMARKS.md).
 *
 * What it does: keep-alive (1.1 by default, 1.0 on request), pipelining (one request at a time
 * per connection, in order), Content-Length and chunked bodies with a size limit,
 * `Expect: 100-continue`, replies to a client that half-closed after its requests, and time
 * limits for idle connections, slow headers, slow bodies and replies the client stopped reading (on
 * inactivity: a slow reader that keeps reading gets its whole reply).
 * What it refuses: malformed request lines or headers (400), headers over the limit (431),
 * bodies over the limit (413), Content-Length together with Transfer-Encoding and any transfer
 * coding but chunked (400/501, to rule out request smuggling). Every refusal closes the
 * connection.
 */
import net from 'node:net';

export interface HttpRequest {
  method: string;
  /** The request target as sent, one char a byte (latin1). */
  target: string;
  /** Header names lower-cased; the first occurrence wins. */
  headers: Record<string, string>;
  body: Buffer;
  /** For a handler that may wait long: aborted when the client goes away before the reply.
   * Watching resumes reading where the connection had stopped (a pipelined request waiting). */
  gone(): AbortSignal;
  /** Before taking messages: undefined to go on now, or the turn, once the bodies and replies of all
   * connections leave room (false: the client went or half-closed meanwhile, or `stop` came first,
   * so take nothing). */
  room(stop?: AbortSignal): Promise<boolean> | undefined;
  /** The take the turn was for found nothing (a long poll going back to sleep): the next may go. */
  roomDone(): void;
  /** A take has just handed out `bytes` of messages (its write not yet durable): counted from now
   * as this request's reply, so that takes that begin after it find the memory they use. */
  hold(bytes: number): void;
}

/** A body written piece by piece as the client reads it: a large reply is never whole in memory,
 * and a client that does not read holds at most one piece beyond its socket's buffer. */
export interface Streamed {
  /** The sum of the pieces' lengths (the Content-Length). */
  length: number;
  /** The memory its pieces are made from, when it is less than `length`. */
  held?: number;
  pieces(): Iterable<Buffer>;
}

export interface HttpReply {
  status: number;
  /** Header lines, each ending in CRLF, without Content-Length and Connection (added here). */
  head: string;
  /** A byte string (latin1), bytes, or pieces of bytes. */
  body: string | Buffer | Streamed;
}

export interface HttpOptions {
  maxHeaderBytes: number;
  maxBodyBytes: number;
  /** Idle time between requests before a keep-alive connection is closed. */
  keepAliveMs: number;
  /** Time allowed from a request's first byte to the end of its headers. */
  headersMs: number;
  /** Inactivity allowed while a body is arriving. */
  bodyMs: number;
  /** Open connections allowed; more are closed as soon as they arrive. */
  maxConnections?: number | undefined;
  /** Replies to requests the limits refuse, e.g. to say which flag sets the limit. */
  messages?: Partial<Record<413 | 431, string>>;
  /** On close, the time after which connections still busy go, but replies still being read.
   * @default 10000 */
  stopGraceMs?: number;
  /** Bytes that bodies and replies over 64 KiB may hold, all connections together (see Budget).
   * @default unlimited */
  maxBufferedBytes?: number | undefined;
  /** While requests wait for room, a body or reply over 64 KiB must move at least this fast
   * (bytes a second, after `bodyMs`) or its connection is closed. @default 262144 */
  minBytesPerSecond?: number;
}

export type Handler = (req: HttpRequest) => HttpReply | Promise<HttpReply>;

const REASONS: Record<number, string> = {
  100: 'Continue',
  200: 'OK',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  413: 'Payload Too Large',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  501: 'Not Implemented',
  503: 'Service Unavailable',
};
const CRLFCRLF = Buffer.from('\r\n\r\n');
// The target: any bytes but controls and the space (not `\S`, which also excludes 0xA0, a byte of
// many UTF-8 characters sent raw, as curl does).
const REQUEST_LINE = /^([A-Z]+) ([^\x00-\x20\x7f]+) HTTP\/1\.([01])$/;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const isBlank = (c: number) => c === 32 || c === 9;

/** A header line's name and value (spaces and tabs around the value left out), or undefined when it
 * is none. No regular expression runs over the value: one that backtracks over its spaces takes
 * time quadratic in them, and one request could stall the server for seconds. */
function field(line: string): [string, string] | undefined {
  const colon = line.indexOf(':');
  if (colon <= 0 || !TOKEN.test(line.slice(0, colon))) return undefined;
  let start = colon + 1;
  let end = line.length;
  while (start < end && isBlank(line.charCodeAt(start))) start++;
  while (end > start && isBlank(line.charCodeAt(end - 1))) end--;
  const value = line.slice(start, end);
  // Control bytes but tab (NUL among them) make no value (RFC 9110 5.5): one class, no backtracking.
  return /[\x00-\x08\x0a-\x1f\x7f]/.test(value) ? undefined : [line.slice(0, colon), value];
}
/** How many of the last bytes of `b` (at most 3) may be the start of a CRLFCRLF. */
function endStarted(b: Buffer): number {
  const n = b.length;
  if (b[n - 1] === 13) return b[n - 2] === 10 && b[n - 3] === 13 ? 3 : 1;
  return b[n - 1] === 10 && b[n - 2] === 13 ? 2 : 0;
}
const EMPTY = Buffer.alloc(0);
/** Larger bodies are written a piece at a time: a write counts as unsent until it is whole, so a
 * slow reader's progress (which earns it time, see `expired`) shows only between pieces. */
export const PIECE = 64 * 1024;

function* slices(b: Buffer): Generator<Buffer> {
  for (let o = 0; o < b.length; o += PIECE) yield b.subarray(o, o + PIECE);
}

/** How late a time limit may be seen, at most: a tenth of the shortest, within [10 ms, 1 s]. One
 * timer a server checks every connection's deadline that often, rather than each connection
 * re-arming a timer of its own four times a request (a timer and a bound function each time). */
const tickOf = (o: HttpOptions) => Math.min(1000, Math.max(10, Math.floor(Math.min(o.keepAliveMs, o.headersMs, o.bodyMs) / 10)));

/**
 * The memory that bodies and replies over PIECE hold, all connections together. A body is refused
 * (503) once it would not fit. A reply is never refused, as its messages are taken already: it is
 * counted until written, and while the count is at the limit, takes (get, view, mget, dead) wait
 * their turn before they take anything; as room comes back they go one at a time, each until its
 * reply is counted or it found nothing.
 */
class Budget {
  held = 0;
  /** Bodies refused so far. */
  refused = 0;
  /** When a body was last refused: slow transfers are dropped while there is such contention. */
  private refusedAt = 0;
  /** Takes waiting, in order; each is told whether to go (false: its client went). */
  readonly waiting = new Set<(go: boolean) => void>();
  /** A take let in after waiting is in progress. */
  private admitted = false;

  constructor(readonly limit: number) {}

  /** A take may go at once. */
  get fits(): boolean {
    return this.held < this.limit && this.waiting.size === 0;
  }

  get contended(): boolean {
    return this.waiting.size > 0 || Date.now() - this.refusedAt < 10_000;
  }

  /** Counts `n` more bytes: a body's only if they fit, a reply's always. */
  take(n: number, always: boolean): boolean {
    if (!always && this.held + n > this.limit) {
      this.refusedAt = Date.now();
      this.refused++;
      return false;
    }
    this.held += n;
    return true;
  }

  give(n: number): void {
    this.held -= n;
    this.admit();
  }

  queue(go: (go: boolean) => void): void {
    this.waiting.add(go);
    this.admit();
  }

  /** The take let in is over (its reply counted, nothing found, or its client gone). */
  done(): void {
    this.admitted = false;
    this.admit();
  }

  private admit(): void {
    if (this.admitted || this.held >= this.limit) return;
    for (const next of this.waiting) {
      this.waiting.delete(next);
      this.admitted = true;
      next(true);
      return;
    }
  }
}

/** Thrown by the parser: answer with this status and close. */
class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function render(status: number, head: string, length: number, keepAlive: boolean): string {
  return `HTTP/1.1 ${status} ${REASONS[status] ?? 'OK'}\r\n${head}Content-Length: ${length}\r\nConnection: ${keepAlive ? 'keep-alive' : 'close'}\r\n\r\n`;
}

const enum Phase {
  Head,
  Body,
  ChunkSize,
  ChunkData,
  ChunkEnd,
  Trailer,
}

class Connection {
  private phase = Phase.Head;
  /** Bytes received and not yet parsed. */
  private pending: Buffer = EMPTY;
  private headStarted = 0;
  /** The request line in progress has been seen whole and is well-formed. */
  private lineChecked = false;
  /** Bytes of the head in progress already checked for bare LFs. */
  private scanned = 0;
  /** The buffer `pending` was last made in by `append`, while `pending` starts it. */
  private grown: Buffer | undefined;
  private req: HttpRequest | undefined;
  private keepAlive = false;
  private http10 = false;
  /** The body received so far: its first `bodySize` bytes. One buffer that grows by doubling, so
   * that memory stays proportional to the body however small its pieces (1-byte chunks). */
  private body: Buffer = EMPTY;
  private bodySize = 0;
  /** Bytes still expected: of a Content-Length body, or of the current chunk. */
  private remaining = 0;
  /** A request is being handled, or its reply waits for the client to read what we sent. */
  busy = false;
  closing = false;
  /** A streamed reply is being written. */
  private streaming = false;
  /** The client half-closed: it sends no more, but may still read the replies it is owed. */
  private ended = false;
  private pumping = false;
  private watcher: { signal: AbortSignal; abort: () => void } | undefined;
  /** When the time limit in force runs out (the server's clock, ms), 0 for none. Checked by the
   * server's one timer (`expired`). */
  private deadline = 0;
  /** Reply bytes not yet handed to the kernel when that limit was set: fewer at the deadline means
   * the client is reading a reply, which earns it more time. */
  private unsent = 0;
  /** Bytes of the body or reply in progress counted in the budget, since when, and the bytes it
   * sends or receives (a reply's JSON may be longer than the messages it is made of). */
  private charged = 0;
  private chargedAt = 0;
  private transfer = 0;
  /** Waiting for the budget to let a take in, or let in and the take not over. */
  private waiting: ((go: boolean) => void) | undefined;
  private turnTaken = false;
  /** The request being handled. */
  private current: HttpRequest | undefined;
  /** A request's ways to ask: made once a connection, not once a request. */
  private readonly goneOf = () => this.gone();
  private readonly roomOf = (stop?: AbortSignal) => this.room(stop);
  private readonly roomDoneOf = () => this.turnDone();
  // Not once the connection is closed (its count was let go then; nothing would let this go).
  private readonly holdOf = (bytes: number) => void (bytes > PIECE && !this.socket.destroyed && this.charge(bytes, true));

  constructor(
    readonly socket: net.Socket,
    private readonly handler: Handler,
    private readonly opts: HttpOptions,
    private readonly server: { shuttingDown: boolean; budget: Budget | undefined },
  ) {
    socket.setNoDelay(true);
    this.limit(opts.keepAliveMs);
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('end', () => this.onEnd());
    socket.on('error', () => socket.destroy());
    if (server.budget) socket.once('close', () => (this.charge(0), this.leave(), this.turnDone()));
  }

  /** Counts `n` bytes (0 for none) in the budget for this connection's body or reply, which moves
   * `transfer` bytes. A body is refused when it does not fit; a reply (`always`) is counted anyway. */
  private charge(n: number, always = false, transfer = n): void {
    const budget = this.server.budget;
    if (!budget || n === this.charged) return;
    if (n > this.charged && !budget.take(n - this.charged, always)) {
      throw new Refusal(503, 'Server busy: request bodies and replies use the memory allowed (--max-buffered-bytes); try again later');
    }
    if (n < this.charged) budget.give(this.charged - n);
    if (this.charged === 0 || always) this.chargedAt = Date.now();
    this.charged = n;
    this.transfer = transfer;
  }

  private room(stop?: AbortSignal): Promise<boolean> | undefined {
    const budget = this.server.budget;
    if (!budget || this.turnTaken || budget.fits) return undefined;
    if (this.ended || this.socket.destroyed || stop?.aborted) return Promise.resolve(false);
    if (this.socket.isPaused()) {
      // Paused with more pipelined than a request's headers may take, the socket would not tell that
      // its client reset: a take let in later would lose what it took. It takes nothing now, as a
      // long poll does. Paused with less (the requests before it took the rest), it reads on.
      if (this.pending.length > this.opts.maxHeaderBytes) return Promise.resolve(false);
      this.socket.resume();
    }
    // A take never reads its body: what the body holds goes now, or it would keep out the very room
    // the take waits for (and every other take with it).
    if (this.current) this.current.body = EMPTY;
    this.charge(0);
    if (budget.fits) return undefined;
    const leave = () => this.leave();
    stop?.addEventListener('abort', leave);
    return new Promise<boolean>((resolve) => {
      this.waiting = (go) => {
        stop?.removeEventListener('abort', leave);
        this.waiting = undefined;
        this.turnTaken = go;
        // Let in as its socket closes (destroyed, its close event not yet seen): it takes nothing.
        if (go && this.socket.destroyed) this.turnDone();
        resolve(go && !this.socket.destroyed);
      };
      budget.queue(this.waiting);
    });
  }

  /** The client went or half-closed, or the take's time is up: a take waiting for its turn takes nothing. */
  private leave(): void {
    if (!this.waiting) return;
    this.server.budget!.waiting.delete(this.waiting);
    this.waiting(false);
  }

  private turnDone(): void {
    if (!this.turnTaken) return;
    this.turnTaken = false;
    this.server.budget!.done();
  }

  /** A reply is being handed over: written, and not all of it taken by the kernel yet. */
  get replying(): boolean {
    return this.streaming || this.socket.writableLength > 0;
  }

  /** Idle between requests: nothing received, nothing in progress, and no reply still on its way
   * out (one smaller than the socket's high-water mark is written at once, and may wait in the
   * socket while the client's buffers are full: a stop must not drop it). */
  get idle(): boolean {
    return !this.busy && this.phase === Phase.Head && this.pending.length === 0 && this.socket.writableLength === 0;
  }

  /** Sets the time limit in force: `ms` from now (0: none). */
  private limit(ms: number): void {
    this.deadline = ms ? Date.now() + ms : 0;
    this.unsent = this.socket.writableLength;
  }

  /** Called by the server's timer: acts on a time limit that ran out. */
  expired(now: number): void {
    // While the budget is short, a large body or reply must move at a minimum rate.
    const rate = this.opts.minBytesPerSecond ?? 256 * 1024;
    if (this.charged && this.server.budget?.contended && now > this.chargedAt + this.opts.bodyMs + (this.transfer / rate) * 1000) {
      return void this.socket.destroy();
    }
    if (!this.deadline || now < this.deadline) return;
    // A large reply to a slow reader: the limit is on inactivity, so reading restarts it.
    const unsent = this.socket.writableLength;
    if (unsent > 0 && unsent < this.unsent) return void this.limit(this.opts.bodyMs);
    this.deadline = 0;
    this.onTimeout();
  }

  private onTimeout(): void {
    // A reply cut short (the client stopped reading it) cannot be followed by an error: close.
    if (this.idle || this.closing || this.streaming || this.socket.writableLength > 0) return void this.socket.destroy();
    this.refuse(new Refusal(408, 'Request not received in time'));
  }

  private onData(data: Buffer): void {
    if (this.closing) return; // draining after a refusal
    // A body's limit is on inactivity: each piece that arrives restarts it.
    if (this.phase !== Phase.Head && !this.busy) this.limit(this.opts.bodyMs);
    this.append(data);
    // Read on while a request is in progress (a pause and a resume around each request cost about
    // a µs of stream machinery), but only as much as one request's headers may take.
    if (this.busy && this.pending.length > this.opts.maxHeaderBytes) {
      this.socket.pause();
      // Paused, the socket would not tell that the client left: a long poll answers now, and a take
      // waiting for room takes nothing.
      this.watcher?.abort();
      this.leave();
    }
    this.pump();
  }

  /** Requests already received are answered, then the connection closes. A long poll answers at
   * once, as if its time were up: a client that went away entirely looks the same from here, and
   * must not take a message with it. */
  private onEnd(): void {
    this.ended = true;
    this.leave();
    this.watcher?.abort();
    this.pump();
  }

  private gone(): AbortSignal {
    if (!this.watcher) {
      const controller = new AbortController();
      this.watcher = { signal: controller.signal, abort: () => controller.abort() };
      this.socket.once('close', this.watcher.abort);
      this.socket.resume();
      // The client half-closed before this request's turn (it was pipelined): answer at once.
      if (this.ended) controller.abort();
    }
    return this.watcher.signal;
  }

  /** Parses as far as the bytes go, dispatching each complete request in turn. Re-entered from a
   * reply sent during the loop, it returns at once: the loop goes on by itself. */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (!this.busy && !this.closing && this.pending.length > 0) {
        if (!this.step()) break;
      }
    } catch (err) {
      this.refuse(err instanceof Refusal ? err : new Refusal(400, 'Malformed HTTP request'));
    } finally {
      this.pumping = false;
    }
    // Nothing in progress: read on, or, once the client has sent all it will, close.
    if (!this.busy && !this.closing) {
      if (this.ended) this.finish();
      else this.socket.resume();
    }
  }

  private take(n: number): Buffer {
    const out = this.pending.subarray(0, n);
    this.pending = n >= this.pending.length ? EMPTY : this.pending.subarray(n);
    this.grown = undefined;
    return out;
  }

  /** Adds what arrived to `pending`, into room left after it when `pending` fills the start of a
   * buffer made here: headers that arrive in many pieces are copied a few times in all, not each
   * time a piece comes (a MiB of headers in 100-byte pieces, under a raised --max-header-bytes,
   * cost seconds of CPU). Nothing else sees that room: `take` hands out the start of `pending`. */
  private append(data: Buffer): void {
    const p = this.pending;
    if (p.length === 0) return void (this.pending = data);
    const size = p.length + data.length;
    const g = this.grown;
    if (!g || p.byteOffset !== g.byteOffset || p.buffer !== g.buffer || size > g.length) {
      this.grown = Buffer.allocUnsafe(Math.max(size, 2 * p.length, 4096));
      p.copy(this.grown);
    }
    data.copy(this.grown!, p.length);
    this.pending = this.grown!.subarray(0, size);
  }

  private addBody(part: Buffer): void {
    const size = this.bodySize + part.length;
    if (size > this.opts.maxBodyBytes) throw this.tooLarge();
    if (this.bodySize === 0)
      this.body = part; // most bodies come in one piece: no copy
    else {
      if (size > this.body.length) {
        // Doubling, not the announced length: memory follows what really arrived. What it takes is
        // counted first (a body of Content-Length needs no more than that).
        const most = this.phase === Phase.Body ? size + this.remaining : this.opts.maxBodyBytes;
        const capacity = Math.min(most, Math.max(size, 2 * this.bodySize, 16 * 1024));
        if (capacity > PIECE) this.charge(capacity);
        const grown = Buffer.allocUnsafe(capacity);
        this.body.copy(grown, 0, 0, this.bodySize);
        this.body = grown;
      }
      part.copy(this.body, this.bodySize);
    }
    this.bodySize = size;
  }

  private tooLarge(): Refusal {
    return new Refusal(413, this.opts.messages?.[413] ?? `Request body over ${this.opts.maxBodyBytes} bytes`);
  }

  /** Consumes what it can of `pending`; false when more bytes are needed. */
  private step(): boolean {
    switch (this.phase) {
      case Phase.Head: {
        // Clients may send a stray CRLF after a body; a server should ignore it (RFC 9112 2.2).
        while (this.pending.length >= 2 && this.pending[0] === 13 && this.pending[1] === 10) {
          this.take(2);
          this.scanned = 0;
        }
        if (this.pending.length === 0) return false;
        if (!this.headStarted) {
          this.headStarted = Date.now();
          this.deadline = this.headStarted + this.opts.headersMs;
        }
        // From where the last look ended (less the three bytes of a CRLFCRLF it may have cut).
        const end = this.pending.indexOf(CRLFCRLF, Math.max(0, this.scanned - 3));
        if (end < 0) {
          // Refused now, not when the header time is up: a bare LF (it ends no line here, as in
          // node's own parser), and bytes that cannot begin a request (TLS, SSH, binary).
          for (let lf = this.pending.indexOf(10, this.scanned); lf >= 0; lf = this.pending.indexOf(10, lf + 1)) {
            if (lf === 0 || this.pending[lf - 1] !== 13) throw new Refusal(400, 'Malformed HTTP request: a line ends in LF without CR');
          }
          this.scanned = this.pending.length;
          if (!this.lineChecked) {
            const eol = this.pending.indexOf('\r\n');
            const first = this.pending[0]!;
            if (!((first >= 65 && first <= 90) || first === 13) || (eol > 0 && !REQUEST_LINE.test(this.pending.toString('latin1', 0, eol)))) {
              throw new Refusal(400, 'Malformed HTTP request');
            }
            this.lineChecked = eol > 0;
          }
          // The last bytes may begin the CRLFCRLF, which a head that arrives whole is measured without.
          if (this.pending.length - endStarted(this.pending) > this.opts.maxHeaderBytes)
            throw new Refusal(431, this.opts.messages?.[431] ?? 'Request headers too large');
          if (Date.now() - this.headStarted > this.opts.headersMs) throw new Refusal(408, 'Request headers not received in time');
          return false;
        }
        if (end > this.opts.maxHeaderBytes) throw new Refusal(431, this.opts.messages?.[431] ?? 'Request headers too large');
        this.startRequest(this.take(end + 4).toString('latin1', 0, end));
        return true;
      }
      case Phase.Body: {
        const part = this.take(Math.min(this.remaining, this.pending.length));
        this.remaining -= part.length;
        this.addBody(part);
        if (this.remaining === 0) this.dispatch();
        return true;
      }
      case Phase.ChunkSize:
      case Phase.Trailer: {
        const eol = this.pending.indexOf('\r\n');
        // Without a CR at the end, which may begin the CRLF: a line is measured without it.
        if (eol < 0 ? this.pending.length - (this.pending[this.pending.length - 1] === 13 ? 1 : 0) > 4096 : eol > 4096) {
          throw new Refusal(400, 'Malformed chunked body');
        }
        if (eol < 0) return false;
        const line = this.take(eol + 2).toString('latin1', 0, eol);
        if (this.phase === Phase.Trailer) {
          if (line === '') this.dispatch();
          else if (!field(line)) throw new Refusal(400, 'Malformed chunked body: a trailer line is no header field');
          return true;
        }
        const size = /^([0-9A-Fa-f]{1,8})(?:[ \t]*;.*)?$/.exec(line);
        if (!size) throw new Refusal(400, 'Malformed chunked body');
        this.remaining = parseInt(size[1]!, 16);
        if (this.bodySize + this.remaining > this.opts.maxBodyBytes) throw this.tooLarge();
        this.phase = this.remaining === 0 ? Phase.Trailer : Phase.ChunkData;
        return true;
      }
      case Phase.ChunkData: {
        const part = this.take(Math.min(this.remaining, this.pending.length));
        this.remaining -= part.length;
        this.addBody(part);
        if (this.remaining === 0) this.phase = Phase.ChunkEnd;
        return true;
      }
      case Phase.ChunkEnd: {
        if (this.pending.length < 2) return false;
        if (this.take(2).toString('latin1') !== '\r\n') throw new Refusal(400, 'Malformed chunked body');
        this.phase = Phase.ChunkSize;
        return true;
      }
    }
  }

  private startRequest(head: string): void {
    const lines = head.split('\r\n');
    const m = REQUEST_LINE.exec(lines[0]!);
    if (!m) throw new Refusal(400, 'Malformed HTTP request');
    const headers: Record<string, string> = {};
    for (let i = 1; i < lines.length; i++) {
      const h = field(lines[i]!);
      if (!h) throw new Refusal(400, 'Malformed HTTP header');
      const name = h[0].toLowerCase();
      const value = h[1];
      if (name === 'content-length' && headers[name] !== undefined && headers[name] !== value) {
        throw new Refusal(400, 'Conflicting Content-Length headers');
      }
      // A proxy in front may read a second one (`chunked`, then `identity`) otherwise: smuggling.
      if (name === 'transfer-encoding' && headers[name] !== undefined) throw new Refusal(400, 'Transfer-Encoding more than once');
      headers[name] ??= value;
    }
    this.http10 = m[3] === '0';
    // A list of options (`TE, close`): any `close` closes.
    const conn = headers.connection === undefined ? undefined : `,${headers.connection.toLowerCase().replace(/[ \t]/g, '')},`;
    this.keepAlive = conn === undefined ? !this.http10 : !conn.includes(',close,') && (!this.http10 || conn.includes(',keep-alive,'));
    this.req = { method: m[1]!, target: m[2]!, headers, body: EMPTY, gone: this.goneOf, room: this.roomOf, roomDone: this.roomDoneOf, hold: this.holdOf };
    this.body = EMPTY;
    this.bodySize = 0;

    const te = headers['transfer-encoding'];
    const cl = headers['content-length'];
    if (te !== undefined) {
      if (cl !== undefined) throw new Refusal(400, 'Content-Length together with Transfer-Encoding');
      if (te.toLowerCase() !== 'chunked') throw new Refusal(501, `Transfer-Encoding ${te} is not supported`);
      // HTTP/1.0 has no transfer codings: a proxy of that version reads the chunks as the next
      // request. The body is read, and the connection closed after it (RFC 9112 6.1).
      if (this.http10) this.keepAlive = false;
      this.limit(this.opts.bodyMs);
      this.continueIfAsked();
      this.phase = Phase.ChunkSize;
    } else if (cl !== undefined && cl !== '0') {
      if (!/^\d{1,15}$/.test(cl)) throw new Refusal(400, 'Malformed Content-Length');
      this.remaining = Number(cl);
      if (this.remaining === 0) {
        this.dispatch(); // `00`
        return;
      }
      if (this.remaining > this.opts.maxBodyBytes) throw this.tooLarge();
      this.limit(this.opts.bodyMs);
      this.continueIfAsked();
      this.phase = Phase.Body;
    } else {
      this.dispatch();
    }
  }

  private continueIfAsked(): void {
    // An HTTP/1.0 client may not know what a 100 is: its expectation is ignored (RFC 9110 10.1.1).
    if (!this.http10 && this.req!.headers.expect?.toLowerCase() === '100-continue') this.socket.write('HTTP/1.1 100 Continue\r\n\r\n');
  }

  private dispatch(): void {
    const req = this.req!;
    if (this.bodySize) req.body = this.body.subarray(0, this.bodySize);
    this.body = EMPTY;
    this.phase = Phase.Head;
    this.headStarted = 0;
    this.lineChecked = false;
    this.scanned = 0;
    this.req = undefined;
    this.current = req;
    this.busy = true;
    this.deadline = 0; // a handler may take its time (long polls); the clock restarts after the reply
    let reply: HttpReply | Promise<HttpReply>;
    try {
      reply = this.handler(req);
    } catch (err) {
      reply = Promise.reject(err);
    }
    if (reply instanceof Promise) {
      reply.then(
        (r) => this.send(r, req.method),
        () => this.send({ status: 500, head: 'Content-Type: text/plain\r\n', body: 'Internal error\n' }, req.method),
      );
    } else this.send(reply, req.method);
  }

  /** A reply to HEAD has the headers of the reply to GET, and no body. */
  private send(r: HttpReply, method: string): void {
    this.current = undefined;
    if (this.watcher) {
      this.socket.off('close', this.watcher.abort);
      this.watcher = undefined;
    }
    if (this.socket.destroyed) return;
    const keep = this.keepAlive && !this.server.shuttingDown;
    const head = render(r.status, r.head, r.body.length, keep);
    const body = r.body;
    // The request body's count goes; a reply written piece by piece is counted until it is all out.
    const held = typeof body === 'string' || method === 'HEAD' ? 0 : Buffer.isBuffer(body) ? body.length : (body.held ?? body.length);
    this.charge(held > PIECE ? held : 0, true, r.body.length);
    this.turnDone();
    if (method === 'HEAD') this.socket.write(head, 'latin1');
    else if (typeof body === 'string') this.socket.write(head + body, 'latin1');
    else if (Buffer.isBuffer(body) && body.length <= PIECE) {
      this.socket.cork();
      this.socket.write(head, 'latin1');
      this.socket.write(body);
      this.socket.uncork();
    } else {
      this.socket.write(head, 'latin1');
      this.stream(Buffer.isBuffer(body) ? slices(body) : body.pieces()[Symbol.iterator](), () => this.sent(keep));
      return;
    }
    this.sent(keep);
  }

  /** Writes the pieces as the client reads them; one that stops reading is dropped after the
   * body time limit (a reply cut short cannot be answered with an error any more). */
  private stream(pieces: Iterator<Buffer>, then: () => void): void {
    this.streaming = true;
    const more = () => {
      for (;;) {
        if (this.socket.destroyed) return;
        const piece = pieces.next();
        if (piece.done) {
          this.streaming = false;
          this.charge(0);
          return then();
        }
        if (!this.socket.write(piece.value)) {
          this.limit(this.opts.bodyMs); // on inactivity: what the client reads restarts it
          return void this.socket.once('drain', more);
        }
      }
    };
    more();
  }

  private sent(keep: boolean): void {
    if (!keep) {
      this.finish();
      return;
    }
    // A client that pipelines requests but does not read the replies gets no more until it does,
    // and is dropped when it stops reading (see `expired`).
    if (this.socket.writableNeedDrain) {
      this.limit(this.opts.bodyMs);
      this.socket.once('drain', () => this.next());
    } else this.next();
  }

  private next(): void {
    this.limit(this.opts.keepAliveMs);
    this.busy = false;
    this.pump();
  }

  /** Refuses the request in progress with a one-line reason, then closes. */
  private refuse(err: Refusal): void {
    if (this.socket.destroyed) return;
    const body = `${err.message}\n`;
    this.socket.write(render(err.status, 'Content-Type: text/plain\r\nCache-Control: no-cache\r\n', body.length, false) + body, 'latin1');
    this.finish();
  }

  /** Ends the connection; whatever the client still sends is read and dropped for a moment, so
   * that it sees our answer rather than a reset. */
  private finish(): void {
    this.busy = false;
    this.closing = true;
    this.pending = EMPTY;
    this.socket.resume();
    // A reply still on its way out gets the body's time limit (on inactivity); the moment of reading
    // and dropping starts once it is out.
    this.limit(this.socket.writableLength > 0 ? Math.max(this.opts.bodyMs, 2000) : 2000);
    this.socket.end(() => this.limit(2000));
  }
}

export interface Buffered {
  bytes: number;
  waiting: number;
  refused: number;
}

export interface HttpServer {
  server: net.Server;
  /** Open connections now. */
  connections(): number;
  /** The memory for large bodies and replies (`maxBufferedBytes`): bytes counted now, requests
   * waiting for room, bodies refused so far. */
  buffered(): Buffered;
  /** Stops accepting, lets requests in progress finish, closes every connection. */
  close(): Promise<void>;
}

export function createHttpServer(handler: Handler, opts: HttpOptions): HttpServer {
  const open = new Set<Connection>();
  const budget = opts.maxBufferedBytes ? new Budget(opts.maxBufferedBytes) : undefined;
  const state = { shuttingDown: false, budget };
  // The one timer of every connection's time limit (see tickOf).
  const ticker = setInterval(() => {
    const now = Date.now();
    for (const c of open) c.expired(now);
  }, tickOf(opts)).unref();
  // Half-open: a client may send its request, shut down its sending side and still read the reply.
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    const conn = new Connection(socket, handler, opts, state);
    open.add(conn);
    socket.once('close', () => open.delete(conn));
    if (state.shuttingDown) socket.destroy();
  });
  if (opts.maxConnections) server.maxConnections = opts.maxConnections;
  let closed: Promise<void> | undefined;
  return {
    server,
    connections: () => open.size,
    buffered: () => ({ bytes: budget?.held ?? 0, waiting: budget?.waiting.size ?? 0, refused: budget?.refused ?? 0 }),
    close() {
      state.shuttingDown = true;
      closed ??= new Promise<void>((resolve) => {
        if (!server.listening) return resolve();
        server.close(() => resolve());
        // Idle connections go now; busy ones after their reply (sent with Connection: close). After
        // the grace time the rest go too, but not a reply still being read: it carries messages already
        // taken, and the reply time limit drops a client that stops reading it.
        let late = false;
        const sweep = () => {
          for (const c of open) if (c.idle || (late && !c.replying)) c.socket.destroy();
        };
        sweep();
        const timer = setInterval(sweep, 50);
        const hard = setTimeout(() => {
          late = true;
          sweep();
        }, opts.stopGraceMs ?? 10_000);
        server.once('close', () => (clearInterval(timer), clearTimeout(hard), clearInterval(ticker)));
      });
      return closed;
    },
  };
}
