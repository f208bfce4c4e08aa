/**
 * The memory that large bodies and replies hold, all connections together (--max-buffered-bytes):
 * a body that does not fit is refused before it is read, a get waits for room before it takes a
 * message, and while there is such contention a transfer slower than the minimum rate is dropped.
 * In-process, on real ports, with a real LMDB directory.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { createHttpServer, type HttpServer } from '../src/server/http.js';
import { createMetrics } from '../src/server/metrics.js';
import { createHttpsqsServer, type HttpsqsServer } from '../src/server/server.js';
import { LmdbStore } from '../src/store/lmdb/store.js';
import type { Store } from '../src/store/store.js';
import { parseConfig } from '../src/cli/options.js';
import { TestClock } from './clock.js';
import { cleanup, neverReads, request, tempDir, waitFor as waitForMs } from './helpers.js';

const MiB = 2 ** 20;
/** These tests move tens of MiB through loopback: on a machine busy with other tests that can take
 * seconds, so their waits are long (they end as soon as what they wait for holds). */
const waitFor = (cond: () => boolean | Promise<boolean>, ms = 30_000) => waitForMs(cond, ms);

/** A raw connection that sends `head` (and what else it is told to) and keeps what comes back. */
function raw(port: number, head: string) {
  const chunks: Buffer[] = [];
  const c = {
    sock: net.connect(port, '127.0.0.1'),
    get got() {
      return Buffer.concat(chunks);
    },
    closed: false,
  };
  c.sock.on('data', (d) => chunks.push(d));
  c.sock.on('close', () => (c.closed = true));
  c.sock.on('error', () => {});
  c.sock.write(head, 'latin1');
  return c;
}

const status = async (port: number, name: string) => JSON.parse((await request(port, 'GET', `/?name=${name}&opt=status_json`)).body.toString());

describe('memory for large bodies and replies, all connections together', () => {
  let store: LmdbStore;
  let app: HttpsqsServer;
  let port: number;
  const dir = tempDir();
  /** Long polls' time: it moves only when a test moves it. */
  const clock = new TestClock();
  before(async () => {
    store = await LmdbStore.open({ path: dir });
    // Room for two bodies or replies of the largest size.
    app = createHttpsqsServer(store, {
      keepAliveTimeout: 60,
      maxMessageBytes: 16 * MiB,
      maxReplyBytes: 16 * MiB,
      maxBufferedBytes: 32 * MiB,
      log: () => {},
      clock,
    });
    await new Promise<void>((r) => app.server.listen(0, '127.0.0.1', r));
    port = (app.server.address() as net.AddressInfo).port;
  });
  after(async () => {
    await app.close();
    await store.close();
    cleanup(dir);
  });

  it('a body is counted as it arrives, and refused with 503 once it would not fit; small requests and bodies go on; room comes back', async (t) => {
    const head = (n: number) => `POST /?name=bodies&opt=put HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${n}\r\n\r\n`;
    // Headers alone cost nothing.
    const idle = raw(port, head(16 * MiB));
    await sleep(50);
    assert.equal(app.buffered().bytes, 0);
    idle.sock.destroy();
    // Two bodies of 16 MiB, all but their last byte sent: the limit is used up.
    const a = raw(port, `${head(16 * MiB)}${'a'.repeat(16 * MiB - 1)}`);
    const b = raw(port, `${head(16 * MiB)}${'b'.repeat(16 * MiB - 1)}`);
    t.after(() => (a.sock.destroy(), b.sock.destroy()));
    await waitFor(() => app.buffered().bytes === 32 * MiB);
    const c = raw(port, `${head(16 * MiB)}${'c'.repeat(MiB)}`);
    await waitFor(() => c.closed);
    const refused = c.got.toString('latin1');
    assert.match(refused, /^HTTP\/1\.1 503 Service Unavailable\r\n/);
    assert.match(refused, /--max-buffered-bytes/);
    assert.match(refused, /Connection: close/);
    assert.deepEqual(app.buffered(), { bytes: 32 * MiB, waiting: 0, refused: 1 });
    // Small puts, and bodies up to 64 KiB (never counted), are not held up.
    assert.equal((await request(port, 'GET', '/?name=bodies&opt=put&data=small')).body.toString(), 'HTTPSQS_PUT_OK');
    assert.equal((await request(port, 'POST', '/?name=bodies&opt=put', { body: Buffer.alloc(64 * 1024, 'x') })).body.toString(), 'HTTPSQS_PUT_OK');
    // One body finishes: room for another.
    a.sock.write('a');
    await waitFor(() => a.got.includes('HTTPSQS_PUT_OK'));
    const put = await request(port, 'POST', '/?name=bodies&opt=put', {
      headers: [['Content-Type', 'application/octet-stream']],
      body: Buffer.alloc(16 * MiB, 'd'),
      timeoutMs: 20_000,
    });
    assert.equal(put.body.toString(), 'HTTPSQS_PUT_OK');
    b.sock.destroy();
    a.sock.destroy();
    assert.equal((await status(port, 'bodies')).unread, 4);
  });

  it('while replies nobody reads hold the memory, a get waits before it takes a message, and takes it once there is room', async () => {
    for (const fill of 'abcd') {
      const put = await request(port, 'POST', '/?name=replies&opt=put', {
        headers: [['Content-Type', 'application/octet-stream']],
        body: Buffer.alloc(16 * MiB, fill),
        timeoutMs: 20_000,
      });
      assert.equal(put.body.toString(), 'HTTPSQS_PUT_OK');
    }
    // Two clients take a message each and read none of it: more than the kernel's buffers hold.
    const readers = [neverReads(port, '/?name=replies&opt=get'), neverReads(port, '/?name=replies&opt=get')];
    const others: net.Socket[] = [];
    try {
      await waitFor(async () => (await status(port, 'replies')).getpos === 2 && app.buffered().bytes === 32 * MiB);
      const third = raw(port, 'GET /?name=replies&opt=get HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      const viewed = raw(port, 'GET /?name=replies&opt=view&pos=4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      others.push(third.sock, viewed.sock);
      await waitFor(() => app.buffered().waiting === 2).catch(() => {});
      const seen = JSON.stringify(app.buffered());
      // Puts and status go on; the get took nothing yet, and the view read nothing.
      assert.equal((await request(port, 'GET', '/?name=replies&opt=put&data=small')).body.toString(), 'HTTPSQS_PUT_OK');
      assert.equal((await status(port, 'replies')).getpos, 2, seen);
      assert.equal(third.got.length, 0, seen);
      assert.equal(viewed.got.length, 0, seen);
      assert.equal(app.buffered().waiting, 2, seen);
      // One of them goes away: its memory is free, and the get takes the third message whole.
      readers[0]!.destroy();
      await waitFor(() => third.closed);
      const reply = third.got.toString('latin1');
      assert.match(reply, /^HTTP\/1\.1 200 OK\r\n[\s\S]*Pos: 3\r\n/);
      assert.equal(reply.length - reply.indexOf('\r\n\r\n') - 4, 16 * MiB);
      assert.ok(reply.endsWith('c'.repeat(100)));
      await waitFor(() => viewed.closed);
      assert.ok(viewed.got.toString('latin1').endsWith('d'.repeat(100)));
      readers[1]!.destroy();
      assert.equal((await status(port, 'replies')).getpos, 3);
      await waitFor(() => app.buffered().bytes === 0);
    } finally {
      for (const s of [...readers, ...others]) s.destroy();
    }
  });

  it('a get whose client gave up while it waited (closed, or reset) takes nothing, and leaves the queue', async (t) => {
    const readers = [neverReads(port, '/?name=replies&opt=view&pos=1'), neverReads(port, '/?name=replies&opt=view&pos=2')];
    t.after(() => {
      for (const r of readers) r.destroy();
    });
    const before = (await status(port, 'replies')).getpos;
    await waitFor(() => app.buffered().bytes === 32 * MiB);
    const closed = raw(port, 'GET /?name=replies&opt=get HTTP/1.1\r\nHost: x\r\n\r\n');
    const reset = raw(port, 'GET /?name=replies&opt=get HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitFor(() => app.buffered().waiting === 2);
    closed.sock.end(); // as a client's time limit does
    reset.sock.resetAndDestroy();
    await waitFor(() => app.buffered().waiting === 0);
    for (const r of readers) r.destroy();
    // A get after them is served: the ones that left took nothing.
    const next = await request(port, 'GET', '/?name=replies&opt=get', { timeoutMs: 20_000 });
    assert.equal(next.headers.pos, String(before + 1));
  });

  it('a get sent with a large body lets go of the body while it waits for room: gets sent so do not keep each other, and every get, out', async (t) => {
    await waitFor(() => app.buffered().bytes === 0);
    for (const data of ['one', 'two', 'three'])
      assert.equal((await request(port, 'GET', `/?name=bodied&opt=put&data=${data}`)).body.toString(), 'HTTPSQS_PUT_OK');
    // Two gets with 16 MiB bodies (a get never reads one), all but their last byte sent: the
    // bodies use the memory up. Before, each get then waited for room its own body held, and so
    // did every other get on the server, until the slow-transfer check dropped them a minute on.
    const head = `POST /?name=bodied&opt=get HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${16 * MiB}\r\nConnection: close\r\n\r\n`;
    const a = raw(port, `${head}${'a'.repeat(16 * MiB - 1)}`);
    const b = raw(port, `${head}${'b'.repeat(16 * MiB - 1)}`);
    t.after(() => (a.sock.destroy(), b.sock.destroy()));
    await waitFor(() => app.buffered().bytes === 32 * MiB);
    a.sock.write('a');
    b.sock.write('b');
    await waitFor(() => a.closed && b.closed);
    const bodies = [a, b].map((c) => c.got.toString('latin1').split('\r\n\r\n')[1]).sort();
    assert.deepEqual(bodies, ['one', 'two']);
    assert.equal((await request(port, 'GET', '/?name=bodied&opt=get')).body.toString(), 'three');
    await waitFor(() => app.buffered().bytes === 0 && app.buffered().waiting === 0);
  });

  it('a get waiting for room on a connection paused by what was pipelined behind it takes nothing: its client may reset unseen', async (t) => {
    await waitFor(() => app.buffered().bytes === 0);
    assert.equal((await request(port, 'GET', '/?name=paused&opt=put&data=precious')).body.toString(), 'HTTPSQS_PUT_OK');
    const readers = [neverReads(port, '/?name=replies&opt=view&pos=1'), neverReads(port, '/?name=replies&opt=view&pos=2')];
    t.after(() => {
      for (const r of readers) r.destroy();
    });
    await waitFor(() => app.buffered().bytes === 32 * MiB);
    const getter = raw(port, 'GET /?name=paused&opt=get HTTP/1.1\r\nHost: x\r\n\r\n');
    t.after(() => getter.sock.destroy());
    await waitFor(() => app.buffered().waiting === 1);
    // Far more pipelined than a request's headers may take: the server stops reading the
    // connection (once what it read past that fills the socket's buffer), and with that would not
    // see the reset that follows. Before, the get was let in once there
    // was room, took the message, and lost it writing to the reset connection.
    getter.sock.write('GET /?name=paused&opt=status HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(30_000));
    await waitFor(() => app.buffered().waiting === 0, 5000).catch(() => {});
    getter.sock.resetAndDestroy();
    for (const r of readers) r.destroy();
    await waitFor(() => app.buffered().bytes === 0);
    assert.equal((await request(port, 'GET', '/?name=paused&opt=get')).body.toString(), 'precious');
  });

  it('long polls let in after a wait that find nothing do not hold up the gets behind them', async (t) => {
    assert.equal((await request(port, 'GET', '/?name=small&opt=put&data=tiny')).body.toString(), 'HTTPSQS_PUT_OK');
    const readers = [neverReads(port, '/?name=replies&opt=view&pos=1'), neverReads(port, '/?name=replies&opt=view&pos=2')];
    t.after(() => {
      for (const r of readers) r.destroy();
    });
    await waitFor(() => app.buffered().bytes === 32 * MiB);
    const polls = Array.from({ length: 6 }, () => raw(port, 'GET /?name=nothing&opt=get&wait=20 HTTP/1.1\r\nHost: x\r\n\r\n'));
    const get = raw(port, 'GET /?name=small&opt=get HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    t.after(() => {
      for (const c of [...polls, get]) c.sock.destroy();
    });
    await waitFor(() => app.buffered().waiting === 7);
    for (const r of readers) r.destroy();
    const started = performance.now();
    await waitFor(() => get.closed);
    assert.match(get.got.toString('latin1'), /\r\n\r\ntiny$/);
    // Each long poll held its turn only for its one look at the queue, not for its 20 s.
    assert.ok(performance.now() - started < 5000);
    for (const p of polls) p.sock.destroy();
  });
  it('a long poll waiting for room answers when its wait is over, having taken nothing', async (t) => {
    assert.equal((await request(port, 'GET', '/?name=due&opt=put&data=kept')).body.toString(), 'HTTPSQS_PUT_OK');
    const readers = [neverReads(port, '/?name=replies&opt=view&pos=1'), neverReads(port, '/?name=replies&opt=view&pos=2')];
    t.after(() => {
      for (const r of readers) r.destroy();
    });
    await waitFor(() => app.buffered().bytes === 32 * MiB);
    const poll = raw(port, 'GET /?name=due&opt=get&wait=5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    const batch = raw(port, 'GET /?name=due&opt=mget&num=5&wait=5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    t.after(() => (poll.sock.destroy(), batch.sock.destroy()));
    await waitFor(() => app.buffered().waiting === 2);
    clock.advance(5000);
    await waitFor(() => poll.closed && batch.closed);
    assert.match(poll.got.toString('latin1'), /\r\n\r\nHTTPSQS_GET_END$/);
    assert.match(batch.got.toString('latin1'), /\r\n\r\n\[\]\n$/);
    assert.equal(app.buffered().waiting, 0);
    for (const r of readers) r.destroy();
    assert.equal((await request(port, 'GET', '/?name=due&opt=get')).body.toString(), 'kept');
  });

  it('gets that begin together count each message as it is taken: no more are taken than the memory allows', async (t) => {
    await waitFor(() => app.buffered().bytes === 0);
    for (let i = 0; i < 12; i++) {
      const put = await request(port, 'POST', '/?name=together&opt=put', {
        headers: [['Content-Type', 'application/octet-stream']],
        body: Buffer.alloc(4 * MiB, 97 + i),
        timeoutMs: 20_000,
      });
      assert.equal(put.body.toString(), 'HTTPSQS_PUT_OK');
    }
    // Twelve clients, connected first, then asking at once, and reading nothing: each take is
    // decided before the first of their commits. Before, each found the memory free, and all
    // twelve messages (48 MiB) were taken against a limit of 32.
    const socks = Array.from({ length: 12 }, () =>
      net
        .connect(port, '127.0.0.1')
        .on('error', () => {})
        .pause(),
    );
    t.after(() => {
      for (const s of socks) s.destroy();
    });
    await Promise.all(socks.map((s) => new Promise((r) => (s.connecting ? s.once('connect', r) : r(undefined)))));
    for (const s of socks) s.write('GET /?name=together&opt=get HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitFor(async () => (await status(port, 'together')).getpos + app.buffered().waiting === 12);
    const seen = `${JSON.stringify(app.buffered())} getpos ${(await status(port, 'together')).getpos}`;
    assert.equal((await status(port, 'together')).getpos, 8, seen);
    assert.equal(app.buffered().waiting, 4, seen);
    for (const s of socks) s.destroy();
    await waitFor(() => app.buffered().bytes === 0 && app.buffered().waiting === 0);
    // Those that waited took nothing with them.
    assert.equal((await status(port, 'together')).getpos, 8);
  });
});

describe('memory for replies, a take decided after its client left', () => {
  it('a get whose store call ends after its client closed the connection holds no memory', async () => {
    // The store's gets wait for the test (as Redis's answer may come after the client left);
    // the message is taken then, for nobody.
    const dir = tempDir();
    const lmdb = await LmdbStore.open({ path: dir });
    let go!: () => void;
    const held = new Promise<void>((r) => (go = r));
    let asked = false;
    const store = new Proxy(lmdb, {
      get(target, key) {
        const v = Reflect.get(target, key);
        if (key !== 'get') return typeof v === 'function' ? v.bind(target) : v;
        return async (...args: Parameters<LmdbStore['get']>) => {
          asked = true;
          await held;
          return lmdb.get(...args);
        };
      },
    });
    const app = createHttpsqsServer(store, { keepAliveTimeout: 60, maxMessageBytes: 4 * MiB, maxBufferedBytes: 32 * MiB, log: () => {} });
    await new Promise<void>((r) => app.server.listen(0, '127.0.0.1', r));
    const port = (app.server.address() as net.AddressInfo).port;
    try {
      await lmdb.put('left', Buffer.alloc(MiB, 97));
      const c = raw(port, 'GET /?name=left&opt=get HTTP/1.1\r\nHost: x\r\n\r\n');
      await waitFor(() => asked);
      c.sock.resetAndDestroy(); // a reset: the server's end is closed at once
      await waitFor(() => app.connections() === 0);
      go();
      await waitFor(async () => (await lmdb.status('left')).getpos === 1);
      await sleep(50);
      // Before, the take counted its megabyte on the closed connection, and it stayed counted.
      assert.equal(app.buffered().bytes, 0);
    } finally {
      await app.close();
      await lmdb.close();
      cleanup(dir);
    }
  });
});

describe('/metrics while the memory is short', () => {
  let store: LmdbStore;
  let app: HttpsqsServer | undefined;
  let metrics: ReturnType<typeof createMetrics>;
  let port: number;
  const dir = tempDir();
  before(async () => {
    store = await LmdbStore.open({ path: dir });
    metrics = createMetrics({
      store,
      connections: () => app?.connections() ?? 0,
      waiting: () => 0,
      buffered: () => app?.buffered() ?? { bytes: 0, waiting: 0, refused: 0 },
    });
    app = createHttpsqsServer(store, {
      keepAliveTimeout: 60,
      maxMessageBytes: 16 * MiB,
      maxReplyBytes: 16 * MiB,
      maxBufferedBytes: 32 * MiB,
      metrics,
      log: () => {},
    });
    await new Promise<void>((r) => app!.server.listen(0, '127.0.0.1', r));
    port = (app.server.address() as net.AddressInfo).port;
  });
  after(async () => {
    await app!.close();
    await store.close();
    cleanup(dir);
  });

  // Its text is megabytes with many queues (10,000 queues named with 256 bytes: 5.8 MB), and any
  // client with the queue password may ask for it and never read it.
  it('scrapes made together share one text; a large one asked for while replies fill the memory waits for room, as a get does; a small one never waits', async (t) => {
    const [a, b] = await Promise.all([metrics.render(), metrics.render()]);
    assert.equal(a, b, 'one Buffer');
    for (const fill of 'ab') {
      const put = await request(port, 'POST', '/?name=big&opt=put', {
        headers: [['Content-Type', 'application/octet-stream']],
        body: Buffer.alloc(16 * MiB, fill),
        timeoutMs: 20_000,
      });
      assert.equal(put.body.toString(), 'HTTPSQS_PUT_OK');
    }
    const readers = [neverReads(port, '/?name=big&opt=view&pos=1'), neverReads(port, '/?name=big&opt=view&pos=2')];
    const others: net.Socket[] = [];
    t.after(() => {
      for (const s of [...readers, ...others]) s.destroy();
    });
    await waitFor(() => app!.buffered().bytes === 32 * MiB);
    // A few queues: a small text, answered at once, so the gauges can be read while memory is short.
    const small = (await request(port, 'GET', '/metrics')).body.toString();
    assert.match(small, new RegExp(`\nhttpsqs_buffered_bytes ${32 * MiB}\n`));
    // 300 queues with long names: a text over 64 KiB, which counts as a get's reply does.
    for (let i = 0; i < 300; i++) await store.put(`queue-${i}-${'n'.repeat(200)}`, Buffer.from('m'));
    assert.ok((await request(port, 'GET', '/metrics')).body.length > 64 * 1024);
    const scrape = raw(port, 'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    others.push(scrape.sock);
    await waitFor(() => app!.buffered().waiting === 1);
    await sleep(200);
    assert.equal(scrape.got.length, 0, 'not made while there is no room');
    readers[0]!.destroy();
    await waitFor(() => scrape.closed);
    assert.match(scrape.got.toString('latin1'), /^HTTP\/1\.1 200 OK\r\n[\s\S]*\nhttpsqs_buffered_waiting 0\n/);
  });
});

describe('/metrics asked for again and again', () => {
  // A text of 10,000 queues holds the event loop for over 100 ms: clients asking again as soon as
  // they had an answer kept the server making texts back to back (a put took a second).
  it('makes a costly text at most a fifth of the time, however often it is asked for', async () => {
    const COST_MS = 40;
    const store = {
      async list() {
        const until = performance.now() + COST_MS;
        while (performance.now() < until); // the CPU that reading many queues takes
        return [];
      },
    } as unknown as Store;
    const metrics = createMetrics({ store, connections: () => 0, waiting: () => 0 });
    // Four clients, each asking again as soon as it has its answer; scrapes made together share
    // one text (one Buffer), so the distinct Buffers are the texts made.
    const texts = new Set<Buffer>();
    const end = performance.now() + 2000;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (performance.now() < end) texts.add(await metrics.render());
      }),
    );
    // Back to back, that is some 50 texts in 2 s; a fifth of the time, about 10. (The pause follows
    // the CPU a text took, and the loop above runs by the clock: on a loaded machine, where it gets
    // a share of a core, the pauses are shorter, up to 25 texts at a quarter of a core.)
    assert.ok(texts.size <= 30, `${texts.size} texts made in 2 s`);
  });
});

describe('the minimum rate of a large transfer while the memory is short', () => {
  let http: HttpServer;
  let port: number;
  const reply = Buffer.alloc(16 * MiB, 'r');
  before(async () => {
    http = createHttpServer(
      async (req) => {
        const room = req.room();
        if (room && !(await room)) return { status: 500, head: '', body: 'gone' };
        return { status: 200, head: '', body: req.target === '/small' ? 'small' : reply };
      },
      { maxHeaderBytes: 1024, maxBodyBytes: 100, keepAliveMs: 5000, headersMs: 5000, bodyMs: 300, maxBufferedBytes: 16 * MiB, minBytesPerSecond: 32 * MiB },
    );
    await new Promise<void>((r) => http.server.listen(0, '127.0.0.1', r));
    port = (http.server.address() as net.AddressInfo).port;
  });
  after(() => http.close());

  it('a client that reads its large reply slower than the rate is dropped once another waits, and the other is answered', async () => {
    // Reads 64 KiB every 50 ms: about 1.3 MiB/s, so never idle, and far below 32 MiB/s.
    const slow = { sock: net.connect(port, '127.0.0.1'), got: 0, closed: false };
    slow.sock.on('close', () => (slow.closed = true));
    slow.sock.on('error', () => {});
    slow.sock.pause();
    slow.sock.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
    const trickle = setInterval(() => (slow.got += slow.sock.read(64 * 1024)?.length ?? 0), 50);
    await sleep(1000);
    assert.equal(slow.closed, false, 'without contention, a slow reader keeps its reply');
    const other = raw(port, 'GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    await waitFor(() => slow.closed, 5000);
    clearInterval(trickle);
    assert.ok(slow.got > 0 && slow.got < 16 * MiB, `dropped before its whole reply (it read ${slow.got} bytes)`);
    await waitFor(() => other.closed, 5000);
    assert.match(other.got.toString('latin1', 0, 20), /^HTTP\/1\.1 200 OK/);
    assert.equal(other.got.length - other.got.indexOf('\r\n\r\n') - 4, 16 * MiB);
  });
});

describe('--max-buffered-bytes', () => {
  it('is at least the largest body or batch reply', () => {
    assert.throws(
      () => parseConfig(['--max-message-bytes', '1000', '--max-reply-bytes', '2000', '--max-buffered-bytes', '1999'], {}),
      /--max-buffered-bytes: expected a whole number from 2000 /,
    );
    assert.equal(parseConfig(['--max-message-bytes', '1000', '--max-reply-bytes', '2000'], {}).maxBufferedBytes, 16_000);
  });
});
