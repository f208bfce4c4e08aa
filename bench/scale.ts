/**
 * `npm run bench:scale`: footprint at scale, durable, on the journal engine (BENCH_ENGINE=lmdb for
 * LMDB).
 * 1. Write BENCH_MESSAGES (default 2,000,000) messages of 1 KiB into one queue, then drain them:
 *    throughput, database size on disk, RSS and RssAnon over time.
 * 2. Restart on the multi-GB database: time until the first answer.
 * 3. Hold BENCH_CONNECTIONS (default 10,000) idle keep-alive connections on a fresh server while
 *    puts and gets go on: errors, and memory per idle connection.
 * Needs wrk. Run through `npm run bench:scale`, which raises `ulimit -n` first.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { CLI, ROOT, drive, freePort, hasWrk, machine, memory, MiB, startNode, table, tempDir, type Proc } from './lib.js';

const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 2_000_000);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 10_000);
const QUEUE = 'scale';
const ENGINE = process.env.BENCH_ENGINE ?? 'journal';
const SEGMENT = 64 * 2 ** 20;

interface Sample {
  t: number;
  done: number;
  rss: number;
  rssAnon: number;
  disk: number;
}

/** Bytes the data directory takes on disk (the journal's segments and checkpoint, or data.mdb). */
function diskUse(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) n += e.isDirectory() ? diskUse(join(dir, e.name)) : statSync(join(dir, e.name)).blocks * 512;
  return n;
}

async function status(port: number): Promise<{ putpos: number; getpos: number; unread: number }> {
  return (await fetch(`http://127.0.0.1:${port}/?name=${QUEUE}&opt=status_json`)).json() as never;
}

/** Runs wrk until the queue position reaches `count`, sampling memory and progress. */
async function phase(server: Proc, dir: string, kind: 'put' | 'get', count: number): Promise<{ seconds: number; samples: Sample[] }> {
  const script = join(dir, `${kind}.lua`);
  writeFileSync(
    script,
    kind === 'put' ? `wrk.method = "POST"\nwrk.path = "/?name=${QUEUE}&opt=put"\nwrk.body = string.rep("m", 1024)\n` : `wrk.path = "/?name=${QUEUE}&opt=get"\n`,
  );
  const samples: Sample[] = [];
  const start = Date.now();
  const wrk = spawn('wrk', ['-t1', '-c50', '-d3600s', '-s', script, `http://127.0.0.1:${server.port}/`], { stdio: 'ignore' });
  const exited = new Promise((r) => wrk.once('exit', r));
  let lastSample = 0;
  for (;;) {
    await new Promise((r) => setTimeout(r, 100));
    const st = await status(server.port);
    const done = kind === 'put' ? st.putpos : st.getpos;
    if (Date.now() - lastSample >= 1000 || done >= count) {
      lastSample = Date.now();
      const m = memory(server.child.pid!);
      samples.push({ t: (Date.now() - start) / 1000, done, rss: m.rss, rssAnon: m.rssAnon, disk: diskUse(dir) });
      process.stderr.write(`\r${kind} ${done} of ${count}`);
    }
    if (done >= count) break; // wrk's -d is a bound, not a count: stop it once the count is reached
  }
  process.stderr.write('\n');
  wrk.kill('SIGINT');
  await exited;
  return { seconds: (Date.now() - start) / 1000, samples };
}

function series(samples: Sample[]): string {
  const pick = samples.filter((_, i) => i % Math.max(1, Math.floor(samples.length / 10)) === 0 || i === samples.length - 1);
  return table(
    ['s', 'position', 'RSS', 'RssAnon', 'data on disk'],
    pick.map((s) => [s.t.toFixed(0), s.done, MiB(s.rss), MiB(s.rssAnon), MiB(s.disk)]),
  );
}

/** Opens `n` connections, each making one request and then staying idle. */
async function openIdle(port: number, n: number): Promise<net.Socket[]> {
  const socks: net.Socket[] = [];
  for (let i = 0; i < n; i += 500) {
    const batch = Array.from(
      { length: Math.min(500, n - i) },
      () =>
        new Promise<net.Socket>((ok, fail) => {
          const s = net.connect(port, '127.0.0.1');
          s.once('error', fail);
          s.once('data', () => ok(s));
          s.write(`GET /?name=idle&opt=status_json HTTP/1.1\r\nHost: x\r\n\r\n`);
        }),
    );
    socks.push(...(await Promise.all(batch)));
  }
  return socks;
}

async function main(): Promise<void> {
  if (!hasWrk) throw new Error('bench:scale needs wrk (apt-get install wrk)');
  const dir = tempDir('httpsqs-scale-');
  const idleDir = tempDir('httpsqs-scale-idle-');
  const port = await freePort();
  const argsFor = (d: string) => [CLI, '-l', '127.0.0.1', '-p', String(port), '-x', d, '-i', join(d, 'pid'), '-t', '600', '--engine', ENGINE];
  const args = argsFor(dir);
  const report: string[] = [
    `Run on ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC: ${machine()}. Durable defaults, one worker, ${ENGINE === 'lmdb' ? 'LMDB' : 'the journal'}.`,
  ];
  try {
    let server = await startNode(args, port);
    await fetch(`http://127.0.0.1:${port}/?name=${QUEUE}&opt=maxqueue&num=1000000000`);
    const base = memory(server.child.pid!);

    process.stderr.write(`writing ${MESSAGES} messages of 1 KiB...\n`);
    const put = await phase(server, dir, 'put', MESSAGES);
    const written = (await status(port)).putpos;
    const size = diskUse(dir);
    report.push(`\n#### ${written} puts of 1 KiB into one queue: ${Math.round(written / put.seconds)} puts/s, ${MiB(size)} on disk\n\n${series(put.samples)}`);

    process.stderr.write('restarting on the full database...\n');
    await server.stop();
    const t0 = performance.now();
    server = await startNode(args, port);
    await status(port);
    const startup = performance.now() - t0;
    report.push(`\n#### Restart on ${MiB(size)}: first answer after ${startup.toFixed(0)} ms (process start included)`);

    process.stderr.write('draining...\n');
    const get = await phase(server, dir, 'get', written);
    const left = await status(port);
    report.push(`\n#### Drain: ${Math.round(left.getpos / get.seconds)} gets/s, ${left.unread} left unread\n\n${series(get.samples)}`);
    const anon = [...put.samples, ...get.samples].map((s) => s.rssAnon);
    // Dead segments go once a checkpoint covers them: a few more writes roll over to let that happen.
    await drive(port, { requests: [{ path: `/?name=after&opt=put&data=${'z'.repeat(1000)}` }, { path: '/?name=after&opt=get' }], connections: 50, seconds: 3 });
    // The load ends with a few of its puts unread (each connection stops where it is): read them.
    for (let i = 0; i < 10_000; i++) {
      if ((await (await fetch(`http://127.0.0.1:${port}/?name=after&opt=get`)).text()) === 'HTTPSQS_GET_END') break;
    }
    // Idle and drained, the journal goes on in a small segment and lets the whole one go (a second
    // of idle time, then a roll-over and its checkpoint): waited for, up to 10 s.
    const idleFrom = performance.now();
    await new Promise((r) => setTimeout(r, 2000));
    while (ENGINE === 'journal' && diskUse(dir) >= SEGMENT && performance.now() - idleFrom < 10_000) await new Promise((r) => setTimeout(r, 250));
    const idleFor = (performance.now() - idleFrom) / 1000;
    const drained = diskUse(dir);
    const data = written * 1024;
    report.push(
      `\nPrivate memory (RssAnon): ${MiB(base.rssAnon)} at start, at most ${MiB(Math.max(...anon))} while the queue grew to ${written} messages and drained (target: under 100 MiB).` +
        `\n\nDisk: ${(size / data).toFixed(2)}x the ${MiB(data)} of messages when full (target: under 1.5x); ${MiB(drained)} once drained` +
        (ENGINE === 'journal'
          ? ` after ${idleFor.toFixed(1)} s idle (${(drained / SEGMENT).toFixed(2)} segments of 64 MiB, target: under one; idle with nothing live, the journal goes on in a segment of a quarter of the size).`
          : '.'),
    );

    // The idle connections on a server of their own: the drained one still holds the drain's
    // garbage, which their allocations get collected, taking the figure below zero.
    await server.stop();
    server = await startNode(argsFor(idleDir), port);
    await status(port);
    await new Promise((r) => setTimeout(r, 1000));
    process.stderr.write(`holding ${CONNECTIONS} idle connections...\n`);
    const before = memory(server.child.pid!);
    const socks = await openIdle(port, CONNECTIONS);
    await new Promise((r) => setTimeout(r, 1000));
    const held = memory(server.child.pid!);
    let closed = 0;
    for (const s of socks) s.once('close', () => closed++);
    const load = await drive(port, { requests: [{ path: `/?name=busy&opt=put&data=x` }, { path: '/?name=busy&opt=get' }], connections: 50, seconds: 5 });
    // Every idle connection still works afterwards.
    const answered = await Promise.all(
      socks.map(
        (s) =>
          new Promise<boolean>((ok) => {
            s.once('data', () => ok(true));
            s.once('error', () => ok(false));
            s.write(`GET /?name=idle&opt=status_json HTTP/1.1\r\nHost: x\r\n\r\n`);
          }),
      ),
    );
    for (const s of socks) s.destroy();
    report.push(
      `\n#### ${CONNECTIONS} idle keep-alive connections held open (a fresh server)\n\n` +
        table(
          ['', 'value'],
          [
            ['puts+gets/s meanwhile (50 more connections)', Math.round(load.rps)],
            ['load errors', load.errors],
            ['idle connections closed by the server', closed],
            ['idle connections answering afterwards', `${answered.filter(Boolean).length} of ${CONNECTIONS}`],
            ['memory per idle connection (RSS)', `${((held.rss - before.rss) / CONNECTIONS / 1024).toFixed(1)} KiB`],
            ['private memory per idle connection (RssAnon)', `${((held.rssAnon - before.rssAnon) / CONNECTIONS / 1024).toFixed(1)} KiB`],
          ],
        ),
    );
    await server.stop();
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(idleDir, { recursive: true, force: true });
  }
  const text = `${report.join('\n')}\n`;
  process.stdout.write(text);
  const file = join(ROOT, 'BENCHMARKS.md');
  // Each engine's figures have their own place in the file.
  const marker = ENGINE === 'lmdb' ? 'scale' : `scale-${ENGINE}`;
  const section = new RegExp(`(<!-- ${marker}:start -->\\n)[\\s\\S]*?(<!-- ${marker}:end -->)`);
  writeFileSync(file, readFileSync(file, 'utf8').replace(section, `$1${text}$2`));
  process.stderr.write('results written to BENCHMARKS.md\n');
}

main().catch((err) => {
  process.stderr.write(`bench:scale failed: ${(err as Error).stack}\n`);
  process.exit(1);
});
