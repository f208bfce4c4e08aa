/**
 * The commands of `httpsqs-cli` (cli.ts runs them): everyday work with a queue server from a
 * shell. Output is made for people, or for scripts with `--json`; exit codes say what happened
 * (see EXIT below and the README). `runCli` takes its input, output, environment and signals as
 * arguments, so that it can run more than once in one process (the tests do).
 */
import { isUtf8 } from 'node:buffer';
import { createReadStream, statSync } from 'node:fs';
import { addAbortSignal, type Readable, type Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { Command, Option } from 'commander';
import { SingleBar } from 'cli-progress';
import { VERSION } from '../version.js';
import { MAX_BATCH } from '../protocol/reply.js';
import { MAX_DELAY_SECONDS, MAX_DELIVERIES, MAX_LEASE_SECONDS } from '../queue/leases.js';
import { MAX_POSITION, MIN_MAXQUEUE } from '../queue/ring.js';
import { HttpsqsClient, MAX_REPLY_BYTES, settleUntil, shorterWait, unavailable, type Message, type QueueStatus } from './client.js';
import { AuthError, HttpsqsError, NetworkError, ProtocolError, QueueFullError } from './errors.js';
import { errorMessage } from '../errors.js';

/** Exit codes a script can rely on. */
export const EXIT = { ok: 0, error: 1, usage: 2, empty: 3, full: 4, refused: 5, auth: 6, interrupted: 130 } as const;

/** A result that is not an error but that a script must be able to tell apart. */
class Outcome extends Error {
  constructor(
    readonly exit: number,
    message: string,
  ) {
    super(message);
  }
}

interface Globals {
  url?: string;
  host: string;
  port: string;
  auth?: string;
  json?: boolean;
  timeout: string;
  reference?: boolean;
}

/** Options that an environment variable stands in for. */
const ENV = { url: 'HTTPSQS_URL', host: 'HTTPSQS_HOST', port: 'HTTPSQS_PORT', auth: 'HTTPSQS_AUTH' } as const;

/** What a run reads and writes: the process's own streams, environment and signals, or a test's. */
export interface CliIo {
  stdout: Writable & { isTTY?: boolean; rows?: number };
  stderr: Writable & { isTTY?: boolean };
  stdin: Readable;
  env: Record<string, string | undefined>;
  /** Where SIGINT and SIGTERM come from. */
  signals: Pick<NodeJS.EventEmitter, 'on' | 'off' | 'once'>;
  /** The time in ms since the epoch, by which a get's lease is counted; by default `Date.now`. */
  now?: () => number;
}

/** A message's bytes in JSON: `data` when they are UTF-8 text, else `data64` (base64), so that
 * none is lost (as `list` gives `name64`). */
const bytesJson = (body: Buffer) => (isUtf8(body) ? { data: body.toString('utf8') } : { data64: body.toString('base64') });

/** A message as JSON; with its lease token unless the command acks it itself (`settled`). */
const messageJson = (m: Message, settled: boolean) =>
  JSON.stringify({ pos: m.pos, deliveries: m.deliveries, ...(m.lease && !settled ? { lease: m.lease } : {}), ...bytesJson(m.body) });

/** A queue name for a terminal: one with control characters (an escape sequence would act on the
 * terminal) is shown as a JSON string. */
const printable = (name: string) => (/[\x00-\x1f\x7f-\x9f]/.test(name) ? JSON.stringify(name) : name);

function seconds(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new Outcome(EXIT.usage, `${name}: expected whole seconds, got "${v}"`);
  return Number(v);
}

function whole(name: string, v: string): number {
  if (!/^\d+$/.test(v)) throw new Outcome(EXIT.usage, `${name}: expected a whole number, got "${v}"`);
  return Number(v);
}

/** A whole number in min..max. */
function within(name: string, v: string, min: number, max: number): number {
  const n = whole(name, v);
  if (n < min || n > max) throw new Outcome(EXIT.usage, `${name}: expected ${min}..${max}, got ${v}`);
  return n;
}

/** `put --file` sends a batch once its lines come to this many bytes, or MAX_BATCH lines: a body
 * well under the server's default --max-message-bytes (32 MiB). */
const BATCH_BYTES = 2 ** 20;

/** The longest message `put` reads (standard input, a line of --file): the longest reply the
 * client reads, so that what goes in can be got back. A line with no end (`--file /dev/zero`) is
 * not read further. (A server takes at most its --max-message-bytes, 32 MiB by default.) */
const MAX_PUT_BYTES = MAX_REPLY_BYTES;
const overPut = (what: string) => new Outcome(EXIT.error, `${what} is over ${MAX_PUT_BYTES / 2 ** 20} MiB, more than httpsqs-cli can get back as a message`);

/** How often `get --follow --reference` asks an empty queue at most. */
const FOLLOW_POLL_MS = 1000;

/** How long an interrupted `put --file` waits for the answers to what it already sent. */
const GRACE_MS = 5000;
/** The longest a line of `put --file` waits for more to make up its batch. */
const LINGER_MS = 200;
const LINGER = Symbol('linger');

/** The lines of `input` as `tail` and `wc -l` count them (split at \n only, a \r before it
 * dropped: a last line without \n keeps its \r), so that a line number reported is the one
 * `tail -n +N` starts at. Bytes, as they are: a line need not be UTF-8. */
async function* linesOf(input: Readable): AsyncGenerator<Buffer[]> {
  let parts: Buffer[] = [];
  let held = 0; // the bytes of parts
  let count = 0; // the lines before them
  for await (const chunk of input as AsyncIterable<Buffer>) {
    const lines: Buffer[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; start = nl + 1, nl = chunk.indexOf(10, start)) {
      parts.push(chunk.subarray(start, nl));
      const line = lineBytes(parts.length === 1 ? parts[0]! : Buffer.concat(parts));
      if (line.length > MAX_PUT_BYTES) throw overPut(`line ${count + 1}`);
      lines.push(line);
      count++;
      parts = [];
      held = 0;
    }
    if (start < chunk.length) parts.push(chunk.subarray(start));
    held += chunk.length - start;
    // Not held past the limit while its end does not come (one byte more may be the \r before it).
    if (held > MAX_PUT_BYTES + 1) throw overPut(`line ${count + 1}`);
    if (lines.length) yield lines;
  }
  if (held > MAX_PUT_BYTES) throw overPut(`line ${count + 1}`);
  if (parts.length) yield [Buffer.concat(parts)];
}
const shellWord = (s: string) => (/^[\w./+:@%=-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`);
const lineBytes = (b: Buffer) => (b.at(-1) === 13 ? b.subarray(0, -1) : b);

/** How a `put --file` was run, for the command that resumes it: the global options given on the
 * command line (`--auth` never: `auth` says whether one was given, to be given again), and put's. */
interface Resume {
  globals: string[];
  put: string[];
  auth: boolean;
}

/** Where a `put --file` stands: lines 1..stored are stored; the next `unsure` were sent without an
 * answer, so the server may hold them too. */
function resumeNote(name: string, input: string, stored: number, unsure: number, how: Resume): string {
  const next = stored + 1;
  const done = stored ? `the server stored ${stored} line${stored === 1 ? '' : 's'} (1-${stored})` : 'the server stored no line';
  const maybe = unsure ? `; lines ${next}-${stored + unsure} were sent but not answered: they may be stored too` : '';
  const words = (list: string[]) => list.map((w) => ` ${shellWord(w)}`).join('');
  const command = `httpsqs-cli${words(how.globals)} put ${shellWord(name)} --file -${words(how.put)}`;
  const auth = how.auth ? ', adding --auth <password>' : '';
  const from = `resume from line ${next}${input === '-' ? '' : ` (tail -n +${next} ${shellWord(input)} | ${command}${auth})`}`;
  return `${done}${maybe}; ${from}${unsure ? ', which may store those again' : ''}`;
}

function queueTable(queues: QueueStatus[]): string {
  const rows = [
    ['QUEUE', 'UNREAD', 'LEASED', 'DELAYED', 'DEAD', 'PUTPOS', 'GETPOS', 'MAXQUEUE'],
    ...queues.map((s) => [printable(s.name), s.unread, s.leased, s.delayed, s.dead, s.putpos, s.getpos, s.maxqueue].map(String)),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return `${rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')).join('\n')}\n`;
}

/** Why the ring rules refuse `num`, from the queue as it stands now (it may have moved since). */
async function refusal(q: HttpsqsClient, name: string, num: number): Promise<string> {
  let denied = false;
  const s = await q.statusJson(name).catch((err: unknown) => void (denied = err instanceof AuthError));
  // With --admin-auth, the admin password opens maxqueue but not the status that tells which.
  const which = denied ? " (which, the queue's status would tell: it needs the queue password, not the admin one)" : '';
  if (!s) return `the ring rules refuse ${num} while it holds positions beyond it, or its writer is a lap ahead${which}`;
  const at = `putpos ${s.putpos}, getpos ${s.getpos}`;
  if (s.putpos < s.getpos)
    return `the ring rules refuse ${num} while the writer is a lap ahead of the reader (${at}): no size is taken until the reader has come round too`;
  const used = Math.max(s.putpos, s.getpos);
  if (num < used) return `the ring rules refuse ${num} while position ${used} is in use (${at}): give ${used} or more`;
  return `the ring rules refused ${num}, and the queue has moved since (${at}): try again`;
}

/** The refresh of `top`, in seconds. */
const MIN_INTERVAL = 0.1;
const MAX_INTERVAL = 86_400;

const SPARKS = '▁▂▃▄▅▆▇█';
function sparkline(values: number[]): string {
  const max = Math.max(...values, 1);
  return values.map((v) => SPARKS[Math.min(SPARKS.length - 1, Math.floor((v / max) * (SPARKS.length - 1)))]).join('');
}

/** Messages per second between two samples of a queue, counting a wrap of the ring; 0 across a
 * reset (positions back to 0) or a change of maxqueue. */
function rates(s: QueueStatus, before: QueueStatus, secs: number): [number, number] {
  if (s.maxqueue !== before.maxqueue || (s.putpos < before.putpos && s.putpos >= s.getpos && s.getpos < before.getpos)) return [0, 0];
  const moved = (now: number, then: number) => (now >= then ? now - then : now + s.maxqueue - then) / secs;
  return [moved(s.putpos, before.putpos), moved(s.getpos, before.getpos)];
}

/** The exit code for an error of the client; anything else is a bug, and thrown. */
function exitCode(err: unknown): number {
  if (err instanceof Outcome) return err.exit;
  if (err instanceof AuthError) return EXIT.auth;
  if (err instanceof HttpsqsError) return EXIT.error;
  throw err;
}

/** The program of one run, its commands writing to `io`. */
function buildProgram(io: CliIo): Command {
  const program = new Command('httpsqs-cli')
    .description('Command-line client for httpsqs and HTTPSQS servers')
    .version(VERSION, '-V, --version', 'print the version and exit')
    .addOption(new Option('--url <url>', 'server URL (overrides --host and --port) (env: HTTPSQS_URL)'))
    .addOption(new Option('--host <host>', 'server host (env: HTTPSQS_HOST)').default('127.0.0.1'))
    .addOption(new Option('--port <port>', 'server port (env: HTTPSQS_PORT)').default('1218'))
    .addOption(new Option('--auth <password>', 'server password (auth=) (env: HTTPSQS_AUTH)'))
    .addOption(new Option('--timeout <ms>', 'time to wait for an answer (at least 1)').default('10000'))
    .option('--json', 'machine-readable output on stdout')
    .option('--reference', 'the server is the C HTTPSQS: use only the reference protocol')
    .showHelpAfterError()
    .exitOverride();
  /** The global options; HTTPSQS_URL, HTTPSQS_HOST, HTTPSQS_PORT and HTTPSQS_AUTH stand in for
   * options not given. */
  const globals = (): Globals => {
    const g = program.opts<Globals>();
    const given = (key: keyof typeof ENV) => program.getOptionValueSource(key) === 'cli';
    const env = (key: keyof typeof ENV) => (given(key) ? undefined : io.env[ENV[key]]);
    // A --host or --port on the command line wins over HTTPSQS_URL (as it does over HTTPSQS_HOST).
    const url = given('host') || given('port') ? g.url : (env('url') ?? g.url);
    return { ...g, url, host: env('host') ?? g.host, port: env('port') ?? g.port, auth: env('auth') ?? g.auth };
  };
  program.configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });

  function client(): HttpsqsClient {
    const g = globals();
    // 0 would be no time limit at all (a server that stops answering would hang the command).
    const timeout = within('--timeout', g.timeout, 1, 2 ** 31 - 1);
    if (!g.url && !(/^\d+$/.test(g.port) && Number(g.port) >= 1 && Number(g.port) <= 65535))
      throw new Outcome(EXIT.usage, `--port: expected 1..65535, got "${g.port}"`);
    if (!g.url && /[/?#@\s]/.test(g.host)) throw new Outcome(EXIT.usage, `--host: expected a host name or address, got "${g.host}"`);
    // An IPv6 address goes into a URL in brackets.
    const host = g.host.includes(':') && !g.host.startsWith('[') ? `[${g.host}]` : g.host;
    try {
      return new HttpsqsClient({ url: g.url ?? `http://${host}:${g.port}`, auth: g.auth, timeout, reference: g.reference });
    } catch (err) {
      throw new Outcome(EXIT.usage, `${g.url ? '--url' : '--host'}: ${errorMessage(err)}`);
    }
  }
  /** Runs `fn` with a client, closed afterwards whatever happens. */
  async function withClient<T>(fn: (q: HttpsqsClient) => Promise<T>): Promise<T> {
    const q = client();
    try {
      return await fn(q);
    } finally {
      await q.close();
    }
  }
  const json = () => globals().json === true;
  const now = io.now ?? Date.now;
  const out = (s: string | Buffer) => io.stdout.write(s);
  /** Writes and waits until it is written; rejects with the write's error (EPIPE: a reader that
   * went away, as `| head -1` does; ENOSPC, EIO: the output itself failed). */
  const write = (s: string | Buffer) => new Promise<void>((resolve, reject) => io.stdout.write(s, (err) => (err ? reject(err) : resolve())));
  /** What a get says when the message `m` it took could not be written out. A leased one is not
   * acked: it comes back when its lease ends, so a reader that went away (`| head -1`) loses
   * nothing and exits 0. Any other failure exits 1; and a plain get (--reference) has taken the
   * message from the queue for good, so its message is lost whatever the reason. */
  const unwritten = (err: unknown, m: Message): Outcome => {
    const gone = (err as { code?: unknown } | undefined)?.code === 'EPIPE';
    const why = gone ? 'the reader went away' : errorMessage(err);
    if (!m.lease) return new Outcome(EXIT.error, `position ${m.pos} was taken from the queue but could not be written out (${why}): it is lost`);
    return new Outcome(gone ? EXIT.ok : EXIT.error, `position ${m.pos} could not be written out (${why}); it was not acked: it comes back when its lease ends`);
  };
  /** A message as it is; on a terminal, ended with a newline if it has none, so that the prompt
   * does not run on after it. Piped, its bytes are kept: messages are binary. */
  const shown = (body: Buffer, terminal = io.stdout.isTTY === true) => (terminal && body.at(-1) !== 10 ? Buffer.concat([body, Buffer.from('\n')]) : body);
  async function readStdin(): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of io.stdin as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > MAX_PUT_BYTES) throw overPut('standard input');
      chunks.push(c);
    }
    return Buffer.concat(chunks, size);
  }

  /** The options of this run that a resumed `put --file` repeats: those given on the command line
   * (what the environment gave, it gives again), but not the password. */
  function resumeOptions(delay: number | undefined): Resume {
    const given = (key: string) => program.getOptionValueSource(key) === 'cli';
    const g = program.opts<Globals>();
    const globals = [
      ...(['url', 'host', 'port', 'timeout'] as const).flatMap((key) => (given(key) ? [`--${key}`, String(g[key])] : [])),
      ...(['json', 'reference'] as const).flatMap((key) => (given(key) ? [`--${key}`] : [])),
    ];
    return { globals, put: delay === undefined ? [] : ['--delay', String(delay)], auth: given('auth') };
  }

  /**
   * Puts every line of `input` (a file, or - for stdin), in batches, with a progress bar on a
   * terminal. SIGINT and SIGTERM stop the sending: what is in flight gets GRACE_MS to be answered
   * (a second signal stops the wait), then it says which lines are stored and where to resume.
   */
  async function putLines(q: HttpsqsClient, name: string, input: string, delay: number | undefined): Promise<void> {
    const reference = globals().reference;
    let size = 0;
    if (input !== '-') {
      try {
        size = statSync(input).size;
      } catch (err) {
        throw new Outcome(EXIT.error, `--file: cannot read ${input}: ${errorMessage(err)}`);
      }
    }
    const stop = new AbortController(); // no more sending
    const giveUp = new AbortController(); // no more waiting for answers
    const onSignal = () => {
      if (stop.signal.aborted) return giveUp.abort();
      stop.abort();
      setTimeout(() => giveUp.abort(), GRACE_MS).unref();
    };
    io.signals.on('SIGINT', onSignal).on('SIGTERM', onSignal);
    const source = addAbortSignal(stop.signal, input === '-' ? io.stdin : createReadStream(input));
    // The bar follows the bytes read (a file's size is known; standard input's is not: no bar).
    const bar =
      size && io.stderr.isTTY && !json()
        ? new SingleBar({ format: 'put {bar} {percentage}% | {count} messages | {rate}/s', stream: io.stderr, hideCursor: true })
        : undefined;
    const started = performance.now();
    const rate = () => Math.round(stored / Math.max((performance.now() - started) / 1000, 1e-3));
    // Sent one batch at a time, so the stored lines are always 1..stored.
    let stored = 0;
    let unsure = 0;
    let read = 0;
    let complete = false;
    let failure: unknown;
    bar?.start(size, 0, { count: 0, rate: 0 });
    let batch: Buffer[] = [];
    let batchBytes = 0;
    /** Lines in the mput in flight. */
    let sending = 0;
    // Text goes as JSON strings; a batch with a line that is not UTF-8 goes as bytes (base64). A
    // body over the server's --max-message-bytes (HTTP 413: nothing was stored) goes again in halves.
    const send = async (lines: Buffer[]): Promise<void> => {
      sending = lines.length;
      let r: { positions: number[]; full: boolean };
      try {
        r = await q.mput(name, lines.every(isUtf8) ? lines.map((m) => m.toString('utf8')) : lines, { signal: giveUp.signal, delay });
      } catch (err) {
        if (!(err instanceof ProtocolError && err.status === 413 && lines.length > 1)) throw err;
        const half = Math.ceil(lines.length / 2);
        await send(lines.slice(0, half));
        return await send(lines.slice(half));
      }
      stored += r.positions.length;
      if (r.full) throw new QueueFullError(name);
    };
    const flush = async () => {
      try {
        if (reference) {
          for (const m of batch) {
            if (stop.signal.aborted) return;
            await q.put(name, m, { signal: giveUp.signal, delay });
            stored++;
          }
        } else await send(batch);
      } catch (err) {
        // Without an answer the server may have stored what it was sent (unless it was never reached);
        // so too behind a proxy whose 502 or 504 may come after it passed the request on (its 503
        // says it did not).
        const refused = (err as { cause?: { code?: string } }).cause?.code === 'ECONNREFUSED';
        const gateway = err instanceof ProtocolError && (err.status === 502 || err.status === 504);
        if (giveUp.signal.aborted || (err instanceof NetworkError && !refused) || gateway) unsure = reference ? 1 : sending;
        throw err;
      }
      batch = [];
      batchBytes = 0;
      bar?.update(read, { count: stored, rate: rate() });
    };
    try {
      // A batch goes when it is full, or LINGER_MS after its first lines came: lines from a producer that
      // pauses (`tail -f log | httpsqs-cli put q --file -`) go in as they come, not at 1000 lines.
      const lines = linesOf(source);
      let lingering: Promise<typeof LINGER> | undefined;
      const ask = () => {
        const next = lines.next();
        next.catch(() => {}); // a read stopped while a batch is sent: the wait for it says so
        return next;
      };
      for (let next = ask(); ; ) {
        let got: Awaited<typeof next> | typeof LINGER;
        try {
          got = lingering ? await Promise.race([next, lingering]) : await next;
        } catch (err) {
          // A read that failed (a line over the limit, an I/O error): the lines read before it are
          // sent first, so that the resume note names the line it stopped at.
          if (!stop.signal.aborted && batch.length) await flush();
          throw err;
        }
        if (got === LINGER) {
          lingering = undefined;
          await flush();
          continue;
        }
        if (got.done || stop.signal.aborted) break;
        next = ask();
        for (const line of got.value) {
          if (stop.signal.aborted) break;
          read += line.length + 1;
          batch.push(line);
          batchBytes += line.length;
          if (batch.length >= MAX_BATCH || batchBytes >= BATCH_BYTES) {
            lingering = undefined;
            await flush();
          }
        }
        if (batch.length) lingering ??= sleep(LINGER_MS, LINGER, { ref: false });
      }
      if (!stop.signal.aborted) {
        if (batch.length) await flush();
        complete = batch.length === 0; // a signal during the last batch: it went in all the same
      }
    } catch (err) {
      if (!stop.signal.aborted) failure = err; // else the abort of the reading, or of a request, stopped it
    } finally {
      io.signals.off('SIGINT', onSignal).off('SIGTERM', onSignal);
      bar?.update(read, { count: stored, rate: rate() });
      bar?.stop();
      source.destroy();
    }
    if (!complete || failure !== undefined) {
      const where = resumeNote(name, input, stored, unsure, resumeOptions(delay));
      if (failure === undefined) throw new Outcome(EXIT.interrupted, `interrupted: ${where}`);
      const note = stored || unsure ? `; ${where}` : '';
      if (failure instanceof QueueFullError) throw new Outcome(EXIT.full, `queue ${name} is full after ${stored} messages${note}`);
      if (failure instanceof Outcome) throw new Outcome(failure.exit, `--file: ${input === '-' ? 'standard input' : input}: ${failure.message}${note}`);
      if (!(failure instanceof HttpsqsError)) throw new Outcome(EXIT.error, `--file: cannot read ${input}: ${errorMessage(failure)}${note}`);
      throw new Outcome(exitCode(failure), `${failure.message}${note}`);
    }
    const secs = (performance.now() - started) / 1000;
    if (json()) out(`${JSON.stringify({ count: stored, seconds: Number(secs.toFixed(3)), rate: rate() })}\n`);
    else io.stderr.write(`put ${stored} messages in ${secs.toFixed(2)} s (${rate()} messages/s)\n`);
  }

  program
    .command('put <queue> [message]')
    .description('put a message: the argument, else standard input; or every line of --file')
    .option('-f, --file <file>', 'a file of one message per line (- for standard input)')
    .option(
      '-d, --delay <seconds>',
      `hand the message out only after this long (up to ${MAX_DELAY_SECONDS}); prints its schedule id, the position it comes with`,
    )
    .action(async (name: string, message: string | undefined, o: { file?: string; delay?: string }) => {
      const delay = o.delay === undefined ? undefined : within('--delay', o.delay, 0, MAX_DELAY_SECONDS);
      if (delay && globals().reference) throw new Outcome(EXIT.usage, '--delay: the C server (--reference) has no delayed messages');
      // Node.js reads arguments as UTF-8: bytes that are not arrive as U+FFFD, and are stored so.
      if (message?.includes('\uFFFD'))
        io.stderr.write(
          'httpsqs-cli: warning: the message has U+FFFD in it, which is what bytes that are not UTF-8 become in an argument; give such bytes on standard input, which keeps them\n',
        );
      await withClient(async (q) => {
        if (o.file) return await putLines(q, name, o.file, delay);
        const pos = await q.put(name, message ?? (await readStdin()), { delay }).catch((err: unknown) => {
          if (!(err instanceof QueueFullError)) throw err;
          throw new Outcome(EXIT.full, delay ? `queue ${name} already keeps maxqueue messages outside its ring (delayed, dead)` : `queue ${name} is full`);
        });
        out(json() ? `${JSON.stringify(delay ? { pos, delay } : { pos })}\n` : `${pos}\n`);
      });
    });

  program
    .command('get <queue>')
    .description('take the next message and print it (exit code 3 when there is none)')
    .option('-w, --wait <seconds>', 'wait this long for a message')
    .option('--lease <seconds>', 'lease the message (ack it with the Pos and Lease printed to stderr)')
    .option('-F, --follow', 'go on: print every message as it arrives, one per line, until interrupted')
    .action(async (name: string, o: { wait?: string; lease?: string; follow?: boolean }) => {
      const q = client();
      const wait = seconds('--wait', o.wait);
      // Following, 0 would ask an empty queue again and again without a pause.
      if (o.follow && wait === 0) throw new Outcome(EXIT.usage, '--wait: at least 1 second with --follow');
      // Following without --wait: 20 s, or less on a server whose --max-wait is lower (it refuses more).
      let followWait = wait ?? 20;
      const lease = seconds('--lease', o.lease);
      // The server would refuse a longer one with HTTPSQS_ERROR, which a follow reads as its wait refused.
      if (lease !== undefined && lease > MAX_LEASE_SECONDS)
        throw new Outcome(EXIT.usage, `--lease: expected at most ${MAX_LEASE_SECONDS} seconds, got ${lease}`);
      const stop = new AbortController();
      // SIGTERM (a service stopped, `timeout`) as Ctrl-C: the message being written out is still acked.
      const interrupted = () => stop.abort();
      io.signals.once('SIGINT', interrupted).once('SIGTERM', interrupted);
      // Each message is leased until it has been written out, then acked: one taken just as
      // Ctrl-C, SIGTERM (or a closed pipe) stops us comes back instead of being lost. The C server has no
      // leases (--reference): there a plain get is all there is.
      const settleAfter = lease === undefined && !globals().reference;
      let outage = false;
      try {
        do {
          const asked = performance.now();
          const m = await q
            .get(name, { wait: o.follow ? followWait : wait, lease: settleAfter ? 60 : lease, signal: stop.signal })
            .catch(async (err: unknown) => {
              if (stop.signal.aborted) return null;
              const shorter = o.follow && wait === undefined ? shorterWait(followWait, err) : undefined;
              if (shorter) return void (followWait = shorter);
              // Following, a server that restarts (behind a proxy: 502, 503, 504) is waited for
              // (said once), as consume() does.
              if (!o.follow || !unavailable(err)) throw err;
              if (!outage) io.stderr.write(`httpsqs-cli: ${err.message}; trying again\n`);
              outage = true;
              await sleep(1000, undefined, { signal: stop.signal }).catch(() => {});
              return undefined;
            });
          if (m === undefined) continue;
          outage = false;
          const leaseEnds = now() + 60_000; // the lease of settleAfter, as far as this end knows
          // Ctrl-C (or SIGTERM) is how one stops following (exit 0); a single get it interrupts did not finish (130).
          if (stop.signal.aborted && !m) {
            if (o.follow) break;
            throw new Outcome(EXIT.interrupted, 'interrupted');
          }
          if (!m) {
            if (!o.follow) throw new Outcome(EXIT.empty, `queue ${name} has no message`);
            // The C server (--reference) ignores wait= and answers an empty queue at once: it is
            // asked again once a second (as `while sleep 1` would), not in a tight loop.
            if (globals().reference) await sleep(Math.max(0, asked + FOLLOW_POLL_MS - performance.now()), undefined, { signal: stop.signal }).catch(() => {});
            continue;
          }
          try {
            if (json()) await write(`${messageJson(m, settleAfter)}\n`);
            else await write(o.follow ? Buffer.concat([m.body, Buffer.from('\n')]) : shown(m.body));
          } catch (err) {
            throw unwritten(err, m);
          }
          if (!json() && m.lease && !settleAfter) io.stderr.write(`Pos: ${m.pos}\nLease: ${m.lease}\n`);
          if (settleAfter) {
            // An ack that got no answer is tried again (as consume() does) until the lease would end
            // or Ctrl-C; then the lease runs out and the message comes again: a single get exits with 5.
            const acked = await settleUntil(q, 'ack', name, m.pos, m.lease, leaseEnds, now, stop.signal).catch((err: unknown) => {
              if (!unavailable(err)) throw err;
              const why = `could not ack position ${m.pos} (${errorMessage(err)}); it will come again`;
              if (!o.follow) throw new Outcome(EXIT.refused, why);
              io.stderr.write(`httpsqs-cli: ${why}\n`);
            });
            // Its lease ran out while it was written out (a reader that took over 60 s): another
            // consumer may have it too. Following goes on; a single get says so with its exit code.
            if (acked === false) {
              const why = `the lease on position ${m.pos} ran out before it was written out; it may be handed out again`;
              if (!o.follow) throw new Outcome(EXIT.refused, why);
              io.stderr.write(`httpsqs-cli: ${why}\n`);
            }
          }
        } while (o.follow && !stop.signal.aborted);
      } finally {
        io.signals.off('SIGINT', interrupted).off('SIGTERM', interrupted);
        await q.close();
      }
    });

  program
    .command('status <queue>')
    .description("the queue's status, with its leased, delayed and dead counts when not 0 (status_json with --json)")
    .action(async (name: string) => {
      await withClient(async (q) => {
        if (json()) return out(`${JSON.stringify(await q.statusJson(name))}\n`);
        // The reference's text, then what the extensions add (the C server has none of it).
        if (globals().reference) return out(await q.status(name));
        const [text, s] = await Promise.all([q.status(name), q.statusJson(name)]);
        const more = [
          ['Number of leased messages', s.leased],
          ['Number of delayed messages', s.delayed],
          ['Number of dead letters', s.dead],
          ['Maximum deliveries', s.maxdeliveries],
        ].filter(([, n]) => n);
        out(text + more.map(([k, n]) => `${k}: ${n}\n`).join(''));
      });
    });

  program
    .command('list')
    .description('every queue with its counts (unread, leased, delayed, dead)')
    .option('--prefix <prefix>', 'only queues whose name starts with this')
    .action(async (o: { prefix?: string }) => {
      await withClient(async (q) => {
        const all: QueueStatus[] = [];
        for await (const s of q.queues(o.prefix)) all.push(s);
        out(json() ? `${JSON.stringify(all)}\n` : queueTable(all));
      });
    });

  program
    .command('view <queue> <pos>')
    .description('print the message at a position, read or not (with --num, several as JSON lines)')
    .option('-n, --num <count>', 'this many positions from <pos>')
    .action(async (name: string, posText: string, o: { num?: string }) => {
      // A ring position: the server has no message to show past the ring (a delayed message's
      // schedule id; dead letters: the dead command).
      const pos = within('<pos>', posText, 1, MAX_POSITION);
      await withClient(async (q) => {
        if (o.num) {
          const found = (await q.viewRange(name, pos, whole('--num', o.num))).map((m) => ({ pos: m.pos, ...bytesJson(m.body) }));
          out(json() ? `${JSON.stringify(found)}\n` : found.map((m) => `${JSON.stringify(m)}\n`).join(''));
          return;
        }
        const body = await q.view(name, pos);
        if (body.length === 0) throw new Outcome(EXIT.empty, `nothing stored at position ${pos} of ${name}`);
        out(json() ? `${JSON.stringify({ pos, ...bytesJson(body) })}\n` : shown(body));
      });
    });

  program
    .command('reset <queue>')
    .description('empty the queue and set maxqueue back to its default')
    .action(async (name: string) => {
      await withClient(async (q) => {
        await q.reset(name);
        if (json()) out('{"reset":true}\n');
      });
    });

  program
    .command('maxqueue <queue> <num>')
    .description('set the ring size (exit code 5 when the server refuses it now)')
    .action(async (name: string, num: string) => {
      await withClient(async (q) => {
        const size = whole('<num>', num);
        if (size < MIN_MAXQUEUE || size > MAX_POSITION) throw new Outcome(EXIT.usage, `<num>: expected ${MIN_MAXQUEUE}..${MAX_POSITION}, got ${num}`);
        const done = await q.maxqueue(name, size);
        if (json()) out(`${JSON.stringify({ maxqueue: done })}\n`);
        else if (done) out(`maxqueue of ${name} set to ${size}\n`);
        if (!done) throw new Outcome(EXIT.refused, `maxqueue of ${name} not changed: ${await refusal(q, name, size)}`);
      });
    });

  program
    .command('maxdeliveries <queue> <num>')
    .description(`make a message a dead letter once its lease ended this many times, by nack or expiry (0..${MAX_DELIVERIES}; 0: never)`)
    .action(async (name: string, num: string) => {
      const n = within('<num>', num, 0, MAX_DELIVERIES);
      await withClient(async (q) => {
        await q.maxDeliveries(name, n);
        if (json()) out(`${JSON.stringify({ maxdeliveries: n })}\n`);
        else out(n ? `maxdeliveries of ${name} set to ${n}\n` : `maxdeliveries of ${name} off: messages come back however often their lease ends\n`);
      });
    });

  program
    .command('redrive <queue>')
    .description('make dead letters deliverable again, those that died first first, ahead of newer messages')
    .option('-n, --num <count>', `at most this many (1..${MAX_BATCH}, the default)`)
    .action(async (name: string, o: { num?: string }) => {
      const num = o.num === undefined ? undefined : within('--num', o.num, 1, MAX_BATCH);
      await withClient(async (q) => {
        const r = await q.redrive(name, { num });
        out(json() ? `${JSON.stringify(r)}\n` : `${r.count} dead letter${r.count === 1 ? '' : 's'} of ${name} deliverable again, ${r.dead} left\n`);
      });
    });

  program
    .command('discard <queue> <pos>')
    .description('delete a dead letter for good (exit code 5 when there is none at that position)')
    .action(async (name: string, pos: string) => {
      await withClient(async (q) => {
        if (!(await q.discard(name, whole('<pos>', pos)))) throw new Outcome(EXIT.refused, `no dead letter at position ${pos} of ${name}`);
        out(json() ? `${JSON.stringify({ discarded: true })}\n` : `dead letter ${pos} of ${name} discarded\n`);
      });
    });

  program
    .command('dead <queue>')
    .description('list dead letters, as JSON lines (--json: an array, died in ms since the epoch)')
    .option('-n, --num <count>', `this many at most (1..${MAX_BATCH}; default 100)`)
    .option('--after <pos>', 'those after this position (page on with the last one shown)')
    .action(async (name: string, o: { num?: string; after?: string }) => {
      const num = o.num === undefined ? undefined : within('--num', o.num, 1, MAX_BATCH);
      const after = o.after === undefined ? undefined : whole('--after', o.after);
      await withClient(async (q) => {
        const letters = await q.dead(name, { num, after });
        const item = (d: (typeof letters)[number], died: number | string) => ({ pos: d.pos, deliveries: d.deliveries, died, ...bytesJson(d.message) });
        if (json()) return out(`${JSON.stringify(letters.map((d) => item(d, d.died)))}\n`);
        out(letters.map((d) => `${JSON.stringify(item(d, new Date(d.died).toISOString()))}\n`).join(''));
      });
    });

  program
    .command('synctime <seconds>')
    .description('seconds between flushes of a server in --sync interval mode')
    .action(async (s: string) => {
      await withClient(async (q) => {
        const seconds = whole('<seconds>', s);
        await q.synctime(seconds);
        out(json() ? `${JSON.stringify({ synctime: seconds })}\n` : `synctime set to ${seconds} s\n`);
      });
    });

  program
    .command('ack <queue> <pos> [token]')
    .description('confirm a leased message (exit code 5 when that lease is not held)')
    .action(async (name: string, pos: string, token?: string) => settle('ack', name, pos, token));

  program
    .command('nack <queue> <pos> [token]')
    .description('give a leased message back (exit code 5 when that lease is not held)')
    .action(async (name: string, pos: string, token?: string) => settle('nack', name, pos, token));

  program
    .command('touch <queue> <pos> <seconds> [token]')
    .description('extend a running lease to that many seconds from now; prints its token, which a touch keeps (exit code 5 when that lease is not held)')
    .action(async (name: string, pos: string, seconds: string, token?: string) => {
      await withClient(async (q) => {
        const renewed = await q.touch(name, whole('<pos>', pos), whole('<seconds>', seconds), token);
        if (renewed === null) throw new Outcome(EXIT.refused, `no running lease at position ${pos} of ${name}`);
        out(json() ? `${JSON.stringify({ lease: renewed })}\n` : `${renewed}\n`);
      });
    });

  async function settle(how: 'ack' | 'nack', name: string, pos: string, token?: string): Promise<void> {
    await withClient(async (q) => {
      if (!(await q[how](name, whole('<pos>', pos), token))) throw new Outcome(EXIT.refused, `no such lease at position ${pos} of ${name}`);
      if (json()) out(`${JSON.stringify({ [how === 'ack' ? 'acked' : 'nacked']: true })}\n`);
    });
  }

  program
    .command('top')
    .description('a live view of every queue: unread, leased, delayed and dead counts, put and get rates, unread over time')
    .option('-i, --interval <seconds>', `refresh every (${MIN_INTERVAL}..${MAX_INTERVAL})`, '1')
    .option('--prefix <prefix>', 'only queues whose name starts with this')
    .option('--iterations <n>', 'stop after this many refreshes (default: until interrupted)')
    .action(async (o: { interval: string; prefix?: string; iterations?: string }) => {
      // Bounded: a timer of more than 2^31-1 ms (about 24.8 days) would go off at once.
      const interval = Number(o.interval);
      if (!(interval >= MIN_INTERVAL && interval <= MAX_INTERVAL))
        throw new Outcome(EXIT.usage, `--interval: expected ${MIN_INTERVAL}..${MAX_INTERVAL} seconds, got "${o.interval}"`);
      const iterations = o.iterations === undefined ? Infinity : whole('--iterations', o.iterations);
      const q = client();
      const tty = io.stdout.isTTY;
      const history = new Map<string, { last: QueueStatus; at: number; unread: number[] }>();
      const stop = new AbortController();
      // SIGTERM (`timeout`, a closed terminal's session) as Ctrl-C: the cursor is shown again.
      io.signals.once('SIGINT', () => stop.abort()).once('SIGTERM', () => stop.abort());
      // A server restarting (behind a proxy: 502, 503, 504) is waited for; one never reached (a
      // wrong port?) is an error at the end.
      let failed: HttpsqsError | undefined;
      let reached = false;
      if (tty) out('\x1b[?25l'); // hide the cursor
      try {
        for (let i = 0; i < iterations; i++) {
          const now = performance.now();
          const rows: string[][] = [];
          const all: QueueStatus[] = [];
          try {
            for await (const s of q.queues(o.prefix)) all.push(s);
            reached = true;
          } catch (err) {
            // A server restarting: say so in place of the table, and look again at the next refresh.
            if (!unavailable(err)) throw err;
            failed = err;
            out(`${tty ? '\x1b[H\x1b[2J' : ''}httpsqs top: ${err.message}; trying again\n${tty ? '' : '\n'}`);
            await sleep(interval * 1000, undefined, { signal: stop.signal }).catch(() => {});
            if (stop.signal.aborted) break;
            continue;
          }
          all.sort((a, b) => b.unread - a.unread || (a.name < b.name ? -1 : 1));
          for (const s of all) {
            const h = history.get(s.name);
            const secs = h ? (now - h.at) / 1000 : 0;
            const [put, got] = h && secs > 0 ? rates(s, h.last, secs) : [0, 0];
            const unread = [...(h?.unread ?? []), s.unread].slice(-30);
            history.set(s.name, { last: s, at: now, unread });
            rows.push([
              printable(s.name),
              String(s.unread),
              String(s.leased),
              String(s.delayed),
              String(s.dead),
              put.toFixed(0),
              got.toFixed(0),
              sparkline(unread),
            ]);
          }
          const height = tty ? Math.max(5, (io.stdout.rows ?? 24) - 4) : rows.length;
          const header = ['QUEUE', 'UNREAD', 'LEASED', 'DELAYED', 'DEAD', 'PUT/s', 'GET/s', 'UNREAD OVER TIME'];
          const shown = [header, ...rows.slice(0, height)];
          const widths = header.map((_, c) => Math.max(...shown.map((r) => [...r[c]!].length)));
          const table = shown
            .map((r) => r.map((cell, c) => (c === 0 || c === header.length - 1 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  '))
            .join('\n');
          const title = `httpsqs top: ${all.length} queue${all.length === 1 ? '' : 's'}, ${new Date().toISOString().slice(11, 19)}${rows.length > height ? ` (${rows.length - height} more)` : ''}`;
          out(`${tty ? '\x1b[H\x1b[2J' : ''}${title}\n\n${table}\n${tty ? '' : '\n'}`);
          if (stop.signal.aborted) break;
          await sleep(interval * 1000, undefined, { signal: stop.signal }).catch(() => {});
          if (stop.signal.aborted) break;
        }
      } finally {
        if (tty) out('\x1b[?25h\n');
        await q.close();
      }
      if (!reached && failed) throw new Outcome(EXIT.error, `top never reached the server (${failed.message})`);
    });
  return program;
}

/** Runs the command line `argv` (without the node and script paths); resolves to the exit code. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return EXIT.ok;
  } catch (err) {
    const e = err as Error & { exitCode?: number; code?: unknown };
    // Help and version are not errors; anything else commander refused is a usage error.
    if (typeof e.code === 'string' && e.code.startsWith('commander.')) return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
    const code = exitCode(err);
    if (e.message) io.stderr.write(`httpsqs-cli: ${e.message}\n`);
    return code;
  }
}
