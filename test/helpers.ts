/** Shared test tools: a real server on a real port (in this process, or as a process of its own
 * where the process is the point), and a raw HTTP client. */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from 'node:worker_threads';
import assert from 'node:assert/strict';
import { queueRecords } from '../src/cli/export.js';
import { parseConfig } from '../src/cli/options.js';
import { serve, type Serving } from '../src/cli/serve.js';
import { createHttpsqsServer } from '../src/server/server.js';
import { LmdbStore } from '../src/store/lmdb/store.js';
import type { QueueRecord, Store } from '../src/store/store.js';
import { TestClock } from './clock.js';
import type { CliJob, CliResult } from './cli-thread.js';

const here = dirname(fileURLToPath(import.meta.url));
/** Project root (tests run from dist/test). */
export const ROOT = resolve(here, '..', '..');
export const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');

export function tempDir(prefix = 'httpsqs-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => res(port));
    });
  });
}

export function workerPids(primary: number): number[] {
  const out = spawnSync('pgrep', ['-P', String(primary)], { encoding: 'utf8' }).stdout.trim();
  return out ? out.split('\n').map(Number) : [];
}

export interface RunningServer {
  port: number;
  dir: string;
  proc: ChildProcess;
  /** Everything the server wrote to stderr so far. */
  stderr(): string;
  /** SIGTERM and wait for the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL the whole server, master and workers at once, and wait. */
  kill(): Promise<void>;
  /** PIDs of the worker processes. */
  workers(): number[];
}

export interface StartOptions {
  dir?: string;
  port?: number;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** In a process group of its own, so that master and workers can be killed at once. */
  detached?: boolean;
  /** Started as `node dist/src/cli/main.js` from the project's root, as `npm start` does. */
  relative?: boolean;
}

/** Processes spawnCli started that have not exited. */
const children = new Set<ChildProcess>();
// One a failed check left running would hold the test file open until the runner's timeout: it is
// killed once the file's tests are done, and said.
after(() => {
  for (const proc of children) {
    process.stderr.write(`test helpers: killing process ${proc.pid} (httpsqs ${proc.spawnargs.slice(2).join(' ')}), left running\n`);
    proc.kill('SIGKILL');
  }
});

/** Runs `httpsqs` with `args` as a subprocess, keeping what it writes to stderr. */
export function spawnCli(args: string[], opts: { env?: NodeJS.ProcessEnv; detached?: boolean; relative?: boolean } = {}) {
  const proc = spawn(process.execPath, [opts.relative ? relative(ROOT, CLI) : CLI, ...args], {
    ...(opts.relative ? { cwd: ROOT } : {}),
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...opts.env },
    detached: opts.detached ?? false,
  });
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  let err = '';
  proc.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  return { proc, stderr: () => err, exited };
}

/** Starts `httpsqs` as a subprocess on 127.0.0.1 and resolves once it listens. */
export async function startServer(opts: StartOptions = {}): Promise<RunningServer> {
  const dir = opts.dir ?? tempDir();
  let port = opts.port ?? (await freePort());
  const start = () => {
    const args = ['-l', '127.0.0.1', '-p', String(port), '-x', dir, '-i', join(dir, 'httpsqs.pid'), ...(opts.args ?? [])];
    const started = spawnCli(args, opts);
    const listening = new Promise<void>((ready, fail) => {
      started.proc.stderr.on('data', () => started.stderr().includes('listening on') && ready());
      void started.exited.then((code) => fail(new Error(`server exited with ${code} before listening: ${started.stderr()}`)));
    });
    return { ...started, listening };
  };
  let { proc, stderr, exited, listening } = start();
  // A free port can be taken by another process before the server binds it: a port this helper
  // chose is chosen again, a few times.
  for (let attempt = 1; ; attempt++) {
    try {
      await listening;
      break;
    } catch (e) {
      if (opts.port !== undefined || attempt === 3 || !stderr().includes('is already in use')) throw e;
      port = await freePort();
      ({ proc, stderr, exited, listening } = start());
    }
  }
  return {
    port,
    dir,
    proc,
    stderr,
    async stop() {
      proc.kill('SIGTERM');
      return exited;
    },
    async kill() {
      const workers = workerPids(proc.pid!);
      proc.kill('SIGKILL');
      for (const pid of workers) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone already */
        }
      }
      await exited;
      // Wait until the workers are gone too, as after a real crash of the whole server.
      while (workers.some((pid) => existsSync(`/proc/${pid}`))) await new Promise((r) => setTimeout(r, 10));
    },
    workers: () => workerPids(proc.pid!),
  };
}

/** A server built as the CLI builds one (flags, store, metrics, dashboard), in this process. */
export interface InProcessServer {
  port: number;
  dir: string;
  serving: Serving;
  /** Stops it, as SIGTERM would (requests in flight finish, the store is flushed and closed). */
  stop(): Promise<void>;
}

/** Starts a server in this process on a free loopback port, from command-line flags. Start-up
 * problems are thrown (StartError), as the CLI would print them. */
export async function startInProcess(opts: { dir?: string; args?: string[]; env?: Record<string, string> } = {}): Promise<InProcessServer> {
  const dir = opts.dir ?? tempDir();
  const config = { ...parseConfig(['-l', '127.0.0.1', '-x', dir, ...(opts.args ?? [])], { ...cleanEnv(), ...opts.env }), port: 0 };
  const serving = await serve(config, dir);
  return { port: serving.port, dir, serving, stop: () => serving.stop() };
}

/** A server in this process whose store and long polls take their time from a test clock. */
/** `wrap` may put a fault in front of the real store (a test of what the server does when a
 * store call fails). */
export async function clockedServer(wrap: (store: Store) => Store = (s) => s) {
  const clock = new TestClock();
  const dir = tempDir();
  const store = await LmdbStore.open({ path: dir, now: clock.now });
  const app = createHttpsqsServer(wrap(store), { keepAliveTimeout: 60, maxMessageBytes: 2 ** 20, maxWait: 5, clock });
  await new Promise<void>((r) => app.server.listen(0, '127.0.0.1', r));
  const port = (app.server.address() as net.AddressInfo).port;
  return {
    clock,
    app,
    port,
    async stop() {
      await app.close();
      await store.close();
      cleanup(dir);
    },
  };
}

export type ClockedServer = Awaited<ReturnType<typeof clockedServer>>;

/** Runs the CLI to completion and returns its exit code and output. */
export function runCli(args: string[], opts: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((res) => {
    const proc = spawn(process.execPath, [CLI, ...args], { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d) => (stdout += d));
    proc.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => proc.kill('SIGKILL'), opts.timeoutMs ?? 10_000);
    proc.once('exit', (code) => {
      clearTimeout(t);
      res({ code, stdout, stderr });
    });
  });
}

export interface RawResponse {
  status: number;
  /** Header lines exactly as sent: [name, value] with the server's spelling. */
  rawHeaders: [string, string][];
  headers: Record<string, string>;
  body: Buffer;
}

/** Parses one HTTP response from the start of `buf`; null when it is not complete yet. */
export function parseResponse(buf: Buffer, head = false): { res: RawResponse; rest: Buffer } | null {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  const status = Number(lines[0]!.split(' ')[1]);
  const rawHeaders: [string, string][] = lines.slice(1).map((l) => {
    const i = l.indexOf(':');
    return [l.slice(0, i), l.slice(i + 1).trim()];
  });
  const headers: Record<string, string> = {};
  for (const [k, v] of rawHeaders) headers[k.toLowerCase()] ??= v;
  const len = head ? 0 : Number(headers['content-length'] ?? NaN);
  if (Number.isNaN(len)) throw new Error('response without Content-Length');
  if (buf.length < end + 4 + len) return null;
  return {
    res: { status, rawHeaders, headers, body: buf.subarray(end + 4, end + 4 + len) },
    rest: buf.subarray(end + 4 + len),
  };
}

/** Sends raw bytes on a fresh connection and collects everything until the server closes it. */
export function rawExchange(port: number, data: Buffer | string, timeoutMs = 5000): Promise<Buffer> {
  return new Promise((res, rej) => {
    const sock = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const t = setTimeout(() => {
      sock.destroy();
      rej(new Error(`no close within ${timeoutMs} ms; got: ${Buffer.concat(chunks).toString('latin1').slice(0, 200)}`));
    }, timeoutMs);
    sock.on('data', (d) => chunks.push(d));
    sock.on('error', () => {}); // a reset after the reply is fine: we judge by what arrived
    sock.on('close', () => {
      clearTimeout(t);
      res(Buffer.concat(chunks));
    });
    sock.write(data);
  });
}

/** One request on its own connection, sent as the conformance transcripts were recorded. */
export async function request(
  port: number,
  method: string,
  target: string,
  opts: { headers?: [string, string][]; body?: Buffer | string; version?: string; timeoutMs?: number } = {},
): Promise<RawResponse> {
  const body = typeof opts.body === 'string' ? Buffer.from(opts.body) : (opts.body ?? Buffer.alloc(0));
  let head = `${method} ${target} HTTP/${opts.version ?? '1.1'}\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n`;
  for (const [k, v] of opts.headers ?? []) head += `${k}: ${v}\r\n`;
  if (body.length > 0 || method === 'POST' || method === 'PUT') head += `Content-Length: ${body.length}\r\n`;
  const raw = await rawExchange(port, Buffer.concat([Buffer.from(`${head}\r\n`, 'latin1'), body]), opts.timeoutMs);
  const parsed = parseResponse(raw, method === 'HEAD');
  if (!parsed) throw new Error(`incomplete response: ${raw.toString('latin1').slice(0, 300)}`);
  return parsed.res;
}

/** A keep-alive HTTP client for load: `send(path)` resolves to the status, body and Pos. */
export function keepAliveClient(port: number, maxSockets = 64) {
  const agent = new http.Agent({ keepAlive: true, maxSockets });
  const send = (path: string, body?: Buffer | string) =>
    new Promise<{ status: number; body: string; pos: string | undefined }>((res, rej) => {
      const req = http.request({ host: '127.0.0.1', port, path, agent, method: body === undefined ? 'GET' : 'POST' }, (r) => {
        let b = '';
        r.setEncoding('latin1');
        r.on('data', (d: string) => (b += d));
        r.on('end', () => res({ status: r.statusCode!, body: b, pos: r.headers.pos as string | undefined }));
        r.on('error', rej);
      });
      req.on('error', rej);
      req.end(body);
    });
  return { send, close: () => agent.destroy() };
}

export function cleanup(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/**
 * For tests that need a system tool: returns a skip reason when it is missing locally (printed
 * loudly), and `false` (run, and fail) when it is missing in CI, where `.ci/run` installs it.
 */
export function needsTool(tool: string, debianPackage: string): string | false {
  const found = spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
  if (found || process.env.CI === 'true') return false;
  const reason = `SKIPPED: ${tool} is not installed (apt-get install ${debianPackage}); mandatory in CI`;
  process.stderr.write(`\n*** ${reason} ***\n\n`);
  return reason;
}

/**
 * For tests on a small tmpfs of their own (a disk that fills up): returns a skip reason when it
 * cannot be mounted (it needs root; printed loudly), and `false` (run, and fail) in CI.
 */
export function canMount(): string | false {
  const probe = tempDir('httpsqs-mount-');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', probe], { stdio: 'ignore' });
    execFileSync('umount', [probe]);
    return false;
  } catch {
    if (process.env.CI === 'true') return false; // mandatory in CI: let the test fail there
    const reason = 'SKIPPED: mounting a small tmpfs needs root; mandatory in CI';
    process.stderr.write(`\n*** ${reason} ***\n\n`);
    return reason;
  } finally {
    cleanup(probe);
  }
}

/**
 * Producers put `p<producer>-<i>` messages round-robin over `queues` (retrying on a full queue),
 * consumers get until the producers are done and the queues stay empty, then whatever is left is
 * drained. Resolves to how often each message was delivered, and how many puts found a full queue.
 */
export async function produceAndConsume(o: {
  producers: Array<ReturnType<typeof keepAliveClient>>;
  consumers: Array<ReturnType<typeof keepAliveClient>>;
  queues: string[];
  perProducer: number;
}): Promise<{ delivered: Map<string, number>; fullAnswers: number }> {
  const delivered = new Map<string, number>();
  const deliver = (body: string) => delivered.set(body, (delivered.get(body) ?? 0) + 1);
  let producing = o.producers.length;
  let fullAnswers = 0;
  const producer = async ({ send }: ReturnType<typeof keepAliveClient>, p: number) => {
    for (let i = 0; i < o.perProducer; i++) {
      const q = o.queues[i % o.queues.length]!;
      for (;;) {
        const r = await send(`/?name=${q}&opt=put&data=p${p}-${i}`);
        if (r.body === 'HTTPSQS_PUT_OK') break;
        if (r.body !== 'HTTPSQS_PUT_END') throw new Error(`put answered ${r.body}`);
        fullAnswers++;
        await new Promise((r) => setTimeout(r, 2));
      }
    }
    producing--;
  };
  const consumer = async ({ send }: ReturnType<typeof keepAliveClient>, c: number) => {
    for (let idle = 0; producing > 0 || idle < 3; ) {
      const r = await send(`/?name=${o.queues[(c + idle) % o.queues.length]!}&opt=get`);
      if (r.body === 'HTTPSQS_GET_END') {
        idle++;
        await new Promise((r) => setTimeout(r, 2));
        continue;
      }
      idle = 0;
      deliver(r.body);
    }
  };
  await Promise.all([...o.producers.map(producer), ...o.consumers.map(consumer)]);
  // Drain whatever the consumers left when they stopped.
  for (const q of o.queues) {
    for (;;) {
      const r = await o.consumers[0]!.send(`/?name=${q}&opt=get`);
      if (r.body === 'HTTPSQS_GET_END') break;
      deliver(r.body);
    }
  }
  return { delivered, fullAnswers };
}

/** Resolves once `cond` holds; throws after `ms`. */
export async function waitFor(cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await sleep(25);
  }
}

/** A client that sends a GET for `target` and never reads any of the reply. */
export function neverReads(port: number, target: string): net.Socket {
  const sock = net.connect(port, '127.0.0.1');
  sock.on('error', () => {});
  sock.pause();
  sock.write(`GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`);
  return sock;
}

/** Bytes received and not yet read by the process, over the established connections on
 * 127.0.0.1:`port` (the kernel's receive queues, from /proc/net/tcp). */
export function unreadOn(port: number): number {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  let unread = 0;
  for (const line of readFileSync('/proc/net/tcp', 'latin1').split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f[1] === local && f[3] === '01') unread += parseInt(f[4]!.split(':')[1]!, 16);
  }
  return unread;
}

export const CLI_CLIENT = join(ROOT, 'dist', 'src', 'client', 'cli.js');

/** This environment without HTTPSQS_* settings, which would override the flags under test. */
export const cleanEnv = (): NodeJS.ProcessEnv => Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HTTPSQS_')));

/** The thread that runs httpsqs-cli for `cliClient` (cli-thread.ts), started on first use. */
let cliThread: { worker: Worker; answers: MessagePort; flag: Int32Array } | undefined;

/** Runs `httpsqs-cli --port <port> …` to completion (its standard input is `input`), in a thread of
 * this process: the same commands as the installed command runs (`runCli`), without starting
 * Node.js and loading them again for each. Tests of what only a process shows (signals, a
 * terminal, the environment) run CLI_CLIENT itself. Blocks until it is done, as a process did. */
export const cliClient =
  (port: number) =>
  (args: string[], o: { input?: string; env?: NodeJS.ProcessEnv } = {}): CliResult => {
    if (!cliThread) {
      const { port1, port2 } = new MessageChannel();
      const flag = new Int32Array(new SharedArrayBuffer(4));
      const worker = new Worker(new URL('./cli-thread.js', import.meta.url), { workerData: { port: port2, flag }, transferList: [port2] });
      worker.unref();
      cliThread = { worker, answers: port1, flag };
    }
    const { worker, answers, flag } = cliThread;
    Atomics.store(flag, 0, 0);
    worker.postMessage({ args: ['--port', String(port), ...args], input: o.input ?? '', env: { ...cleanEnv(), ...o.env } } satisfies CliJob);
    // The flag, not the wake-up, says the answer is posted: the thread's notify of the command
    // before (it may be preempted between setting the flag and notifying) can come during this wait.
    const end = Date.now() + 30_000;
    while (Atomics.load(flag, 0) === 0) {
      if (Atomics.wait(flag, 0, 0, Math.max(0, end - Date.now())) === 'timed-out') throw new Error(`httpsqs-cli ${args.join(' ')}: no end within 30 s`);
    }
    return receiveMessageOnPort(answers)!.message as CliResult;
  };

/** For a suite of httpsqs-cli tests: a server started before them and stopped after, and
 * `cli`, which runs httpsqs-cli against it. */
export function cliSuite(): { server: RunningServer; cli: ReturnType<typeof cliClient> } {
  const suite = {} as { server: RunningServer; cli: ReturnType<typeof cliClient> };
  before(async () => {
    suite.server = await startServer();
    suite.cli = cliClient(suite.server.port);
  });
  after(async () => {
    await suite.server.stop();
    cleanup(suite.server.dir);
  });
  return suite;
}

/** A keep-alive connection served by a known worker of `--workers`: `send` one request at a time. */
export interface WorkerConnection {
  worker: number;
  send(target: string, timeoutMs?: number): Promise<RawResponse>;
  close(): void;
}

/** The process among `pids` holding the server's end of the connection from local port `from` to
 * `port` (from /proc: the socket's inode, then the descriptors of each process). */
function holderOfConnection(port: number, from: number, pids: number[]): number | undefined {
  const hex = (p: number) => `0100007F:${p.toString(16).toUpperCase().padStart(4, '0')}`;
  let inode: string | undefined;
  for (const line of readFileSync('/proc/net/tcp', 'latin1').split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f[1] === hex(port) && f[2] === hex(from)) inode = f[9];
  }
  if (!inode || inode === '0') return undefined;
  for (const pid of pids) {
    try {
      for (const fd of readdirSync(`/proc/${pid}/fd`)) {
        try {
          if (readlinkSync(`/proc/${pid}/fd/${fd}`) === `socket:[${inode}]`) return pid;
        } catch {
          /* closed meanwhile */
        }
      }
    } catch {
      /* gone */
    }
  }
  return undefined;
}

/** Opens connections to `server` until each of its workers serves one; one connection a worker. */
export async function connectionPerWorker(server: RunningServer): Promise<Map<number, WorkerConnection>> {
  const workers = server.workers();
  const found = new Map<number, WorkerConnection>();
  for (let tries = 0; found.size < workers.length; tries++) {
    if (tries > 50) throw new Error(`no connection to each of the workers ${workers}`);
    const sock = net.connect(server.port, '127.0.0.1');
    sock.on('error', () => {});
    await new Promise((r) => sock.once('connect', r));
    // The first request makes sure a worker has accepted it.
    let pending: ((r: RawResponse) => void) | undefined;
    let buf: Buffer = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const parsed = parseResponse(buf);
      if (!parsed) return;
      buf = parsed.rest;
      pending?.(parsed.res);
    });
    const send = (target: string, timeoutMs = 15_000) =>
      new Promise<RawResponse>((res, rej) => {
        const t = setTimeout(() => rej(new Error(`no answer to ${target} in ${timeoutMs} ms`)), timeoutMs);
        pending = (r) => {
          clearTimeout(t);
          pending = undefined;
          res(r);
        };
        sock.write(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\n\r\n`);
      });
    await send('/?name=_&opt=status');
    const worker = holderOfConnection(server.port, sock.localPort!, workers);
    if (worker === undefined || found.has(worker)) sock.destroy();
    else found.set(worker, { worker, send, close: () => sock.destroy() });
  }
  return found;
}

/**
 * An export that reads queue 'q' of `reader` while `writer` nacks a lease there for the last time
 * (the message becomes a dead letter at a slot), after the export has read `readFirst` records:
 * the export must show the queue as it was before the nack.
 */
export async function assertExportIgnoresNack(writer: Store, reader: Store, readFirst: number): Promise<void> {
  await writer.maxdeliveries('q', 1);
  await writer.put('q', Buffer.from('first'));
  await writer.put('q', Buffer.from('THE-MESSAGE'));
  await writer.get('q');
  const leased = await writer.get('q', 600_000);
  assert.equal(leased?.pos, 2);
  const records = queueRecords(reader, 'q');
  const got: QueueRecord[] = [];
  for (let i = 0; i < readFirst; i++) got.push((await records.next()).value as QueueRecord);
  assert.equal(await writer.settle('q', 2, 'nack'), true);
  assert.equal((await writer.status('q')).dead, 1);
  for await (const r of records) got.push(r);
  const text = (r: QueueRecord) =>
    'message' in r ? { pos: r.pos, message: r.message.toString() } : 'lease' in r ? { pos: r.pos, deliveries: r.lease.deliveries } : r;
  assert.deepEqual(got.map(text), [
    { status: { putpos: 2, getpos: 2, maxqueue: 1_000_000, leased: 1, delayed: 0, dead: 0, maxdeliveries: 1 } },
    { pos: 1, message: 'first' },
    { pos: 2, message: 'THE-MESSAGE' },
    { pos: 2, deliveries: 1 },
  ]);
}
