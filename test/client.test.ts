/**
 * The TypeScript client against a real server: every operation, its error classes, AbortSignal,
 * consume() and the async iterator, and the README's examples (examples/*.ts), run as they are.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { AuthError, HttpsqsClient, LeaseLostError, NetworkError, ProtocolError, QueueFullError } from '../src/client/index.js';
import {
  cleanup,
  type ClockedServer,
  clockedServer,
  freePort,
  request,
  ROOT,
  startInProcess,
  startServer,
  tempDir,
  waitFor,
  type InProcessServer,
} from './helpers.js';

/** Runs `fn` with a client of a server in this process whose time is a test clock. */
async function withClock(fn: (client: HttpsqsClient, server: ClockedServer) => Promise<void>): Promise<void> {
  const server = await clockedServer();
  const client = new HttpsqsClient({ url: `http://127.0.0.1:${server.port}` });
  try {
    await fn(client, server);
  } finally {
    await client.close();
    await server.stop();
  }
}

describe('HttpsqsClient', () => {
  let server: InProcessServer;
  let q: HttpsqsClient;
  before(async () => {
    server = await startInProcess();
    q = new HttpsqsClient({ url: `http://127.0.0.1:${server.port}` });
  });
  after(async () => {
    await q.close();
    await server.stop();
    cleanup(server.dir);
  });

  it('put and get: strings exactly (+, %, UTF-8), bytes exactly (NUL, 0xff)', async () => {
    const text = 'a+b %41 100% zwölf ✓ & =';
    assert.equal(await q.put('c-basic', text), 1);
    const bin = new Uint8Array([0, 255, 43, 37, 10]);
    assert.equal(await q.put('c-basic', bin), 2);
    const first = await q.get('c-basic');
    assert.deepEqual([first?.pos, first?.text(), first?.deliveries], [1, text, 1]);
    assert.deepEqual((await q.get('c-basic'))?.body, Buffer.from(bin));
    assert.equal(await q.get('c-basic'), null);
  });

  it('an empty message, and a message that reads like a reply token, are messages like any other', async () => {
    assert.equal(await q.put('c-odd', ''), 1);
    assert.equal(await q.put('c-odd', 'HTTPSQS_AUTH_FAILED'), 2);
    assert.deepEqual([(await q.get('c-odd'))?.pos, (await q.view('c-odd', 1)).length], [1, 0]);
    assert.equal((await q.view('c-odd', 2)).toString(), 'HTTPSQS_AUTH_FAILED');
    assert.equal((await q.get('c-odd'))?.text(), 'HTTPSQS_AUTH_FAILED');
  });

  it('a queue named in another charset (GBK bytes) is reached by its bytes, as queues() gives them', async () => {
    const gbk = Buffer.from([0xd6, 0xd0, 0xce, 0xc4, 0x2d, 0x71]); // "中文-q" in GBK: not UTF-8
    assert.equal(await q.put(gbk, 'first'), 1);
    assert.deepEqual((await q.mput(new Uint8Array(gbk), ['second'])).positions, [2]);
    const listed = [];
    for await (const s of q.queues()) if (s.name64 && Buffer.from(s.name64, 'base64').equals(gbk)) listed.push(s);
    assert.deepEqual(
      listed.map((s) => s.putpos),
      [2],
    );
    const name = Buffer.from(listed[0]!.name64!, 'base64');
    assert.equal((await q.statusJson(name)).unread, 2);
    assert.equal((await q.view(name, 2)).toString(), 'second');
    const m = (await q.get(name, { lease: 30 }))!;
    assert.deepEqual([m.text(), Buffer.from(m.queue as Uint8Array).equals(gbk)], ['first', true]);
    assert.equal(await q.ack(name, m.pos, m.lease), true);
    await q.maxqueue(name, 10);
    await q.reset(name);
    assert.equal((await q.statusJson(name)).putpos, 0);
    assert.equal(await q.get('\u4e2d\u6587-q'), null, 'the UTF-8 spelling is another queue');
  });

  it('status, statusJson, view, maxqueue, reset, synctime', async () => {
    await q.put('c-ops', 'one');
    assert.match(await q.status('c-ops'), /^HTTP Simple Queue Service v1\.7\n[\s\S]*Number of unread queue: 1\n$/);
    assert.deepEqual(await q.statusJson('c-ops'), {
      name: 'c-ops',
      maxqueue: 1000000,
      putpos: 1,
      putlap: 1,
      getpos: 0,
      getlap: 1,
      unread: 1,
      leased: 0,
      delayed: 0,
      dead: 0,
      maxdeliveries: 0,
    });
    assert.equal((await q.view('c-ops', 1)).toString(), 'one');
    assert.equal((await q.view('c-ops', 2)).length, 0);
    // The server answers HTTPSQS_ERROR for a position outside the ring: never taken for a message.
    const scheduled = await q.put('c-ops', 'later', { delay: 3600 });
    for (const pos of [0, scheduled, 1.5])
      await assert.rejects(q.view('c-ops', pos), {
        name: 'RangeError',
        message: new RegExp(`^view: pos must be a whole number from 1 to 1000000000, not ${pos}$`),
      });
    assert.equal(await q.maxqueue('c-ops', 100), true);
    await q.reset('c-ops');
    assert.equal((await q.statusJson('c-ops')).putpos, 0);
    await q.synctime(3);
  });

  it('errors have their own classes: full, refused, auth, network (with its cause)', async () => {
    await q.maxqueue('c-full', 10);
    for (let i = 0; i < 10; i++) await q.put('c-full', `${i}`);
    await assert.rejects(q.put('c-full', 'x'), (err: unknown) => err instanceof QueueFullError && err.queue === 'c-full');
    await assert.rejects(q.maxqueue('c-full', 5), (err: unknown) => err instanceof ProtocolError && err.reply === 'HTTPSQS_ERROR');
    const locked = await startInProcess({ args: ['-a', 'sesame'] });
    const wrong = new HttpsqsClient({ url: `http://127.0.0.1:${locked.port}`, auth: 'guess' });
    const right = new HttpsqsClient({ url: `http://127.0.0.1:${locked.port}`, auth: 'sesame' });
    try {
      await assert.rejects(wrong.put('q', 'x'), AuthError);
      assert.equal(await right.put('q', 'x'), 1);
      await assert.rejects(wrong.view('q', 1), AuthError);
      assert.equal((await right.view('q', 1)).toString(), 'x');
    } finally {
      await Promise.all([wrong.close(), right.close()]);
      await locked.stop();
      cleanup(locked.dir);
    }
    for (const url of ['127.0.0.1:1218', 'ftp://127.0.0.1:1218', 'http://127.0.0.1:1218/?name=q', 'http://a b', 'http://:pw@127.0.0.1:1218']) {
      assert.throws(
        () => new HttpsqsClient({ url }),
        // A password is not quoted (see below).
        (err: unknown) => err instanceof TypeError && err.message.startsWith(`not a server URL: "${url.replace(':pw@', '***@')}"`),
        url,
      );
    }
    const nobody = new HttpsqsClient({ url: `http://127.0.0.1:${await freePort()}` });
    await assert.rejects(nobody.get('q'), (err: unknown) => err instanceof NetworkError && (err.cause as { code?: string }).code === 'ECONNREFUSED');
    await nobody.close();
  });

  it('a long poll gets what arrives; aborting it takes nothing; a timeout is a NetworkError', async () => {
    const waiting = q.get('c-wait', { wait: 5 });
    await sleep(200);
    await q.put('c-wait', 'arrived');
    assert.equal((await waiting)?.text(), 'arrived');

    const stop = new AbortController();
    const aborted = q.get('c-wait', { wait: 5, signal: stop.signal });
    await sleep(200);
    stop.abort();
    await assert.rejects(aborted, { name: 'AbortError' });
    await sleep(100);
    await q.put('c-wait', 'kept');
    assert.equal((await q.get('c-wait'))?.text(), 'kept');

    // A server that accepts and never answers.
    const held = new Set<net.Socket>();
    const silent = net.createServer((socket) => held.add(socket));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const impatient = new HttpsqsClient({ url: `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`, timeout: 300 });
    const started = performance.now();
    await assert.rejects(impatient.status('x'), (err: unknown) => err instanceof NetworkError && /timeout/i.test(String((err.cause as Error).message)));
    assert.ok(performance.now() - started < 3000);
    await impatient.close().catch(() => {});
    for (const socket of held) socket.destroy();
    silent.close();
  });

  it('leases: ack and nack with the token; mput and mget keep bytes; viewRange; list and queues()', async () => {
    await q.put('c-lease', 'job');
    const m = await q.get('c-lease', { lease: 30 });
    assert.ok(m?.lease);
    assert.equal(await q.nack('c-lease', m.pos, m.lease), true);
    const again = await q.get('c-lease', { lease: 30 });
    assert.equal(again?.deliveries, 2);
    assert.equal(await q.ack('c-lease', m.pos, m.lease), false); // the first grant is over
    assert.equal(await q.ack('c-lease', again!.pos, again!.lease), true);

    // A readonly array is taken too (mput does not change it).
    const batch = ['a', new Uint8Array([0, 1, 2])] as const;
    const r = await q.mput('c-batch', batch);
    assert.deepEqual(r, { positions: [1, 2], full: false });
    const got = await q.mget('c-batch', 10);
    assert.deepEqual(
      got.map((x) => x.body),
      [Buffer.from('a'), Buffer.from([0, 1, 2])],
    );
    assert.deepEqual(
      (await q.viewRange('c-batch', 1, 5)).map((x) => x.pos),
      [1, 2],
    );
    assert.deepEqual(
      (await q.list({ prefix: 'c-b' })).map((s) => s.name),
      ['c-basic', 'c-batch'],
    );
    const names: string[] = [];
    for await (const s of q.queues('c-')) names.push(s.name);
    assert.ok(names.includes('c-lease') && names.includes('c-full'));
  });

  it('queues() pages past a name that is not UTF-8, by its bytes (name64)', async () => {
    // 999 ordinary names, then two that are not UTF-8 and sort after them: the 1,000th ends a page.
    for (let i = 0; i < 999; i += 111) {
      await Promise.all(Array.from({ length: 111 }, (_, j) => q.put(`pg8:${String(i + j).padStart(4, '0')}`, 'x')));
    }
    for (const raw of ['%FF', '%FFz']) await request(server.port, 'GET', `/?name=pg8:${raw}&opt=put&data=x`);
    const seen: Array<string | undefined> = [];
    for await (const s of q.queues('pg8:')) seen.push(s.name64);
    assert.equal(seen.length, 1001);
    assert.deepEqual(seen.slice(-2), [Buffer.from('pg8:\xff', 'latin1').toString('base64'), Buffer.from('pg8:\xffz', 'latin1').toString('base64')]);
  });

  it('consume acks what its handler finished and gives back what it threw on', async () => {
    await q.mput('c-consume', ['ok-1', 'fail-once', 'ok-2']);
    const stop = new AbortController();
    const seen: string[] = [];
    const errors: string[] = [];
    let failed = false;
    await q.consume(
      'c-consume',
      (msg) => {
        seen.push(`${msg.text()}#${msg.deliveries}`);
        if (msg.text() === 'fail-once' && !failed) {
          failed = true;
          throw new Error('boom');
        }
        if (seen.length === 4) stop.abort();
      },
      { concurrency: 2, lease: 30, wait: 1, signal: stop.signal, onError: (err) => errors.push((err as Error).message) },
    );
    assert.deepEqual(seen.sort(), ['fail-once#1', 'fail-once#2', 'ok-1#1', 'ok-2#1']);
    assert.deepEqual(errors, ['boom']);
    const s = await q.statusJson('c-consume');
    assert.deepEqual([s.unread, s.leased], [0, 0]);
  });

  it('consume keeps extending the lease of a message whose handler takes longer than the lease', async () => {
    await q.put('c-slow', 'slow job');
    let deliveries = 0;
    const stop = new AbortController();
    const running = q.consume(
      'c-slow',
      async () => {
        deliveries++;
        await sleep(2600); // more than twice the lease
        stop.abort();
      },
      { lease: 1, wait: 1, signal: stop.signal },
    );
    await sleep(1800);
    assert.equal((await q.statusJson('c-slow')).leased, 1);
    assert.equal(await q.get('c-slow'), null); // not handed out again meanwhile
    await running;
    assert.equal(deliveries, 1);
    const s = await q.statusJson('c-slow');
    assert.deepEqual([s.unread, s.leased], [0, 0]); // acked with the token of the last extension
    await q.put('c-slow-2', 'x');
    const m = (await q.get('c-slow-2', { lease: 30 }))!;
    // A touch keeps the grant's token.
    const token = await q.touch('c-slow-2', m.pos, 60, m.lease);
    assert.equal(token, m.lease);
    assert.equal(await q.ack('c-slow-2', m.pos, '0-0'), false);
    assert.equal(await q.ack('c-slow-2', m.pos, token), true);
    assert.equal(await q.touch('c-slow-2', m.pos, 60, token), null);
  });

  it('consume tells onError when a lease ended before the message was settled, once', async () => {
    const errors: unknown[] = [];
    const seen: string[] = [];
    const run = async (queue: string, lease: number, holdMs: number) => {
      await q.put(queue, 'job');
      const stop = new AbortController();
      await q.consume(
        queue,
        async (msg) => {
          seen.push(`${queue}#${msg.deliveries}`);
          if (msg.deliveries > 1) return void stop.abort();
          assert.equal(await q.nack(queue, msg.pos), true); // someone else gives it back meanwhile
          await sleep(holdMs);
        },
        { lease, wait: 1, signal: stop.signal, onError: (err) => errors.push(err) },
      );
    };
    await run('c-lost-touch', 1, 1300); // an extension finds the lease gone
    await run('c-lost-ack', 30, 0); // the ack does
    assert.deepEqual(seen, ['c-lost-touch#1', 'c-lost-touch#2', 'c-lost-ack#1', 'c-lost-ack#2']);
    assert.deepEqual(
      errors.map((e) => (e instanceof LeaseLostError ? `${e.queue}:${e.pos}` : String(e))),
      ['c-lost-touch:1', 'c-lost-ack:1'],
    );
    for (const name of ['c-lost-touch', 'c-lost-ack']) assert.deepEqual((({ unread, leased }) => [unread, leased])(await q.statusJson(name)), [0, 0]);
  });

  it('consume keeps the client usable while it polls, and stops every worker when one meets an error', async () => {
    const stop = new AbortController();
    const running = q.consume('c-busy', () => {}, { concurrency: 20, wait: 5, signal: stop.signal });
    await sleep(200);
    const started = performance.now();
    await q.put('c-other', 'not held up by 20 long polls');
    assert.ok(performance.now() - started < 1000, 'a put waited behind the long polls');
    stop.abort();
    await running;

    const locked = await startInProcess({ args: ['-a', 'sesame'] });
    const wrong = new HttpsqsClient({ url: `http://127.0.0.1:${locked.port}`, auth: 'guess' });
    try {
      await assert.rejects(
        wrong.consume('q', () => {}, { concurrency: 3, wait: 1 }),
        AuthError,
      );
    } finally {
      await wrong.close();
      await locked.stop();
      cleanup(locked.dir);
    }
  });

  it('close() ends leased long polls at once, lets a plain one finish (its message is not lost), and lets consume ack what it finished', async () => {
    const c = new HttpsqsClient({ url: `http://127.0.0.1:${server.port}` });
    await q.put('c-close-job', 'job');
    let handled = 0;
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    const consuming = c.consume('c-close-job', async () => {
      started();
      await sleep(500);
      handled++;
    });
    const leased = c.get('c-close', { wait: 20, lease: 30 }).catch((err: unknown) => err);
    const plain = c.get('c-plain', { wait: 3 });
    // The handler is running (on a busy machine its get may take a while), the polls wait.
    await running;
    await sleep(100);
    const closed = c.close();
    await q.put('c-plain', 'not lost');
    const outcome = await Promise.race([Promise.all([consuming, closed]).then(() => 'ended'), sleep(8000).then(() => 'still running')]);
    assert.equal(outcome, 'ended');
    assert.equal(handled, 1);
    assert.deepEqual(await q.statusJson('c-close-job').then((s) => [s.unread, s.leased]), [0, 0], 'the finished job was acked');
    const ended = await leased;
    assert.ok(ended instanceof NetworkError && ended.message === 'the client is closed', String(ended));
    assert.equal((await plain)?.text(), 'not lost');
    await assert.rejects(c.put('c-close', 'late'), (err: unknown) => err instanceof NetworkError && err.message === 'the client is closed');
    await assert.rejects(
      c.consume('c-close', () => {}),
      NetworkError,
    );
    // The leased poll took nothing with it.
    await q.put('c-close', 'kept');
    assert.equal((await q.get('c-close'))?.text(), 'kept');
    await assert.rejects(
      q.consume('c-close', () => {}, { concurrency: 0 }),
      RangeError,
    );
  });

  it('close() lets a messages() loop ack the message it holds (as a SIGTERM handler would close it)', async () => {
    const c = new HttpsqsClient({ url: `http://127.0.0.1:${server.port}` });
    await q.put('c-close-loop', 'job');
    let acked: boolean | undefined;
    let closed: Promise<void> | undefined;
    for await (const m of c.messages('c-close-loop')) {
      closed = c.close();
      await sleep(200); // the work goes on after the close
      acked = await m.ack();
    }
    await closed;
    assert.equal(acked, true);
    assert.deepEqual(await q.statusJson('c-close-loop').then((s) => [s.unread, s.leased]), [0, 0]);
    // A loop that keeps its message without a word holds close() until the lease ends, not for ever.
    const d = new HttpsqsClient({ url: `http://127.0.0.1:${server.port}` });
    await q.put('c-close-kept', 'kept');
    const kept = await d.messages('c-close-kept', { lease: 1 }).next();
    assert.equal(kept.value?.text(), 'kept');
    const outcome = await Promise.race([d.close().then(() => 'closed'), sleep(8000).then(() => 'still open')]);
    assert.equal(outcome, 'closed');
  });

  it('consume and messages with no wait given work with a server whose --max-wait is under their 20 s', async () => {
    const short = await startInProcess({ args: ['--max-wait', '3'] });
    const c = new HttpsqsClient({ url: `http://127.0.0.1:${short.port}` });
    try {
      await c.put('c-short', 'one');
      const stop = new AbortController();
      const handled: string[] = [];
      const consuming = c.consume(
        'c-short',
        (m) => {
          handled.push(m.text());
          stop.abort();
        },
        { signal: stop.signal },
      );
      await consuming;
      assert.deepEqual(handled, ['one']);
      await c.put('c-short', 'two');
      for await (const m of c.messages('c-short')) {
        assert.equal(m.text(), 'two');
        assert.equal(await m.ack(), true);
        break;
      }
    } finally {
      await c.close();
      await short.stop();
      cleanup(short.dir);
    }
  });

  it('a URL with credentials is refused without quoting them (the password is the auth option)', () => {
    for (const url of [
      'http://admin:s3cret@127.0.0.1:45001',
      'http://admin:s3cret@127.0.0.1:45001/queue/?x=1',
      'http://admin:s3:c@ret@[::1',
      'http://s3cret@127.0.0.1',
    ]) {
      assert.throws(
        () => new HttpsqsClient({ url }),
        (err: unknown) => err instanceof TypeError && err.message.startsWith('not a server URL: "http://***@') && !/s3|admin|ret/.test(err.message),
      );
    }
  });

  it('a timeout of 0 (which would be none: a silent server would hang the caller) is refused', () => {
    for (const timeout of [0, -1, Number.NaN]) assert.throws(() => new HttpsqsClient({ timeout }), RangeError);
  });

  it('connections is a whole number of at least 1 (0 would be no limit, a fraction a limit rounded up)', () => {
    for (const connections of [0, -1, 1.5, Number.NaN]) assert.throws(() => new HttpsqsClient({ connections }), RangeError);
    assert.doesNotThrow(() => new HttpsqsClient({ connections: 1 }).close());
  });

  it('consume and messages refuse a wait under 1 s, which would poll an empty queue in a tight loop', async () => {
    for (const wait of [0, 0.5]) {
      await assert.rejects(
        q.consume('c-wait0', () => {}, { wait }),
        RangeError,
      );
      await assert.rejects(q.messages('c-wait0', { wait }).next(), RangeError);
    }
  });

  it('consume and messages refuse a lease that is not whole seconds from 1 to 86400, before asking the server', async () => {
    for (const lease of [0, 1.5, 86_401]) {
      // Bounded: were it sent, the poll would end within a second.
      const signal = AbortSignal.timeout(1000);
      await assert.rejects(
        q.consume('c-lease0', () => {}, { lease, wait: 1, signal }),
        RangeError,
      );
      await assert.rejects(q.messages('c-lease0', { lease, wait: 1, signal }).next(), RangeError);
    }
  });

  it('a poll refused down to 1 s throws, and leaves the default wait as it was; a shorter one is kept once answered', async () => {
    // A server that refuses every get while `refusing`, then (a --max-wait of 5) every wait over 5.
    let refusing = true;
    const waits: number[] = [];
    const fake = http.createServer((req, res) => {
      const wait = Number(new URL(req.url!, 'http://x').searchParams.get('wait'));
      waits.push(wait);
      if (refusing || wait > 5) return res.end('HTTPSQS_ERROR');
      res.writeHead(200, { Pos: '1', Lease: 't', Deliveries: '1' }).end('job');
    });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    const c = new HttpsqsClient({ url: `http://127.0.0.1:${(fake.address() as net.AddressInfo).port}` });
    const first = async () => {
      for await (const m of c.messages('c-refused')) return m.text();
    };
    try {
      await assert.rejects(first(), (err: unknown) => err instanceof ProtocolError && err.reply === 'HTTPSQS_ERROR');
      assert.deepEqual(waits.splice(0), [20, 10, 5, 2, 1]);
      refusing = false;
      assert.equal(await first(), 'job');
      assert.deepEqual(waits.splice(0), [20, 10, 5], 'the default wait was not shortened by the refusals');
      assert.equal(await first(), 'job');
      assert.deepEqual(waits.splice(0), [5], 'the wait answered is kept');
    } finally {
      await c.close();
      fake.close();
    }
  });

  it('a JSON reply of the wrong shape (null, a list of nulls, an object for a list) is a ProtocolError, not a TypeError', async () => {
    let answer = '';
    const fake = http.createServer((_req, res) => res.end(answer));
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    const c = new HttpsqsClient({ url: `http://127.0.0.1:${(fake.address() as net.AddressInfo).port}` });
    const calls = [
      () => c.statusJson('c-shape'),
      () => c.list(),
      () => c.viewRange('c-shape', 1, 2),
      () => c.mget('c-shape', 2),
      () => c.mput('c-shape', ['a']),
      () => c.dead('c-shape'),
      () => c.redrive('c-shape'),
    ];
    try {
      for (answer of ['null', '[null]', '{}', '[{}]', '[{"pos":1,"data":7}]', '7']) {
        for (const call of calls) {
          // An answer a call takes (an object for status, say) is not one of the wrong shape for it.
          const got = await call().then(
            () => undefined,
            (err: unknown) => err,
          );
          if (got !== undefined) assert.ok(got instanceof ProtocolError, `${answer}: ${got}`);
        }
      }
      for (const call of calls) {
        answer = 'null';
        await assert.rejects(call(), (err: unknown) => err instanceof ProtocolError && err.message === 'the server answered null');
      }
    } finally {
      await c.close();
      fake.close();
    }
  });

  it('a reply over maxReplyBytes is not read further: the connection is dropped and the call throws', { timeout: 20_000 }, async () => {
    // A misbehaving server: a message of 64 KiB, with its length or without (chunked), or one
    // without end, 64 KiB at a time, for as long as the client reads.
    const chunk = Buffer.alloc(64 * 1024, 'x');
    let endless: Promise<void> | undefined;
    const fake = http.createServer((req, res) => {
      const url = req.url!;
      if (url.includes('name=sized')) return res.writeHead(200, { Pos: '1', 'Content-Length': chunk.length }).end(chunk);
      if (url.includes('name=small')) return res.writeHead(200, { Pos: '1', 'Content-Length': 100 }).end(chunk.subarray(0, 100));
      if (url.includes('name=chunked')) return res.writeHead(200, { Pos: '1' }).end(chunk);
      if (url.includes('name=huge')) return res.writeHead(200, { Pos: '1', 'Content-Length': 64 * 2 ** 20 + 1 }).flushHeaders(); // the body never comes
      res.writeHead(200, { Pos: '1' });
      endless = new Promise((resolve) => {
        const more = () => {
          while (!res.destroyed && res.write(chunk));
          if (!res.destroyed) res.once('drain', more);
        };
        res.once('close', resolve);
        more();
      });
    });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(fake.address() as net.AddressInfo).port}`;
    const over = (err: unknown) => err instanceof ProtocolError && /^the reply was over the limit of 65535 bytes \(maxReplyBytes\)$/.test(err.message);
    const at = new HttpsqsClient({ url, maxReplyBytes: 65_536 });
    const under = new HttpsqsClient({ url, maxReplyBytes: 65_535 });
    try {
      assert.equal((await at.get('sized'))!.body.length, 65_536);
      assert.equal((await at.get('chunked'))!.body.length, 65_536);
      await assert.rejects(under.get('sized'), over);
      await assert.rejects(under.get('chunked'), over);
      await assert.rejects(under.get('endless'), over);
      await endless; // the server saw the connection closed
      // A reply that arrived whole, its length over the limit: the call throws, and nothing is
      // left to throw later (an uncaught exception would end the process).
      const tiny = new HttpsqsClient({ url, maxReplyBytes: 10 });
      const uncaught: unknown[] = [];
      const onUncaught = (err: unknown) => uncaught.push(err);
      process.prependListener('uncaughtException', onUncaught);
      try {
        await assert.rejects(tiny.get('small'), /^ProtocolError: the reply was over the limit of 10 bytes \(maxReplyBytes\)$/);
        await sleep(100);
      } finally {
        process.removeListener('uncaughtException', onUncaught);
        await tiny.close();
      }
      assert.deepEqual(uncaught, []);
      // By default, 64 MiB: a reply that says it is longer is not waited for.
      const byDefault = new HttpsqsClient({ url });
      await assert.rejects(byDefault.get('huge'), /^ProtocolError: the reply was over the limit of 67108864 bytes \(maxReplyBytes\)$/);
      await byDefault.close();
      await assert.rejects(async () => new HttpsqsClient({ maxReplyBytes: 0 }), RangeError);
    } finally {
      await Promise.all([at.close(), under.close()]);
      fake.closeAllConnections();
      fake.close();
    }
  });

  it('a long poll rejects with the reason its caller aborted it with', async () => {
    await assert.rejects(q.get('c-reason', { wait: 5, signal: AbortSignal.timeout(200) }), (err: unknown) => (err as Error).name === 'TimeoutError');
    await assert.rejects(q.get('c-reason', { wait: 5, lease: 10, signal: AbortSignal.timeout(200) }), (err: unknown) => (err as Error).name === 'TimeoutError');
  });

  it('consume waits out HTTP 5xx from a proxy, and what onError throws does not stop it', async () => {
    // A stand-in for a proxy in front of a restarting server: 502 first, then a message, then acks.
    let requests = 0;
    const proxy = http.createServer((req, res) => {
      requests++;
      if (requests === 1) return res.writeHead(502).end('Bad Gateway');
      if (req.url!.includes('opt=get')) return res.writeHead(200, { Pos: '7', Lease: 't', Deliveries: '1' }).end('job');
      res.writeHead(200).end(req.url!.includes('opt=nack') ? 'HTTPSQS_NACK_OK' : 'HTTPSQS_ACK_OK');
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const c = new HttpsqsClient({ url: `http://127.0.0.1:${(proxy.address() as net.AddressInfo).port}` });
    const stop = new AbortController();
    let handled = 0;
    try {
      await c.consume(
        'c-proxy',
        () => {
          if (++handled === 2) stop.abort();
          throw new Error('handler failed');
        },
        {
          wait: 1,
          signal: stop.signal,
          onError: () => {
            throw new Error('onError failed too');
          },
        },
      );
    } finally {
      await c.close();
      proxy.close();
    }
    assert.equal(handled, 2);
  });

  /** A stand-in for a server behind a proxy: hands out one message (position 7, leased), holds
   * later polls open, and answers the acks with `acks` in turn (`'reset'`: the connection drops
   * after the request came; a number: that HTTP status; the last one stays). */
  async function flakyAcks(acks: Array<'reset' | number>) {
    let given = false;
    const tries: number[] = [];
    let acked!: () => void;
    const ackedOk = new Promise<void>((r) => (acked = r));
    const proxy = http.createServer((req, res) => {
      if (req.url!.includes('opt=get')) {
        if (given) return; // a long poll that gets nothing: ended by the client when it stops
        given = true;
        return res.writeHead(200, { Pos: '7', Lease: 't', Deliveries: '1' }).end('job');
      }
      tries.push(Date.now());
      const answer = acks[Math.min(tries.length, acks.length) - 1]!;
      if (answer === 'reset') return req.socket.destroy();
      if (answer !== 200) return res.writeHead(answer).end(`from the proxy: ${answer}`);
      res.writeHead(200).end('HTTPSQS_ACK_OK', acked);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const client = new HttpsqsClient({ url: `http://127.0.0.1:${(proxy.address() as net.AddressInfo).port}` });
    /** Consumes the one message; resolves once its ack is settled one way or the other. */
    const consume = async (lease: number) => {
      const stop = new AbortController();
      const errors: unknown[] = [];
      let told!: () => void;
      const failed = new Promise<void>((r) => (told = r));
      const consuming = client.consume('c-flaky', () => {}, {
        lease,
        wait: 1,
        signal: stop.signal,
        onError: (err) => (errors.push(err), told()),
      });
      // The ack is settled once it was answered 200, or onError was told; consume then ends.
      await Promise.race([ackedOk, failed]);
      stop.abort();
      await consuming;
      return errors;
    };
    /** Takes the one message with messages() and acks it: what the ack resolved to. */
    const ackFromLoop = async (lease: number) => {
      const stop = new AbortController();
      try {
        for await (const m of client.messages('c-flaky', { lease, wait: 1, signal: stop.signal })) return await m.ack();
      } finally {
        stop.abort();
      }
    };
    const close = async () => (await client.close(), proxy.close());
    return { tries, consume, ackFromLoop, close };
  }

  it('consume retries an ack through a restart of a few seconds (no answer, a proxy 502/503/504), with a growing pause', { timeout: 20_000 }, async () => {
    const flaky = await flakyAcks(['reset', 503, 504, 502, 200]);
    try {
      assert.deepEqual(await flaky.consume(60), []);
      assert.equal(flaky.tries.length, 5);
      const pauses = flaky.tries.slice(1).map((t, i) => t - flaky.tries[i]!);
      assert.ok(
        pauses.every((p, i) => i === 0 || p > pauses[i - 1]!),
        `pauses grow: ${pauses}`,
      );
    } finally {
      await flaky.close();
    }
  });

  it("messages()' ack and nack are retried as consume's are, until the lease would end", { timeout: 20_000 }, async () => {
    const flaky = await flakyAcks(['reset', 503, 200]);
    try {
      assert.equal(await flaky.ackFromLoop(60), true);
      assert.equal(flaky.tries.length, 3);
    } finally {
      await flaky.close();
    }
    const gone = await flakyAcks(['reset']);
    try {
      await assert.rejects(gone.ackFromLoop(3), NetworkError);
      // Tries at about 0, 0.25, 0.75 and 1.75 s; the next, at 3.75 s, would be past the lease.
      assert.equal(gone.tries.length, 4);
    } finally {
      await gone.close();
    }
  });

  it("consume gives up on an ack that gets no answer once the message's lease would have ended, and says so", { timeout: 20_000 }, async () => {
    const flaky = await flakyAcks(['reset']);
    try {
      const errors = await flaky.consume(3);
      assert.equal(errors.length, 1);
      assert.ok(errors[0] instanceof NetworkError, String(errors[0]));
      // Tries at about 0, 0.25, 0.75 and 1.75 s; the next, at 3.75 s, would be past the lease.
      assert.equal(flaky.tries.length, 4);
    } finally {
      await flaky.close();
    }
  });

  it('a handler is told of the stop through its signal; the message it gave up on comes back', async () => {
    await q.put('c-stop', 'long job');
    const stop = new AbortController();
    const consuming = q.consume(
      'c-stop',
      (_m, { signal }) =>
        new Promise((_, reject) => {
          signal.addEventListener('abort', () => reject(new Error('stopped')));
          stop.abort(); // the worker is told to stop while the job runs
        }),
      { wait: 1, signal: stop.signal },
    );
    const outcome = await Promise.race([consuming.then(() => 'ended'), sleep(5000).then(() => 'still running')]);
    assert.equal(outcome, 'ended');
    const back = await q.get('c-stop');
    assert.deepEqual([back?.text(), back?.deliveries], ['long job', 2]);
  });

  it('put with a delay: stored now, handed out (to a long poll too) once due, with the schedule id as its pos', () =>
    withClock(async (t, lp) => {
      const id = await t.put('c-delay', 'later', { delay: 1 });
      assert.ok(id > 1_000_000_000, `schedule id ${id}`);
      assert.equal(await t.get('c-delay'), null, 'handed out before its time');
      const s = await t.statusJson('c-delay');
      assert.deepEqual([s.unread, s.delayed, s.putpos], [0, 1, 0]);
      assert.equal((await t.list({ prefix: 'c-delay' }))[0]?.delayed, 1);
      const polled = t.get('c-delay', { wait: 5, lease: 30 });
      await waitFor(() => lp.app.waiters.size === 1);
      lp.clock.advance(999);
      // Neither a get nor the long poll had it before its second was up.
      assert.equal(await t.get('c-delay'), null, 'handed out before its second was up');
      assert.deepEqual(await t.statusJson('c-delay').then((x) => [x.delayed, x.leased]), [1, 0]);
      lp.clock.advance(1);
      const m = await polled;
      assert.deepEqual([m?.pos, m?.text(), m?.deliveries], [id, 'later', 1]);
      assert.equal(await t.ack('c-delay', id, m!.lease), true);
      assert.deepEqual(await t.statusJson('c-delay').then((x) => [x.delayed, x.leased]), [0, 0]);
      // delay 0 is a plain put; a delay the server refuses, or that is not whole seconds, is an error.
      assert.equal(await t.put('c-delay', 'now', { delay: 0 }), 1);
      await assert.rejects(t.put('c-delay', 'x', { delay: 2_592_001 }), (err: unknown) => err instanceof ProtocolError && err.reply === 'HTTPSQS_PUT_ERROR');
      await assert.rejects(t.put('c-delay', 'x', { delay: 1.5 }), RangeError);
      await assert.rejects(t.mput('c-delay', ['x'], { delay: -1 }), RangeError);
      assert.equal((await t.statusJson('c-delay')).delayed, 0, 'nothing stored by the refused puts');
      // A batch, bytes and all; an empty message too.
      const r = await t.mput('c-delay-batch', ['a', new Uint8Array([0, 255])], { delay: 1 });
      assert.equal(r.full, false);
      assert.ok(r.positions.length === 2 && r.positions.every((p) => p > 1_000_000_000));
      assert.ok((await t.put('c-delay-batch', '', { delay: 1 })) > r.positions[1]!);
      assert.deepEqual(await t.mget('c-delay-batch', 10), []);
      assert.equal((await t.statusJson('c-delay-batch')).delayed, 3);
      lp.clock.advance(1000);
      const got = await t.mget('c-delay-batch', 10);
      assert.deepEqual(
        got.map((x) => [x.pos, x.body]),
        [...r.positions.map((p, i) => [p, i ? Buffer.from([0, 255]) : Buffer.from('a')]), [r.positions[1]! + 1, Buffer.alloc(0)]],
      );
    }));

  it('a delayed put on a queue that already keeps maxqueue messages outside its ring is a QueueFullError', async () => {
    await q.maxqueue('c-delay-full', 10);
    assert.equal((await q.mput('c-delay-full', Array.from({ length: 12 }, String), { delay: 60 })).full, true);
    await assert.rejects(q.put('c-delay-full', 'x', { delay: 60 }), (err: unknown) => err instanceof QueueFullError && err.queue === 'c-delay-full');
    assert.equal(await q.put('c-delay-full', 'not delayed'), 1, 'the ring itself has room');
  });

  it('maxDeliveries makes a message that keeps coming back a dead letter; dead() lists it, redrive() brings it back', () =>
    withClock(async (t, lp) => {
      await t.maxDeliveries('c-dlq', 2);
      assert.equal((await t.statusJson('c-dlq')).maxdeliveries, 2);
      await t.mput('c-dlq', ['poison', new Uint8Array([0, 1, 255])]);
      for (let i = 0; i < 2; i++) {
        const batch = await t.mget('c-dlq', 10, { lease: 1 });
        assert.equal(batch.length, 2);
        if (i === 0) for (const m of batch) assert.equal(await t.nack('c-dlq', m.pos, m.lease), true);
        // The second time the leases run out: expiry counts as nack does.
      }
      lp.clock.advance(1000);
      const before = lp.clock.now();
      assert.equal(await t.get('c-dlq'), null, 'a dead letter is not handed out');
      const s = await t.statusJson('c-dlq');
      assert.deepEqual([s.unread, s.leased, s.dead], [0, 0, 2]);
      const dead = await t.dead('c-dlq');
      assert.deepEqual(
        dead.map((d) => [d.deliveries, d.message]),
        [
          [2, Buffer.from('poison')],
          [2, Buffer.from([0, 1, 255])],
        ],
      );
      assert.ok(dead.every((d) => d.pos > 1_000_000_000 && d.died <= before + 1000 && d.died > before - 10_000));
      // Paged by num and after; it only reads them.
      assert.deepEqual(
        (await t.dead('c-dlq', { num: 1 })).map((d) => d.pos),
        [dead[0]!.pos],
      );
      assert.deepEqual(
        (await t.dead('c-dlq', { after: dead[0]!.pos })).map((d) => d.pos),
        [dead[1]!.pos],
      );
      assert.deepEqual(await t.dead('c-dlq', { after: dead[1]!.pos }), []);
      assert.equal((await t.statusJson('c-dlq')).dead, 2);

      // Newer messages wait behind the redriven ones; deliveries are counted afresh.
      await t.put('c-dlq', 'newer');
      assert.equal(await t.discard('c-dlq', dead[0]!.pos + 1_000_000), false, 'no dead letter there');
      assert.deepEqual(await t.redrive('c-dlq', { num: 1 }), { count: 1, dead: 1 });
      const first = await t.get('c-dlq', { lease: 30 });
      assert.deepEqual([first?.pos, first?.text(), first?.deliveries], [dead[0]!.pos, 'poison', 1]);
      assert.equal(await t.ack('c-dlq', first!.pos, first!.lease), true);
      assert.deepEqual(await t.redrive('c-dlq'), { count: 1, dead: 0 });
      assert.deepEqual(await t.redrive('c-dlq'), { count: 0, dead: 0 });
      assert.deepEqual(
        (await t.mget('c-dlq', 10)).map((m) => m.body),
        [Buffer.from([0, 1, 255]), Buffer.from('newer')],
      );

      // Refused values are errors, as for the other opts; 0 turns it off.
      for (const call of [() => t.maxDeliveries('c-dlq', 1001), () => t.redrive('c-dlq', { num: 0 }), () => t.dead('c-dlq', { num: 1001 })]) {
        await assert.rejects(call(), (err: unknown) => err instanceof ProtocolError && err.reply === 'HTTPSQS_ERROR');
      }

      // discard() deletes one for good.
      await t.maxDeliveries('c-dlq', 1);
      await t.put('c-dlq', 'junk');
      const junk = await t.get('c-dlq', { lease: 30 });
      assert.equal(await t.nack('c-dlq', junk!.pos, junk!.lease), true);
      const [letter] = await t.dead('c-dlq');
      assert.equal(letter?.message.toString(), 'junk');
      assert.equal(await t.discard('c-dlq', letter!.pos), true);
      assert.equal(await t.discard('c-dlq', letter!.pos), false);
      assert.deepEqual(await t.dead('c-dlq'), []);
      await t.maxDeliveries('c-dlq', 0);
      assert.equal((await t.statusJson('c-dlq')).maxdeliveries, 0);
    }));

  it('consume with a handler that always throws: the message comes back each time, and ends a dead letter when the queue has maxdeliveries', async () => {
    await q.maxDeliveries('c-poison', 3);
    await q.put('c-poison', 'always fails');
    await q.put('c-poison', 'fine');
    const stop = new AbortController();
    const seen: string[] = [];
    const errors: string[] = [];
    const consuming = q.consume(
      'c-poison',
      (m) => {
        seen.push(`${m.text()}#${m.deliveries}`);
        if (m.text() === 'always fails') throw new Error(`failed ${m.deliveries}`);
      },
      { lease: 30, wait: 1, signal: stop.signal, onError: (err) => errors.push((err as Error).message) },
    );
    // The get that buries it hands out the next message; its handler may run a little later.
    await waitFor(async () => (await q.statusJson('c-poison')).dead === 1 && seen.includes('fine#1'));
    await sleep(300); // time enough to take it again, were it not dead
    stop.abort();
    await consuming;
    assert.deepEqual(seen, ['always fails#1', 'always fails#2', 'always fails#3', 'fine#1']);
    assert.deepEqual(errors, ['failed 1', 'failed 2', 'failed 3']);
    const s = await q.statusJson('c-poison');
    assert.deepEqual([s.unread, s.leased, s.dead], [0, 0, 1]);
    assert.deepEqual(
      (await q.dead('c-poison')).map((d) => [d.deliveries, d.message.toString()]),
      [[3, 'always fails']],
    );

    // Without maxdeliveries it comes back as long as the handler throws.
    await q.put('c-poison-forever', 'always fails');
    const again = new AbortController();
    let tries = 0;
    await q.consume(
      'c-poison-forever',
      (m) => {
        if (++tries === 10) again.abort();
        throw new Error(`failed ${m.deliveries}`);
      },
      { lease: 30, wait: 1, signal: again.signal },
    );
    assert.equal(tries, 10);
    const left = await q.get('c-poison-forever');
    assert.deepEqual([left?.text(), left?.deliveries, (await q.statusJson('c-poison-forever')).dead], ['always fails', 11, 0]);
  });

  it("messages() gives each message touch(), and ack() uses the lease's newest token", async () => {
    await q.put('c-iter', 'work');
    const stop = new AbortController();
    for await (const m of q.messages('c-iter', { lease: 5, wait: 1, signal: stop.signal })) {
      assert.equal(await m.touch(30), true);
      assert.equal(await m.ack(), true);
      stop.abort();
    }
    assert.equal((await q.statusJson('c-iter')).leased, 0);
  });

  it('reference mode sends bytes percent-encoded, as the C server needs, and they still arrive exactly', async () => {
    const ref = new HttpsqsClient({ url: `http://127.0.0.1:${server.port}`, reference: true });
    const bin = new Uint8Array([0x25, 0x2b, 0x20, 0, 255, 0x41]);
    await ref.put('c-ref', bin);
    await ref.put('c-ref', 'a+b %41 ✓');
    assert.deepEqual((await ref.get('c-ref'))?.body, Buffer.from(bin));
    assert.equal((await ref.get('c-ref'))?.text(), 'a+b %41 ✓');
    await ref.close();
  });

  it('a string goes as its UTF-8 bytes, not percent-encoded to three times its size', async () => {
    const big = '中'.repeat(4_000_000); // 12 MB of UTF-8; percent-encoded it would be over the 32 MiB limit
    const pos = await q.put('c-big', big);
    assert.equal((await q.view('c-big', pos)).toString('utf8') === big, true);
  });
});

describe('the declarations a TypeScript project sees', () => {
  // A project of its own, with httpsqs in its node_modules, as an installed package is.
  const consumer = `import { HttpsqsClient, type ConsumeOptions, type Message } from 'httpsqs/client';
const env = (k: string): string | undefined => process.env[k];
const signal: AbortSignal | undefined = env('SIGNAL') ? AbortSignal.timeout(10) : undefined;
const q = new HttpsqsClient({ url: env('HTTPSQS_URL'), auth: env('HTTPSQS_AUTH'), timeout: undefined });
const wait = env('WAIT') ? 1 : undefined;
export const m: Promise<Message | null> = q.get('jobs', { wait, lease: undefined, signal });
export const p: Promise<number> = q.put('jobs', 'x', { delay: undefined, signal });
export const o: ConsumeOptions = { concurrency: undefined, onError: undefined, signal };
export const l = q.list({ prefix: env('PREFIX') });
export const d = q.dead('jobs', { after: undefined });
`;

  for (const resolution of ['nodenext', 'bundler']) {
    it(`compile with strict, exactOptionalPropertyTypes and no skipLibCheck (moduleResolution ${resolution})`, () => {
      const dir = tempDir('httpsqs-consumer-');
      try {
        mkdirSync(join(dir, 'node_modules'));
        symlinkSync(ROOT, join(dir, 'node_modules', 'httpsqs'));
        writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
        writeFileSync(join(dir, 'index.ts'), consumer);
        const compilerOptions = {
          target: 'ES2022',
          module: resolution === 'bundler' ? 'esnext' : 'nodenext',
          moduleResolution: resolution,
          strict: true,
          exactOptionalPropertyTypes: true,
          skipLibCheck: false,
          noEmit: true,
          typeRoots: [join(ROOT, 'node_modules', '@types')],
          types: ['node'],
        };
        writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions, files: ['index.ts'] }));
        const r = spawnSync(join(ROOT, 'node_modules', '.bin', 'tsc'), ['-p', dir], { encoding: 'utf8' });
        assert.equal(r.status, 0, r.stdout + r.stderr);
      } finally {
        cleanup(dir);
      }
    });
  }
});

describe('README examples', () => {
  const examples = readdirSync(join(ROOT, 'examples')).filter((f) => f.endsWith('.ts'));

  it('every example is in the README as it is, importing from httpsqs/client', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    assert.ok(examples.length >= 2);
    for (const f of examples) {
      const code = readFileSync(join(ROOT, 'examples', f), 'utf8').replace("'../src/client/index.js'", "'httpsqs/client'");
      assert.ok(readme.includes(code), `README does not show examples/${f} as it is`);
    }
  });

  for (const [file, expected] of [
    ['producer.js', /stored at position 1\nbatch stored at 2, 3\nmail: 3 unread\ntiny is full: queue "tiny" is full\n/],
    ['worker.js', /(working on resize \d\.jpg \(delivery 1\)\n){4}got resize 5\.jpg\n/],
  ] as const) {
    it(`examples/${file.replace('.js', '.ts')} runs against a real server`, async () => {
      const server = await startServer();
      try {
        const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'examples', file)], {
          env: { ...process.env, HTTPSQS_URL: `http://127.0.0.1:${server.port}` },
          encoding: 'utf8',
          timeout: 30_000,
        });
        assert.equal(r.status, 0, r.stderr);
        assert.match(r.stdout, expected);
      } finally {
        await server.stop();
        cleanup(server.dir);
      }
    });
  }
});
