/**
 * `npm run bench`: httpsqs (durable defaults, one and two workers) against the ceiling of a bare
 * node:http server, in one run, with the same load generator. Prints a table and rewrites the
 * results section of BENCHMARKS.md. Tune with BENCH_SECONDS and BENCH_CONNECTIONS.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, drive, freePort, loadGenerator, machine, MiB, ROOT, startNode, table, tempDir, withMemory, type Load, type LoadResult, type Memory } from './lib.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50);
const MSG38 = 'hello-world-0123456789-abcdefghijklmno'; // 38 bytes
const KIB = 'x'.repeat(1024);

interface Scenario {
  name: string;
  requests: Load['requests'];
  /** Counts toward the put/get targets. */
  target?: 'put' | 'get';
}

const SCENARIOS: Scenario[] = [
  { name: 'put data= (38 B)', requests: [{ path: `/?name=bench&opt=put&data=${MSG38}` }], target: 'put' },
  { name: 'put POST (1 KiB)', requests: [{ method: 'POST', path: '/?name=bench&opt=put', body: KIB }], target: 'put' },
  { name: 'get', requests: [{ path: '/?name=bench&opt=get' }], target: 'get' },
  { name: 'mixed put/get', requests: [{ path: `/?name=mix&opt=put&data=${MSG38}` }, { path: '/?name=mix&opt=get' }] },
];

interface Row {
  server: string;
  scenario: Scenario;
  res: LoadResult;
  mem: Memory;
  note: string;
}

async function measure(label: string, args: string[], port: number, check?: (s: Scenario) => Promise<string>): Promise<Row[]> {
  const proc = await startNode(args, port);
  const rows: Row[] = [];
  try {
    await drive(port, { requests: [{ path: `/?name=warmup&opt=put&data=${MSG38}` }], connections: CONNECTIONS, seconds: 1 });
    for (const scenario of SCENARIOS) {
      const load = { requests: scenario.requests, connections: CONNECTIONS, seconds: SECONDS };
      const { result, mem } = await withMemory(proc.child.pid!, () => drive(port, load));
      rows.push({ server: label, scenario, res: result, mem, note: check ? await check(scenario) : '' });
      process.stderr.write(`${label.padEnd(22)} ${scenario.name.padEnd(18)} ${Math.round(result.rps)} req/s\n`);
    }
  } finally {
    await proc.stop();
  }
  return rows;
}

async function main(): Promise<void> {
  const gen = loadGenerator();
  process.stderr.write(`load generator: ${gen}; ${CONNECTIONS} keep-alive connections, ${SECONDS} s a scenario\n`);
  const rows: Row[] = [];
  const barePort = await freePort();
  rows.push(...(await measure('bare node:http', [join(ROOT, 'dist', 'bench', 'bare.js'), String(barePort)], barePort)));

  // Durable (the default) with one and two workers; then the reference's relaxed mode, to show
  // what waiting for the disk costs.
  const configs = [
    { label: 'httpsqs, 1 worker', flags: ['--workers', '1'] },
    { label: 'httpsqs, 2 workers', flags: ['--workers', '2'] },
    { label: 'httpsqs, --sync interval', flags: ['--sync', 'interval'] },
  ];
  for (const { label, flags } of configs) {
    const dir = tempDir('httpsqs-bench-');
    const port = await freePort();
    const args = [CLI, '-l', '127.0.0.1', '-p', String(port), '-x', dir, '-i', join(dir, 'pid'), ...flags];
    // A get scenario that emptied the queue measured some cheap GET_END answers: say so.
    const check = async (s: Scenario) => {
      if (s.target !== 'get') return '';
      const st = (await (await fetch(`http://127.0.0.1:${port}/?name=bench&opt=status_json`)).json()) as { unread: number };
      return st.unread > 0 ? '' : 'queue ran empty';
    };
    rows.push(...(await measure(label, args, port, check)));
    rmSync(dir, { recursive: true, force: true });
  }

  const bare = new Map(rows.filter((r) => r.server.startsWith('bare')).map((r) => [r.scenario.name, r.res.rps]));
  const out = table(
    ['server', 'load', 'req/s', 'x bare', 'p50 ms', 'p99 ms', 'peak RSS', 'RssAnon', 'errors', 'note'],
    rows.map((r) => [
      r.server, r.scenario.name, Math.round(r.res.rps), (r.res.rps / bare.get(r.scenario.name)!).toFixed(2),
      r.res.p50ms.toFixed(2), r.res.p99ms.toFixed(2), MiB(r.mem.peakRss), MiB(r.mem.rssAnon), r.res.errors, r.note,
    ]),
  );
  const single = rows.filter((r) => r.server === 'httpsqs, 1 worker' && r.scenario.target);
  const verdicts = single.map((r) => {
    const ratio = r.res.rps / bare.get(r.scenario.name)!;
    const ok = ratio >= 0.8 && r.res.p99ms <= 5;
    return `- ${ok ? 'MET' : 'MISSED'}: ${r.scenario.name}: ${ratio.toFixed(2)} x bare (target >= 0.80), p99 ${r.res.p99ms.toFixed(2)} ms (target <= 5)`;
  });
  const report =
    `Run on ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC: ${machine()}.\n` +
    `Load: ${gen}, ${CONNECTIONS} keep-alive connections, ${SECONDS} s per load; httpsqs with its durable defaults on a fresh data directory.\n\n` +
    `${out}\n\nTargets (one process, durable acks):\n${verdicts.join('\n')}\n`;
  process.stdout.write(`\n${report}`);

  const file = join(ROOT, 'BENCHMARKS.md');
  const md = readFileSync(file, 'utf8');
  writeFileSync(file, md.replace(/(<!-- bench:start -->\n)[\s\S]*?(<!-- bench:end -->)/, `$1${report}$2`));
  process.stderr.write('results written to BENCHMARKS.md\n');
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${(err as Error).stack}\n`);
  process.exit(1);
});
