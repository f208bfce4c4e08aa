/**
 * `httpsqs-cli` interrupted (Ctrl-C, SIGTERM) and following a queue: what a put from a file
 * reports as stored and where to resume, get --follow across a restart. (The rest of httpsqs-cli:
 * cli-client.test.ts; apart, so that the two run side by side.)
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { HttpsqsClient } from '../src/client/index.js';
import { CLI_CLIENT, cleanEnv, cleanup, type cliClient, cliSuite, request, startInProcess, startServer, tempDir, waitFor } from './helpers.js';

/** A file of `count` lines, `line 1` to `line <count>`, and an `httpsqs-cli` for the server on
 * `port` on a PATH, to run the resume command an interrupted put prints as it is. */
function bigFile(count: number, port: number): { dir: string; file: string; lines: string[]; env: NodeJS.ProcessEnv } {
  const dir = tempDir('httpsqs-cli-');
  const file = join(dir, 'big.txt');
  const lines = Array.from({ length: count }, (_, i) => `line ${i + 1}`);
  writeFileSync(file, `${lines.join('\n')}\n`);
  const shim = join(dir, 'httpsqs-cli');
  writeFileSync(shim, `#!/bin/sh\nexec "${process.execPath}" "${CLI_CLIENT}" --port ${port} "$@"\n`);
  chmodSync(shim, 0o755);
  return { dir, file, lines, env: { ...cleanEnv(), PATH: `${dir}:${process.env.PATH}` } };
}

/** Runs a shell command line to its end (within 60 s) while this process goes on. */
async function shell(command: string, env: NodeJS.ProcessEnv): Promise<{ status: number | null; stderr: string }> {
  const child = spawn('sh', ['-c', command], { env, stdio: ['ignore', 'ignore', 'pipe'], timeout: 60_000 });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const status = await new Promise<number | null>((r) => child.once('close', r));
  return { status, stderr };
}

/** Every message of the queue, in position order (the queue never wrapped). */
async function stored(port: number, name: string): Promise<string[]> {
  const q = new HttpsqsClient({ url: `http://127.0.0.1:${port}` });
  try {
    const { putpos } = await q.statusJson(name);
    const all: string[] = [];
    for (let pos = 1; pos <= putpos; pos += 1000) all.push(...(await q.viewRange(name, pos, 1000)).map((m) => m.body.toString()));
    return all;
  } finally {
    await q.close();
  }
}

/** Starts `put <name> --file <file>` and resolves once the server holds some of it. */
async function putUnderWay(port: number, name: string, file: string, args: string[] = []) {
  const child = spawn(process.execPath, [CLI_CLIENT, '--port', String(port), ...args, 'put', name, '--file', file], { env: cleanEnv() });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const q = new HttpsqsClient({ url: `http://127.0.0.1:${port}` });
  try {
    await waitFor(async () => (await q.statusJson(name)).putpos >= 2000 || child.exitCode !== null, 20_000);
  } finally {
    await q.close();
  }
  assert.equal(child.exitCode, null, `the put ended before it could be interrupted: ${stderr}`);
  return { child, exited, stderr: () => stderr };
}

/** A TCP proxy to 127.0.0.1:`port` that, once told to `hold`, passes requests on and keeps the
 * server's answers back; `held` counts the bytes kept back. */
async function replyHolder(port: number) {
  let holding = false;
  let held = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (d) => upstream.write(d));
    upstream.on('data', (d) => (holding ? (held += d.length) : client.write(d)));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    hold: () => void (holding = true),
    /** Passes answers on again (those held are dropped). */
    release: () => void (holding = false),
    held: () => held,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

const SUMMARY =
  /^httpsqs-cli: interrupted: the server stored (\d+) lines \(1-\d+\); (?:lines (\d+)-(\d+) were sent but not answered: they may be stored too; )?resume from line (\d+) \((tail -n \+\d+ \S+ \| httpsqs-cli (?:\S+ )*?put \S+ --file -(?: \S+)*)\)(, which may store those again)?\n$/;

describe('httpsqs-cli interrupted, and following', () => {
  const suite = cliSuite();
  const cli: ReturnType<typeof cliClient> = (args, o) => suite.cli(args, o);

  it('Ctrl-C during put --file stops it: the lines the server holds, where to resume, exit 130; resuming loses none', async () => {
    const { dir, file, lines, env } = bigFile(500_000, suite.server.port);
    try {
      const put = await putUnderWay(suite.server.port, 'k-int-file', file);
      put.child.kill('SIGINT');
      assert.equal(await put.exited, 130, put.stderr());
      const [, count, unsureFrom, , resume, command] = SUMMARY.exec(put.stderr()) ?? assert.fail(put.stderr());
      // The server answered what was in flight: nothing is in doubt.
      assert.equal(unsureFrom, undefined, put.stderr());
      assert.ok(Number(count) >= 2000 && Number(count) < lines.length, count);
      assert.equal(Number(resume), Number(count) + 1);
      assert.equal((await stored(suite.server.port, 'k-int-file')).length, Number(count));
      const rest = spawnSync('sh', ['-c', command!], { encoding: 'utf8', env, timeout: 60_000 });
      assert.equal(rest.status, 0, rest.stderr);
      assert.deepEqual(await stored(suite.server.port, 'k-int-file'), lines);
    } finally {
      cleanup(dir);
    }
  });

  it('SIGTERM while the answer does not come: the lines in flight are reported as maybe stored, and only they come twice', async () => {
    const port = suite.server.port;
    const { dir, file, lines, env } = bigFile(500_000, port);
    const proxy = await replyHolder(port);
    try {
      const put = await putUnderWay(proxy.port, 'k-stopped', file, ['--timeout', '10000']);
      proxy.hold();
      // A batch the server stored, and whose answer the client has not had.
      await waitFor(() => proxy.held() > 0);
      put.child.kill('SIGTERM');
      assert.equal(await put.exited, 130, put.stderr());
      const [, count, unsureFrom, unsureTo, resume, command, again] = SUMMARY.exec(put.stderr()) ?? assert.fail(put.stderr());
      const [s, from, to] = [Number(count), Number(unsureFrom), Number(unsureTo)];
      assert.deepEqual([from, to, Number(resume)], [s + 1, s + 1000, s + 1], put.stderr());
      assert.ok(again, put.stderr());
      assert.equal((await stored(port, 'k-stopped')).length, to);
      // The command repeats the options given: the same server (through the proxy), the same timeout.
      assert.match(command!, new RegExp(` \\| httpsqs-cli --port ${proxy.port} --timeout 10000 put k-stopped --file -$`));
      proxy.release();
      // Not spawnSync: the proxy runs in this process.
      const rest = await shell(command!, env);
      assert.equal(rest.status, 0, rest.stderr);
      assert.deepEqual(await stored(port, 'k-stopped'), [...lines.slice(0, to), ...lines.slice(s)]);
    } finally {
      await proxy.close();
      cleanup(dir);
    }
  });

  it('put --file - sends the lines of a producer that pauses as they come (tail -f), not once 1000 have come', async () => {
    const port = suite.server.port;
    const child = spawn(process.execPath, [CLI_CLIENT, '--port', String(port), 'put', 'k-tail', '--file', '-'], { env: cleanEnv() });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.stdin.write('one\ntwo\n');
    await waitFor(async () => (await stored(port, 'k-tail')).length === 2);
    child.stdin.write('three\n');
    await waitFor(async () => (await stored(port, 'k-tail')).length === 3);
    child.stdin.end('four\n');
    assert.equal(await exited, 0, err);
    assert.deepEqual(await stored(port, 'k-tail'), ['one', 'two', 'three', 'four']);
    assert.match(err, /^put 4 messages in /);
  });

  it('get --follow prints messages as they arrive until interrupted', async () => {
    const child = spawn(process.execPath, [CLI_CLIENT, '--port', String(suite.server.port), 'get', 'k-follow', '--follow', '--wait', '2'], { env: cleanEnv() });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    for (const m of ['one', 'two', 'three']) cli(['put', 'k-follow', m]);
    for (let i = 0; i < 100 && out !== 'one\ntwo\nthree\n'; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(out, 'one\ntwo\nthree\n');
    child.kill('SIGINT');
    assert.equal(await exited, 0);
  });

  it('SIGTERM stops get --follow as Ctrl-C does: exit 0, the message it printed acked (not delivered again)', async () => {
    const child = spawn(process.execPath, [CLI_CLIENT, '--port', String(suite.server.port), 'get', 'k-term', '--follow', '--wait', '2'], { env: cleanEnv() });
    let [out, err] = ['', ''];
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((r) => child.once('exit', (code, signal) => r([code, signal])));
    cli(['put', 'k-term', 'one']);
    await waitFor(() => out === 'one\n');
    child.kill('SIGTERM');
    assert.deepEqual(await exited, [0, null], err);
    const s = JSON.parse(cli(['--json', 'status', 'k-term']).stdout);
    assert.deepEqual([s.unread, s.leased], [0, 0]);
  });

  it('get --follow without --wait follows a server whose --max-wait is under its 20 s', async () => {
    const short = await startInProcess({ args: ['--max-wait', '3'] });
    try {
      await request(short.port, 'GET', '/?name=k-short&opt=put&data=waiting');
      const child = spawn(process.execPath, [CLI_CLIENT, '--port', String(short.port), 'get', 'k-short', '--follow'], { env: cleanEnv() });
      let [out, err] = ['', ''];
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (err += d));
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      for (let i = 0; i < 100 && out !== 'waiting\n'; i++) await sleep(50);
      await request(short.port, 'GET', '/?name=k-short&opt=put&data=later');
      for (let i = 0; i < 100 && out !== 'waiting\nlater\n'; i++) await sleep(50);
      assert.equal(out, 'waiting\nlater\n', err);
      child.kill('SIGINT');
      assert.equal(await exited, 0, err);
    } finally {
      await short.stop();
      cleanup(short.dir);
    }
  });

  it('get --follow waits out a server that restarts, and goes on', async () => {
    let own = await startServer();
    const child = spawn(process.execPath, [CLI_CLIENT, '--port', String(own.port), 'get', 'k-restart', '--follow', '--wait', '1'], { env: cleanEnv() });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      await own.stop();
      await waitFor(() => err.includes('no answer from the server'));
      own = await startServer({ dir: own.dir, port: own.port });
      await fetch(`http://127.0.0.1:${own.port}/?name=k-restart&opt=put&data=after`);
      for (let i = 0; i < 100 && out !== 'after\n'; i++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(out, 'after\n');
      assert.match(err, /^httpsqs-cli: no answer from the server: .*; trying again\n$/);
      child.kill('SIGINT');
      assert.equal(await exited, 0);
    } finally {
      child.kill('SIGKILL');
      await own.stop();
      cleanup(own.dir);
    }
  });

  it('Ctrl-C (or SIGTERM) during get --wait exits with 130, and the message that came later is still there', async () => {
    const waiting = async (n: number) =>
      new RegExp(`^httpsqs_long_polls_waiting ${n}$`, 'm').test((await request(suite.server.port, 'GET', '/metrics')).body.toString());
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      await waitFor(() => waiting(0)); // the poll of the one before is over
      const child = spawn(process.execPath, [CLI_CLIENT, '--port', String(suite.server.port), 'get', 'k-int', '--wait', '20'], { env: cleanEnv() });
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      // Interrupted once its long poll waits at the server (it handles the signal from before it asks).
      await waitFor(() => waiting(1));
      child.kill(signal);
      assert.equal(await exited, 130, signal);
      cli(['put', 'k-int', `later ${signal}`]);
      assert.equal(cli(['get', 'k-int']).stdout, `later ${signal}`);
    }
  });
});
