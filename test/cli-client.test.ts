/**
 * `httpsqs-cli` run as a subprocess against a real server: output (on a terminal too), --json,
 * exit codes, the environment variables, put from a file with its final rate or interrupted part
 * way, get --follow, and top.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import http from 'node:http';
import type net from 'node:net';
import { Readable, Writable } from 'node:stream';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  CLI_CLIENT,
  cleanEnv,
  cleanup,
  cliClient,
  cliSuite,
  clockedServer,
  freePort,
  needsTool,
  ROOT,
  request,
  startServer,
  tempDir,
  waitFor,
} from './helpers.js';
import { TestClock } from './clock.js';
import { runCli } from '../src/client/commands.js';

/** Runs httpsqs-cli in this process, for what a thread cannot be given: a standard output that
 * fails, a clock, signals sent while it runs. */
async function runHere(port: number, args: string[], o: { stdout?: Writable; now?: () => number; signals?: EventEmitter; stdin?: Readable } = {}) {
  let stdout = '';
  let stderr = '';
  const collect = (add: (s: string) => void) => new Writable({ write: (chunk: Buffer, _enc, done) => (add(chunk.toString()), done()) });
  const out = o.stdout ?? collect((s) => (stdout += s));
  out.on('error', () => {}); // as cli.ts does: the write that meets it reports it
  const io = {
    stdout: out,
    stderr: collect((s) => (stderr += s)),
    stdin: o.stdin ?? Readable.from([]),
    env: {},
    signals: o.signals ?? new EventEmitter(),
    now: o.now,
  };
  const exit = await runCli(['--port', String(port), ...args], io);
  return { exit, stdout, stderr };
}

/** httpsqs-cli with a standard output whose every write fails with `code`. */
async function failingStdout(port: number, args: string[], code: string) {
  const stdout = new Writable({ write: (_chunk, _enc, done) => done(Object.assign(new Error(`${code}: write failed`), { code })) });
  const { exit, stderr } = await runHere(port, args, { stdout });
  return { exit, stderr };
}

/** A stand-in for a server behind a proxy whose acks fail: hands out `messages` (leased) one per
 * get (a number: that HTTP status in place of one), then holds gets open; answers ack number i with `acks[i]` (the last one stays): `'reset'`
 * drops the connection after the request came, a number is that HTTP status. `onAck` runs first. */
async function failingAcks(messages: Array<string | number>, acks: Array<'reset' | number>, onAck: (tries: number) => void = () => {}) {
  const left = [...messages];
  let pos = 0;
  let tries = 0;
  const server = http.createServer((req, res) => {
    if (req.url!.includes('opt=get')) {
      const body = left.shift();
      if (body === undefined) return fake.idle.emit('poll'); // left open: the client ends it
      if (typeof body === 'number') return res.writeHead(body).end(`from the proxy: ${body}`);
      return res.writeHead(200, { Pos: String(++pos), Lease: 't', Deliveries: '1' }).end(body);
    }
    onAck(++tries);
    const answer = acks[Math.min(tries, acks.length) - 1]!;
    if (answer === 'reset') return req.socket.destroy();
    res.writeHead(answer).end(answer === 200 ? 'HTTPSQS_ACK_OK' : `from the proxy: ${answer}`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const fake = {
    port: (server.address() as net.AddressInfo).port,
    tries: () => tries,
    /** Emits 'poll' when a get found nothing left. */
    idle: new EventEmitter(),
    close: () => (server.closeAllConnections(), server.close()),
  };
  return fake;
}

describe('httpsqs-cli', () => {
  const suite = cliSuite();
  const cli: ReturnType<typeof cliClient> = (args, o) => suite.cli(args, o);

  it('put prints the position, get prints the message; an empty queue exits with 3', () => {
    assert.deepEqual(cli(['put', 'k-basic', 'hello world']), { code: 0, stdout: '1\n', stderr: '' });
    assert.deepEqual(cli(['put', 'k-basic'], { input: 'from stdin\n' }).stdout, '2\n');
    assert.equal(cli(['get', 'k-basic']).stdout, 'hello world');
    assert.equal(cli(['get', 'k-basic']).stdout, 'from stdin\n');
    const empty = cli(['get', 'k-basic']);
    assert.equal(empty.code, 3);
    assert.match(empty.stderr, /^httpsqs-cli: queue k-basic has no message\n$/);
  });

  it('get leases the message until it is written out, then acks it (one taken as Ctrl-C comes is not lost); not with --reference', async () => {
    cli(['put', 'k-acked', 'a']);
    cli(['put', 'k-acked', 'b']);
    assert.equal(cli(['get', 'k-acked']).stdout, 'a');
    const metrics = (await request(suite.server.port, 'GET', '/metrics')).body.toString();
    assert.match(metrics, /^httpsqs_leases_acked_total\{queue="k-acked"\} 1$/m);
    assert.equal(cli(['--reference', 'get', 'k-acked']).stdout, 'b');
    const after = (await request(suite.server.port, 'GET', '/metrics')).body.toString();
    assert.match(after, /^httpsqs_leases_acked_total\{queue="k-acked"\} 1$/m, 'a plain get with --reference');
  });

  it('get whose lease ran out while its message was written out (a reader slower than 60 s) says so, and exits with 5', async () => {
    const server = await clockedServer();
    try {
      const big = 'z'.repeat(512 * 1024);
      assert.equal((await request(server.port, 'POST', '/?name=slow&opt=put', { body: Buffer.from(big) })).body.toString(), 'HTTPSQS_PUT_OK');
      // Its standard output is not read yet: the write of 512 KiB waits for the reader.
      const proc = spawn(process.execPath, [CLI_CLIENT, '--port', String(server.port), 'get', 'slow'], { env: cleanEnv() });
      let stderr = '';
      proc.stderr.on('data', (d) => (stderr += d));
      const exited = new Promise<number | null>((r) => proc.once('exit', r));
      const leased = async () => JSON.parse((await request(server.port, 'GET', '/?name=slow&opt=status_json')).body.toString()).leased === 1;
      await waitFor(leased, 10_000);
      server.clock.advance(61_000);
      const again = await request(server.port, 'GET', '/?name=slow&opt=get');
      assert.equal(again.headers.deliveries, '2');
      let out = 0;
      proc.stdout.on('data', (d: Buffer) => (out += d.length));
      assert.equal(await exited, 5, stderr);
      assert.equal(out, big.length);
      assert.equal(stderr, 'httpsqs-cli: the lease on position 1 ran out before it was written out; it may be handed out again\n');
    } finally {
      await server.stop();
    }
  });

  it('get whose message cannot be written out says so: a leased one comes back (exit 0 for a reader gone, 1 else), a plain one is lost (1)', async () => {
    const port = suite.server.port;
    const status = async () => JSON.parse((await request(port, 'GET', '/?name=k-unwritten&opt=status_json')).body.toString());
    cli(['put', 'k-unwritten', 'one']);
    // A reader that went away (EPIPE): not acked, so it comes back; nothing is lost.
    assert.deepEqual(await failingStdout(port, ['get', 'k-unwritten'], 'EPIPE'), {
      exit: 0,
      stderr: 'httpsqs-cli: position 1 could not be written out (the reader went away); it was not acked: it comes back when its lease ends\n',
    });
    assert.equal((await status()).leased, 1);
    // A full disk: the same, but an error.
    cli(['put', 'k-unwritten', 'two']);
    assert.deepEqual(await failingStdout(port, ['--json', 'get', 'k-unwritten'], 'ENOSPC'), {
      exit: 1,
      stderr: 'httpsqs-cli: position 2 could not be written out (ENOSPC: write failed); it was not acked: it comes back when its lease ends\n',
    });
    assert.equal((await status()).leased, 2);
    // A plain get (--reference) took it for good: lost, and said so, whatever the reason.
    cli(['put', 'k-unwritten', 'three']);
    assert.deepEqual(await failingStdout(port, ['--reference', 'get', 'k-unwritten'], 'EPIPE'), {
      exit: 1,
      stderr: 'httpsqs-cli: position 3 was taken from the queue but could not be written out (the reader went away): it is lost\n',
    });
  });

  it('get > /dev/full exits with 1 and says where the message is', { skip: existsSync('/dev/full') ? false : 'no /dev/full' }, () => {
    cli(['put', 'k-full', 'a']);
    cli(['put', 'k-full', 'b']);
    const full = openSync('/dev/full', 'w');
    try {
      const run = (args: string[]) =>
        spawnSync(process.execPath, [CLI_CLIENT, '--port', String(suite.server.port), ...args, 'get', 'k-full'], {
          encoding: 'utf8',
          env: cleanEnv(),
          stdio: ['ignore', full, 'pipe'],
          timeout: 20_000,
        });
      const leased = run([]);
      assert.equal(leased.status, 1);
      assert.match(leased.stderr, /^httpsqs-cli: position 1 could not be written out \(ENOSPC.*\); it was not acked: it comes back when its lease ends\n$/);
      const plain = run(['--reference']);
      assert.equal(plain.status, 1);
      assert.match(plain.stderr, /^httpsqs-cli: position 2 was taken from the queue but could not be written out \(ENOSPC.*\): it is lost\n$/);
    } finally {
      closeSync(full);
    }
  });

  it('get tries an ack that got no answer again; one still unconfirmed when the lease would end exits with 5 (--follow: says so, goes on)', {
    timeout: 30_000,
  }, async () => {
    // A proxy's 503, then no answer, then the ack goes through: printed and acked, exit 0.
    const flaky = await failingAcks(['one'], [503, 'reset', 200]);
    try {
      assert.deepEqual(await runHere(flaky.port, ['get', 'q']), { exit: 0, stdout: 'one', stderr: '' });
      assert.equal(flaky.tries(), 3);
    } finally {
      flaky.close();
    }
    // No answer until the lease would have ended (the clock moves on 61 s at the first try).
    const clock = new TestClock();
    const down = await failingAcks(['two'], ['reset'], () => clock.advance(61_000));
    try {
      const r = await runHere(down.port, ['get', 'q'], { now: clock.now });
      assert.equal(r.exit, 5, r.stderr);
      assert.equal(r.stdout, 'two');
      assert.match(r.stderr, /^httpsqs-cli: could not ack position 1 \(no answer from the server: .*\); it will come again\n$/);
    } finally {
      down.close();
    }
    // Ctrl-C while it is tried again: no more tries, the same account.
    const interrupting = new EventEmitter();
    const stopped = await failingAcks(['five'], ['reset'], () => interrupting.emit('SIGINT'));
    try {
      const r = await runHere(stopped.port, ['get', 'q'], { signals: interrupting });
      assert.equal(r.exit, 5, r.stderr);
      assert.equal(stopped.tries(), 1);
      assert.match(r.stderr, /^httpsqs-cli: could not ack position 1 \(no answer from the server: .*\); it will come again\n$/);
    } finally {
      stopped.close();
    }
    // Following, it says so and goes on to the next message.
    const signals = new EventEmitter();
    const following = await failingAcks(['three', 'four'], ['reset'], () => clock.advance(61_000));
    following.idle.once('poll', () => signals.emit('SIGINT'));
    try {
      const r = await runHere(following.port, ['get', 'q', '--follow', '--wait', '5'], { now: clock.now, signals });
      assert.equal(r.exit, 0, r.stderr);
      assert.equal(r.stdout, 'three\nfour\n');
      assert.match(r.stderr, /^httpsqs-cli: could not ack position 1 .*; it will come again\nhttpsqs-cli: could not ack position 2 .*; it will come again\n$/);
    } finally {
      following.close();
    }
  });

  it("get --follow waits out a proxy's 502/503/504 (a server restarting behind it), as a server that does not answer", async () => {
    const signals = new EventEmitter();
    const proxy = await failingAcks([502, 'after'], [200]);
    proxy.idle.once('poll', () => signals.emit('SIGINT'));
    try {
      const r = await runHere(proxy.port, ['get', 'q', '--follow', '--wait', '5'], { signals });
      assert.deepEqual(r, { exit: 0, stdout: 'after\n', stderr: 'httpsqs-cli: HTTP 502: from the proxy: 502; trying again\n' });
    } finally {
      proxy.close();
    }
  });

  it('get --follow --reference asks an empty queue again once a second: the C server answers at once, ignoring wait=', async () => {
    const signals = new EventEmitter();
    const asked: number[] = [];
    // A stand-in for the C server: an empty queue, answered at once; Ctrl-C at the third request.
    const cServer = http.createServer((_req, res) => {
      asked.push(performance.now());
      if (asked.length === 3) signals.emit('SIGINT');
      res.end('HTTPSQS_GET_END');
    });
    await new Promise<void>((r) => cServer.listen(0, '127.0.0.1', r));
    try {
      const r = await runHere((cServer.address() as net.AddressInfo).port, ['--reference', 'get', 'q', '--follow'], { signals });
      assert.deepEqual(r, { exit: 0, stdout: '', stderr: '' });
      assert.equal(asked.length, 3);
      // A second from one request's start to the next one's: at least that, less the time a request takes to arrive.
      for (let i = 1; i < asked.length; i++) assert.ok(asked[i]! - asked[i - 1]! >= 500, `${asked[i]! - asked[i - 1]!} ms between requests`);
    } finally {
      cServer.close();
    }
  });

  it("top waits out a proxy's 502/503/504 (a server restarting behind it), as a server that does not answer", async () => {
    let lists = 0;
    const listing = http.createServer((_req, res) => (++lists === 1 ? res.writeHead(503).end('restarting') : res.writeHead(200).end('[]')));
    await new Promise<void>((r) => listing.listen(0, '127.0.0.1', r));
    try {
      const r = await runHere((listing.address() as net.AddressInfo).port, ['top', '--iterations', '2', '--interval', '0.1']);
      assert.equal(r.exit, 0, r.stderr);
      assert.match(r.stdout, /^httpsqs top: HTTP 503: restarting; trying again\n\nhttpsqs top: 0 queues, /);
    } finally {
      listing.close();
    }
  });

  it('--json gives bytes that are not UTF-8 as data64 (base64); list shows a name with control characters as a JSON string', async () => {
    const bytes = Buffer.from([0xff, 0xfe, 0x00, 0x41]);
    assert.equal((await request(suite.server.port, 'GET', '/?name=k-bin&opt=put&data=%FF%FE%00A')).body.toString(), 'HTTPSQS_PUT_OK');
    assert.deepEqual(JSON.parse(cli(['--json', 'view', 'k-bin', '1']).stdout), { pos: 1, data64: bytes.toString('base64') });
    assert.deepEqual(JSON.parse(cli(['--json', 'get', 'k-bin']).stdout), { pos: 1, deliveries: 1, data64: bytes.toString('base64') });
    const name = 'k-esc\x1b]0;owned\x07\x1b[2J';
    assert.equal(cli(['put', name, 'x']).code, 0);
    const table = cli(['list', '--prefix', 'k-esc']).stdout;
    assert.ok(!table.includes('\x1b'), JSON.stringify(table));
    assert.ok(table.includes(JSON.stringify(name)), table);
  });

  it('HTTPSQS_URL stands in for --url only: a --host or --port on the command line wins', async () => {
    const nobody = await freePort();
    const r = cli(['put', 'k-env-url', 'x'], { env: { HTTPSQS_URL: `http://127.0.0.1:${nobody}` } }); // (cli gives --port)
    assert.deepEqual([r.code, r.stdout], [0, '1\n'], r.stderr);
  });

  it('--json gives one JSON document per answer', () => {
    assert.deepEqual(JSON.parse(cli(['--json', 'put', 'k-json', 'x']).stdout), { pos: 1 });
    assert.deepEqual(JSON.parse(cli(['--json', 'status', 'k-json']).stdout).unread, 1);
    assert.deepEqual(JSON.parse(cli(['--json', 'get', 'k-json']).stdout), { pos: 1, deliveries: 1, data: 'x' });
    assert.deepEqual(JSON.parse(cli(['--json', 'view', 'k-json', '1']).stdout), { pos: 1, data: 'x' });
    const list = JSON.parse(cli(['--json', 'list', '--prefix', 'k-json']).stdout);
    assert.deepEqual(
      list.map((q: { name: string }) => q.name),
      ['k-json'],
    );
    cli(['put', 'k-json', 'y']);
    assert.deepEqual(JSON.parse(cli(['--json', 'view', 'k-json', '1', '--num', '3']).stdout), [
      { pos: 1, data: 'x' },
      { pos: 2, data: 'y' },
    ]);
    assert.equal(cli(['view', 'k-json', '1', '--num', '3']).stdout, '{"pos":1,"data":"x"}\n{"pos":2,"data":"y"}\n');
    assert.deepEqual(JSON.parse(cli(['--json', 'synctime', '4']).stdout), { synctime: 4 });
    assert.deepEqual(JSON.parse(cli(['--json', 'reset', 'k-json']).stdout), { reset: true });
  });

  it('status, list, view, reset, maxqueue and synctime speak plainly', () => {
    cli(['put', 'k-ops', 'a']);
    assert.match(cli(['status', 'k-ops']).stdout, /Queue Name: k-ops\n/);
    assert.match(
      cli(['list', '--prefix', 'k-ops']).stdout,
      /^QUEUE\s+UNREAD\s+LEASED\s+DELAYED\s+DEAD\s+PUTPOS\s+GETPOS\s+MAXQUEUE\nk-ops\s+1\s+0\s+0\s+0\s+1\s+0\s+1000000\n$/,
    );
    assert.equal(cli(['view', 'k-ops', '1']).stdout, 'a');
    assert.equal(cli(['view', 'k-ops', '9']).code, 3);
    // Past the ring (a delayed message's schedule id) or 0: a usage error, not the server's HTTPSQS_ERROR as a message.
    for (const pos of ['1000000001', '0'])
      assert.deepEqual(cli(['view', 'k-ops', pos]), { code: 2, stdout: '', stderr: `httpsqs-cli: <pos>: expected 1..1000000000, got ${pos}\n` });
    assert.deepEqual(cli(['maxqueue', 'k-ops', '100']), { code: 0, stdout: 'maxqueue of k-ops set to 100\n', stderr: '' });
    const small = cli(['maxqueue', 'k-ops', '5']);
    assert.deepEqual([small.code, small.stderr], [2, 'httpsqs-cli: <num>: expected 10..1000000000, got 5\n']);
    assert.equal(cli(['reset', 'k-ops']).code, 0);
    assert.deepEqual(cli(['synctime', '3']), { code: 0, stdout: 'synctime set to 3 s\n', stderr: '' });
    cli(['maxqueue', 'k-cancel', '10']);
    for (let i = 0; i < 10; i++) cli(['put', 'k-cancel', `${i}`]);
    cli(['get', 'k-cancel']);
    cli(['get', 'k-cancel']);
    cli(['put', 'k-cancel', 'wraps']);
    const refused = cli(['maxqueue', 'k-cancel', '50']);
    assert.deepEqual(refused, {
      code: 5,
      stdout: '',
      stderr:
        'httpsqs-cli: maxqueue of k-cancel not changed: the ring rules refuse 50 while the writer is a lap ahead of the reader (putpos 1, getpos 2): no size is taken until the reader has come round too\n',
    });
    assert.deepEqual(cli(['--json', 'maxqueue', 'k-cancel', '50']), { code: 5, stdout: '{"maxqueue":false}\n', stderr: refused.stderr });
    cli(['put', 'k-beyond', '--file', '-'], { input: 'm\n'.repeat(150) });
    assert.match(
      cli(['maxqueue', 'k-beyond', '100']).stderr,
      /^httpsqs-cli: maxqueue of k-beyond not changed: the ring rules refuse 100 while position 150 is in use \(putpos 150, getpos 0\): give 150 or more\n$/,
    );
    assert.deepEqual(cli(['--json', 'maxqueue', 'k-beyond', '150']), { code: 0, stdout: '{"maxqueue":true}\n', stderr: '' });
    const full = cli(['put', 'k-cancel', 'one too many']);
    assert.equal(full.code, 4);
    assert.match(full.stderr, /is full/);
  });

  it('a maxqueue refused on a server with --admin-auth says why it cannot say more (the admin password does not open the status)', async () => {
    const locked = await startServer({ args: ['-a', 'user-pass', '--admin-auth', 'admin-pass'] });
    try {
      const as = (auth: string, args: string[], input?: string) =>
        spawnSync(process.execPath, [CLI_CLIENT, '--port', String(locked.port), '--auth', auth, ...args], { encoding: 'utf8', env: cleanEnv(), input });
      assert.equal(as('user-pass', ['put', 'k-locked', '--file', '-'], 'm\n'.repeat(15)).status, 0);
      const refused = as('admin-pass', ['maxqueue', 'k-locked', '10']);
      assert.equal(refused.status, 5, refused.stderr);
      assert.equal(
        refused.stderr,
        "httpsqs-cli: maxqueue of k-locked not changed: the ring rules refuse 10 while it holds positions beyond it, or its writer is a lap ahead (which, the queue's status would tell: it needs the queue password, not the admin one)\n",
      );
    } finally {
      await locked.stop();
      cleanup(locked.dir);
    }
  });

  it('a message argument that is not UTF-8 is stored with a warning; on standard input its bytes are kept', async () => {
    const run = (command: string) =>
      spawnSync('sh', ['-c', `"${process.execPath}" "${CLI_CLIENT}" --port ${suite.server.port} ${command}`], { encoding: 'utf8', env: cleanEnv() });
    const argument = run(`put k-argv "$(printf 'caf\\351')"`);
    assert.equal(argument.status, 0, argument.stderr);
    assert.match(argument.stderr, /^httpsqs-cli: warning: the message has U\+FFFD in it, .*give such bytes on standard input/);
    const piped = spawnSync('sh', ['-c', `printf 'caf\\351' | "${process.execPath}" "${CLI_CLIENT}" --port ${suite.server.port} put k-argv`], {
      encoding: 'utf8',
      env: cleanEnv(),
    });
    assert.equal(piped.stderr, '');
    const stored = await Promise.all([1, 2].map((pos) => request(suite.server.port, 'GET', `/?name=k-argv&opt=view&pos=${pos}`)));
    assert.deepEqual(
      stored.map((r) => r.body.toString('hex')),
      [Buffer.from('caf\uFFFD').toString('hex'), Buffer.from([0x63, 0x61, 0x66, 0xe9]).toString('hex')],
    );
  });

  it('get and view end with a newline on a terminal, and only there', { skip: needsTool('script', 'util-linux') }, () => {
    const onTerminal = (args: string) => {
      const r = spawnSync('script', ['-qec', `'${process.execPath}' '${CLI_CLIENT}' --port ${suite.server.port} ${args}`, '/dev/null'], {
        input: '',
        encoding: 'utf8',
        env: cleanEnv(),
        timeout: 30_000,
      });
      return { code: r.status, stdout: r.stdout };
    };
    for (const m of ['no newline', 'has one\n', '']) cli(['put', 'k-tty'], { input: m });
    // The terminal shows \n as \r\n; a message that ends with a newline gets no second one.
    assert.deepEqual(onTerminal('get k-tty'), { code: 0, stdout: 'no newline\r\n' });
    assert.deepEqual(onTerminal('get k-tty'), { code: 0, stdout: 'has one\r\n' });
    assert.deepEqual(onTerminal('get k-tty'), { code: 0, stdout: '\r\n' });
    assert.deepEqual(onTerminal('view k-tty 1'), { code: 0, stdout: 'no newline\r\n' });
    assert.equal(cli(['view', 'k-tty', '1']).stdout, 'no newline');
    assert.equal(cli(['view', 'k-tty', '2']).stdout, 'has one\n');
  });

  it('names and messages keep their bytes: UTF-8 names in status, empty messages', () => {
    cli(['put', 'café', 'crème']);
    assert.match(cli(['status', 'café']).stdout, /Queue Name: café\n/);
    assert.equal(cli(['get', 'café']).stdout, 'crème');
    assert.equal(cli(['put', 'k-empty'], { input: '' }).stdout, '1\n');
    assert.deepEqual(JSON.parse(cli(['--json', 'get', 'k-empty']).stdout).data, '');
  });

  it('put --file counts what went in, also one put at a time with --reference; a missing file is one line', () => {
    const dir = tempDir('httpsqs-cli-');
    const file = join(dir, 'lines.txt');
    writeFileSync(file, 'a\n\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\n');
    cli(['maxqueue', 'k-ref', '10']);
    const full = cli(['--reference', 'put', 'k-ref', '--file', file]);
    assert.equal(full.code, 4);
    assert.match(full.stderr, /full after 10 messages/);
    assert.equal(cli(['view', 'k-ref', '2']).code, 3); // the empty line went in as an empty message
    const missing = cli(['put', 'k-ref', '--file', join(dir, 'nope.txt')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^httpsqs-cli: --file: cannot read .*nope\.txt: ENOENT.*\n$/);
    cleanup(dir);
  });

  it('put --file keeps the bytes of lines that are not UTF-8, in batches and with --reference', async () => {
    const dir = tempDir('httpsqs-cli-');
    const file = join(dir, 'latin1.txt');
    const cafe = Buffer.from('caf\xe9', 'latin1');
    writeFileSync(file, Buffer.concat([cafe, Buffer.from('\r\ntext\n\xff\xfe\x00\n', 'latin1')]));
    for (const [queue, flags] of [
      ['k-bytes', []],
      ['k-bytes-ref', ['--reference']],
    ] as const) {
      const r = cli([...flags, 'put', queue, '--file', file]);
      assert.equal(r.code, 0, r.stderr);
      const got = async (pos: number) => (await request(suite.server.port, 'GET', `/?name=${queue}&opt=view&pos=${pos}`)).body;
      assert.deepEqual(await got(1), cafe);
      assert.deepEqual(await got(2), Buffer.from('text'));
      assert.deepEqual(await got(3), Buffer.from([0xff, 0xfe, 0]));
    }
    cleanup(dir);
  });

  it('put --file cuts batches by bytes too, and sends one over --max-message-bytes again in halves', async () => {
    const dir = tempDir('httpsqs-cli-');
    const file = join(dir, 'long-lines.txt');
    // 34 MB in all, each line far below the default --max-message-bytes (32 MiB).
    writeFileSync(file, `${'y'.repeat(34_000)}\n`.repeat(1000));
    const r = cli(['put', 'k-long', '--file', file]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(cli(['--json', 'status', 'k-long']).stdout).unread, 1000);
    // A server that takes bodies of 100,000 bytes: a batch of 1 MiB is too large for it.
    const small = await startServer({ args: ['--max-message-bytes', '100000'] });
    try {
      const r2 = cliClient(small.port)(['put', 'k-long', '--file', file]);
      assert.equal(r2.code, 0, r2.stderr);
      const s = JSON.parse(cliClient(small.port)(['--json', 'status', 'k-long']).stdout);
      assert.equal(s.unread, 1000);
    } finally {
      await small.stop();
      cleanup(small.dir);
      cleanup(dir);
    }
  });

  it('put --file sends one message per line and reports the rate; a full queue stops it with 4', () => {
    const dir = tempDir('httpsqs-cli-');
    const file = join(dir, 'lines.txt');
    writeFileSync(file, `${Array.from({ length: 2500 }, (_, i) => `line ${i}`).join('\n')}\n`);
    const r = cli(['put', 'k-file', '--file', file]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^put 2500 messages in [\d.]+ s \(\d+ messages\/s\)\n$/);
    assert.equal(JSON.parse(cli(['--json', 'status', 'k-file']).stdout).unread, 2500);
    assert.equal(cli(['view', 'k-file', '2500']).stdout, 'line 2499');
    const json = JSON.parse(cli(['--json', 'put', 'k-file2', '--file', '-'], { input: 'a\nb\n' }).stdout);
    assert.equal(json.count, 2);
    // Lines as tail and wc -l count them, so that a line number to resume from is right: a \r
    // ends a line only before \n.
    cli(['put', 'k-crlf', '--file', '-'], { input: 'a\r\nb\rc\nlast' });
    assert.deepEqual(JSON.parse(cli(['--json', 'view', 'k-crlf', '1', '--num', '5']).stdout), [
      { pos: 1, data: 'a' },
      { pos: 2, data: 'b\rc' },
      { pos: 3, data: 'last' },
    ]);
    cli(['put', 'k-cr-end', '--file', '-'], { input: 'd\r\ne\r' });
    assert.deepEqual(JSON.parse(cli(['--json', 'view', 'k-cr-end', '1', '--num', '3']).stdout), [
      { pos: 1, data: 'd' },
      { pos: 2, data: 'e\r' },
    ]);
    cli(['maxqueue', 'k-small', '10']);
    const full = cli(['put', 'k-small', '--file', file]);
    assert.equal(full.code, 4);
    assert.match(full.stderr, /full after 10 messages/);
    cleanup(dir);
  });

  it('put reads standard input, or a line of --file, up to 64 MiB (what it could get back): past that it stops reading, and says which line', async () => {
    // A line that does not end (`--file /dev/zero`): 100 MiB, 1 MiB at a time, after two short lines.
    let read = 0;
    const endless = (first: string) =>
      Readable.from(
        (function* () {
          yield Buffer.from(first);
          for (; read < 100; read++) yield Buffer.alloc(2 ** 20, 'z');
        })(),
      );
    const port = suite.server.port;
    const file = await runHere(port, ['put', 'k-endless', '--file', '-'], { stdin: endless('a\nb\n') });
    assert.equal(file.exit, 1, file.stderr);
    assert.match(
      file.stderr,
      /^httpsqs-cli: --file: standard input: line 3 is over 64 MiB, more than httpsqs-cli can get back as a message; the server stored 2 lines .*\n$/,
    );
    assert.ok(read < 100, `${read} MiB read`);
    read = 0;
    const plain = await runHere(port, ['put', 'k-endless'], { stdin: endless('') });
    assert.deepEqual(plain, { exit: 1, stdout: '', stderr: 'httpsqs-cli: standard input is over 64 MiB, more than httpsqs-cli can get back as a message\n' });
    assert.ok(read < 100, `${read} MiB read`);
    assert.equal(JSON.parse(cli(['--json', 'status', 'k-endless']).stdout).putpos, 2, 'the lines before the long one are sent');
  });

  it('put --file behind a proxy: a batch answered with its 502 or 504 may be stored (the proxy may have passed it on), one with its 503 is not', async () => {
    const dir = tempDir('httpsqs-cli-');
    const file = join(dir, 'lines.txt');
    writeFileSync(file, `${Array.from({ length: 1500 }, (_, i) => `line ${i + 1}`).join('\n')}\n`);
    // The first batch is stored; the proxy answers the second with `status`.
    let status = 0;
    let batches = 0;
    const proxy = http.createServer((req, res) => {
      req.resume();
      if (++batches > 1) return res.writeHead(status).end(`from the proxy: ${status}`);
      res.writeHead(200).end(JSON.stringify({ positions: Array.from({ length: 1000 }, (_, i) => i + 1), full: false }));
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const port = (proxy.address() as net.AddressInfo).port;
    try {
      for (status of [502, 504, 503]) {
        batches = 0;
        const r = await runHere(port, ['put', 'q', '--file', file]);
        assert.equal(r.exit, 1, r.stderr);
        const maybe = status === 503 ? '' : 'lines 1001-1500 were sent but not answered: they may be stored too; ';
        const again = status === 503 ? '' : ', which may store those again';
        assert.equal(
          r.stderr,
          `httpsqs-cli: HTTP ${status}: from the proxy: ${status}; the server stored 1000 lines (1-1000); ${maybe}resume from line 1001 (tail -n +1001 ${file} | httpsqs-cli --port ${port} put q --file -)${again}\n`,
        );
      }
    } finally {
      proxy.close();
      cleanup(dir);
    }
  });

  it('put --file says how to resume with the options it was given, but not the password', () => {
    const dir = tempDir('httpsqs-cli-');
    try {
      const file = join(dir, 'lines.txt');
      writeFileSync(file, `${Array.from({ length: 20 }, (_, i) => `line ${i}`).join('\n')}\n`);
      cli(['maxqueue', 'k-resume', '10']);
      const full = cli(['--timeout', '5000', '--auth', 'pw-not-shown', '--json', 'put', 'k-resume', '--file', file, '--delay', '7']);
      assert.equal(full.code, 4, full.stderr);
      const port = suite.server.port;
      assert.ok(
        full.stderr.endsWith(
          `resume from line 11 (tail -n +11 ${file} | httpsqs-cli --port ${port} --timeout 5000 --json put k-resume --file - --delay 7, adding --auth <password>)\n`,
        ),
        full.stderr,
      );
      assert.doesNotMatch(full.stderr, /pw-not-shown/);
    } finally {
      cleanup(dir);
    }
  });

  it('leases from the command line: get --lease prints Pos and Lease; touch extends; ack with the token', () => {
    cli(['put', 'k-lease', 'job']);
    const got = cli(['get', 'k-lease', '--lease', '30']);
    assert.equal(got.stdout, 'job');
    const token = /Lease: (\S+)/.exec(got.stderr)![1]!;
    assert.equal(cli(['touch', 'k-lease', '1', '60', 'wrong-token']).code, 5);
    const touched = cli(['touch', 'k-lease', '1', '60', token]);
    assert.equal(touched.code, 0);
    // A touch keeps the grant's token.
    assert.equal(touched.stdout.trim(), token);
    const again = JSON.parse(cli(['--json', 'touch', 'k-lease', '1', '60', token]).stdout) as { lease: string };
    assert.equal(again.lease, token);
    assert.equal(cli(['ack', 'k-lease', '1', 'wrong-token']).code, 5);
    assert.deepEqual(JSON.parse(cli(['--json', 'ack', 'k-lease', '1', token]).stdout), { acked: true });
  });

  it('the server comes from --url, --host/--port or the environment; errors have their codes', async () => {
    const env = { HTTPSQS_URL: `http://127.0.0.1:${suite.server.port}` };
    const viaEnv = spawnSync(process.execPath, [CLI_CLIENT, 'put', 'k-env', 'e'], { encoding: 'utf8', env: { ...cleanEnv(), ...env } });
    assert.equal(viaEnv.stdout, '1\n');
    const down = spawnSync(process.execPath, [CLI_CLIENT, '--port', String(await freePort()), 'status', 'q'], { encoding: 'utf8', env: cleanEnv() });
    assert.equal(down.status, 1);
    assert.match(down.stderr, /^httpsqs-cli: no answer from the server: .*ECONNREFUSED/);
    const usage = spawnSync(process.execPath, [CLI_CLIENT, 'frobnicate'], { encoding: 'utf8', env: cleanEnv() });
    assert.equal(usage.status, 2);
    assert.equal(spawnSync(process.execPath, [CLI_CLIENT, 'get', 'q', '--wait', 'soon'], { encoding: 'utf8' }).status, 2);
    // A server address that is not one is a usage error with one line, not a stack trace.
    for (const [args, message] of [
      [['--url', `127.0.0.1:${suite.server.port}`], /^httpsqs-cli: --url: not a server URL: "127\.0\.0\.1:\d+"/],
      [['--url', `http://127.0.0.1:${suite.server.port}/?x=1`], /^httpsqs-cli: --url: not a server URL/],
      [['--port', 'abc'], /^httpsqs-cli: --port: expected 1\.\.65535, got "abc"\n$/],
      [['--host', '127.0.0.1/x'], /^httpsqs-cli: --host: expected a host name or address, got "127\.0\.0\.1\/x"\n$/],
      [['--timeout', 'abc'], /^httpsqs-cli: --timeout: expected a whole number, got "abc"\n$/],
      // 0 would wait for ever for a server that stops answering.
      [['--timeout', '0'], /^httpsqs-cli: --timeout: expected 1\.\.2147483647, got 0\n$/],
      // Following, 0 would ask an empty queue again and again.
      [['get', 'q', '--follow', '--wait', '0'], /^httpsqs-cli: --wait: at least 1 second with --follow\n$/],
    ] as const) {
      const command = args[0] === 'get' ? [] : ['status', 'q'];
      const bad = spawnSync(process.execPath, [CLI_CLIENT, '--port', String(suite.server.port), ...args, ...command], { encoding: 'utf8', env: cleanEnv() });
      assert.equal(bad.status, 2, args.join(' '));
      assert.match(bad.stderr, message);
      assert.doesNotMatch(bad.stderr, /\n\s+at /);
    }
    // Any path reaches the queues, so a URL with one works (a server behind a proxy, say).
    const withPath = spawnSync(process.execPath, [CLI_CLIENT, '--url', `http://127.0.0.1:${suite.server.port}/queues/`, 'put', 'k-path', 'p'], {
      encoding: 'utf8',
      env: cleanEnv(),
    });
    assert.deepEqual([withPath.status, withPath.stdout], [0, '1\n']);
    assert.equal(spawnSync(process.execPath, [CLI_CLIENT, '--help'], { encoding: 'utf8' }).status, 0);
    const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const v = spawnSync(process.execPath, [CLI_CLIENT, flag], { encoding: 'utf8', env: cleanEnv() });
      assert.deepEqual([v.status, v.stdout, v.stderr], [0, `${version}\n`, ''], flag);
    }
    const locked = await startServer({ args: ['-a', 'sesame'] });
    try {
      const denied = spawnSync(process.execPath, [CLI_CLIENT, '--port', String(locked.port), 'put', 'q', 'x'], { encoding: 'utf8', env: cleanEnv() });
      assert.equal(denied.status, 6);
      const allowed = spawnSync(process.execPath, [CLI_CLIENT, '--port', String(locked.port), 'put', 'q', 'x'], {
        encoding: 'utf8',
        env: { ...cleanEnv(), HTTPSQS_AUTH: 'sesame' },
      });
      assert.equal(allowed.status, 0);
    } finally {
      await locked.stop();
      cleanup(locked.dir);
    }
  });

  it('top shows every queue with unread counts, rates and a sparkline', () => {
    cli(['put', 'k-top', 'a']);
    const r = cli(['top', '--iterations', '2', '--interval', '0.3', '--prefix', 'k-top']);
    assert.equal(r.code, 0, r.stderr);
    const frames = r.stdout.split(/^httpsqs top: /m).filter(Boolean);
    assert.equal(frames.length, 2);
    assert.match(frames[1]!, /QUEUE\s+UNREAD\s+LEASED\s+DELAYED\s+DEAD\s+PUT\/s\s+GET\/s\s+UNREAD OVER TIME\nk-top\s+1\s+0\s+0\s+0\s+0\s+0\s+[▁▂▃▄▅▆▇█]{2}/);
    // Delayed messages and dead letters have columns of their own.
    cli(['put', 'k-top-dlq', 'later', '--delay', '60']);
    cli(['maxdeliveries', 'k-top-dlq', '1']);
    cli(['put', 'k-top-dlq', 'poison']);
    cli(['nack', 'k-top-dlq', /Pos: (\d+)/.exec(cli(['get', 'k-top-dlq', '--lease', '30']).stderr)![1]!]);
    const dlq = cli(['top', '--iterations', '1', '--interval', '0.2', '--prefix', 'k-top-dlq']);
    assert.match(dlq.stdout, /\nk-top-dlq\s+0\s+0\s+1\s+1\s+0\s+0\s+[▁▂▃▄▅▆▇█] *\n/);
  });

  it('a server URL with a password is refused without printing the password', () => {
    const r = spawnSync(process.execPath, [CLI_CLIENT, 'get', 'q'], {
      encoding: 'utf8',
      env: { ...cleanEnv(), HTTPSQS_URL: 'http://admin:s3cret@127.0.0.1:47999' },
      timeout: 20_000,
    });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /^httpsqs-cli: --url: not a server URL: "http:\/\/\*\*\*@127\.0\.0\.1:47999" /);
    assert.doesNotMatch(r.stderr, /s3cret|admin/);
  });

  it('get --lease over 86400 seconds is a usage error, before anything is taken', () => {
    for (const args of [
      ['get', 'q', '--lease', '86401'],
      ['get', 'q', '--lease', '86401', '--follow'],
    ]) {
      assert.deepEqual(cli(args), { code: 2, stdout: '', stderr: 'httpsqs-cli: --lease: expected at most 86400 seconds, got 86401\n' });
    }
  });

  it('top --interval takes 0.1 to 86400 seconds; another (one a timer cannot hold) is a usage error', () => {
    for (const interval of ['1e10', 'Infinity', '86401', '0.05', '0', 'x']) {
      const r = cli(['top', '--interval', interval, '--iterations', '2']);
      assert.deepEqual(r, { code: 2, stdout: '', stderr: `httpsqs-cli: --interval: expected 0.1..86400 seconds, got "${interval}"\n` });
    }
    assert.equal(cli(['top', '--interval', '0.1', '--iterations', '2']).code, 0);
  });

  it('top that never reaches a server says so and exits with 1, after its iterations or when interrupted (Ctrl-C or SIGTERM)', async () => {
    const port = String(await freePort());
    const r = spawnSync(process.execPath, [CLI_CLIENT, '--port', port, 'top', '--iterations', '2', '--interval', '0.2'], { encoding: 'utf8', env: cleanEnv() });
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.stdout.match(/trying again/g)?.length, 2);
    assert.match(r.stderr, /^httpsqs-cli: top never reached the server \(no answer from the server: .*ECONNREFUSED.*\)\n$/);
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      const child = spawn(process.execPath, [CLI_CLIENT, '--port', port, 'top', '--interval', '0.2'], { env: cleanEnv() });
      let out = '';
      let err = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (err += d));
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      await waitFor(() => out.includes('trying again'));
      child.kill(signal);
      assert.equal(await exited, 1, signal);
      assert.match(err, /^httpsqs-cli: top never reached the server/, signal);
    }
  });
});
