/**
 * `npm run bench`: httpsqs (durable defaults: the journal; LMDB with one and two workers; on Redis
 * with one and two frontends when redis-server is installed) against the ceiling of a bare
 * node:http server, in one run, with the same load generator; batches (mput, mget) beside single
 * puts and gets in messages/s. Prints a table and rewrites the results section of BENCHMARKS.md. Tune with BENCH_SECONDS, BENCH_CONNECTIONS and BENCH_ROUNDS.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ask,
  CLI,
  drive,
  freePort,
  hasRedis,
  loadGenerator,
  machine,
  MiB,
  ROOT,
  startNode,
  table,
  tempDir,
  waitListening,
  measured,
  type Load,
  type LoadResult,
  type Memory,
  type Proc,
} from './lib.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50);
const MSG38 = 'hello-world-0123456789-abcdefghijklmno'; // 38 bytes
const KIB = 'x'.repeat(1024);

/** Messages per batch request (mput, mget). */
const BATCH = 100;

interface Scenario {
  name: string;
  requests: Load['requests'];
  /** Counts toward the put/get targets. */
  target?: 'put' | 'get';
  /** A load that takes messages: the queue to check for having run empty. */
  drains?: string;
  /** A load that stores messages: the queue to check for having filled up. */
  fills?: string;
  /** Messages each request carries (batches). */
  messages?: number;
}

const SCENARIOS: Scenario[] = [
  { name: 'put data= (38 B)', requests: [{ path: `/?name=bench&opt=put&data=${MSG38}` }], target: 'put', fills: 'bench' },
  { name: 'put POST (1 KiB)', requests: [{ method: 'POST', path: '/?name=bench&opt=put', body: KIB }], target: 'put', fills: 'bench' },
  { name: 'get', requests: [{ path: '/?name=bench&opt=get' }], target: 'get', drains: 'bench' },
  { name: 'mixed put/get', requests: [{ path: `/?name=mix&opt=put&data=${MSG38}` }, { path: '/?name=mix&opt=get' }] },
  {
    name: `mput ${BATCH} x 38 B`,
    messages: BATCH,
    requests: [{ method: 'POST', path: '/?name=batch&opt=mput', body: JSON.stringify(Array.from({ length: BATCH }, () => MSG38)) }],
  },
  { name: `mget num=${BATCH}`, requests: [{ path: `/?name=batch&opt=mget&num=${BATCH}` }], drains: 'batch', messages: BATCH },
];

interface Row {
  server: string;
  scenario: Scenario;
  res: LoadResult;
  /** Medians over the rounds of this server's rate over the bare server's and LMDB's, each ratio
   * taken within one round, and of its p99s. */
  xBare: number;
  xLmdb: number;
  p99ms: number;
  /** Median over the rounds of the server's CPU time (every process and thread) per request. */
  cpuUs: number;
  mem: Memory;
  note: string;
}

interface Target {
  label: string;
  port: number;
  proc: Proc;
  dir?: string;
}

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const JOURNAL = 'httpsqs, journal';
const LMDB = 'httpsqs, LMDB';

/** The run with the median requests/s. */
function median(results: LoadResult[]): LoadResult {
  return [...results].sort((a, b) => a.rps - b.rps)[results.length >> 1]!;
}

const middle = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

/** The median over the rounds of `of`'s rate over `to`'s, each taken within one round: the
 * machine's drift from round to round (seen here: the bare server at 23k req/s in one round and
 * 48k in the next) hits both sides of a ratio alike. */
const ratio = (of: LoadResult[], to: LoadResult[]): number => middle(of.map((r, i) => r.rps / to[i]!.rps));

async function main(): Promise<void> {
  const gen = loadGenerator();
  process.stderr.write(`load generator: ${gen}; ${CONNECTIONS} keep-alive connections, ${SECONDS} s a load, median of ${ROUNDS}\n`);

  // All servers run side by side (idle ones cost nothing) and take turns, load by load, so that
  // drift of a shared machine hits them alike. Durable (the default) with one and two workers; then
  // the reference's relaxed mode, to show what waiting for the disk costs.
  const targets: Target[] = [];
  // Everything started is stopped however the run ends, a failed start included.
  const redisDir = tempDir('httpsqs-bench-redis-');
  let redis: ChildProcess | undefined;
  const rows: Row[] = [];
  try {
    const barePort = await freePort();
    targets.push({ label: 'bare node:http', port: barePort, proc: await startNode([join(ROOT, 'dist', 'bench', 'bare.js'), String(barePort)], barePort) });
    // Redis with an fsync per write (appendfsync always): acknowledged means on disk, as with LMDB.
    const redisPort = await freePort();
    redis = hasRedis
      ? spawn(
          'redis-server',
          ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--dir', redisDir],
          { stdio: 'ignore' },
        )
      : undefined;
    if (redis) await waitListening(redisPort);
    else process.stderr.write('redis-server is not installed (apt-get install redis-server): no Redis rows\n');
    const redisUrl = `redis://127.0.0.1:${redisPort}/0`;
    for (const [label, flags] of [
      [JOURNAL, ['--engine', 'journal']],
      [LMDB, ['--engine', 'lmdb']],
      ['httpsqs, LMDB, 2 workers', ['--workers', '2']],
      ['httpsqs, journal, --sync interval', ['--engine', 'journal', '--sync', 'interval']],
      ...(redis
        ? ([
            ['Redis, 1 frontend', ['--store', `${redisUrl}?prefix=one:`]],
            ['Redis, 2 frontends', ['--store', `${redisUrl}?prefix=two:`, '--workers', '2']],
          ] as const)
        : []),
    ] as const) {
      const dir = tempDir('httpsqs-bench-');
      const port = await freePort();
      const args = [CLI, '-l', '127.0.0.1', '-p', String(port), '-x', dir, '-i', join(dir, 'pid'), ...flags];
      targets.push({ label, port, dir, proc: await startNode(args, port) });
    }
    for (const t of targets) {
      await drive(t.port, { requests: [{ path: `/?name=warmup&opt=put&data=${MSG38}` }], connections: CONNECTIONS, seconds: 3 });
      // Room for every message the loads store: at the default maxqueue (1,000,000) a fast server
      // filled 'bench' during the 38-byte puts, and its 1 KiB puts then measured PUT_END answers.
      if (t.dir) for (const q of ['bench', 'mix', 'batch']) await ask(t.port, `/?name=${q}&opt=maxqueue&num=1000000000`);
    }
    for (const scenario of SCENARIOS) {
      const load = { requests: scenario.requests, connections: CONNECTIONS, seconds: SECONDS };
      const runs = new Map<Target, { results: LoadResult[]; mem: Memory[]; cpuUs: number[] }>(targets.map((t) => [t, { results: [], mem: [], cpuUs: [] }]));
      for (let round = 0; round < ROUNDS; round++) {
        for (const t of targets) {
          // What earlier loads left to write back (the --sync interval servers' data, the page
          // cache's dirty pages) goes to disk now, not during this server's turn.
          spawnSync('sync');
          const { result, mem, cpu } = await measured(t.proc.child.pid!, () => drive(t.port, load));
          runs.get(t)!.results.push(result);
          runs.get(t)!.mem.push(mem);
          runs.get(t)!.cpuUs.push((cpu * 1e6) / (result.rps * SECONDS));
          process.stderr.write(`${t.label.padEnd(26)} ${scenario.name.padEnd(18)} ${Math.round(result.rps)} req/s\n`);
        }
      }
      const bareRuns = runs.get(targets[0]!)!.results;
      const lmdbRuns = runs.get(targets.find((t) => t.label === LMDB)!)!.results;
      for (const t of targets) {
        const { results, mem, cpuUs } = runs.get(t)!;
        let note = '';
        // A get load that emptied the queue measured some cheap GET_END answers: say so.
        if (scenario.drains && t.dir) {
          const st = JSON.parse(await ask(t.port, `/?name=${scenario.drains}&opt=status_json`)) as { unread: number };
          if (st.unread === 0) note = 'queue ran empty';
        }
        // Likewise a put load that filled it measured PUT_END answers, which store nothing.
        if (scenario.fills && t.dir) {
          const st = JSON.parse(await ask(t.port, `/?name=${scenario.fills}&opt=status_json`)) as { unread: number; maxqueue: number };
          if (st.unread >= st.maxqueue) note = 'queue full';
        }
        const peak = (f: keyof Memory) => Math.max(...mem.map((m) => m[f]));
        rows.push({
          server: t.label,
          scenario,
          res: median(results),
          xBare: ratio(results, bareRuns),
          xLmdb: ratio(results, lmdbRuns),
          p99ms: middle(results.map((r) => r.p99ms)),
          cpuUs: middle(cpuUs),
          mem: { peakRss: peak('peakRss'), rss: peak('rss'), rssAnon: peak('rssAnon') },
          note,
        });
      }
    }
  } finally {
    for (const t of targets) {
      await t.proc.stop();
      if (t.dir) rmSync(t.dir, { recursive: true, force: true });
    }
    redis?.kill();
    rmSync(redisDir, { recursive: true, force: true });
  }

  const out = table(
    ['server', 'load', 'req/s', 'x bare', 'x LMDB', 'msgs/s', 'p50 ms', 'p99 ms', 'CPU µs/req', 'peak RSS', 'RssAnon', 'errors', 'note'],
    rows.map((r) => [
      r.server,
      r.scenario.name,
      Math.round(r.res.rps),
      r.xBare.toFixed(2),
      r.server.startsWith('bare') ? '' : r.xLmdb.toFixed(2),
      r.server.startsWith('bare') ? '' : Math.round(r.res.rps * (r.scenario.messages ?? 1)),
      r.res.p50ms.toFixed(2),
      r.p99ms.toFixed(2),
      r.cpuUs.toFixed(1),
      MiB(r.mem.peakRss),
      MiB(r.mem.rssAnon),
      r.res.errors,
      r.note,
    ]),
  );
  // The journal's targets (one process, durable acks): at least the bare server and 1.5x LMDB,
  // with a p99 of 5 ms at most; the mixed load is reported beside them.
  const verdicts = rows
    .filter((r) => r.server === JOURNAL && (r.scenario.target || r.scenario.name.startsWith('mixed')))
    .map((r) => {
      const ok = r.xBare >= 1 && r.xLmdb >= 1.5 && r.p99ms <= 5;
      return `- ${ok ? 'MET' : 'MISSED'}: ${r.scenario.name}: ${r.xBare.toFixed(2)} x bare (target >= 1.00), ${r.xLmdb.toFixed(2)} x LMDB (target >= 1.50), p99 ${r.p99ms.toFixed(2)} ms (target <= 5)`;
    });
  const report =
    `Run on ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC: ${machine()}.\n` +
    `Load: ${gen}, ${CONNECTIONS} keep-alive connections, ${SECONDS} s per load, the servers taking turns; req/s and p50 are those of the run with the median rate of ${ROUNDS}, memory the peak of all; the ratios are medians of ratios taken within one round, p99 the median of the rounds' p99s, CPU µs/req the median of the server's CPU time (every process and thread, not redis-server's) over the requests answered; a \`sync\` before each load. httpsqs with its durable defaults on a fresh data directory (LMDB; the journal with --engine journal).\n\n` +
    `${out}\n\nThe journal's targets (one process, durable acks):\n${verdicts.join('\n')}\n`;
  process.stdout.write(`\n${report}`);

  const file = join(ROOT, 'BENCHMARKS.md');
  const md = readFileSync(file, 'utf8');
  writeFileSync(file, md.replace(/(<!-- bench:start -->\n)[\s\S]*?(<!-- bench:end -->)/, `$1${report}$2`));
  process.stderr.write('results written to BENCHMARKS.md\n');
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${(err as Error).stack}\n${(err as Error).cause ? `cause: ${String((err as Error).cause)}\n` : ''}`);
  process.exit(1);
});
