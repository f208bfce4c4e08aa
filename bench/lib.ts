/** Benchmark plumbing: processes, memory readings, and load through wrk (or autocannon). */
import http from 'node:http';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
export const hasWrk = spawnSync('sh', ['-c', 'command -v wrk']).status === 0;
export const hasRedis = spawnSync('sh', ['-c', 'command -v redis-server']).status === 0;

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => res(port));
    });
  });
}

export async function waitListening(port: number, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), r(true)));
      s.once('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`nothing listening on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface Proc {
  child: ChildProcess;
  port: number;
  stop(): Promise<void>;
}

/** Starts a node script (server) and waits for its port. */
export async function startNode(args: string[], port: number, env: NodeJS.ProcessEnv = {}): Promise<Proc> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, ...env } });
  await waitListening(port);
  return {
    child,
    port,
    stop: () =>
      new Promise<void>((r) => {
        if (child.exitCode !== null) return r();
        child.once('exit', () => r());
        child.kill('SIGTERM');
      }),
  };
}

/** The process and all its descendants (workers). */
function tree(pid: number): number[] {
  const out = spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).stdout.trim();
  const kids = out ? out.split('\n').map(Number) : [];
  return [pid, ...kids.flatMap(tree)];
}

function statusField(pid: number, field: string): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

export interface Memory {
  /** Peak resident set (VmHWM), summed over the process tree. */
  peakRss: number;
  rss: number;
  /** Private (anonymous) resident memory: the heap, not the memory-mapped database. */
  rssAnon: number;
}

export function memory(pid: number): Memory {
  const pids = tree(pid);
  const sum = (f: string) => pids.reduce((a, p) => a + statusField(p, f), 0);
  return { peakRss: sum('VmHWM'), rss: sum('VmRSS'), rssAnon: sum('RssAnon') };
}

/** Seconds of CPU (user and system, every thread) the process and its descendants used so far. */
export function cpuSeconds(pid: number): number {
  let ticks = 0;
  for (const p of tree(pid)) {
    try {
      const f = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ticks += Number(f[11]) + Number(f[12]); // utime, stime
    } catch {
      /* gone meanwhile */
    }
  }
  return ticks / CLOCK_TICKS;
}

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** What `work` cost the process tree: its memory, sampled while it runs (the highest values
 * seen), and the seconds of CPU it used meanwhile. */
export async function measured<T>(pid: number, work: () => Promise<T>): Promise<{ result: T; mem: Memory; cpu: number }> {
  const cpuBefore = cpuSeconds(pid);
  const max: Memory = memory(pid);
  const take = () => {
    const m = memory(pid);
    max.peakRss = Math.max(max.peakRss, m.peakRss);
    max.rss = Math.max(max.rss, m.rss);
    max.rssAnon = Math.max(max.rssAnon, m.rssAnon);
  };
  const timer = setInterval(take, 250);
  try {
    const result = await work();
    const cpu = cpuSeconds(pid) - cpuBefore;
    take();
    return { result, mem: max, cpu };
  } finally {
    clearInterval(timer);
  }
}

export interface Load {
  /** Requests in the order each connection sends them, repeated: one entry = a constant load. */
  requests: { method?: 'GET' | 'POST'; path: string; body?: string }[];
  connections: number;
  seconds: number;
}

export interface LoadResult {
  rps: number;
  p50ms: number;
  p99ms: number;
  errors: number;
}

function ms(v: string, unit: string): number {
  const n = Number(v);
  return unit === 'us' ? n / 1000 : unit === 's' ? n * 1000 : n;
}

function luaString(s: string): string {
  return JSON.stringify(s); // a JSON string literal with ASCII content is a valid Lua string
}

/** Drives `port` with wrk (1 thread) or, where wrk is missing, autocannon. */
export async function drive(port: number, load: Load): Promise<LoadResult> {
  return hasWrk ? wrk(port, load) : autocannon(port, load);
}

function wrk(port: number, load: Load): LoadResult {
  const dir = tempDir('httpsqs-wrk-');
  const script = join(dir, 'load.lua');
  const one = load.requests.length === 1 ? load.requests[0]! : undefined;
  // One request: set it statically, which keeps wrk on its fast path (no Lua call per request).
  const lua = one
    ? `wrk.method = ${luaString(one.method ?? 'GET')}\nwrk.path = ${luaString(one.path)}\n` +
      (one.body === undefined ? '' : `wrk.body = ${luaString(one.body)}\n`)
    : `local reqs = nil\nlocal i = 0\nrequest = function()\n  if reqs == nil then reqs = { ${load.requests
        .map((r) => `wrk.format(${luaString(r.method ?? 'GET')}, ${luaString(r.path)}, nil, ${r.body === undefined ? 'nil' : luaString(r.body)})`)
        .join(', ')} } end\n  i = i % #reqs + 1\n  return reqs[i]\nend\n`;
  writeFileSync(script, lua);
  const r = spawnSync('wrk', ['-t1', `-c${load.connections}`, `-d${load.seconds}s`, '--latency', '-s', script, `http://127.0.0.1:${port}/`], {
    encoding: 'utf8',
    timeout: (load.seconds + 30) * 1000,
  });
  rmSync(dir, { recursive: true, force: true }); // a run of the bench makes over 200 of them
  if (r.status !== 0) throw new Error(`wrk failed: ${r.stderr}`);
  const out = r.stdout;
  const pct = (p: string) => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s)`, 'm').exec(out);
    return m ? ms(m[1]!, m[2]!) : NaN;
  };
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]),
    p50ms: pct('50'),
    p99ms: pct('99'),
    errors: (sock ? sock.slice(1).reduce((a, v) => a + Number(v), 0) : 0) + (non2xx ? Number(non2xx[1]) : 0),
  };
}

async function autocannon(port: number, load: Load): Promise<LoadResult> {
  const { default: run } = (await import('autocannon')) as unknown as {
    default: (o: object) => Promise<{ requests: { average: number }; latency: { p50: number; p99: number }; errors: number; non2xx: number }>;
  };
  const res = await run({
    url: `http://127.0.0.1:${port}`,
    connections: load.connections,
    duration: load.seconds,
    requests: load.requests.map((r) => ({ method: r.method ?? 'GET', path: r.path, body: r.body })),
  });
  return { rps: res.requests.average, p50ms: res.latency.p50, p99ms: res.latency.p99, errors: res.errors + res.non2xx };
}

export function loadGenerator(): string {
  if (!hasWrk) return 'autocannon (wrk not found; install it for figures comparable with BENCHMARKS.md)';
  const v = spawnSync('wrk', ['-v'], { encoding: 'utf8' });
  return `${(v.stdout + v.stderr).split('\n')[0]!.trim()}, 1 thread`;
}

export function machine(): string {
  const c = cpus();
  return `${c.length} x ${c[0]?.model.trim() ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Node.js ${process.version}, ${process.platform} ${process.arch}`;
}

export const MiB = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

export function table(header: string[], rows: (string | number)[][]): string {
  const lines = [header, header.map(() => '---'), ...rows.map((r) => r.map(String))];
  return lines.map((l) => `| ${l.join(' | ')} |`).join('\n');
}

/** One request on a connection of its own. (A pooled keep-alive connection would go stale while
 * `drive` blocks this process for minutes: the server closes it, and we would not notice in time.) */
export function ask(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve(body));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}
