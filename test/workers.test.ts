/**
 * `--workers 2`: two processes on one port and one LMDB environment behave as one server.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { LmdbStore } from '../src/store/lmdb/store.js';
import { replayConformance } from './conformance.js';
import {
  CLI,
  cleanup,
  freePort,
  keepAliveClient,
  needsTool,
  produceAndConsume,
  request,
  ROOT,
  runCli,
  startServer,
  tempDir,
  waitFor,
  workerPids,
} from './helpers.js';

/** Whether a process has ended (a zombie nobody reaps has). */
function ended(pid: number): boolean {
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'latin1'));
  } catch {
    return true;
  }
}

replayConformance('conformance with --workers 2', ['--workers', '2']);

/** Which of `pids` holds the server's end of `client`'s connection (found by its socket's inode). */
function ownerOf(client: net.Socket, pids: number[]): number {
  const hex = (port: number) => `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  // The server's end, established: from the server's port to the client's (not a closed one of another test).
  const line = readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .find((f) => f[1] === hex(client.remotePort!) && f[2] === hex(client.localPort!) && f[3] === '01');
  const inode = line?.[9];
  const owner = pids.find((pid) => readdirSync(`/proc/${pid}/fd`).some((fd) => readlinkSafe(`/proc/${pid}/fd/${fd}`) === `socket:[${inode}]`));
  assert.ok(owner, `no worker holds the connection from port ${client.localPort} (${line?.join(' ') ?? 'not in /proc/net/tcp'})`);
  return owner;
}
const readlinkSafe = (path: string) => {
  try {
    return readlinkSync(path);
  } catch {
    return '';
  }
};

describe('--workers 2', () => {
  it('many concurrent producers and consumers: every message delivered exactly once', async (t) => {
    const server = await startServer({ args: ['--workers', '2'] });
    // One connection per client so that requests really spread over both workers.
    const clients = Array.from({ length: 24 }, () => keepAliveClient(server.port, 1));
    const QUEUES = ['a', 'b', 'c'];
    const PER_PRODUCER = 400;
    const PRODUCERS = 12;
    try {
      // The smallest ring, so that positions wrap many times and producers meet a full queue.
      for (const q of QUEUES) assert.equal((await request(server.port, 'GET', `/?name=${q}&opt=maxqueue&num=10`)).body.toString(), 'HTTPSQS_MAXQUEUE_OK');
      const { delivered, fullAnswers } = await produceAndConsume({
        producers: clients.slice(0, PRODUCERS),
        consumers: clients.slice(PRODUCERS),
        queues: QUEUES,
        perProducer: PER_PRODUCER,
      });
      t.diagnostic(`${delivered.size} delivered, ${fullAnswers} full-queue answers retried`);
      const twice = [...delivered].filter(([, n]) => n > 1);
      assert.deepEqual(twice, [], 'delivered more than once');
      const missing: string[] = [];
      for (let p = 0; p < PRODUCERS; p++) for (let i = 0; i < PER_PRODUCER; i++) if (!delivered.has(`p${p}-${i}`)) missing.push(`p${p}-${i}`);
      assert.deepEqual(missing.slice(0, 10), [], `${missing.length} never delivered`);
      assert.equal(delivered.size, PRODUCERS * PER_PRODUCER);
    } finally {
      for (const c of clients) c.close();
      await server.stop();
      cleanup(server.dir);
    }
  });

  it('leases across workers: long-polling consumers that nack some messages ack each one exactly once', async (t) => {
    const server = await startServer({ args: ['--workers', '2'] });
    const clients = Array.from({ length: 12 }, () => keepAliveClient(server.port, 1));
    const PRODUCERS = 4;
    const PER_PRODUCER = 250;
    try {
      const acked = new Map<string, number>();
      const nacked = new Set<string>();
      let producing = PRODUCERS;
      let deliveries = 0;
      const producer = async (p: number) => {
        for (let i = 0; i < PER_PRODUCER; i++) assert.equal((await clients[p]!.send(`/?name=lq&opt=put&data=p${p}-${i}`)).body, 'HTTPSQS_PUT_OK');
        producing--;
      };
      const consumer = async (c: number) => {
        const { send } = clients[PRODUCERS + c]!;
        for (let idle = 0; producing > 0 || idle < 2; ) {
          const r = await send('/?name=lq&opt=get&wait=1&lease=60');
          if (r.body === 'HTTPSQS_GET_END') {
            idle++;
            continue;
          }
          idle = 0;
          // Every seventh delivery of a message not given back before is given back.
          if (++deliveries % 7 === 0 && !nacked.has(r.body)) {
            nacked.add(r.body);
            assert.equal((await send(`/?name=lq&opt=nack&pos=${r.pos}`)).body, 'HTTPSQS_NACK_OK');
          } else {
            assert.equal((await send(`/?name=lq&opt=ack&pos=${r.pos}`)).body, 'HTTPSQS_ACK_OK');
            acked.set(r.body, (acked.get(r.body) ?? 0) + 1);
          }
        }
      };
      await Promise.all([...Array.from({ length: PRODUCERS }, (_, p) => producer(p)), ...Array.from({ length: 8 }, (_, c) => consumer(c))]);
      t.diagnostic(`${acked.size} acked, ${nacked.size} given back once first`);
      assert.deepEqual(
        [...acked].filter(([, n]) => n > 1),
        [],
        'acked more than once',
      );
      assert.equal(acked.size, PRODUCERS * PER_PRODUCER);
      assert.ok(nacked.size > 50, 'some messages went back');
      const status = (await request(server.port, 'GET', '/?name=lq&opt=status_json')).body.toString();
      assert.match(status, /"unread":0}\n$/, 'nothing unread and nothing leased');
    } finally {
      for (const c of clients) c.close();
      await server.stop();
      cleanup(server.dir);
    }
  });

  it('a message for a worker that has just died (synctime relayed to it) does not end the primary', async (t) => {
    const server = await startServer({ args: ['--workers', '2'] });
    t.after(async () => {
      process.kill(server.proc.pid!, 'SIGCONT');
      await server.kill();
      cleanup(server.dir);
    });
    const primary = server.proc.pid!;
    // The primary is held while one worker asks it to relay a synctime and the other then dies: it
    // reads the message before it sees the dead worker's channel closed.
    process.kill(primary, 'SIGSTOP');
    const client = net.connect(server.port, '127.0.0.1');
    t.after(() => client.destroy());
    await new Promise((r) => client.once('connect', r));
    const reply = new Promise<string>((r) => client.once('data', (d) => r(d.toString('latin1'))));
    client.write('GET /?name=s&opt=synctime&num=7 HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.match(await reply, /HTTPSQS_SYNCTIME_OK$/);
    const alive = ownerOf(client, workerPids(primary));
    const dead = workerPids(primary).find((w) => w !== alive)!;
    process.kill(dead, 'SIGKILL');
    await waitFor(() => readFileSync(`/proc/${dead}/stat`, 'utf8').split(' ')[2] === 'Z');
    process.kill(primary, 'SIGCONT');
    await waitFor(() => workerPids(primary).length === 2 && !workerPids(primary).includes(dead), 30_000);
    assert.ok(workerPids(primary).includes(alive));
    assert.equal((await request(server.port, 'GET', '/?name=s&opt=put&data=x')).body.toString(), 'HTTPSQS_PUT_OK');
    assert.doesNotMatch(server.stderr(), /crash|EPIPE/);
  });

  it('a directory another server took while the one worker was being replaced stops this server, with one line, instead of restarting for ever', async (t) => {
    const a = await startServer();
    let b: Awaited<ReturnType<typeof startServer>> | undefined;
    t.after(async () => {
      if (a.proc.exitCode === null) process.kill(a.proc.pid!, 'SIGCONT');
      await a.kill();
      await b?.stop();
      cleanup(a.dir);
    });
    const pidfile = join(a.dir, 'httpsqs.pid');
    await waitFor(() => existsSync(pidfile));
    // A's worker dies, and another server starts on the directory before A replaces it.
    process.kill(a.proc.pid!, 'SIGSTOP');
    const [worker] = workerPids(a.proc.pid!);
    process.kill(worker!, 'SIGKILL');
    b = await startServer({ dir: a.dir, args: ['-i', join(a.dir, 'b.pid')] });
    process.kill(a.proc.pid!, 'SIGCONT');
    await waitFor(() => a.proc.exitCode !== null, 30_000).catch(() => assert.fail(`still running: ${a.stderr()}`));
    assert.equal(a.proc.exitCode, 1, a.stderr());
    assert.match(a.stderr(), new RegExp(`is in use by process ${b.proc.pid}: this server stops\\n$`));
    assert.ok(!existsSync(pidfile), "A's PID file is gone");
    assert.equal((await request(b.port, 'GET', '/?name=s&opt=put&data=x')).body.toString(), 'HTTPSQS_PUT_OK');
  });

  it('a worker that dies is restarted and service goes on', async () => {
    const server = await startServer({ args: ['--workers', '2'] });
    try {
      const before = workerPids(server.proc.pid!);
      assert.equal(before.length, 2);
      process.kill(before[0]!, 'SIGKILL');
      for (let i = 0; i < 100 && workerPids(server.proc.pid!).filter((p) => !before.includes(p)).length === 0; i++) await sleep(50);
      const after = workerPids(server.proc.pid!);
      assert.equal(after.length, 2, 'two workers again');
      assert.match(server.stderr(), new RegExp(`worker ${before[0]} died \\(SIGKILL\\); restarting`));
      for (let i = 0; i < 10; i++) {
        assert.equal((await request(server.port, 'GET', `/?name=r&opt=put&data=${i}`)).body.toString(), 'HTTPSQS_PUT_OK');
      }
    } finally {
      assert.equal(await server.stop(), 0);
      cleanup(server.dir);
    }
  });

  it('connections made while a worker is stopped are served by the other; none is left hanging when the stopped one is killed', async (t) => {
    const server = await startServer({ args: ['--workers', '2'] });
    t.after(async () => {
      await server.stop();
      cleanup(server.dir);
    });
    const [stopped] = server.workers();
    process.kill(stopped!, 'SIGSTOP');
    await waitFor(() => / T /.test(readFileSync(`/proc/${stopped}/stat`, 'latin1')));
    // Each connection sends a request; it ends with an answer, or closed (by the killed worker).
    const outcomes = Array.from({ length: 20 }, () => {
      const sock = net.connect(server.port, '127.0.0.1');
      let got = '';
      sock.on('data', (d) => (got += d.toString('latin1')));
      sock.on('error', () => {});
      sock.write('GET /?name=q&opt=status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      return { sock, answered: () => got.startsWith('HTTP/1.1 200 OK'), closed: new Promise<void>((r) => sock.once('close', () => r())) };
    });
    await sleep(500);
    process.kill(stopped!, 'SIGKILL');
    const ends = await Promise.all(outcomes.map((o) => Promise.race([o.closed.then(() => true), sleep(10_000).then(() => false)])));
    for (const o of outcomes) o.sock.destroy();
    const hanging = ends.filter((e) => !e).length;
    assert.equal(hanging, 0, `${hanging} of 20 connections neither answered nor closed 10 s after the worker was killed`);
    // Handed out by the primary, some waited for the stopped worker, and were lost with it.
    assert.equal(outcomes.filter((o) => o.answered()).length, 20, 'answered by the worker that runs');
    // Service goes on, on the restarted worker too.
    await waitFor(() => server.workers().length === 2 && !server.workers().includes(stopped!), 15_000);
    assert.match((await request(server.port, 'GET', '/?name=q&opt=status')).body.toString(), /HTTP Simple Queue Service/);
  });

  it('a worker that outlives its killed primary keeps the directory locked until it has ended', async (t) => {
    const server = await startServer({ args: ['--workers', '2'] });
    const [stopped, other] = server.workers();
    t.after(() => {
      for (const pid of [stopped!, other!]) if (!ended(pid)) process.kill(pid, 'SIGKILL');
      cleanup(server.dir);
    });
    assert.equal((await request(server.port, 'GET', '/?name=q&opt=put&data=kept')).body.toString(), 'HTTPSQS_PUT_OK');
    // A worker that cannot run (stopped here; busy or swapped out in life) when its primary dies
    // could still write, from positions a new server would not know of.
    process.kill(stopped!, 'SIGSTOP');
    await waitFor(() => / T /.test(readFileSync(`/proc/${stopped}/stat`, 'latin1')));
    server.proc.kill('SIGKILL');
    await waitFor(() => ended(other!), 5000);
    const port = await freePort();
    const refused = await runCli(['-l', '127.0.0.1', '-p', String(port), '-x', server.dir, '-i', join(server.dir, 'second.pid')], { timeoutMs: 15_000 });
    assert.equal(refused.code, 1, `a new server started while a worker of the old one lived: ${refused.stderr}`);
    assert.match(refused.stderr, new RegExp(`is in use by a worker of process ${server.proc.pid}, which has ended`));
    process.kill(stopped!, 'SIGKILL');
    await waitFor(() => ended(stopped!), 5000);
    const next = await startServer({ dir: server.dir });
    try {
      assert.equal((await request(next.port, 'GET', '/?name=q&opt=get')).body.toString(), 'kept');
    } finally {
      await next.stop();
    }
  });

  it("passwords given as flags are on no command line the server starts: not the -d child's, not its workers', not a restarted one's", {
    skip: needsTool('strace', 'strace'),
  }, async (t) => {
    const dir = tempDir();
    const port = await freePort();
    const trace = join(dir, 'trace');
    const pidfile = join(dir, 'pid');
    const args = [
      '-l',
      '127.0.0.1',
      '-p',
      String(port),
      '-x',
      join(dir, 'db'),
      '-i',
      pidfile,
      '-da',
      'flagSECRET1',
      '--admin-auth=flagSECRET2',
      '--workers',
      '2',
    ];
    const strace = spawn('strace', ['-f', '-qq', '-e', 'trace=execve', '-s', '4096', '-o', trace, process.execPath, CLI, ...args], { stdio: 'ignore' });
    const traced = new Promise((r) => strace.once('exit', r));
    let primary = 0;
    t.after(() => {
      if (primary) process.kill(primary, 'SIGKILL');
      strace.kill('SIGKILL');
      cleanup(dir);
    });
    await waitFor(async () => (await request(port, 'GET', '/?name=pw&opt=status&auth=flagSECRET1').catch(() => undefined))?.status === 200, 30_000);
    await waitFor(() => existsSync(pidfile) && workerPids(Number(readFileSync(pidfile, 'utf8'))).length === 2, 30_000);
    primary = Number(readFileSync(pidfile, 'utf8'));
    // A worker killed is started again, by the same rule.
    const [first] = workerPids(primary);
    process.kill(first!, 'SIGKILL');
    // Until the new worker has started its program (between its fork and its exec it is a copy of
    // the primary: the trace has no program started for it yet).
    const started = (pid: number) => new RegExp(`^${pid} +execve\\(.*= 0$`, 'm').test(readFileSync(trace, 'utf8'));
    await waitFor(() => {
      const now = workerPids(primary);
      return now.length === 2 && !now.includes(first!) && now.every(started);
    }, 30_000);
    // The passwords still hold, on whichever worker answers.
    for (let i = 0; i < 6; i++) {
      assert.equal((await request(port, 'GET', '/?name=pw&opt=put&data=x&auth=flagSECRET1')).body.toString(), 'HTTPSQS_PUT_OK');
      assert.equal((await request(port, 'GET', '/?name=pw&opt=put&data=x&auth=wrong')).body.toString(), 'HTTPSQS_AUTH_FAILED');
    }
    assert.equal((await request(port, 'GET', '/?name=pw&opt=reset&auth=flagSECRET2')).body.toString(), 'HTTPSQS_RESET_OK');
    process.kill(primary, 'SIGTERM');
    await traced;
    primary = 0;
    // Every program started: the first is the command the test ran; a worker or the -d child shows its flags masked.
    const execs = readFileSync(trace, 'utf8')
      .split('\n')
      .filter((l) => /execve\(.*= 0$/.test(l));
    assert.ok(execs.length >= 5, execs.join('\n')); // the command, the -d child, two workers, one restarted
    assert.match(execs[0]!, /flagSECRET1/);
    for (const l of execs.slice(1)) assert.doesNotMatch(l, /flagSECRET/, l);
    assert.match(execs.slice(1).join('\n'), /"-da", "\*\*\*".*"--admin-auth=\*\*\*"/);
  });

  it('a process that exits with a write in progress ends, and does not hold off the others', async () => {
    // lmdb-js starts its write thread in the turn after the put; the thread takes LMDB's writer
    // lock and waits for the transaction's callback on the JavaScript thread, busy here, then
    // exiting (node's exit waits for that thread).
    const dir = tempDir();
    const store = pathToFileURL(join(ROOT, 'dist', 'src', 'store', 'lmdb', 'store.js')).href;
    const script = `
      const { LmdbStore } = await import(${JSON.stringify(store)});
      const store = await LmdbStore.open({ path: ${JSON.stringify(dir)}, shared: true });
      void store.put('x', Buffer.from('m')).catch(() => {});
      setImmediate(() => {
        for (const until = Date.now() + 300; Date.now() < until; );
        process.exit(0);
      });`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: 'ignore' });
    try {
      await waitFor(() => child.exitCode !== null || child.signalCode !== null, 5000).catch(() => assert.fail('the process did not end'));
      const other = await LmdbStore.open({ path: dir, shared: true });
      try {
        const put = await Promise.race([other.put('x', Buffer.from('n')), sleep(5000).then(() => 'held off')]);
        assert.equal(typeof put, 'number', 'a put of another process');
      } finally {
        await other.close();
      }
    } finally {
      child.kill('SIGKILL');
      cleanup(dir);
    }
  });

  it('workers whose primary is killed under load end', async () => {
    for (let round = 0; round < 6; round++) {
      const server = await startServer({ args: ['--workers', '3'] });
      const client = keepAliveClient(server.port, 24);
      const workers = server.workers();
      let loading = true;
      const load = async (i: number) => {
        while (loading) await client.send(`/?name=k${i % 3}&opt=${i % 2 ? 'put&data=m' : 'get&lease=30'}`).catch(() => {});
      };
      const loads = Array.from({ length: 24 }, (_, i) => load(i));
      try {
        await sleep(300);
        server.proc.kill('SIGKILL');
        await waitFor(() => workers.every(ended), 5000).catch(() =>
          assert.fail(`round ${round}: worker(s) ${workers.filter((w) => !ended(w))} still running 5 s after the primary was killed`),
        );
      } finally {
        loading = false;
        client.close();
        await Promise.all(loads);
        for (const w of workers) if (!ended(w)) process.kill(w, 'SIGKILL');
        cleanup(server.dir);
      }
    }
  });

  it('an export opens the database with the workers paused; a worker that does not pause is killed and replaced, and the export goes on', async () => {
    const server = await startServer({ args: ['--workers', '2'] });
    try {
      for (let i = 0; i < 5; i++) assert.equal((await request(server.port, 'GET', `/?name=e&opt=put&data=m${i}`)).body.toString(), 'HTTPSQS_PUT_OK');
      // Both workers pause: the export is served at once.
      const quick = await runCli(['export', '-x', server.dir]);
      assert.equal(quick.code, 0, quick.stderr);
      assert.equal(quick.stdout.split('\n').filter((l) => l.includes('"queue":"e","pos"')).length, 5);
      // A stopped worker cannot pause its writes: it is killed (it could wake up and write), then replaced.
      const [stuck] = workerPids(server.proc.pid!);
      process.kill(stuck!, 'SIGSTOP');
      const slow = await runCli(['export', '-x', server.dir], { timeoutMs: 30_000 });
      assert.equal(slow.code, 0, slow.stderr);
      assert.equal(slow.stdout.split('\n').filter((l) => l.includes('"queue":"e","pos"')).length, 5);
      assert.match(server.stderr(), new RegExp(`worker ${stuck} did not pause its writes in 15000 ms: killing it`));
      await waitFor(() => workerPids(server.proc.pid!).length === 2 && !workerPids(server.proc.pid!).includes(stuck!), 10_000);
      assert.equal((await request(server.port, 'GET', '/?name=e&opt=put&data=after')).body.toString(), 'HTTPSQS_PUT_OK');
    } finally {
      assert.equal(await server.stop(), 0);
      cleanup(server.dir);
    }
  });
});
