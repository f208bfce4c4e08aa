/** The HTTP/1.x layer on its own, on a real port, with short limits. */
import assert from 'node:assert/strict';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { createHttpServer, type Handler, type HttpOptions, type HttpServer } from '../src/server/http.js';
import { parseResponse, rawExchange, unreadOn, waitFor } from './helpers.js';

describe('HTTP layer', () => {
  let http: HttpServer;
  let port: number;
  let bigReplies = 0;
  let release = () => {};
  let held = false;
  const BIG = 'b'.repeat(16 * 1024);
  /** The signals of the long polls (`/wait`), which answer when their signal aborts. */
  const waits: AbortSignal[] = [];
  before(async () => {
    // Echoes what it understood: method, target and body length, and the body itself.
    http = createHttpServer(
      (req) => {
        if (req.target === '/big') return (bigReplies++, { status: 200, head: '', body: BIG });
        if (req.target === '/held') {
          held = true;
          return new Promise((answer) => (release = () => answer({ status: 200, head: '', body: 'held' })));
        }
        if (req.target === '/wait') {
          const signal = req.gone();
          waits.push(signal);
          const waited = { status: 200, head: '', body: 'waited' };
          return signal.aborted ? waited : new Promise((answer) => signal.addEventListener('abort', () => answer(waited)));
        }
        if (/^\/\d{3}$/.test(req.target)) return { status: Number(req.target.slice(1)), head: '', body: 'status' };
        return { status: 200, head: 'Content-Type: text/plain\r\n', body: `${req.method} ${req.target} ${req.body.length}:${req.body.toString('latin1')}` };
      },
      { maxHeaderBytes: 1024, maxBodyBytes: 100, keepAliveMs: 400, headersMs: 300, bodyMs: 300 },
    );
    await new Promise<void>((r) => http.server.listen(0, '127.0.0.1', r));
    port = (http.server.address() as net.AddressInfo).port;
  });
  after(() => http.close());

  /** A connection of its own: the server's side of it, and what it has received so far. */
  const connect = () => {
    const c = { sock: undefined as unknown as net.Socket, server: undefined as net.Socket | undefined, replies: '' };
    http.server.once('connection', (s: net.Socket) => (c.server = s));
    c.sock = net.connect(port, '127.0.0.1');
    c.sock.on('data', (d) => (c.replies += d.toString('latin1')));
    return c;
  };

  const responses = (raw: Buffer) => {
    const out = [];
    for (let p = parseResponse(raw); p; p = parseResponse(p.rest)) out.push(p.res);
    return out;
  };

  it('pipelined requests with and without bodies are answered in order', async () => {
    const raw = await rawExchange(
      port,
      'POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc' +
        'GET /b HTTP/1.1\r\n\r\n\r\n' + // a stray CRLF between requests is ignored
        'PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;ext=1\r\nxy\r\n1\r\nz\r\n0\r\nTrailer: t\r\n\r\n' +
        'GET /d HTTP/1.1\r\nConnection: close\r\n\r\n',
    );
    assert.deepEqual(
      responses(raw).map((r) => r.body.toString()),
      ['POST /a 3:abc', 'GET /b 0:', 'PUT /c 3:xyz', 'GET /d 0:'],
    );
  });

  it('refuses request smuggling shapes and unsupported codings, and closes', async () => {
    const cases: [string, number][] = [
      ['POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n', 400],
      ['POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd', 400],
      ['POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n', 400],
      ['POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n', 501],
      ['POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 400],
      ['GET / HTTP/1.1\r\n Folded: header\r\n\r\n', 400],
      ['get / HTTP/1.1\r\n\r\n', 400],
      [`GET / HTTP/1.1\r\nX: ${'a'.repeat(2000)}\r\n\r\n`, 431],
      ['POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n', 413],
      // Control bytes in a value (RFC 9110 5.5): NUL, and others a front end may cut at.
      ['GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n', 400],
      ['POST / HTTP/1.1\r\nContent-Type: text/plain\x00\r\nContent-Length: 1\r\n\r\nz', 400],
      ['GET / HTTP/1.1\r\nX: a\x1bb\r\n\r\n', 400],
      ['GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n', 400],
    ];
    for (const [req, status] of cases) {
      const res = responses(await rawExchange(port, req));
      assert.equal(res.length, 1, JSON.stringify(req));
      assert.equal(res[0]!.status, status, JSON.stringify(req));
      assert.equal(res[0]!.headers.connection, 'close');
    }
  });

  it('a second Transfer-Encoding line (chunked, then identity) is refused: a proxy could read the other', async () => {
    const res = responses(await rawExchange(port, 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n'));
    assert.deepEqual(
      res.map((r) => [r.status, r.headers.connection]),
      [[400, 'close']],
    );
  });

  it('Content-Length: 00 is an empty body, answered at once', async () => {
    const res = responses(await rawExchange(port, 'POST /zero HTTP/1.1\r\nContent-Length: 00\r\nConnection: close\r\n\r\n', 2000));
    assert.deepEqual(
      res.map((r) => [r.status, r.body.toString()]),
      [[200, 'POST /zero 0:']],
    );
  });

  it('lines ending in a bare LF get 400 at once, not when the header time is up', async () => {
    const chunked = 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n';
    for (const req of [
      'GET / HTTP/1.1\n\n',
      'GET / HTTP/1.1\nHost: x\n',
      'GET / HTTP/1.1\r\nHost: x\n\n',
      // In a trailer too: a front end that ends the trailers there would see a second request.
      `${chunked}X: y\nGET /smuggled HTTP/1.1\r\n\r\n`,
      `${chunked}\x00\x01 not a header field\r\n\r\n`,
    ]) {
      // Waiting for the header time (300 ms) would answer 408 instead: the status tells the two
      // apart, where a clock would also count a moment this process was starved of CPU.
      const res = responses(await rawExchange(port, req, 2000));
      assert.deepEqual(
        res.map((r) => r.status),
        [400],
        JSON.stringify(req),
      );
    }
  });

  it('a chunked body over the limit is refused while it arrives', async () => {
    const res = responses(await rawExchange(port, `POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n${'a'.repeat(64)}\r\n40\r\n`));
    assert.equal(res[0]!.status, 413);
  });

  it('slow headers, a stalled body and an idle keep-alive connection are all closed in time', async () => {
    // Slowloris: one header byte at a time, never finishing.
    const slow = net.connect(port, '127.0.0.1');
    let got = '';
    slow.on('data', (d) => (got += d));
    const closed = new Promise((r) => slow.once('close', r));
    for (const ch of 'GET / HTTP/1.1\r\nX-Slow: ') {
      slow.write(ch);
      await sleep(30);
    }
    await Promise.race([closed, sleep(2000).then(() => assert.fail('slow headers not cut'))]);
    assert.match(got, /^HTTP\/1\.1 408 /);

    const stalled = await rawExchange(port, 'POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc', 2000);
    assert.match(stalled.toString(), /^HTTP\/1\.1 408 /);

    const idle = net.connect(port, '127.0.0.1');
    idle.on('data', () => {});
    const start = Date.now();
    idle.write('GET / HTTP/1.1\r\n\r\n');
    await new Promise((r) => idle.once('close', r));
    assert.ok(Date.now() - start >= 350, `idle connection closed after ${Date.now() - start} ms`);
  });

  it('bytes that cannot begin a request (TLS, SSH) get 400 at once, not when the header time is up', async () => {
    for (const start of [Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]), Buffer.from('SSH-2.0-OpenSSH_9.2\r\n'), Buffer.from('GET /x HTTP/1.1')]) {
      const raw = await rawExchange(port, start, 2000);
      const reply = raw.toString('latin1');
      if (start.toString().startsWith('GET')) assert.match(reply, /^HTTP\/1\.1 408 /, 'a request line still arriving waits for the rest');
      else assert.match(reply, /^HTTP\/1\.1 400 Bad Request\r\n/, JSON.stringify(start.toString('latin1')));
    }
  });

  it('every status the server sends has its own reason phrase', async () => {
    for (const [status, reason] of [
      [401, 'Unauthorized'],
      [405, 'Method Not Allowed'],
      [500, 'Internal Server Error'],
      [503, 'Service Unavailable'],
    ] as const) {
      const raw = await rawExchange(port, `GET /${status} HTTP/1.1\r\nConnection: close\r\n\r\n`);
      assert.equal(raw.toString('latin1').split('\r\n')[0], `HTTP/1.1 ${status} ${reason}`);
    }
  });

  it('a request target may hold any byte but controls and the space (raw UTF-8 as curl sends it)', async () => {
    for (const target of ['/café', '/voilà', '/Россия', '/队列']) {
      const raw = Buffer.concat([Buffer.from('GET '), Buffer.from(target), Buffer.from(' HTTP/1.1\r\nConnection: close\r\n\r\n')]);
      const res = responses(await rawExchange(port, raw));
      assert.equal(res[0]?.status, 200, target);
      assert.equal(Buffer.from(res[0]!.body.toString('latin1').split(' ')[1]!, 'latin1').toString(), target);
    }
  });

  it('a long poll behind a request in progress answers at once when the client has already half-closed', async () => {
    const c = connect();
    held = false;
    c.sock.write('GET /held HTTP/1.1\r\n\r\nGET /wait HTTP/1.1\r\n\r\n');
    await waitFor(() => held);
    const ended = new Promise((r) => c.server!.once('end', r));
    c.sock.end(); // all it sends; it still reads what it is owed
    await ended;
    release();
    // The long poll must not wait (and take a message) for a client that has sent all it will.
    await waitFor(() => c.replies.includes('waited'), 2000);
    c.sock.destroy();
  });

  it('a long poll answers at once when the client sends more than the header limit behind it (it is no longer watched)', async () => {
    const c = connect();
    const before = waits.length;
    c.sock.write('GET /wait HTTP/1.1\r\n\r\n');
    await waitFor(() => waits.length > before);
    assert.equal(waits.at(-1)!.aborted, false);
    // Over 1 KiB of pipelined requests: the server stops reading, and so would not see the client leave.
    c.sock.write('GET /next HTTP/1.1\r\n\r\n'.repeat(100));
    await waitFor(() => c.replies.includes('waited'), 2000);
    await waitFor(() => c.replies.includes('GET /next 0:'));
    c.sock.destroy();
  });

  it('HTTP/1.0 closes unless keep-alive is asked for', async () => {
    const res = responses(await rawExchange(port, 'GET /x HTTP/1.0\r\n\r\n'));
    assert.equal(res[0]!.headers.connection, 'close');
    const two = responses(await rawExchange(port, 'GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n'));
    assert.deepEqual(
      two.map((r) => r.headers.connection),
      ['keep-alive', 'close'],
    );
  });

  it('a header value may hold tabs and bytes over 0x7f', async () => {
    const res = responses(await rawExchange(port, 'GET /t HTTP/1.1\r\nX: a\tb \xe9\r\nConnection: close\r\n\r\n'));
    assert.deepEqual(
      res.map((r) => r.status),
      [200],
    );
  });

  it('HTTP/1.0 with Transfer-Encoding: chunked is answered, then closed, keep-alive or not (RFC 9112 6.1): a proxy of that version reads the chunks as a request', async () => {
    const res = responses(
      await rawExchange(
        port,
        'POST /c HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.0\r\n\r\n',
      ),
    );
    assert.deepEqual(
      res.map((r) => [r.status, r.body.toString(), r.headers.connection]),
      [[200, 'POST /c 3:abc', 'close']],
    );
  });

  it('Connection is a list of options: a close among them closes, a keep-alive among them keeps an HTTP/1.0 one', async () => {
    const closed = responses(await rawExchange(port, 'GET /1 HTTP/1.1\r\nConnection: TE, close\r\n\r\nGET /2 HTTP/1.1\r\n\r\n'));
    assert.deepEqual(
      closed.map((r) => [r.body.toString(), r.headers.connection]),
      [['GET /1 0:', 'close']],
    );
    const kept = responses(await rawExchange(port, 'GET /1 HTTP/1.0\r\nConnection: TE ,Keep-Alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n'));
    assert.deepEqual(
      kept.map((r) => r.headers.connection),
      ['keep-alive', 'close'],
    );
  });

  it('Expect: 100-continue gets a 100 over HTTP/1.1 only (an HTTP/1.0 client may take it for the answer)', async () => {
    const ask = (version: string) => rawExchange(port, `POST /e HTTP/${version}\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab`);
    assert.match((await ask('1.1')).toString('latin1'), /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
    assert.match((await ask('1.0')).toString('latin1'), /^HTTP\/1\.1 200 OK\r\n/);
  });

  it('a trailer line over 4 KiB is refused, even when it arrives whole', async () => {
    const req = `POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\nX: ${'a'.repeat(5000)}\r\n\r\n`;
    assert.deepEqual(
      responses(await rawExchange(port, req)).map((r) => r.status),
      [400],
    );
  });

  it('a head, chunk-size line or trailer line at its limit is read however its last bytes arrive', async () => {
    // Whole, each of these is within its limit (a head of 1024 bytes before its CRLFCRLF, a line of
    // 4096 bytes before its CRLF); cut before the end of its terminator, the bytes received so far
    // must not be taken for one over the limit.
    const start = 'GET /edge HTTP/1.1\r\nX-Pad: ';
    const head = `${start}${'p'.repeat(1024 - start.length)}\r\n\r\n`;
    const chunked = 'POST /edge HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n';
    const sizeLine = `${chunked}1;${'e'.repeat(4094)}\r\nz\r\n0\r\n\r\n`;
    const trailer = `${chunked}1\r\nz\r\n0\r\nX: ${'t'.repeat(4093)}\r\n\r\n`;
    const cases: [string, number[]][] = [
      [head, [head.length - 3, head.length - 2, head.length - 1]],
      [sizeLine, [chunked.length + 4097]],
      [trailer, [trailer.length - 3]],
    ];
    for (const [req, cuts] of cases) {
      assert.deepEqual(
        responses(await rawExchange(port, req)).map((r) => r.status),
        [200],
      );
      for (const cut of cuts) {
        const c = connect();
        c.sock.write(req.slice(0, cut), 'latin1');
        await waitFor(() => c.server?.bytesRead === cut || c.replies !== '');
        c.sock.end(req.slice(cut), 'latin1');
        await waitFor(() => c.sock.destroyed || c.replies.includes('\r\n\r\nGET /edge') || c.replies.includes('\r\n\r\nPOST /edge'));
        assert.equal(responses(Buffer.from(c.replies, 'latin1'))[0]?.status, 200, `cut at ${cut} of ${req.length}: ${c.replies.slice(0, 60)}`);
        c.sock.destroy();
      }
    }
  });

  it('while a request is in progress, what the client sends next is read only up to the header limit', async () => {
    const c = connect();
    held = false;
    c.sock.write('GET /held HTTP/1.1\r\n\r\n');
    await waitFor(() => held);
    // 4 MB of pipelined requests while /held is unanswered: the server stops reading, and the
    // kernel keeps the rest.
    c.sock.write(Buffer.from('GET /next HTTP/1.1\r\n\r\n'.repeat(200_000)));
    await waitFor(() => c.server?.isPaused() === true && unreadOn(port) > 0);
    assert.ok(c.server!.bytesRead < 1024 + 128 * 1024, `the server read ${c.server!.bytesRead} bytes ahead of the request in progress`);
    release();
    await waitFor(() => c.replies.includes('GET /next 0:'));
    assert.ok(c.replies.startsWith('HTTP/1.1 200 OK'));
    assert.ok(c.replies.includes('held'));
    c.sock.destroy();
  });

  it('a client that pipelines but never reads does not make the server buffer without bound', async () => {
    const sock = net.connect(port, '127.0.0.1');
    sock.pause(); // never read
    // 10,000 requests whose replies add up to 160 MB: once the socket buffers are full the server
    // must stop taking requests instead of queueing replies in memory.
    sock.write(Buffer.from('GET /big HTTP/1.1\r\n\r\n'.repeat(10_000)));
    await sleep(1000);
    assert.ok(bigReplies < 5000, `the server answered ${bigReplies} requests nobody reads the replies of`);
    // Its replies stopped going out: the server dropped it once the body limit (300 ms) had passed.
    assert.equal(http.connections(), 0);
    sock.destroy();
    // The server survives and still answers others.
    const res = responses(await rawExchange(port, 'GET /after HTTP/1.1\r\nConnection: close\r\n\r\n'));
    assert.equal(res[0]!.body.toString(), 'GET /after 0:');
  });
});

/** The HTTP layer on a port of its own: small size limits, 10 s time limits unless `limits` says. */
async function serve(handler: Handler, limits: Partial<HttpOptions>): Promise<{ http: HttpServer; port: number }> {
  const http = createHttpServer(handler, { maxHeaderBytes: 1024, maxBodyBytes: 100, keepAliveMs: 10_000, headersMs: 10_000, bodyMs: 10_000, ...limits });
  await new Promise<void>((r) => http.server.listen(0, '127.0.0.1', r));
  return { http, port: (http.server.address() as net.AddressInfo).port };
}

it('a header value with a long run of spaces inside is read in time linear in its length', async () => {
  // A regular expression that backtracked over those spaces took seconds for one such line (its time
  // grew with the square of their number), and every other connection waited meanwhile.
  const http = createHttpServer((req) => ({ status: 200, head: '', body: JSON.stringify(req.headers.x) }), {
    maxHeaderBytes: 512 * 1024,
    maxBodyBytes: 100,
    keepAliveMs: 5000,
    headersMs: 5000,
    bodyMs: 5000,
  });
  try {
    await new Promise<void>((r) => http.server.listen(0, '127.0.0.1', r));
    const value = `a${' '.repeat(200_000)}\tb`;
    const raw = await rawExchange((http.server.address() as net.AddressInfo).port, `GET / HTTP/1.1\r\nX: \t${value} \t \r\nConnection: close\r\n\r\n`, 3000);
    const res = parseResponse(raw)!.res;
    assert.equal(JSON.parse(res.body.toString()), value);
  } finally {
    await http.close();
  }
});

/** A server's limits for the tests of a stop: long time limits, a short grace time. */
const STOPPING = { maxHeaderBytes: 1024, maxBodyBytes: 100, keepAliveMs: 5000, headersMs: 5000, bodyMs: 5000, stopGraceMs: 200 };

it('a stop lets a reply still being read arrive whole (its messages are taken); what else is busy goes after the grace time', async () => {
  const BODY = Buffer.alloc(8 * 2 ** 20, 'r');
  const http = createHttpServer((req) => (req.target === '/big' ? { status: 200, head: '', body: BODY } : new Promise<never>(() => {})), STOPPING);
  await new Promise<void>((r) => http.server.listen(0, '127.0.0.1', r));
  const port = (http.server.address() as net.AddressInfo).port;
  // A reader of about 6 MB/s: the 8 MiB reply takes over a second, well past the grace time.
  const sock = net.connect(port, '127.0.0.1');
  const got: Buffer[] = [];
  sock.on('data', (d) => {
    got.push(d);
    sock.pause();
    setTimeout(() => sock.resume(), 10);
  });
  const ended = new Promise<void>((r) => sock.once('close', () => r()));
  sock.write('GET /big HTTP/1.1\r\n\r\n');
  // And one whose handler never answers: it goes once the grace time is over.
  const stuck = net.connect(port, '127.0.0.1');
  stuck.on('error', () => {});
  const stuckEnded = new Promise<void>((r) => stuck.once('close', () => r()));
  stuck.write('GET /never HTTP/1.1\r\n\r\n');
  await waitFor(() => got.length > 0);
  await http.close();
  await Promise.all([ended, stuckEnded]);
  const res = parseResponse(Buffer.concat(got));
  assert.ok(res, 'the reply was cut short');
  assert.equal(res.res.body.length, BODY.length);
});

it('a stop lets a small reply still in the socket buffer, on a connection otherwise idle, arrive whole', async () => {
  // Smaller than the socket's high-water mark: written at once, so the connection looks idle
  // while the reply waits in the socket for a client that is not reading (its buffers are full).
  const REPLY = Buffer.alloc(10_000, 'm');
  let served = 0;
  const http = createHttpServer(() => (served++, { status: 200, head: '', body: REPLY }), STOPPING);
  let inside: net.Socket | undefined;
  http.server.on('connection', (s: net.Socket) => (inside = s));
  await new Promise<void>((r) => http.server.listen(0, '127.0.0.1', r));
  const port = (http.server.address() as net.AddressInfo).port;
  const sock = net.connect(port, '127.0.0.1');
  sock.on('error', () => {});
  await new Promise((r) => sock.once('connect', r));
  sock.pause();
  // One request at a time, each answered, until a reply stays in the server's socket.
  const until = Date.now() + 20_000;
  for (let i = 0; i < 5000 && !inside?.writableLength && Date.now() < until; i++) {
    sock.write('GET / HTTP/1.1\r\n\r\n');
    while (served <= i && Date.now() < until) await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
  }
  assert.ok(inside!.writableLength > 0 && inside!.writableLength < inside!.writableHighWaterMark, 'a reply waits in the socket');
  const got: Buffer[] = [];
  sock.on('data', (d) => got.push(d));
  const ended = new Promise<void>((r) => sock.once('close', () => r()));
  const stopped = http.close();
  await sleep(300); // several of the stop's sweeps, and past its grace time
  sock.resume();
  await Promise.all([ended, stopped]);
  let rest: Buffer = Buffer.concat(got);
  let whole = 0;
  for (let res = parseResponse(rest); res; res = parseResponse(rest)) {
    assert.equal(res.res.body.length, REPLY.length);
    whole++;
    rest = res.rest;
  }
  assert.equal(rest.length, 0, 'a reply was cut short');
  assert.equal(whole, served, 'every reply served arrived');
});

it('a connection limit closes connections over it at once, and frees up as others leave', async () => {
  const { http, port } = await serve(() => ({ status: 200, head: '', body: 'ok' }), { maxConnections: 3 });
  const open = async () => {
    const s = net.connect(port, '127.0.0.1');
    await new Promise((r) => s.once('connect', r));
    return s;
  };
  const idle = [await open(), await open(), await open()];
  await sleep(100);
  const extra = await open();
  const closed = await Promise.race([new Promise((r) => extra.once('close', () => r(true))), sleep(2000).then(() => false)]);
  assert.equal(closed, true, 'the 4th connection was closed');
  idle[0]!.destroy();
  await sleep(100);
  const res = parseResponse(await rawExchange(port, 'GET / HTTP/1.1\r\nConnection: close\r\n\r\n'));
  assert.equal(res?.res.body.toString(), 'ok');
  for (const s of idle) s.destroy();
  await http.close();
});

it('a large reply to a client that reads it slowly arrives whole, kept alive or closing; one that stops reading is dropped', async (t) => {
  const HUGE = Buffer.alloc(12 * 2 ** 20, 'h'); // more than the kernel's socket buffers take
  // The kernel wakes a writer when a good part of its buffer is free: with a few MB buffered and a
  // reader at 4 MB/s, that is a few hundred ms between signs of progress. The body limit is 2.5 s,
  // several times that, so that a test process starved of CPU for a moment (other test files run
  // beside this one) is not taken for a reader that stopped.
  const { http, port } = await serve(() => ({ status: 200, head: '', body: HUGE }), { keepAliveMs: 400, headersMs: 1000, bodyMs: 2500 });
  const sockets: net.Socket[] = [];
  t.after(async () => {
    for (const s of sockets) s.destroy();
    await http.close();
  });
  /** Reads `GET /huge` at up to 4 MB/s, as fast as it arrives within that; resolves to what arrived
   * once the reply is whole or the connection closed. */
  const slowly = (head: string) =>
    new Promise<{ received: Buffer; ms: number }>((resolve) => {
      const sock = net.connect(port, '127.0.0.1');
      sockets.push(sock);
      const chunks: Buffer[] = [];
      let size = 0;
      let timer: NodeJS.Timeout | undefined;
      const started = Date.now();
      const done = () => (clearTimeout(timer), resolve({ received: Buffer.concat(chunks), ms: Date.now() - started }));
      const read = () => {
        clearTimeout(timer);
        for (;;) {
          // Up to 4 KB a ms since the start: ahead of that, it waits a moment.
          const allowed = 4000 * (Date.now() - started) - size;
          if (allowed <= 0) return void (timer = setTimeout(read, 16));
          const chunk: Buffer | null = sock.readableLength > allowed ? sock.read(allowed) : sock.read();
          if (!chunk) return; // until 'readable'
          chunks.push(chunk);
          size += chunk.length;
          if (size >= HUGE.length + 40) return done();
        }
      };
      sock.on('readable', read);
      sock.once('close', done);
      sock.write(`GET /huge HTTP/1.1\r\n${head}\r\n`);
    });
  // Longer than the keep-alive limit (400 ms) and than the 2 s a closing connection used to get.
  const kept = await slowly('');
  assert.equal(parseResponse(kept.received)?.res.body.length, HUGE.length, `${kept.received.length} bytes arrived in ${kept.ms} ms`);
  assert.ok(kept.ms > 2000, `read in ${kept.ms} ms`);
  assert.equal(parseResponse(kept.received)?.rest.length, 0, 'nothing after the reply (no 408)');

  const closing = await slowly('Connection: close\r\n');
  assert.equal(parseResponse(closing.received)?.res.body.length, HUGE.length, `${closing.received.length} bytes arrived in ${closing.ms} ms`);
  assert.ok(closing.ms > 2000, `read in ${closing.ms} ms`);

  // One that stops reading is closed once the body limit (2.5 s) passes without progress.
  const stopped = net.connect(port, '127.0.0.1');
  sockets.push(stopped);
  stopped.pause();
  const start = Date.now();
  stopped.write('GET /huge HTTP/1.1\r\n\r\n');
  await waitFor(() => http.connections() === 1);
  await waitFor(() => http.connections() === 0); // (the client, reading nothing, would not see it)
  assert.ok(Date.now() - start < 4500, `closed after ${Date.now() - start} ms`);
});

it('headers that come in many pieces are copied a few times in all, not each time a piece comes', async () => {
  // A raised --max-header-bytes (for messages in the URL): before, each piece copied all that had
  // come so far, and 1 MiB of headers in 100-byte pieces cost seconds of the event loop.
  const server = createHttpServer((req) => ({ status: 200, head: '', body: String(req.target.length) }), {
    maxHeaderBytes: 2 * 2 ** 20,
    maxBodyBytes: 100,
    keepAliveMs: 20_000,
    headersMs: 20_000,
    bodyMs: 20_000,
  });
  await new Promise<void>((r) => server.server.listen(0, '127.0.0.1', r));
  const port = (server.server.address() as net.AddressInfo).port;
  // What the server makes to hold what it received, as it asks Buffer for it.
  let made = 0;
  const { concat, allocUnsafe } = Buffer;
  Buffer.concat = (list, total) => {
    const b = concat(list, total);
    made += b.length;
    return b;
  };
  Buffer.allocUnsafe = (size) => ((made += size), allocUnsafe(size));
  const sock = net.connect(port, '127.0.0.1').setNoDelay(true);
  try {
    await new Promise((r) => sock.once('connect', r));
    let got = '';
    sock.on('data', (d) => (got += d.toString('latin1')));
    const target = `/?x=${'a'.repeat(512 * 1024)}`;
    const head = `GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`;
    for (let at = 0; at < head.length; at += 2048) {
      sock.write(head.slice(at, at + 2048), 'latin1');
      await sleep(1);
    }
    await waitFor(() => got.endsWith(`\r\n\r\n${target.length}`), 20_000);
    assert.ok(made < 8 * head.length, `${made} bytes made for ${head.length} bytes of headers`);
  } finally {
    Buffer.concat = concat;
    Buffer.allocUnsafe = allocUnsafe;
    sock.destroy();
    await server.close();
  }
});

it('a take pipelined behind others, on a connection paused by them, waits for room once what is left behind it fits', async () => {
  const MiB = 2 ** 20;
  let release = () => {};
  const http = createHttpServer(
    (req) => {
      if (req.target === '/fill') return { status: 200, head: '', body: Buffer.alloc(16 * MiB, 'f') };
      if (req.target === '/hold') return new Promise((answer) => (release = () => answer({ status: 200, head: '', body: 'held' })));
      if (req.target === '/take') {
        const turn = req.room();
        return turn ? turn.then((go) => ({ status: 200, head: '', body: go ? 'went' : 'refused' })) : { status: 200, head: '', body: 'at once' };
      }
      return { status: 200, head: '', body: 'ok' };
    },
    { maxHeaderBytes: 1024, maxBodyBytes: 100, keepAliveMs: 20_000, headersMs: 20_000, bodyMs: 20_000, maxBufferedBytes: 16 * MiB },
  );
  await new Promise<void>((r) => http.server.listen(0, '127.0.0.1', r));
  const port = (http.server.address() as net.AddressInfo).port;
  const filler = net.connect(port, '127.0.0.1').on('error', () => {});
  filler.pause();
  filler.write('GET /fill HTTP/1.1\r\n\r\n');
  let sock: net.Socket | undefined;
  let got = '';
  try {
    await waitFor(() => http.buffered().bytes === 16 * MiB, 20_000);
    let served: net.Socket | undefined;
    http.server.once('connection', (s: net.Socket) => (served = s));
    sock = net.connect(port, '127.0.0.1');
    sock.on('data', (d) => (got += d.toString('latin1')));
    sock.write('GET /hold HTTP/1.1\r\n\r\n');
    await waitFor(() => served !== undefined && served.bytesRead > 0);
    // Two KiB pipelined while /hold is in progress: past the 1 KiB a request's headers may take, so
    // the server stops reading. When /take's turn comes, one small request is left behind it.
    const pipelined = `${'GET /x HTTP/1.1\r\n\r\n'.repeat(100)}GET /take HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n`;
    sock.write(pipelined);
    await waitFor(() => served!.bytesRead === 'GET /hold HTTP/1.1\r\n\r\n'.length + pipelined.length);
    release();
    // Before, it was refused at once, though nothing was left that could keep a reset from it.
    await waitFor(() => http.buffered().waiting === 1);
    assert.ok(!got.includes('refused'), 'refused');
    filler.destroy();
    await waitFor(() => got.split('\r\n\r\nok').length === 102);
    assert.ok(got.includes('\r\n\r\nwent'), got.slice(-200));
  } finally {
    filler.destroy();
    sock?.destroy();
    await http.close();
  }
});
