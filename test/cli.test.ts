/** The `httpsqs` command as a subprocess: flags, start-up errors, PID file, daemon, signals. */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { flagTable, helpText, parseConfig } from '../src/cli/options.js';
import { configureLog, readable } from '../src/cli/log.js';
import { dropNotice, failureLog } from '../src/cli/serve.js';
import { holderOf } from '../src/store/lock.js';
import { noRedis, startRedis } from './redis-servers.js';
import { CLI, cleanup, freePort, keepAliveClient, request, ROOT, runCli, spawnCli, startServer, tempDir, unreadOn, waitFor, workerPids } from './helpers.js';

/** True while something accepts connections on the port. */
function listening(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), res(true)));
    s.once('error', () => res(false));
  });
}

describe('command line', () => {
  it('-h prints help generated from the option table, and the README table matches it', async () => {
    const { code, stdout } = await runCli(['-h']);
    assert.equal(code, 0);
    assert.equal(stdout, helpText());
    for (const flag of ['-l', '-p', '-x', '-t', '-s', '-c', '-m', '-i', '-a', '-d', '-h']) {
      assert.match(stdout, new RegExp(`^  ${flag}, --`, 'm'), `${flag} has a long form`);
    }
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const table = /<!-- flags:start -->\n([\s\S]*?)\n<!-- flags:end -->/.exec(readme)?.[1];
    assert.equal(table?.trim(), flagTable(), 'README flag table is stale: run `npm run docs:flags`');
  });

  it('bad flags and values: one line on stderr, exit code 1', async () => {
    for (const args of [['--bogus'], ['-p', 'abc'], ['-p', '70000'], ['-t', '0'], ['--sync', 'sometimes'], ['extra']]) {
      const { code, stderr } = await runCli(args);
      assert.equal(code, 1, args.join(' '));
      assert.equal(stderr.trim().split('\n').length, 1, `one line for ${args.join(' ')}: ${stderr}`);
    }
  });

  it('--store checks its ?read= (keep or delete) as it parses', () => {
    assert.throws(() => parseConfig(['--store', 'redis://127.0.0.1:1/0?read=drop'], {}), /--store: \?read= takes keep or delete, got "drop"/);
    assert.equal(parseConfig(['--store', 'redis://127.0.0.1:1/0?prefix=p:&read=delete'], {}).store, 'redis://127.0.0.1:1/0?prefix=p:&read=delete');
  });

  it("a flag's value may begin with -, as C getopt reads it (-a -s3cr3t); a bad flag's line ends in one full stop", async () => {
    assert.equal(parseConfig(['-a', '-s3cr3t']).auth?.toString(), '-s3cr3t');
    assert.equal(parseConfig(['--auth', '--x', '-d']).auth?.toString(), '--x');
    const server = await startServer({ args: ['-a', '-s3cr3t'] });
    try {
      assert.equal((await request(server.port, 'GET', '/?name=q&opt=put&data=x&auth=-s3cr3t')).body.toString(), 'HTTPSQS_PUT_OK');
      assert.doesNotMatch(readFileSync(`/proc/${server.proc.pid}/cmdline`, 'utf8'), /s3cr3t/);
    } finally {
      await server.stop();
      cleanup(server.dir);
    }
    const { stderr } = await runCli(['--bogus']);
    assert.match(stderr, /[^.]\. Try --help\.\n$/);
    assert.throws(() => parseConfig(['-x', '']), { message: /^-x\/--datadir: the directory is empty/ });
    assert.throws(() => parseConfig(['--engine', 'foo']), { message: '--engine: expected "journal" or "lmdb", got "foo"' });
    assert.throws(() => parseConfig(['--log-level', 'loud']), { message: '--log-level: expected "fatal", "error", "warn", "info" or "debug", got "loud"' });
  });

  it('a group of short flags ending in one that takes a value takes the next word, even one that begins with -, as getopt does', () => {
    const grouped = parseConfig(['-da', '-s3cr3t'], {});
    assert.equal(grouped.auth?.toString(), '-s3cr3t');
    assert.equal(grouped.daemon, true);
    assert.equal(grouped.synctime, 5);
    // The value is taken (and then checked), not refused as an ambiguous flag.
    assert.throws(() => parseConfig(['-dp', '-1'], {}), { message: '-p/--port: expected a whole number from 1 to 65535, got "-1"' });
  });

  it('-c and -m, which have no effect, take any value the reference takes', () => {
    for (const args of [
      ['-c', '-1'],
      ['-m', '2G'],
      ['-c', 'lots', '-m', ''],
    ])
      assert.equal(parseConfig(args, {}).port, 1218, args.join(' '));
  });

  it('an unusable -x: one line naming the directory, exit code 1', async () => {
    const dir = tempDir();
    const file = join(dir, 'a-file');
    writeFileSync(file, 'not a directory');
    const { code, stderr } = await runCli(['-l', '127.0.0.1', '-p', String(await freePort()), '-x', join(file, 'data')]);
    assert.equal(code, 1);
    assert.equal(stderr.trim().split('\n').length, 1);
    assert.match(stderr, /-x: cannot use data directory .*a-file\/data/);
    // The file itself: said so, not a failure to make a directory where one exists.
    const onFile = await runCli(['-l', '127.0.0.1', '-p', String(await freePort()), '-x', file]);
    assert.equal(onFile.code, 1);
    assert.equal(onFile.stderr, `httpsqs: -x: cannot use data directory ${file}: it is a file, not a directory\n`);
    cleanup(dir);
    // A parent that exists but where nothing can be created (node's recursive mkdir loops there).
    const proc = await runCli(['-l', '127.0.0.1', '-p', String(await freePort()), '-x', '/proc/httpsqs-test/data'], { timeoutMs: 5000 });
    assert.equal(proc.code, 1);
    assert.match(proc.stderr, /-x: cannot use data directory \/proc\/httpsqs-test\/data/);
  });

  it('a port in use: one line naming the port, exit code 1', async () => {
    const blocker = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => blocker.once('listening', r));
    const port = (blocker.address() as net.AddressInfo).port;
    // With workers too, a few times: a worker still opening the store may find its primary gone,
    // and logged its failed message to it as a crash (seen with -l 0.0.0.0; it does not show here
    // every time).
    for (const args of [[], ...Array.from({ length: 4 }, () => ['--workers', '2'])]) {
      const dir = tempDir();
      const { code, stderr } = await runCli(['-l', '127.0.0.1', '-p', String(port), '-x', dir, '-i', join(dir, 'pid'), ...args]);
      assert.equal(code, 1);
      assert.equal(stderr.trim().split('\n').length, 1, stderr);
      assert.match(stderr, new RegExp(`port ${port} is already in use`));
      assert.ok(!existsSync(join(dir, 'pid')), 'no PID file left behind');
      // Its workers ended before it did: none still writes in the directory (a supervisor may start
      // the next server at once).
      const left = spawnSync('pgrep', ['-f', dir], { encoding: 'utf8' }).stdout.trim();
      assert.equal(left, '', `processes of that server still run after it exited: ${left}`);
      cleanup(dir);
    }
    blocker.close();
  });

  it('a second server on the same data directory is refused with one line naming the master, exit code 1', async () => {
    for (const workers of ['1', '2']) {
      const first = await startServer({ args: ['--workers', workers] });
      try {
        const { code, stderr } = await runCli(['-l', '127.0.0.1', '-p', String(await freePort()), '-x', first.dir, '-i', join(first.dir, 'p2')]);
        assert.equal(code, 1);
        assert.equal(stderr.trim().split('\n').length, 1, stderr);
        // The process to stop is the master, even where a worker holds the lock.
        assert.match(stderr, new RegExp(`-x: data directory .* is in use by process ${first.proc.pid}$`, 'm'));
        assert.equal(readFileSync(join(first.dir, 'httpsqs.lock'), 'utf8').trim(), String(first.proc.pid));
      } finally {
        await first.stop();
      }
      // Once the first is gone, the directory is free again.
      const second = await startServer({ dir: first.dir });
      await second.stop();
      cleanup(first.dir);
    }
  });

  it('an httpsqs.lock left behind, naming a process that runs (PID 1), does not block a start', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'httpsqs.lock'), '1\n');
    const server = await startServer({ dir }).catch((err: Error) => (cleanup(dir), Promise.reject(err)));
    try {
      assert.equal((await request(server.port, 'GET', '/?name=l&opt=put&data=x')).body.toString(), 'HTTPSQS_PUT_OK');
      assert.equal(readFileSync(join(dir, 'httpsqs.lock'), 'utf8').trim(), String(server.proc.pid), 'the file names the new owner');
    } finally {
      assert.equal(await server.stop(), 0);
    }
    assert.ok(!existsSync(join(dir, 'httpsqs.lock')), 'removed on a clean stop');
    cleanup(dir);
  });

  it('without -x the data goes to ./data; -i writes the PID file and SIGTERM removes it', async () => {
    const cwd = tempDir();
    const port = await freePort();
    const pidfile = join(cwd, 'h.pid');
    const { spawn } = await import('node:child_process');
    const proc = spawn(process.execPath, [join(ROOT, 'dist/src/cli/main.js'), '-l', '127.0.0.1', '-p', String(port), '-i', pidfile], { cwd, stdio: 'ignore' });
    await waitFor(() => listening(port));
    assert.equal((await request(port, 'GET', '/?name=q&opt=put&data=x')).body.toString(), 'HTTPSQS_PUT_OK');
    assert.ok(existsSync(join(cwd, 'data', 'data.mdb')));
    assert.equal(readFileSync(pidfile, 'utf8').trim(), String(proc.pid));
    const exit = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    assert.equal(await exit, 0);
    assert.ok(!existsSync(pidfile), 'PID file removed on exit');
    cleanup(cwd);
  });

  it('a data directory the server makes is for its user alone (0700), on either engine; one that exists keeps its mode', async () => {
    const base = tempDir();
    try {
      for (const engine of ['lmdb', 'journal']) {
        // Two levels that do not exist yet: every directory made is private.
        const dir = join(base, engine, 'data');
        const server = await startServer({ dir, args: ['--engine', engine, '-i', join(base, `${engine}.pid`)] });
        try {
          assert.equal((await request(server.port, 'GET', '/?name=q&opt=put&data=secret')).body.toString(), 'HTTPSQS_PUT_OK');
          for (const d of [dir, join(base, engine)]) assert.equal((statSync(d).mode & 0o777).toString(8), '700', d);
        } finally {
          await server.stop();
        }
      }
      // A directory the operator made (with the mode the operator chose) is left as it is.
      const made = join(base, 'made');
      mkdirSync(made, { mode: 0o750 });
      chmodSync(made, 0o750);
      const server = await startServer({ dir: made });
      await server.stop();
      assert.equal((statSync(made).mode & 0o777).toString(8), '750');
    } finally {
      cleanup(base);
    }
  });

  it('-i replaces a symlink with a PID file of its own, leaving what it pointed at alone', async () => {
    const dir = tempDir();
    const victim = join(dir, 'victim');
    writeFileSync(victim, 'precious\n');
    symlinkSync(victim, join(dir, 'link.pid'));
    symlinkSync(join(dir, 'never-created'), join(dir, 'dangling.pid'));
    for (const name of ['link.pid', 'dangling.pid']) {
      const pidfile = join(dir, name);
      const server = await startServer({ args: ['-i', pidfile] });
      try {
        assert.ok(lstatSync(pidfile).isFile(), `${name} is a regular file now`);
        assert.equal(readFileSync(pidfile, 'utf8'), `${server.proc.pid}\n`);
      } finally {
        await server.stop();
        cleanup(server.dir);
      }
      assert.ok(!existsSync(pidfile), 'removed on exit');
    }
    assert.equal(readFileSync(victim, 'utf8'), 'precious\n');
    assert.ok(!existsSync(join(dir, 'never-created')));
    cleanup(dir);
  });

  it('a PID file naming a running httpsqs stops a second server before it listens; a stale one is taken over', async () => {
    const dir = tempDir();
    const pidfile = join(dir, 'shared.pid');
    // Started as `npm start` does: a relative path to main.js, from the project's directory.
    const first = await startServer({ args: ['-i', pidfile], relative: true });
    try {
      assert.match(readFileSync(`/proc/${first.proc.pid}/cmdline`, 'latin1'), /\0dist\/src\/cli\/main\.js\0/);
      for (const daemon of [[], ['-d']]) {
        const port = await freePort();
        const { code, stderr } = await runCli([...daemon, '-l', '127.0.0.1', '-p', String(port), '-x', join(dir, 'other'), '-i', pidfile], { timeoutMs: 5000 });
        assert.equal(code, 1, stderr);
        assert.equal(stderr.trim().split('\n').length, 1, stderr);
        assert.match(stderr, new RegExp(`^httpsqs: -i: PID file .*shared\\.pid names httpsqs process ${first.proc.pid}, which is running`));
        assert.ok(!(await listening(port)));
      }
      assert.equal(readFileSync(pidfile, 'utf8').trim(), String(first.proc.pid));
    } finally {
      await first.stop();
      cleanup(first.dir);
    }
    // A PID no process has, and a live process that is not httpsqs (this test), are overwritten.
    for (const stale of ['99999999', String(process.pid)]) {
      writeFileSync(pidfile, `${stale}\n`);
      const server = await startServer({ args: ['-i', pidfile] });
      assert.equal(readFileSync(pidfile, 'utf8').trim(), String(server.proc.pid));
      await server.stop();
      cleanup(server.dir);
    }
    cleanup(dir);
  });

  it("a PID file of another user's, naming a process of theirs called httpsqs, does not stop the start", async (t) => {
    // Any local user can leave /tmp/httpsqs.pid (the default -i) naming a process of their own.
    if (process.geteuid?.() !== 0) return t.skip('needs root, to give the file to another user');
    const dir = tempDir();
    const pidfile = join(dir, 'planted.pid');
    const fake = spawn('bash', ['-c', 'exec -a httpsqs sleep 30'], { stdio: 'ignore' });
    try {
      await waitFor(() => existsSync(`/proc/${fake.pid}/cmdline`) && readFileSync(`/proc/${fake.pid}/cmdline`, 'latin1').startsWith('httpsqs\0'), 5000);
      writeFileSync(pidfile, `${fake.pid}\n`);
      chownSync(pidfile, 65534, 65534);
      const server = await startServer({ args: ['-i', pidfile] });
      try {
        assert.equal(readFileSync(pidfile, 'utf8').trim(), String(server.proc.pid), 'the planted file was replaced');
      } finally {
        await server.stop();
        cleanup(server.dir);
      }
    } finally {
      fake.kill('SIGKILL');
      cleanup(dir);
    }
  });

  it('two servers started together with the same -i: the one that finds the PID file taken once its workers are ready stops', async () => {
    const dir = tempDir();
    const pidfile = join(dir, 'raced.pid');
    const first = await startServer({ args: ['-i', join(dir, 'first.pid')] });
    try {
      const second = spawnCli(['-l', '127.0.0.1', '-p', String(await freePort()), '-x', join(dir, 'other'), '-i', pidfile]);
      // Its first look found no PID file; while its workers start, the other server writes it.
      await waitFor(() => workerPids(second.proc.pid!).length > 0, 10_000);
      writeFileSync(pidfile, `${first.proc.pid}\n`);
      const outcome = await Promise.race([second.exited, sleep(10_000).then(() => 'still running')]);
      if (outcome === 'still running') second.proc.kill('SIGKILL');
      assert.equal(outcome, 1, second.stderr());
      assert.match(second.stderr(), new RegExp(`-i: PID file .*raced\\.pid names httpsqs process ${first.proc.pid}, which is running`));
      assert.equal(readFileSync(pidfile, 'utf8').trim(), String(first.proc.pid));
    } finally {
      await first.stop();
      cleanup(first.dir);
      cleanup(dir);
    }
  });

  it('a restart right after a stop (kill, start) waits for the stopping server, which its lock names, then starts', async () => {
    // The same PID file (waited for at the PID file), and another one (at the directory's lock).
    for (const samePidFile of [true, false]) {
      const first = await startServer();
      const pidfile = join(first.dir, samePidFile ? 'httpsqs.pid' : 'other.pid');
      // A request half received keeps the stopping server up until it is answered.
      const sock = net.connect(first.port, '127.0.0.1');
      let reply = '';
      sock.on('data', (d) => (reply += d));
      await new Promise((r) => sock.write('POST /?name=r&opt=put HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab', r));
      await waitFor(() => unreadOn(first.port) === 0); // the server has read it
      first.proc.kill('SIGTERM');
      await waitFor(async () => (await holderOf(first.dir))?.state === 'stopping');
      const port = await freePort();
      const second = spawnCli(['-l', '127.0.0.1', '-p', String(port), '-x', first.dir, '-i', pidfile]);
      try {
        const waiting = samePidFile ? `-i: PID file ${pidfile} names` : `-x: data directory ${first.dir} is held by`;
        await waitFor(() => second.stderr().includes(`${waiting} httpsqs process ${first.proc.pid}, which is stopping: waiting for it`));
        assert.equal(first.proc.exitCode, null);
        assert.ok(!(await listening(port)));
        sock.write('cd'); // the last request is answered, and the first server goes
        assert.equal(await new Promise((r) => first.proc.once('exit', r)), 0);
        assert.match(reply, /^HTTP\/1\.1 200 OK\r\n[\s\S]*Connection: close\r\n\r\nHTTPSQS_PUT_OK$/);
        await waitFor(() => second.stderr().includes('listening on'));
        assert.equal(readFileSync(pidfile, 'utf8').trim(), String(second.proc.pid));
        assert.equal((await request(port, 'GET', '/?name=r&opt=get')).body.toString(), 'abcd');
      } finally {
        sock.destroy();
        second.proc.kill('SIGTERM');
        await second.exited;
        cleanup(first.dir);
      }
    }
  });

  it('SIGTERM as soon as the server says it listens: a clean stop, the PID file removed', async () => {
    for (let i = 0; i < 5; i++) {
      const server = await startServer();
      assert.equal(await server.stop(), 0, `try ${i}`);
      assert.ok(!existsSync(join(server.dir, 'httpsqs.pid')), `try ${i}`);
      cleanup(server.dir);
    }
  });

  it('SIGTERM while the workers start: a clean stop, exit code 0, no PID file, the directory free again', async () => {
    for (const workers of ['1', '2']) {
      const dir = tempDir();
      const port = await freePort();
      const pidfile = join(dir, 'h.pid');
      const { proc, stderr, exited } = spawnCli(['-l', '127.0.0.1', '-p', String(port), '-x', dir, '-i', pidfile, '--workers', workers]);
      // Once a worker process exists (the master forks them once it can be stopped), most often
      // before any is ready.
      await waitFor(() => workerPids(proc.pid!).length > 0, 30_000);
      proc.kill('SIGTERM');
      assert.equal(await exited, 0, stderr());
      assert.match(stderr(), /"event":"stopped"/);
      assert.ok(!existsSync(pidfile), 'no PID file');
      // Free again: a server starts on it.
      const again = await startServer({ dir });
      assert.equal(await again.stop(), 0);
      cleanup(dir);
    }
  });

  it('a stop that fails exits 1 with a line saying why (a process of its own: it signals itself and exits)', async () => {
    const script = `import { onStopSignal } from ${JSON.stringify(join(ROOT, 'dist/src/cli/process.js'))};
      onStopSignal(async () => { throw new Error('the last flush failed'); });
      setInterval(() => {}, 1000);
      process.kill(process.pid, 'SIGTERM');`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /SIGTERM: stopping failed: the last flush failed/);
  });

  it('warns on stderr when listening beyond loopback without -a', async () => {
    const open = await startServer({ args: ['-l', '0.0.0.0'] });
    assert.match(open.stderr(), /warning: listening on 0\.0\.0\.0 without a password/);
    await open.stop();
    const guarded = await startServer({ args: ['-l', '0.0.0.0', '-a', 'pw'] });
    assert.doesNotMatch(guarded.stderr(), /warning: listening/);
    await guarded.stop();
    const local = await startServer();
    assert.doesNotMatch(local.stderr(), /warning: listening/);
    await local.stop();
    for (const s of [open, guarded, local]) cleanup(s.dir);
  });

  it('warns when the open-files limit is below what --max-connections needs: connections past it would be reset without a line in the log', async () => {
    const start = async (limit: number, extra: string[]) => {
      const dir = tempDir();
      const port = await freePort();
      const args = ['-l', '127.0.0.1', '-p', String(port), '-x', dir, '-i', join(dir, 'pid'), ...extra];
      const proc = spawn('sh', ['-c', `ulimit -n ${limit} && exec "$0" "$@"`, process.execPath, CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      proc.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const exited = new Promise((r) => proc.once('exit', r));
      await waitFor(() => stderr.includes('listening on'), 10_000);
      proc.kill('SIGTERM');
      await exited;
      cleanup(dir);
      return stderr;
    };
    const few = await start(256, []);
    assert.match(few, /"event":"fd-limit".*open files are limited to 256 \(ulimit -n\), below what --max-connections 16384 needs: past about 192 connections/);
    assert.doesNotMatch(await start(256, ['--max-connections', '150']), /fd-limit/);
  });

  it('-d runs in the background and returns once it is listening', async () => {
    const dir = tempDir();
    const port = await freePort();
    const pidfile = join(dir, 'd.pid');
    const { code, stderr } = await runCli(['-d', '-l', '127.0.0.1', '-p', String(port), '-x', dir, '-i', pidfile]);
    assert.equal(code, 0, stderr);
    assert.ok(await listening(port), 'listening as soon as -d returned');
    const pid = Number(readFileSync(pidfile, 'utf8'));
    assert.match(stderr, new RegExp(`background, pid ${pid}`));
    assert.equal((await request(port, 'GET', '/?name=q&opt=put&data=bg')).body.toString(), 'HTTPSQS_PUT_OK');
    process.kill(pid, 'SIGTERM');
    await waitFor(() => !existsSync(pidfile));
    await waitFor(async () => !(await listening(port)));
    cleanup(dir);
  });

  it('-d without --log-file still prints the warning of a server beyond loopback without -a, once it listens', async () => {
    const dir = tempDir();
    const port = await freePort();
    const pidfile = join(dir, 'd.pid');
    // An IPv4-mapped address is not loopback by name (so it warns) yet reachable from this machine only.
    const { code, stderr } = await runCli(['-d', '-l', '::ffff:127.0.0.1', '-p', String(port), '-x', dir, '-i', pidfile]);
    try {
      assert.equal(code, 0, stderr);
      assert.match(stderr, /background, pid \d+\nhttpsqs: warning: listening on ::ffff:127\.0\.0\.1 without a password/);
    } finally {
      if (existsSync(pidfile)) process.kill(Number(readFileSync(pidfile, 'utf8')), 'SIGTERM');
      await waitFor(() => !existsSync(pidfile));
      cleanup(dir);
    }
    const guarded = tempDir();
    const quiet = await runCli(['-d', '-l', '::ffff:127.0.0.1', '-p', String(port), '-x', guarded, '-i', join(guarded, 'd.pid'), '-a', 'pw']);
    try {
      assert.equal(quiet.code, 0, quiet.stderr);
      assert.doesNotMatch(quiet.stderr, /warning: listening/);
    } finally {
      process.kill(Number(readFileSync(join(guarded, 'd.pid'), 'utf8')), 'SIGTERM');
      await waitFor(() => !existsSync(join(guarded, 'd.pid')));
      cleanup(guarded);
    }
  });

  it('-d reports a start-up failure with exit code 1', async () => {
    const blocker = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => blocker.once('listening', r));
    const port = (blocker.address() as net.AddressInfo).port;
    const dir = tempDir();
    const { code, stderr } = await runCli(['-d', '-l', '127.0.0.1', '-p', String(port), '-x', dir, '-i', join(dir, 'p')]);
    blocker.close();
    assert.equal(code, 1);
    assert.match(stderr, /already in use/);
    // In the background its PID file is how it is stopped: one it cannot write is a failure there.
    const noPid = await runCli(['-d', '-l', '127.0.0.1', '-p', String(await freePort()), '-x', dir, '-i', join(dir, 'missing', 'p')]);
    assert.equal(noPid.code, 1);
    assert.match(noPid.stderr, /^httpsqs: -i: cannot write PID file .*missing\/p: ENOENT/);
    cleanup(dir);
  });

  it('SIGTERM under load: in-flight requests finish, exit code 0, every acknowledged put is kept', async () => {
    let server = await startServer();
    const client = keepAliveClient(server.port, 16);
    const acked: string[] = [];
    let stop = false;
    const workers = Array.from({ length: 16 }, async (_, w) => {
      for (let i = 0; !stop; i++) {
        try {
          const r = await client.send(`/?name=term&opt=put&data=w${w}-${i}`);
          if (r.body === 'HTTPSQS_PUT_OK') acked.push(`w${w}-${i}`);
        } catch {
          return;
        }
      }
    });
    // Stopped once the load runs (a fixed wait was used up by connecting on a loaded machine).
    await waitFor(() => acked.length > 20, 30_000);
    const code = await server.stop();
    stop = true;
    await Promise.all(workers);
    client.close();
    assert.equal(code, 0);
    assert.ok(acked.length > 20, `load ran (${acked.length})`);
    assert.match(server.stderr(), /SIGTERM: .*finishing in-flight requests/);
    server = await startServer({ dir: server.dir });
    const status = JSON.parse((await request(server.port, 'GET', '/?name=term&opt=status_json')).body.toString()) as { putpos: number };
    assert.ok(status.putpos >= acked.length, `${status.putpos} stored, ${acked.length} acknowledged`);
    const stored = new Set<string>();
    for (let pos = 1; pos <= status.putpos; pos++) {
      stored.add((await request(server.port, 'GET', `/?name=term&opt=view&pos=${pos}`)).body.toString());
    }
    assert.deepEqual(
      acked.filter((m) => !stored.has(m)),
      [],
    );
    await server.stop();
    cleanup(server.dir);
  });
});

describe('HTTP connections', () => {
  it('HTTP/1.0 without keep-alive is answered and closed; with keep-alive the connection is reused', async () => {
    const server = await startServer();
    try {
      const one = await request(server.port, 'GET', '/?name=q&opt=put&data=a', { version: '1.0' });
      assert.equal(one.body.toString(), 'HTTPSQS_PUT_OK');
      assert.equal(one.headers.connection, 'close');
      const { rawExchange, parseResponse } = await import('./helpers.js');
      const twice = 'GET /?name=q&opt=status_json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n';
      const sock = net.connect(server.port, '127.0.0.1');
      let buf = Buffer.alloc(0);
      sock.on('data', (d) => (buf = Buffer.concat([buf, d])));
      sock.write(twice);
      await waitFor(() => parseResponse(buf) !== null);
      const first = parseResponse(buf)!;
      assert.equal(first.res.headers.connection, 'keep-alive');
      buf = Buffer.alloc(0);
      sock.write(twice.replace('keep-alive', 'close'));
      await waitFor(() => parseResponse(buf) !== null);
      assert.match(parseResponse(buf)!.res.body.toString(), /"putpos":1/);
      sock.destroy();
      // HTTP/1.1 pipelining: two requests in one write, two answers in order.
      const piped = await rawExchange(
        server.port,
        'GET /?name=q&opt=get HTTP/1.1\r\nHost: x\r\n\r\nGET /?name=q&opt=get HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
      );
      const a = parseResponse(piped)!;
      const b = parseResponse(a.rest)!;
      assert.equal(a.res.body.toString(), 'a');
      assert.equal(a.res.headers.pos, '1');
      assert.equal(b.res.body.toString(), 'HTTPSQS_GET_END');
    } finally {
      await server.stop();
      cleanup(server.dir);
    }
  });

  it('-t closes an idle keep-alive connection after that many seconds', async () => {
    const server = await startServer({ args: ['-t', '1'] });
    try {
      const sock = net.connect(server.port, '127.0.0.1');
      let closedAt = 0;
      sock.on('close', () => (closedAt = Date.now()));
      sock.on('data', () => {});
      const sent = Date.now();
      sock.write('GET /?name=q&opt=status HTTP/1.1\r\nHost: x\r\n\r\n');
      await sleep(500);
      assert.equal(closedAt, 0, 'still open after 0.5 s');
      await waitFor(() => closedAt > 0, 3000);
      assert.ok(closedAt - sent >= 900, `closed after ${closedAt - sent} ms`);
    } finally {
      await server.stop();
      cleanup(server.dir);
    }
  });

  it('connections over --max-connections are closed, and the log says so (once, then a count at most once a minute)', async () => {
    const server = await startServer({ args: ['--max-connections', '2'] });
    const socks: net.Socket[] = [];
    const open = async () => {
      const s = net.connect(server.port, '127.0.0.1');
      s.on('error', () => {});
      socks.push(s);
      await new Promise((r) => s.once('connect', r));
      return s;
    };
    try {
      await open();
      await open();
      await sleep(100);
      for (let i = 0; i < 3; i++) {
        const extra = await open();
        await new Promise((r) => extra.once('close', r));
      }
      await waitFor(() => server.stderr().includes('"event":"connections-refused"'), 3000);
      const lines = server
        .stderr()
        .split('\n')
        .filter((l) => l.includes('connections-refused'));
      assert.equal(lines.length, 1, server.stderr());
      assert.match(lines[0]!, /"level":40,.*"dropped":1,"limit":2,.*a new connection was closed at once: .*--max-connections/);
    } finally {
      for (const s of socks) s.destroy();
      await server.stop();
      cleanup(server.dir);
    }
  });

  it('the notice of refused connections counts those after the first, once a period, and stops when they stop', async () => {
    const dir = tempDir();
    const file = join(dir, 'log');
    configureLog({ file });
    try {
      const notice = dropNotice(7, 200);
      notice.drop();
      notice.drop();
      notice.drop();
      await sleep(300);
      notice.drop();
      await sleep(500);
      notice.stop();
      const lines = readFileSync(file, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { dropped: number; msg: string });
      assert.deepEqual(
        lines.map((l) => l.dropped),
        [1, 2, 1],
      );
      assert.match(lines[1]!.msg, /^2 more new connections closed at once in the last 0.2 s: this process holds 7 connections/);
    } finally {
      configureLog({});
      cleanup(dir);
    }
  });
  it('a request failure is logged once, then counted once a period while the same failure goes on', async () => {
    const dir = tempDir();
    const file = join(dir, 'log');
    configureLog({ file });
    try {
      const failures = failureLog(200);
      const down = 'request failed: Redis: no connection';
      for (let i = 0; i < 4; i++) failures.add(down);
      failures.add('request failed: another');
      await sleep(300);
      failures.add(down);
      await sleep(500);
      failures.add(down);
      failures.add(down);
      failures.stop();
      const lines = readFileSync(file, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { repeated?: number; msg: string; level: number });
      assert.deepEqual(
        lines.map((l) => [l.msg, l.repeated]),
        [
          [down, undefined],
          ['request failed: another', undefined],
          [`${down} (3 more times in the last 0.2 s)`, 3],
          [`${down} (1 more time in the last 0.2 s)`, 1],
          // said as it stops: the first again (the kind was forgotten), then what came after it
          [down, undefined],
          [`${down} (1 more time in the last 0.2 s)`, 1],
        ],
      );
      assert.ok(lines.every((l) => l.level === 50));
    } finally {
      configureLog({});
      cleanup(dir);
    }
  });

  it('requests failing alike while Redis is down make one log line, not one each', { skip: noRedis() }, async () => {
    const redis = await startRedis();
    const server = await startServer({ args: ['--store', redis.url] });
    try {
      assert.equal((await request(server.port, 'GET', '/?name=down&opt=put&data=x')).body.toString(), 'HTTPSQS_PUT_OK');
      await redis.stop();
      const answers = await Promise.all(Array.from({ length: 10 }, () => request(server.port, 'GET', '/?name=down&opt=get')));
      assert.deepEqual(new Set(answers.map((r) => r.body.toString())), new Set(['HTTPSQS_ERROR']));
      const failed = server
        .stderr()
        .split('\n')
        .filter((l) => l.includes('request failed'));
      assert.ok(failed.length >= 1 && failed.length <= 2, server.stderr());
    } finally {
      await server.stop();
      cleanup(server.dir);
    }
  });
  it("a log line read on a terminal shows a message's control characters escaped (a queue name a client chose), keeping its newlines", () => {
    const line = JSON.stringify({ time: 't', level: 50, msg: 'queue "a\x1b]0;owned\x07\x9b2J" failed', err: { stack: 'Error: x\n    at y\x1b[31m' } });
    assert.equal(readable(line), 't ERROR queue "a\\x1b]0;owned\\x07\\x9b2J" failed\nError: x\n    at y\\x1b[31m\n');
  });
});
