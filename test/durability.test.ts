/**
 * "Acknowledged" means "on disk": in the default mode every put is answered only after a flush,
 * counted here with strace on the real server: an fdatasync (LMDB), or a write to a file opened
 * with O_DSYNC (the journal's segments); in `--sync interval` mode acks come without one, like the
 * reference.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { CLI, cleanup, freePort, needsTool, request, startServer, tempDir, waitFor, workerPids } from './helpers.js';

const PUTS = 30;

/** Runs the server under strace, makes PUTS sequential puts, returns how many flushes it made. */
async function countFlushes(
  extraArgs: string[],
  then?: (port: number, count: () => number, primary: number) => Promise<void>,
): Promise<{ flushes: number; acked: number; later: number }> {
  const dir = tempDir();
  const port = await freePort();
  const trace = join(dir, 'trace');
  const pidfile = join(dir, 'pid');
  const proc = spawn(
    'strace',
    [
      '-f',
      '-qq',
      '-e',
      'trace=fsync,fdatasync,openat,pwrite64',
      '-o',
      trace,
      process.execPath,
      CLI,
      '-l',
      '127.0.0.1',
      '-p',
      String(port),
      '-x',
      join(dir, 'db'),
      '-i',
      pidfile,
      ...extraArgs,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  proc.stderr.on('data', (d) => (err += d));
  const exited = new Promise((r) => proc.once('exit', r));
  for (let i = 0; !err.includes('listening on'); i++) {
    if (i > 600) {
      proc.kill('SIGKILL');
      throw new Error(`server did not start within 30 s: ${err}`);
    }
    await sleep(50);
  }
  const count = () => {
    const dsync = new Set<string>();
    let n = 0;
    for (const l of readFileSync(trace, 'utf8').split('\n')) {
      const opened = /openat\(.*O_DSYNC.*\) = (\d+)$/.exec(l);
      if (opened) dsync.add(opened[1]!);
      const written = /pwrite64\((\d+),/.exec(l);
      if (/\bf(data)?sync\(/.test(l) || (written && dsync.has(written[1]!))) n++;
    }
    return n;
  };
  // Stopped also when a check fails: a server left running keeps the test file from ending.
  try {
    const before = count();
    let acked = 0;
    for (let i = 0; i < PUTS; i++) {
      const r = await request(port, 'GET', `/?name=d&opt=put&data=m${i}`);
      if (r.body.toString() === 'HTTPSQS_PUT_OK') acked++;
    }
    const flushes = count() - before;
    await then?.(port, count, Number(readFileSync(pidfile, 'utf8')));
    const later = count() - before - flushes;
    return { flushes, acked, later };
  } finally {
    process.kill(Number(readFileSync(pidfile, 'utf8')), 'SIGTERM');
    await exited;
    cleanup(dir);
  }
}

describe('durability of acknowledgements', () => {
  const skip = needsTool('strace', 'strace');

  for (const engine of ['journal', 'lmdb']) {
    it(`${engine}, default mode: each sequential put is flushed before it is acknowledged`, { skip }, async () => {
      const { flushes, acked } = await countFlushes(['--engine', engine]);
      assert.equal(acked, PUTS);
      assert.ok(flushes >= PUTS, `${flushes} flushes for ${PUTS} acknowledged puts`);
    });

    it(`${engine}, --sync interval: acknowledged without a flush, flushed every -s seconds`, { skip }, async () => {
      const { flushes, acked, later } = await countFlushes(['--engine', engine, '--sync', 'interval', '-s', '3600'], async (port, count, primary) => {
        // opt=synctime changes the interval at run time: the next flush comes within a second.
        assert.equal((await request(port, 'GET', '/?name=x&opt=synctime&num=1')).body.toString(), 'HTTPSQS_SYNCTIME_OK');
        await sleep(1800);
        // A worker the master restarts keeps it (it would otherwise flush every 3600 s again).
        const [worker] = workerPids(primary);
        process.kill(worker!, 'SIGKILL');
        // Under strace on a loaded machine a worker takes seconds to start.
        await waitFor(
          async () =>
            workerPids(primary).some((p) => p !== worker) &&
            (await request(port, 'GET', '/?name=x&opt=put&data=after').catch(() => null))?.body.toString() === 'HTTPSQS_PUT_OK',
          60_000,
        );
        const restarted = count();
        // Within seconds, not the 3600 it would take had it lost synctime=1.
        await waitFor(() => count() > restarted, 20_000).catch(() => assert.fail('the restarted worker made no flush within 20 s: it lost synctime=1'));
      });
      assert.equal(acked, PUTS);
      assert.ok(flushes < 3, `${flushes} flushes for ${PUTS} puts in interval mode`);
      assert.ok(later >= 1, `no flush within 1.8 s after synctime=1 (${later})`);
    });
  }

  it('journal: records a killed --sync interval server left unflushed are flushed at the next start, before a checkpoint can cover them', {
    skip,
  }, async () => {
    const dir = tempDir();
    const db = join(dir, 'db');
    const first = await startServer({ dir: db, args: ['--engine', 'journal', '--sync', 'interval', '-s', '3600', '-i', join(dir, 'first.pid')] });
    for (let i = 0; i < 5; i++) assert.equal((await request(first.port, 'GET', `/?name=q&opt=put&data=m${i}`)).body.toString(), 'HTTPSQS_PUT_OK');
    // Killed: its records are in the page cache, never flushed (a power cut now would take them).
    for (const pid of [...workerPids(first.proc.pid!), first.proc.pid!]) process.kill(pid, 'SIGKILL');
    await new Promise((r) => (first.proc.exitCode === null ? first.proc.once('exit', r) : r(null)));
    await waitFor(() => workerPids(first.proc.pid!).length === 0);
    const trace = join(dir, 'trace');
    const port = await freePort();
    const pidfile = join(dir, 'second.pid');
    const second = spawn(
      'strace',
      ['-f', '-qq', '-e', 'trace=fdatasync,fsync,openat', '-o', trace, process.execPath, CLI, '-l', '127.0.0.1', '-p', String(port), '-x', db, '-i', pidfile],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    second.stderr.on('data', (d) => (err += d));
    const exited = new Promise((r) => second.once('exit', r));
    try {
      await waitFor(() => err.includes('listening on'), 60_000);
      assert.equal((await request(port, 'GET', '/?name=q&opt=view&pos=5')).body.toString(), 'm4');
      // The segment's descriptor, then a flush of it (its writes are O_DSYNC: no other flush of it).
      const lines = readFileSync(trace, 'utf8').split('\n');
      const opened = lines.map((l) => /openat\(.*journal\/0000000001\.seg".*\) = (\d+)$/.exec(l)?.[1]).filter((fd) => fd !== undefined);
      assert.ok(opened.length > 0, 'the segment was opened');
      const flushed = lines.filter((l) => opened.some((fd) => new RegExp(`\\bf(data)?sync\\(${fd}\\)`).test(l)));
      assert.ok(flushed.length > 0, `no flush of the replayed segment at start (descriptors ${opened.join(', ')})`);
    } finally {
      if (existsSync(pidfile)) process.kill(Number(readFileSync(pidfile, 'utf8')), 'SIGTERM');
      else second.kill('SIGKILL');
      await exited;
      cleanup(dir);
    }
  });
});
