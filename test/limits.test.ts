/**
 * Memory and time a client controls: a batch reply never consumes what it cannot deliver and never
 * sits whole in memory; a body costs memory in proportion to its size, however it is cut; many
 * leases and many leased long polls cost O(log n) and O(1) a take; under --workers, a queue's
 * leases are not read again for every operation. Memory is read from the server's own process
 * (/proc), so these run against a real server process.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it, type TestContext } from 'node:test';
import { createHttpsqsServer } from '../src/server/server.js';
import { LmdbStore } from '../src/store/lmdb/store.js';
import type { Store } from '../src/store/store.js';
import { TestClock } from './clock.js';
import { cleanup, neverReads, request, startServer, tempDir, waitFor, type RunningServer } from './helpers.js';

const MiB = 2 ** 20;

/** Resident memory of a process, in bytes. */
function rss(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
}

/** PUTs `body` as octet-stream (stored exactly). */
const putBytes = (port: number, name: string, body: Buffer) =>
  request(port, 'POST', `/?name=${name}&opt=put`, { headers: [['Content-Type', 'application/octet-stream']], body });

describe('batch replies', () => {
  let server: RunningServer;
  before(async () => (server = await startServer()));
  after(async () => {
    await server.stop();
    cleanup(server.dir);
  });

  it('an mget whose JSON would be huge (3 x 32 MiB of NUL bytes) delivers what fits the reply limit and leaves the rest unread', async () => {
    for (let i = 0; i < 3; i++) assert.equal((await putBytes(server.port, 'nul', Buffer.alloc(32 * MiB))).body.toString(), 'HTTPSQS_PUT_OK');
    // 192 MiB take about 2 s on their own here, longer with the other test files running.
    const r = await request(server.port, 'GET', '/?name=nul&opt=mget&num=3', { timeoutMs: 30_000 });
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'application/json');
    // One message of 32 MiB, each NUL byte as \u0000: 192 MiB of JSON, streamed with its length.
    const head = '[{"pos":1,"deliveries":1,"data":"';
    assert.equal(r.body.length, head.length + 32 * MiB * 6 + '"}]\n'.length);
    assert.equal(r.body.toString('latin1', 0, head.length + 12), `${head}\\u0000\\u0000`);
    assert.equal(r.body.toString('latin1', r.body.length - 10), '\\u0000"}]\n');
    const status = JSON.parse((await request(server.port, 'GET', '/?name=nul&opt=status_json')).body.toString());
    assert.equal(status.unread, 2, 'what did not fit stays unread');
    const b64 = JSON.parse((await request(server.port, 'GET', '/?name=nul&opt=mget&num=3&encoding=base64&lease=60')).body.toString());
    assert.deepEqual(
      b64.map((m: { pos: number }) => m.pos),
      [2],
    );
    assert.equal(Buffer.from(b64[0].data, 'base64').length, 32 * MiB);
  });

  it('clients that never read their view&num replies hold the messages of one reply each, not copies of the whole', async (t: TestContext) => {
    const worker = server.workers()[0]!;
    for (let i = 0; i < 3; i++) await putBytes(server.port, 'big', Buffer.alloc(16 * MiB, i + 1));
    const before = rss(worker);
    const sockets = Array.from({ length: 10 }, () => neverReads(server.port, '/?name=big&opt=view&pos=1&num=11&encoding=base64'));
    let grown: number;
    try {
      // Each reply is the two messages that fit 32 MiB; the server writes until the sockets are
      // full. A request sent after them is answered once they all have been handled (which takes
      // seconds on a loaded machine).
      await sleep(200);
      await request(server.port, 'GET', '/?name=big&opt=status', { timeoutMs: 60_000 });
      await sleep(1000);
      grown = rss(worker) - before;
      t.diagnostic(`memory grew by ${Math.round(grown / MiB)} MiB`);
    } finally {
      // Also when it fails: replies left pending would count in the next test's memory.
      for (const s of sockets) s.destroy();
    }
    // At most the reply limit of messages each (32 MiB), a piece and some garbage; built whole,
    // each reply held its 48 MiB of messages, then 64 MiB of base64 until it was read.
    assert.ok(grown < 10 * 48 * MiB, `memory grew by ${Math.round(grown / MiB)} MiB for 10 clients`);
    assert.equal((await request(server.port, 'GET', '/?name=big&opt=view&pos=3')).body.length, 16 * MiB, 'the server goes on');
  });

  it('40 clients that never read their view of a 32 MiB message hold the memory allowed (--max-buffered-bytes), not 40 messages', async (t: TestContext) => {
    const server = await startServer({ args: ['--max-buffered-bytes', String(128 * MiB)] });
    t.after(async () => {
      await server.stop();
      cleanup(server.dir);
    });
    const worker = server.workers()[0]!;
    await putBytes(server.port, 'huge', Buffer.alloc(32 * MiB, 'h'));
    const before = rss(worker);
    const sockets = Array.from({ length: 40 }, () => neverReads(server.port, '/?name=huge&opt=view&pos=1'));
    let grown: number;
    try {
      await sleep(200);
      // Puts and status are not held up meanwhile.
      assert.equal((await request(server.port, 'GET', '/?name=huge&opt=put&data=small', { timeoutMs: 30_000 })).body.toString(), 'HTTPSQS_PUT_OK');
      // Four replies fit (views that began together may each bring theirs); the other views wait,
      // and /metrics says so.
      const gauge = (text: string, name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1]);
      let held = 0;
      await waitFor(async () => {
        const text = (await request(server.port, 'GET', '/metrics')).body.toString();
        held = gauge(text, 'httpsqs_buffered_bytes') / (32 * MiB);
        return held + gauge(text, 'httpsqs_buffered_waiting') === 40;
      }, 30_000);
      assert.ok(held >= 4 && held <= 6, `${held} replies of 32 MiB held`);
      await sleep(1000);
      grown = rss(worker) - before;
      t.diagnostic(`memory grew by ${Math.round(grown / MiB)} MiB`);
    } finally {
      for (const s of sockets) s.destroy();
    }
    // Four replies of 32 MiB fit 128 MiB; without the limit, the 40 held 1.3 GiB.
    assert.ok(grown < 320 * MiB, `memory grew by ${Math.round(grown / MiB)} MiB for 40 clients`);
    assert.equal((await request(server.port, 'GET', '/?name=huge&opt=view&pos=1', { timeoutMs: 30_000 })).body.length, 32 * MiB, 'the server goes on');
  });

  it('a body in 1-byte chunks costs memory in proportion to its size', async (t: TestContext) => {
    // A server of its own: what the tests above left behind is not counted.
    const server = await startServer();
    t.after(async () => {
      await server.stop();
      cleanup(server.dir);
    });
    const worker = server.workers()[0]!;
    const size = 2 * MiB;
    const before = rss(worker);
    const sock = net.connect(server.port, '127.0.0.1');
    const reply = new Promise<string>((resolve) => {
      let got = '';
      sock.on('data', (d) => (got += d.toString('latin1')));
      sock.on('close', () => resolve(got));
    });
    sock.write(
      'POST /?name=chunks&opt=put HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n',
    );
    const piece = Buffer.from('1\r\nz\r\n'.repeat(64 * 1024));
    for (let sent = 0; sent < size; sent += 64 * 1024) if (!sock.write(piece)) await new Promise((r) => sock.once('drain', r));
    sock.write('0\r\n\r\n');
    assert.match(await reply, /HTTPSQS_PUT_OK$/);
    const grown = rss(worker) - before;
    t.diagnostic(`memory grew by ${Math.round(grown / MiB)} MiB`);
    // A Buffer object a chunk cost about 140 bytes a body byte (280 MiB here).
    assert.ok(grown < 64 * MiB, `memory grew by ${Math.round(grown / MiB)} MiB for a ${size / MiB} MiB body`);
    const stored = await request(server.port, 'GET', '/?name=chunks&opt=get');
    assert.ok(stored.body.equals(Buffer.alloc(size, 'z')));
  });
});

describe('many leases', () => {
  it('100,000 expired leases: taking them back 1,000 at a time costs O(log n) a take, not a scan', async (t: TestContext) => {
    const dir = tempDir();
    const clock = new TestClock();
    const s = await LmdbStore.open({ path: dir, now: clock.now });
    try {
      const all = Array.from({ length: 100_000 }, (_, i) => Buffer.from(String(i)));
      for (let i = 0; i < all.length; i += 1000) await s.putMany('l', all.slice(i, i + 1000));
      // Leased so that all of them end at one moment.
      for (let i = 0; i < all.length; i += 1000) assert.equal((await s.getMany('l', 1000, 3000)).length, 1000);
      assert.equal((await s.status('l')).leased, 100_000);
      clock.advance(3001);
      const started = performance.now();
      let taken = 0;
      for (let i = 0; i < 20; i++) taken += (await s.getMany('l', 1000, 60_000)).length;
      const ms = performance.now() - started;
      t.diagnostic(`20 takes of 1,000 took ${Math.round(ms)} ms`);
      assert.equal(taken, 20_000);
      // A scan of every lease per take is 2e9 steps here: minutes. A heap takes milliseconds (under
      // a second on a loaded machine); the bound only has to tell the two apart.
      assert.ok(ms < 30_000, `20 takes of 1,000 took ${Math.round(ms)} ms`);
    } finally {
      await s.close();
      cleanup(dir);
    }
  });

  it('shared (--workers), 50,000 delayed messages waiting: a put, a get and a status do not read them all', async (t: TestContext) => {
    const dir = tempDir();
    const s = await LmdbStore.open({ path: dir, shared: true });
    try {
      for (let i = 0; i < 50_000; i += 1000)
        await s.putMany(
          'w',
          Array.from({ length: 1000 }, () => Buffer.from('later')),
          3_600_000,
        );
      const started = performance.now();
      for (let i = 0; i < 50; i++) {
        await s.put('w', Buffer.from('now'));
        assert.equal((await s.get('w'))?.message.toString(), 'now');
        assert.equal((await s.status('w')).delayed, 50_000);
      }
      const ms = performance.now() - started;
      t.diagnostic(`50 puts, gets and statuses took ${Math.round(ms)} ms`);
      // Reading every lease for each took about 30 s here; a commit each, about 0.5 s.
      assert.ok(ms < 10_000, `50 puts, gets and statuses took ${Math.round(ms)} ms`);
    } finally {
      await s.close();
      cleanup(dir);
    }
  });

  it('each leased take wakes no more long polls than it makes messages available', async () => {
    const dir = tempDir();
    const lmdb = await LmdbStore.open({ path: dir });
    // Counts the store's gets: each is a waiter looking for a message.
    let looks = 0;
    const store: Store = Object.create(lmdb);
    store.getMany = (...a) => (looks++, lmdb.getMany(...a));
    store.get = (...a) => (looks++, lmdb.get(...a));
    const app = createHttpsqsServer(store, { keepAliveTimeout: 60, maxMessageBytes: MiB, maxWait: 60 });
    await new Promise<void>((r) => app.server.listen(0, '127.0.0.1', r));
    const port = (app.server.address() as net.AddressInfo).port;
    const N = 300;
    try {
      // They wait up to 30 s: while the puts below are committed one by one (seconds on a loaded
      // machine), not the 5 s a request gets by default.
      const polls = Array.from({ length: N }, () => request(port, 'GET', '/?name=lp&opt=get&wait=30&lease=60', { timeoutMs: 60_000 }));
      await waitFor(() => app.waiters.size === N, 30_000);
      looks = 0;
      for (let i = 0; i < N; i++) await request(port, 'GET', `/?name=lp&opt=put&data=m${i}`);
      const got = await Promise.all(polls);
      assert.equal(new Set(got.map((r) => r.body.toString())).size, N, 'each poll got a message of its own');
      // Waking every waiter on each leased take made N * N / 2 looks (45,000 here).
      assert.ok(looks <= 3 * N, `${looks} looks for ${N} messages`);
    } finally {
      await app.close();
      await lmdb.close();
      cleanup(dir);
    }
  });
});
