/**
 * The extensions (docs/EXTENSIONS.md) over HTTP against a real server: long polling, leases,
 * batches, binary bodies, listing, /metrics and /healthz, each with its bad inputs.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { createMetrics } from '../src/server/metrics.js';
import { createHttpsqsServer } from '../src/server/server.js';
import { LmdbStore } from '../src/store/lmdb/store.js';
import {
  cleanup,
  clockedServer,
  connectionPerWorker,
  parseResponse,
  rawExchange,
  request,
  startInProcess,
  startServer,
  tempDir,
  waitFor,
  type ClockedServer,
  type InProcessServer,
} from './helpers.js';

interface Reply {
  status: number;
  body: string;
  bytes: Buffer;
  headers: http.IncomingHttpHeaders;
  ms: number;
}

interface CallOptions {
  method?: string;
  body?: string | Buffer;
  signal?: AbortSignal;
  /** On a connection of its own (closed after), rather than a pooled keep-alive one. */
  fresh?: boolean;
}

/** A keep-alive client: `call(path)` resolves to status, headers, body and how long it took. */
function client(port: number) {
  const agent = new http.Agent({ keepAlive: true });
  return (path: string, o: CallOptions = {}): Promise<Reply> =>
    new Promise((resolve, reject) => {
      const started = performance.now();
      const req = http.request(
        { host: '127.0.0.1', port, path, method: o.method ?? (o.body === undefined ? 'GET' : 'POST'), agent: o.fresh ? false : agent, signal: o.signal },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (d: Buffer) => chunks.push(d));
          res.on('error', reject);
          res.on('end', () => {
            const bytes = Buffer.concat(chunks);
            resolve({ status: res.statusCode!, body: bytes.toString('utf8'), bytes, headers: res.headers, ms: performance.now() - started });
          });
        },
      );
      req.on('error', reject);
      req.end(o.body);
    });
}

/** Waits until the server says `n` long polls are waiting (its /metrics gauge, summed over
 * workers): they are registered, and a put now wakes them. */
const pollsWaiting = (call: ReturnType<typeof client>, n: number) =>
  waitFor(async () => new RegExp(`^httpsqs_long_polls_waiting ${n}$`, 'm').test((await call('/metrics', { fresh: true })).body));

describe('extensions', () => {
  let server: InProcessServer;
  let call: ReturnType<typeof client>;
  before(async () => {
    server = await startInProcess({ args: ['--max-wait', '5'] });
    call = client(server.port);
  });
  after(async () => {
    await server.stop();
    cleanup(server.dir);
  });

  describe('leases', () => {
    it('get&lease hands the message out with its position; ack confirms it once', async () => {
      await call('/?name=ls-ack&opt=put&data=job');
      const r = await call('/?name=ls-ack&opt=get&lease=30');
      assert.deepEqual([r.body, r.headers.pos, r.headers.deliveries], ['job', '1', '1']);
      assert.match((await call('/?name=ls-ack&opt=status_json')).body, /"unread":0,"leased":1}\n$/);
      assert.equal((await call('/?name=ls-ack&opt=ack&pos=1')).body, 'HTTPSQS_ACK_OK');
      assert.equal((await call('/?name=ls-ack&opt=ack&pos=1')).body, 'HTTPSQS_LEASE_NOT_FOUND');
      // Without leases, status_json is the reference's, byte for byte.
      assert.equal(
        (await call('/?name=ls-ack&opt=status_json')).body,
        '{"name":"ls-ack","maxqueue":1000000,"putpos":1,"putlap":1,"getpos":1,"getlap":1,"unread":0}\n',
      );
    });

    it('a nacked message comes back first, counting its deliveries; a plain get is unchanged', async () => {
      await call('/?name=ls-nack&opt=put&data=a');
      await call('/?name=ls-nack&opt=put&data=b');
      assert.equal((await call('/?name=ls-nack&opt=get&lease=30')).body, 'a');
      assert.equal((await call('/?name=ls-nack&opt=nack&pos=1')).body, 'HTTPSQS_NACK_OK');
      const again = await call('/?name=ls-nack&opt=get&lease=30');
      assert.deepEqual([again.body, again.headers.pos, again.headers.deliveries], ['a', '1', '2']);
      assert.match(String(again.headers.lease), /^2-\d+$/);
      const plain = await call('/?name=ls-nack&opt=get');
      assert.deepEqual([plain.body, plain.headers.deliveries], ['b', undefined]);
    });

    it('ack and nack with token= settle only the grant the Lease header named', async () => {
      await call('/?name=ls-token&opt=put&data=t');
      const first = await call('/?name=ls-token&opt=get&lease=30');
      await call('/?name=ls-token&opt=nack&pos=1');
      const second = await call('/?name=ls-token&opt=get&lease=30');
      assert.notEqual(first.headers.lease, second.headers.lease);
      assert.equal((await call(`/?name=ls-token&opt=ack&pos=1&token=${first.headers.lease}`)).body, 'HTTPSQS_LEASE_NOT_FOUND');
      assert.equal((await call(`/?name=ls-token&opt=ack&pos=1&token=${second.headers.lease}`)).body, 'HTTPSQS_ACK_OK');
      const batch = JSON.parse((await call('/?name=ls-token&opt=mget&num=5&lease=30')).body);
      assert.deepEqual(batch, []);
      await call('/?name=ls-token&opt=put&data=u');
      const [leased] = JSON.parse((await call('/?name=ls-token&opt=mget&num=5&lease=30')).body);
      assert.equal((await call(`/?name=ls-token&opt=ack&pos=${leased.pos}&token=${leased.lease}`)).body, 'HTTPSQS_ACK_OK');
    });

    it('a put never writes over a leased position: the queue reports full', async () => {
      await call('/?name=ls-full&opt=maxqueue&num=10');
      for (let i = 1; i <= 10; i++) await call(`/?name=ls-full&opt=put&data=m${i}`);
      await call('/?name=ls-full&opt=get&lease=30');
      await call('/?name=ls-full&opt=get');
      assert.equal((await call('/?name=ls-full&opt=put&data=x')).body, 'HTTPSQS_PUT_END');
      await call('/?name=ls-full&opt=ack&pos=1');
      assert.equal((await call('/?name=ls-full&opt=put&data=x')).headers.pos, '1');
    });

    it('bad lease, ack and nack inputs get HTTPSQS_ERROR', async () => {
      for (const q of [
        'opt=get&lease=0',
        'opt=get&lease=abc',
        'opt=get&lease=86401',
        'opt=mget&num=1&lease=-5',
        'opt=ack',
        'opt=ack&pos=abc',
        'opt=nack&pos=0',
        'opt=ack&pos=4294967295',
      ]) {
        assert.equal((await call(`/?name=ls-bad&${q}`)).body, 'HTTPSQS_ERROR', q);
      }
      assert.equal((await call('/?name=ls-bad&opt=nack&pos=999')).body, 'HTTPSQS_LEASE_NOT_FOUND');
    });
  });

  describe('delayed messages and dead letters', () => {
    it('takes strict delay, num and after values, and stores nothing on a bad one', async () => {
      for (const delay of ['-1', '1.5', 'abc', '1e3', '2592001', ''])
        assert.equal((await call(`/?name=bad-delay&opt=put&data=x&delay=${delay}`)).body, 'HTTPSQS_PUT_ERROR', `delay=${delay}`);
      assert.equal((await call('/?name=bad-delay&opt=mput&delay=-1', { body: '["x"]' })).body, 'HTTPSQS_PUT_ERROR');
      assert.equal(
        (await call('/?name=bad-delay&opt=status_json')).body,
        '{"name":"bad-delay","maxqueue":1000000,"putpos":0,"putlap":1,"getpos":0,"getlap":1,"unread":0}\n',
      );
      const ok = await call('/?name=bad-delay&opt=put&data=x&delay=2592000');
      assert.deepEqual([ok.body, ok.headers.scheduled], ['HTTPSQS_PUT_OK', '1000000001']);
      assert.equal((await call('/?name=bad-delay&opt=put&data=y&delay=0')).headers.pos, '1', 'delay=0 is a plain put');
      for (const q of [
        'opt=maxdeliveries',
        'opt=maxdeliveries&num=1001',
        'opt=maxdeliveries&num=-1',
        'opt=maxdeliveries&num=2x',
        'opt=redrive&num=0',
        'opt=redrive&num=1001',
        'opt=dead&num=0',
        'opt=dead&after=x',
        'opt=dead&encoding=hex',
      ])
        assert.equal((await call(`/?name=bad-md&${q}`)).body, 'HTTPSQS_ERROR', q);
      assert.equal(
        (await call('/?name=bad-md&opt=status_json')).body,
        '{"name":"bad-md","maxqueue":1000000,"putpos":0,"putlap":1,"getpos":0,"getlap":1,"unread":0}\n',
      );
    });

    it('a queue full beside its ring refuses delayed puts only; mput returns the IDs', async () => {
      await call('/?name=dl-full&opt=maxqueue&num=10');
      const r = JSON.parse((await call('/?name=dl-full&opt=mput&delay=60', { body: JSON.stringify(Array.from({ length: 12 }, (_, i) => `m${i}`)) })).body);
      assert.equal(r.count, 10);
      assert.equal(r.full, true);
      assert.deepEqual(r.positions.slice(0, 2), [1000000001, 1000000002]);
      assert.equal((await call('/?name=dl-full&opt=put&data=x&delay=1')).body, 'HTTPSQS_PUT_END');
      assert.equal((await call('/?name=dl-full&opt=put&data=x')).body, 'HTTPSQS_PUT_OK');
      assert.match((await call('/?name=dl-full&opt=status_json')).body, /"unread":1,"delayed":10\}\n$/);
      const listed = JSON.parse((await call('/?opt=list&prefix=dl-full')).body);
      assert.deepEqual([listed[0].delayed, listed[0].dead, listed[0].leased, listed[0].maxdeliveries], [10, 0, 0, 0]);
      assert.match((await call('/metrics')).body, /^httpsqs_queue_delayed\{queue="dl-full"\} 10$/m);
    });

    it('dead letters are listed with their deliveries and time, a page at a time, and in base64', async () => {
      await call('/?name=dl-list&opt=maxdeliveries&num=1');
      for (const m of ['a', 'b', 'c']) await call(`/?name=dl-list&opt=put&data=${m}`);
      for (let i = 0; i < 3; i++) {
        const got = await call('/?name=dl-list&opt=get&lease=30');
        await call(`/?name=dl-list&opt=nack&pos=${got.headers.pos}`);
      }
      const page1 = JSON.parse((await call('/?name=dl-list&opt=dead&num=2')).body);
      assert.deepEqual(
        page1.map((d: { pos: number; deliveries: number; data: string }) => [d.pos, d.deliveries, d.data]),
        [
          [1000000001, 1, 'a'],
          [1000000002, 1, 'b'],
        ],
      );
      assert.ok(Math.abs(page1[0].died - Date.now()) < 60_000);
      const page2 = JSON.parse((await call('/?name=dl-list&opt=dead&after=1000000002&encoding=base64')).body);
      assert.deepEqual(
        page2.map((d: { data: string }) => Buffer.from(d.data, 'base64').toString()),
        ['c'],
      );
      assert.match((await call('/metrics')).body, /^httpsqs_queue_dead\{queue="dl-list"\} 3$/m);
      assert.equal((await call('/?name=dl-list&opt=redrive&num=2')).body, '{"count":2,"dead":1}\n');
      assert.equal((await call('/?name=dl-list&opt=ack&pos=1000000003')).body, 'HTTPSQS_LEASE_NOT_FOUND', 'a dead letter is no lease');
      assert.equal((await call('/?name=dl-list&opt=discard&pos=1000000003')).body, 'HTTPSQS_DISCARD_OK');
      assert.equal((await call('/?name=dl-list&opt=discard&pos=1000000003')).body, 'HTTPSQS_DEAD_NOT_FOUND');
      assert.equal((await call('/?name=dl-list&opt=discard&pos=1000000001')).body, 'HTTPSQS_DEAD_NOT_FOUND', 'redriven: no dead letter any more');
      for (const pos of ['', '0', 'x', '4294967295']) assert.equal((await call(`/?name=dl-list&opt=discard&pos=${pos}`)).body, 'HTTPSQS_ERROR', `pos=${pos}`);
      assert.equal(JSON.parse((await call('/?name=dl-list&opt=status_json')).body).dead, undefined);
    });
  });

  describe('batches', () => {
    it('mput stores a JSON array atomically and answers with the positions; mget and view ranges return JSON', async () => {
      const put = await call('/?name=b-basic&opt=mput', { body: JSON.stringify(['one', 'two', 'three', 'zwölf']) });
      assert.equal(put.headers['content-type'], 'application/json');
      assert.deepEqual(JSON.parse(put.body), { count: 4, positions: [1, 2, 3, 4], full: false });
      const got = JSON.parse((await call('/?name=b-basic&opt=mget&num=2')).body);
      assert.deepEqual(got, [
        { pos: 1, deliveries: 1, data: 'one' },
        { pos: 2, deliveries: 1, data: 'two' },
      ]);
      const view = JSON.parse((await call('/?name=b-basic&opt=view&pos=2&num=10')).body);
      assert.deepEqual(view, [
        { pos: 2, data: 'two' },
        { pos: 3, data: 'three' },
        { pos: 4, data: 'zwölf' },
      ]);
      assert.deepEqual(
        JSON.parse((await call('/?name=b-basic&opt=mget&num=10')).body).map((m: { data: string }) => m.data),
        ['three', 'zwölf'],
      );
      assert.equal((await call('/?name=b-basic&opt=mget&num=10')).body, '[]\n');
      // A range stops at the ring's last position: a delayed message, at a slot past it, is not shown.
      assert.equal((await call('/?name=b-basic&opt=put&data=later&delay=3600')).headers.scheduled, '1000000001');
      assert.equal((await call('/?name=b-basic&opt=view&pos=999999999&num=10')).body, '[]\n');
    });

    it('binary messages travel base64-encoded with encoding=base64', async () => {
      const raw = Buffer.from([0, 255, 37, 43, 10, 13, 0x80]);
      const put = await call('/?name=b-bin&opt=mput&encoding=base64', { body: JSON.stringify([raw.toString('base64'), '']) });
      assert.equal(JSON.parse(put.body).count, 2);
      assert.deepEqual((await call('/?name=b-bin&opt=view&pos=1')).bytes, raw);
      const got = JSON.parse((await call('/?name=b-bin&opt=mget&num=5&encoding=base64')).body);
      assert.deepEqual(
        got.map((m: { data: string }) => Buffer.from(m.data, 'base64')),
        [raw, Buffer.alloc(0)],
      );
      const big = Buffer.alloc(8 * 2 ** 20, 0xab);
      assert.equal(JSON.parse((await call('/?name=b-bin&opt=mput&encoding=base64', { body: JSON.stringify([big.toString('base64')]) })).body).count, 1);
      assert.deepEqual((await call('/?name=b-bin&opt=view&pos=3')).bytes, big);
    });

    it('mput into a queue that fills says how many fitted', async () => {
      await call('/?name=b-full&opt=maxqueue&num=10');
      const r = JSON.parse((await call('/?name=b-full&opt=mput', { body: JSON.stringify(Array.from({ length: 12 }, (_, i) => `m${i}`)) })).body);
      assert.equal(r.count, 10);
      assert.equal(r.full, true);
      assert.deepEqual(r.positions, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    });

    it('mget with wait and lease: the first messages to arrive, leased', async () => {
      const waiting = call('/?name=b-wait&opt=mget&num=5&wait=5&lease=30');
      await pollsWaiting(call, 1);
      await call('/?name=b-wait&opt=mput', { body: '["x","y","z"]' });
      const got = JSON.parse((await waiting).body);
      assert.deepEqual(
        got.map((m: { data: string }) => m.data),
        ['x', 'y', 'z'],
      );
      assert.match((await call('/?name=b-wait&opt=status_json')).body, /"leased":3}/);
    });

    it('malformed and oversize batches are refused, and nothing of them is stored', async () => {
      const bodies = ['', 'not json', '{"a":1}', '"text"', '[1,2]', '["ok",null]', JSON.stringify(Array.from({ length: 1001 }, () => 'm'))];
      for (const body of bodies) {
        assert.equal((await call('/?name=b-bad&opt=mput', { method: 'POST', body })).body, 'HTTPSQS_PUT_ERROR', body.slice(0, 20));
      }
      for (const bad of ['not base64!', 'AB=', 'A===', 'AAAA=', 'AA=A', 'AAA']) {
        assert.equal((await call('/?name=b-bad&opt=mput&encoding=base64', { body: JSON.stringify([bad]) })).body, 'HTTPSQS_PUT_ERROR', bad);
      }
      assert.equal((await call('/?name=b-bad&opt=mput&encoding=hex', { body: '["00"]' })).body, 'HTTPSQS_PUT_ERROR');
      // Text that is not text: stored, each would have become U+FFFD.
      for (const body of ['["ok","\\ud800"]', '["a\\udc00b"]', Buffer.from([0x5b, 0x22, 0xff, 0x22, 0x5d])]) {
        assert.equal((await call('/?name=b-bad&opt=mput', { body })).body, 'HTTPSQS_PUT_ERROR', String(body));
      }
      // A pair is one character, and stays one.
      assert.match((await call('/?name=b-pair&opt=mput', { body: '["\\ud83d\\ude00"]' })).body, /"count":1/);
      assert.equal((await call('/?name=b-pair&opt=get')).body, '\u{1F600}');
      for (const q of [
        'opt=mget',
        'opt=mget&num=0',
        'opt=mget&num=1001',
        'opt=mget&num=x',
        'opt=view&pos=1&num=0',
        'opt=view&pos=0&num=5',
        'opt=view&pos=1&num=2000',
      ]) {
        assert.equal((await call(`/?name=b-bad&${q}`)).body, 'HTTPSQS_ERROR', q);
      }
      assert.equal((await call('/?name=b-bad&opt=status')).body.includes('Put position of queue (1st lap): 0'), true);
    });
  });

  it('a put with Content-Type application/octet-stream stores the body exactly; others are URL-decoded as before', async () => {
    const raw = Buffer.from('a+b%20c\x00\xff', 'latin1');
    await request(server.port, 'POST', '/?name=octet&opt=put', { body: raw, headers: [['Content-Type', 'application/octet-stream']] });
    await request(server.port, 'POST', '/?name=octet&opt=put', { body: raw });
    assert.deepEqual((await request(server.port, 'GET', '/?name=octet&opt=get')).body, raw);
    assert.deepEqual((await request(server.port, 'GET', '/?name=octet&opt=get')).body, Buffer.from('a b c\x00\xff', 'latin1'));
  });

  it('list returns queues as status_json objects, by prefix, in pages', async () => {
    for (const n of ['ls:c', 'ls:a', 'ls:b', 'lt']) await call(`/?name=${n}&opt=put&data=x`);
    const all = JSON.parse((await call('/?opt=list&prefix=ls:')).body);
    assert.deepEqual(
      all.map((q: { name: string }) => q.name),
      ['ls:a', 'ls:b', 'ls:c'],
    );
    assert.deepEqual(all[0], {
      name: 'ls:a',
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
    const page1 = JSON.parse((await call('/?opt=list&prefix=ls:&limit=2')).body);
    const page2 = JSON.parse((await call(`/?opt=list&prefix=ls:&limit=2&after=${page1[1].name}`)).body);
    assert.deepEqual(
      [...page1, ...page2].map((q: { name: string }) => q.name),
      ['ls:a', 'ls:b', 'ls:c'],
    );
    for (const l of ['0', '1001', 'x']) assert.equal((await call(`/?opt=list&limit=${l}`)).body, 'HTTPSQS_ERROR');
  });

  it('list gives the bytes of a name that is not UTF-8 as name64, and pages after it', async () => {
    for (const n of ['nu:%C3%A9', 'nu:%FF', 'nu:%FFz']) await call(`/?name=${n}&opt=put&data=x`);
    const all = JSON.parse((await call('/?opt=list&prefix=nu:')).body);
    assert.deepEqual(
      all.map((q: { name: string; name64?: string }) => [q.name, q.name64]),
      [
        ['nu:é', undefined],
        ['nu:\uFFFD', Buffer.from('nu:\xff', 'latin1').toString('base64')],
        ['nu:\uFFFDz', Buffer.from('nu:\xffz', 'latin1').toString('base64')],
      ],
    );
    const after = [...Buffer.from(all[1].name64, 'base64')].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');
    assert.deepEqual(
      JSON.parse((await call(`/?opt=list&prefix=nu:&after=${after}`)).body).map((q: { name: string }) => q.name),
      ['nu:\uFFFDz'],
    );
  });

  it('/healthz answers OK; /metrics counts per queue in the Prometheus text format', async () => {
    assert.deepEqual([(await call('/healthz')).status, (await call('/healthz')).body], [200, 'OK\n']);
    await call('/?name=met&opt=put&data=1');
    await call('/?name=met&opt=put&data=2');
    await call('/?name=met&opt=get&lease=30');
    await call('/?name=met&opt=ack&pos=1');
    assert.equal((await call('/?name=met-wait&opt=get&wait=1')).body, 'HTTPSQS_GET_END'); // a long poll that times out
    assert.equal((await call('/dashboard/info')).status, 200);
    const m = await call('/metrics');
    assert.equal(m.status, 200);
    assert.match(m.headers['content-type']!, /^text\/plain; version=0\.0\.4/);
    for (const line of m.body.split('\n')) {
      if (line && !line.startsWith('#')) assert.match(line, /^[a-z_:][a-z0-9_:]*(\{.*\})? -?[0-9.e+-]+|NaN|[+-]Inf$/i, line);
    }
    assert.match(m.body, /^httpsqs_messages_put_total\{queue="met"\} 2$/m);
    assert.match(m.body, /^httpsqs_messages_leased_total\{queue="met"\} 1$/m);
    assert.match(m.body, /^httpsqs_leases_acked_total\{queue="met"\} 1$/m);
    assert.match(m.body, /^httpsqs_queue_unread\{queue="met"\} 1$/m);
    assert.match(m.body, /^httpsqs_request_duration_seconds_count\{opt="put"\} \d+$/m);
    assert.match(m.body, /^httpsqs_request_duration_seconds_count\{opt="\/dashboard"\} 1$/m);
    assert.doesNotMatch(m.body, /^httpsqs_request_duration_seconds_count\{opt="(other)?"\}/m);
    assert.match(m.body, /^httpsqs_store_write_seconds_count\{op="put"\} \d+$/m);
    assert.match(m.body, /^httpsqs_long_poll_wait_seconds_count\{outcome="timeout"\} \d+$/m);
    // A reset forgets the queue's counters.
    await call('/?name=met&opt=reset');
    await call('/?name=met&opt=put&data=3');
    const after = (await call('/metrics')).body;
    assert.match(after, /^httpsqs_messages_put_total\{queue="met"\} 1$/m);
    assert.doesNotMatch(after, /^httpsqs_leases_acked_total\{queue="met"\}/m);
  });

  it('/metrics: names that are not UTF-8 have series of their own (queue64), and per-queue counts stop at 10,000 queues', async () => {
    const server = await startInProcess();
    const own = client(server.port);
    try {
      await own('/?name=%FF&opt=put&data=1');
      await own('/?name=%FE&opt=put&data=1');
      await own('/?name=%FE&opt=put&data=2');
      let m = (await own('/metrics')).body;
      // As text both would be U+FFFD, and one series.
      assert.match(m, /^httpsqs_messages_put_total\{queue64="\/w=="\} 1$/m);
      assert.match(m, /^httpsqs_messages_put_total\{queue64="\/g=="\} 2$/m);
      assert.match(m, /^httpsqs_queue_unread\{queue64="\/g=="\} 2$/m);
      assert.doesNotMatch(m, /\uFFFD/);
      // Any client can name new queues: past 10,000 counted, the others are counted together.
      const names = Array.from({ length: 10_000 }, (_, i) => `many-${i}`);
      for (let i = 0; i < names.length; i += 500) await Promise.all(names.slice(i, i + 500).map((n) => own(`/?name=${n}&opt=put&data=x`)));
      m = (await own('/metrics')).body;
      const series = m.split('\n').filter((l) => l.startsWith('httpsqs_messages_put_total{'));
      assert.equal(series.length, 10_001, 'one series a queue, for 10,000 queues, and one for the others');
      assert.match(m, /^httpsqs_messages_put_total\{others="true"\} 2$/m);
      // The depths of 10,000 queues are reported: the queues counted first (the two above) among
      // them, though 10,000 names sort before theirs.
      const depths = m.split('\n').filter((l) => l.startsWith('httpsqs_queue_unread{'));
      assert.equal(depths.length, 10_000);
      assert.match(m, /^httpsqs_queue_unread\{queue64="\/g=="\} 2$/m);
      assert.match(m, /^httpsqs_queue_unread\{queue64="\/w=="\} 1$/m);
    } finally {
      await server.stop();
      cleanup(server.dir);
    }
  });

  it('/metrics: scrapes that come while one is collected share it, and read the queues once', async () => {
    const server = await startInProcess();
    const own = client(server.port);
    const list = LmdbStore.prototype.list;
    let lists = 0;
    // The first scrape's read of the queues lasts until all twenty have come (or half a second).
    let arrived!: () => void;
    const slow = Promise.race([new Promise<void>((r) => (arrived = r)), sleep(500)]);
    LmdbStore.prototype.list = async function (...args) {
      if (++lists >= 20) arrived();
      await slow;
      return list.apply(this, args);
    };
    try {
      await own('/?name=scraped&opt=put&data=1');
      const scrapes = await Promise.all(Array.from({ length: 20 }, () => own('/metrics')));
      for (const m of scrapes) assert.match(m.body, /^httpsqs_queue_unread\{queue="scraped"\} 1$/m);
      assert.ok(lists < 5, `the queues were read ${lists} times for 20 scrapes at once`);
      await own('/?name=scraped&opt=put&data=2');
      assert.match((await own('/metrics')).body, /^httpsqs_queue_unread\{queue="scraped"\} 2$/m, 'a scrape after them collects again');
    } finally {
      LmdbStore.prototype.list = list;
      await server.stop();
      cleanup(server.dir);
    }
  });

  it('/dashboard/history names a queue whose name is UTF-8 text as that text, in JSON that parses', async () => {
    const name = 'café-队列';
    assert.equal((await call(`/?name=${encodeURIComponent(name)}&opt=put&data=x`)).body, 'HTTPSQS_PUT_OK');
    const reply = await call('/dashboard/history');
    assert.equal(Number(reply.headers['content-length']), reply.bytes.length);
    const history = JSON.parse(reply.body) as { queues: Array<{ name: string }> };
    assert.ok(
      history.queues.some((q) => q.name === name),
      JSON.stringify(history.queues.map((q) => q.name)),
    );
  });
});

describe('long polling (time from a test clock)', () => {
  let lp: ClockedServer;
  let call: ReturnType<typeof client>;
  before(async () => {
    lp = await clockedServer();
    call = client(lp.port);
  });
  after(() => lp.stop());
  /** Resolves once `n` long polls wait. */
  const waiting = (n: number) => waitFor(() => lp.app.waiters.size === n);
  /** Sends `data` and shuts down the sending side, as `printf ... | nc -N` does; resolves to all
   * that came back once the server closes. */
  const halfClosed = (data: string) =>
    new Promise<string>((resolve, reject) => {
      const sock = net.connect(lp.port, '127.0.0.1');
      const chunks: Buffer[] = [];
      sock.on('data', (d: Buffer) => chunks.push(d));
      sock.on('error', reject);
      sock.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
      sock.end(data);
    });

  it('waits the given seconds on an empty queue, then answers like get', async () => {
    const poll = call('/?name=lp-empty&opt=get&wait=1');
    await waiting(1);
    lp.clock.advance(999);
    assert.equal(lp.app.waiters.size, 1, 'still waiting before its second is up');
    lp.clock.advance(1);
    assert.equal((await poll).body, 'HTTPSQS_GET_END');
  });

  it('a put wakes a waiting consumer at once', async () => {
    const poll = call('/?name=lp-wake&opt=get&wait=5');
    await waiting(1);
    assert.equal((await call('/?name=lp-wake&opt=put&data=hello')).body, 'HTTPSQS_PUT_OK');
    const r = await poll; // on the test clock no time passes: the put itself answered it
    assert.equal(r.body, 'hello');
    assert.equal(r.headers.pos, '1');
  });

  it('a delayed message wakes a waiting consumer when it is due, not before', async () => {
    const poll = call('/?name=lp-delay&opt=get&wait=5');
    await waiting(1);
    const put = await call('/?name=lp-delay&opt=put&data=later&delay=2');
    assert.equal(put.body, 'HTTPSQS_PUT_OK');
    assert.equal(put.headers.pos, undefined);
    lp.clock.advance(1999);
    await sleep(20);
    assert.equal(lp.app.waiters.size, 1, 'still waiting before the message is due');
    lp.clock.advance(1);
    const r = await poll;
    assert.deepEqual([r.body, r.headers.pos], ['later', put.headers.scheduled]);
  });

  it('waiters are served first come, first served', async () => {
    const waiters: Array<Promise<Reply>> = [];
    for (let i = 0; i < 3; i++) {
      waiters.push(call('/?name=lp-fifo&opt=get&wait=5'));
      await waiting(i + 1);
    }
    for (const m of ['first', 'second', 'third']) await call(`/?name=lp-fifo&opt=put&data=${m}`);
    assert.deepEqual(
      (await Promise.all(waiters)).map((r) => r.body),
      ['first', 'second', 'third'],
    );
  });

  it('a client that disconnects while waiting takes no message with it', async () => {
    const abort = new AbortController();
    const gone = call('/?name=lp-gone&opt=get&wait=5', { signal: abort.signal }).catch((err: Error) => err);
    await waiting(1);
    abort.abort();
    assert.ok((await gone) instanceof Error);
    await waiting(0);
    await call('/?name=lp-gone&opt=put&data=kept');
    assert.equal((await call('/?name=lp-gone&opt=get')).body, 'kept');
  });

  it('a client that half-closes after its requests still gets every reply; its long poll ends at once, taking nothing', async () => {
    const bodies = (raw: string) => raw.split(/HTTP\/1\.1 200 OK\r\n[\s\S]*?\r\n\r\n/).slice(1);
    assert.deepEqual(bodies(await halfClosed('GET /?name=hc&opt=put&data=one HTTP/1.0\r\n\r\n')), ['HTTPSQS_PUT_OK']);
    const pipelined = 'GET /?name=hc&opt=put&data=two HTTP/1.1\r\nHost: x\r\n\r\nGET /?name=hc&opt=get HTTP/1.1\r\nHost: x\r\n\r\n';
    assert.deepEqual(bodies(await halfClosed(pipelined)), ['HTTPSQS_PUT_OK', 'one']);
    // No time passes on the test clock: only the half-close can end this long poll.
    assert.deepEqual(bodies(await halfClosed('GET /?name=hc-wait&opt=get&wait=5 HTTP/1.0\r\n\r\n')), ['HTTPSQS_GET_END']);
    await call('/?name=hc-wait&opt=put&data=kept');
    assert.equal((await call('/?name=hc-wait&opt=get')).body, 'kept');
    assert.equal((await call('/?name=hc&opt=get')).body, 'two');
  });

  it('a leased long poll of a client that half-closes gets what its first look finds; none spends a delivery unseen', async () => {
    // Before, the message was taken, then given back as the client had half-closed: each such
    // request counted a delivery nobody saw, and with maxdeliveries made the message a dead letter.
    await call('/?name=hc-lease&opt=maxdeliveries&num=2');
    await call('/?name=hc-lease&opt=put&data=job');
    const first = await call('/?name=hc-lease&opt=get&lease=30');
    assert.equal(first.body, 'job');
    assert.equal((await call(`/?name=hc-lease&opt=nack&pos=1&token=${first.headers.lease}`)).body, 'HTTPSQS_NACK_OK');
    const raw = await halfClosed('GET /?name=hc-lease&opt=get&wait=5&lease=30 HTTP/1.0\r\n\r\n');
    assert.match(raw, /\r\nDeliveries: 2\r\n[\s\S]*\r\n\r\njob$/);
    let status = JSON.parse((await call('/?name=hc-lease&opt=status_json')).body);
    assert.deepEqual([status.leased, status.dead ?? 0], [1, 0]);
    // mget alike: the second message is handed out, leased, to the half-closed client.
    await call('/?name=hc-lease&opt=put&data=two');
    const batch = await halfClosed('GET /?name=hc-lease&opt=mget&num=5&wait=5&lease=30 HTTP/1.0\r\n\r\n');
    assert.match(batch, /"pos":2,"deliveries":1,"lease":"[^"]+","data":"two"/);
    status = JSON.parse((await call('/?name=hc-lease&opt=status_json')).body);
    assert.deepEqual([status.leased, status.dead ?? 0, status.unread], [2, 0, 0]);
  });

  it('a lease that ends wakes a waiter, which gets the message again', async () => {
    await call('/?name=lp-lease&opt=put&data=again');
    assert.equal((await call('/?name=lp-lease&opt=get&lease=1')).body, 'again');
    const poll = call('/?name=lp-lease&opt=get&wait=5');
    await waiting(1);
    lp.clock.advance(999);
    assert.equal(lp.app.waiters.size, 1, 'the lease has not ended yet');
    lp.clock.advance(1);
    const r = await poll;
    assert.equal(r.body, 'again');
    assert.equal(r.headers.deliveries, '2');
  });

  it('a touch that shortens a lease wakes a waiter when the new one ends', async () => {
    await call('/?name=lp-touch&opt=put&data=sooner');
    assert.equal((await call('/?name=lp-touch&opt=get&lease=60')).body, 'sooner');
    const poll = call('/?name=lp-touch&opt=get&wait=5');
    await waiting(1);
    assert.equal((await call('/?name=lp-touch&opt=touch&pos=1&lease=1')).body, 'HTTPSQS_TOUCH_OK');
    lp.clock.advance(1000);
    const woken = await waitFor(() => lp.app.waiters.size === 0, 2000).then(
      () => true,
      () => false,
    );
    lp.clock.advance(4000); // the end of a long poll that was not woken
    const r = await poll;
    assert.ok(woken, 'the waiter was not woken when the lease ended');
    assert.equal(r.body, 'sooner');
    assert.equal(r.headers.deliveries, '2');
  });

  it('wait must be whole seconds within the server cap (--max-wait)', async () => {
    for (const w of ['abc', '-1', '6', '1e3', '2.5', '']) {
      assert.equal((await call(`/?name=lp-bad&opt=get&wait=${w}`)).body, 'HTTPSQS_ERROR', `wait=${w}`);
    }
    assert.equal((await call('/?name=lp-bad&opt=get&wait=0')).body, 'HTTPSQS_GET_END');
  });

  it('touch extends a running lease and answers with its token, which a touch keeps; ack takes it', async () => {
    await call('/?name=touch&opt=put&data=slow');
    const got = await call('/?name=touch&opt=get&lease=1');
    const token = got.headers.lease as string;
    const t = await call(`/?name=touch&opt=touch&pos=1&lease=30&token=${token}`);
    assert.equal(t.body, 'HTTPSQS_TOUCH_OK');
    assert.equal(t.headers.lease, token);
    lp.clock.advance(1300); // the first lease would have run out by now
    assert.equal((await call('/?name=touch&opt=get')).body, 'HTTPSQS_GET_END');
    assert.equal((await call('/?name=touch&opt=ack&pos=1&token=0-0')).body, 'HTTPSQS_LEASE_NOT_FOUND');
    assert.equal((await call(`/?name=touch&opt=ack&pos=1&token=${token}`)).body, 'HTTPSQS_ACK_OK');
    assert.equal((await call('/?name=touch&opt=touch&pos=1&lease=30')).body, 'HTTPSQS_LEASE_NOT_FOUND');
    for (const q of ['pos=1', 'pos=1&lease=0', 'pos=1&lease=86401', 'pos=1&lease=1e3', 'lease=30', 'pos=0&lease=30']) {
      assert.equal((await call(`/?name=touch&opt=touch&${q}`)).body, 'HTTPSQS_ERROR', q);
    }
  });
});

describe('long polling on a store whose nextExpiry fails (time from a test clock)', () => {
  it('a long poll that took a message answers with it, though setting the next alarm failed', async () => {
    // The store answers everything but `nextExpiry` (as Redis whose connection drops may): before,
    // the failure came after the message was taken, the poll answered HTTPSQS_ERROR, and a plain
    // get's message was lost.
    let failing = false;
    const lp = await clockedServer(
      (store) =>
        new Proxy(store, {
          get(target, key) {
            if (key === 'nextExpiry' && failing) return () => Promise.reject(new Error('connection lost'));
            const value = Reflect.get(target, key);
            return typeof value === 'function' ? value.bind(target) : value;
          },
        }),
    );
    try {
      const call = client(lp.port);
      const polls = [call('/?name=ne&opt=get&wait=5'), call('/?name=ne&opt=get&wait=5')];
      await waitFor(() => lp.app.waiters.size === 2);
      failing = true;
      assert.equal((await call('/?name=ne&opt=put&data=kept')).body, 'HTTPSQS_PUT_OK');
      const first = await Promise.race(polls);
      assert.equal(first.body, 'kept');
      lp.clock.advance(5000);
      assert.deepEqual((await Promise.all(polls)).map((r) => r.body).sort(), ['HTTPSQS_GET_END', 'kept']);
    } finally {
      await lp.stop();
    }
  });
});

describe('/metrics on a store that cannot list its queues', () => {
  it("answers 503 with the store's error as UTF-8 (it may name a path), not a scrape of nothing", async () => {
    const dir = tempDir();
    const real = await LmdbStore.open({ path: dir });
    const store = new Proxy(real, {
      get(target, key) {
        if (key === 'list') return () => Promise.reject(new Error('cannot read /srv/données'));
        const value = Reflect.get(target, key);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const metrics = createMetrics({ store, connections: () => 0, waiting: () => 0, buffered: () => ({ bytes: 0, waiting: 0, refused: 0 }) });
    const app = createHttpsqsServer(store, { keepAliveTimeout: 60, maxMessageBytes: 2 ** 20, metrics, log: () => {} });
    await new Promise<void>((r) => app.server.listen(0, '127.0.0.1', r));
    try {
      const r = await request((app.server.address() as net.AddressInfo).port, 'GET', '/metrics');
      assert.equal(r.status, 503);
      assert.equal(r.body.toString('utf8'), 'cannot read /srv/données; try again\n');
    } finally {
      await app.close();
      await real.close();
      cleanup(dir);
    }
  });
});

describe('extensions with a password', () => {
  it('list and /metrics need auth= like every opt; /healthz does not', async () => {
    const server = await startInProcess({ args: ['-a', 'sesame'] });
    const call = client(server.port);
    try {
      assert.equal((await call('/?opt=list')).body, 'HTTPSQS_AUTH_FAILED');
      assert.equal((await call('/?opt=list&auth=sesame')).body, '[]\n');
      assert.equal((await call('/?name=q&opt=get&wait=1')).body, 'HTTPSQS_AUTH_FAILED');
      assert.equal((await call('/metrics')).status, 401);
      assert.equal((await call('/metrics?auth=sesame')).status, 200);
      assert.equal((await call('/healthz')).status, 200);
      // The absolute form, as a proxy sends it, names the same paths (RFC 9112 3.2.2).
      const viaProxy = parseResponse(await rawExchange(server.port, `GET http://127.0.0.1:${server.port}/metrics HTTP/1.1\r\nConnection: close\r\n\r\n`))!;
      assert.equal(viaProxy.res.status, 401);
      const healthz = parseResponse(await rawExchange(server.port, 'GET HTTP://localhost/healthz HTTP/1.1\r\nConnection: close\r\n\r\n'))!;
      assert.deepEqual([healthz.res.status, healthz.res.body.toString()], [200, 'OK\n']);
      // A refusal is not kept by caches, as no reply of the endpoints is.
      for (const path of ['/metrics', '/dashboard/info', '/dashboard/history']) {
        const r = parseResponse(await rawExchange(server.port, `GET ${path} HTTP/1.1\r\nConnection: close\r\n\r\n`))!;
        assert.deepEqual([r.res.status, r.res.headers['cache-control']], [401, 'no-cache'], path);
        // What they tell once the password is given is not even stored: its URL holds the password.
        const ok = parseResponse(await rawExchange(server.port, `GET ${path}?auth=sesame HTTP/1.1\r\nConnection: close\r\n\r\n`))!;
        assert.deepEqual([ok.res.status, ok.res.headers['cache-control']], [200, 'no-store'], path);
      }
      // A load balancer's HEAD check gets the headers of /healthz; HEAD never runs a queue operation.
      await call('/?name=h&opt=put&data=x&auth=sesame');
      const head = parseResponse(await rawExchange(server.port, 'HEAD /healthz HTTP/1.1\r\nConnection: close\r\n\r\n'), true)!;
      assert.deepEqual([head.res.status, head.rest.length], [200, 0]);
      assert.equal((await request(server.port, 'HEAD', '/?name=h&opt=get&auth=sesame')).status, 405);
      assert.equal(
        (await call('/?name=h&opt=status_json&auth=sesame')).body,
        '{"name":"h","maxqueue":1000000,"putpos":1,"putlap":1,"getpos":0,"getlap":1,"unread":1}\n',
      );
    } finally {
      await server.stop();
      cleanup(server.dir);
    }
  });
});

describe('extensions across restarts and stops', () => {
  it('leases survive a crash (SIGKILL): the message is still leased, and comes back when nacked', async () => {
    let server = await startServer();
    let call = client(server.port);
    await call('/?name=crash&opt=put&data=precious');
    assert.equal((await call('/?name=crash&opt=get&lease=300')).body, 'precious');
    await server.kill();
    server = await startServer({ dir: server.dir });
    call = client(server.port);
    try {
      assert.match((await call('/?name=crash&opt=status_json')).body, /"leased":1}/);
      assert.equal((await call('/?name=crash&opt=get')).body, 'HTTPSQS_GET_END');
      assert.equal((await call('/?name=crash&opt=nack&pos=1')).body, 'HTTPSQS_NACK_OK');
      const back = await call('/?name=crash&opt=get');
      assert.deepEqual([back.body, back.headers.deliveries], ['precious', '2']);
    } finally {
      await server.stop();
      cleanup(server.dir);
    }
  });

  it('a stopping server answers waiting long polls at once and exits cleanly', async () => {
    const server = await startServer();
    const call = client(server.port);
    const waiting = call('/?name=stop&opt=get&wait=30');
    await pollsWaiting(call, 1);
    const stopped = server.stop();
    const r = await waiting;
    assert.equal(r.body, 'HTTPSQS_GET_END');
    assert.ok(r.ms < 5000, `answered after ${r.ms} ms`);
    assert.equal(await stopped, 0);
    cleanup(server.dir);
  });
});

describe('extensions with --workers 2', () => {
  it('/metrics while a worker is replaced: a 200 always carries the sums (the workers serving), or a 503 says why; never a 200 without samples', async () => {
    const server = await startServer({ args: ['--workers', '2'] });
    const call = client(server.port);
    try {
      assert.equal((await call('/?name=mw&opt=put&data=x')).body, 'HTTPSQS_PUT_OK');
      const [gone] = server.workers();
      process.kill(gone!, 'SIGKILL');
      const seen: string[] = [];
      let replaced = 0;
      for (let i = 0; i < 200 && replaced < 3; i++) {
        const r = await call('/metrics', { fresh: true });
        seen.push(`${r.status}: ${r.body.slice(0, 80)}`);
        if (r.status === 200) assert.match(r.body, /^httpsqs_queue_unread\{queue="mw"\} 1$/m, seen.join('\n'));
        else assert.match(`${r.status} ${r.body}`, /^503 .*metrics could not be collected/, seen.join('\n'));
        if (server.workers().length === 2 && !server.workers().includes(gone!)) replaced++;
      }
      assert.equal(replaced, 3, seen.join('\n'));
    } finally {
      await server.stop();
      cleanup(server.dir);
    }
  });

  it("a worker replaced leaves its counts in /metrics' sums: no counter goes down (Prometheus would read a reset)", async () => {
    const server = await startServer({ args: ['--workers', '2'] });
    const call = client(server.port);
    const conns = await connectionPerWorker(server);
    const [a, b] = [...conns.values()];
    const gone = a!.worker;
    const putTotal = async () => {
      const r = await call('/metrics', { fresh: true });
      return r.status === 200 ? Number(/^httpsqs_messages_put_total\{queue="mc"\} (\d+)$/m.exec(r.body)?.[1]) : undefined;
    };
    try {
      for (let i = 0; i < 3; i++) assert.equal((await a!.send(`/?name=mc&opt=put&data=a${i}`)).body.toString(), 'HTTPSQS_PUT_OK');
      for (let i = 0; i < 4; i++) assert.equal((await b!.send(`/?name=mc&opt=put&data=b${i}`)).body.toString(), 'HTTPSQS_PUT_OK');
      assert.equal(await putTotal(), 7);
      process.kill(gone, 'SIGKILL');
      await waitFor(() => server.workers().length === 2 && !server.workers().includes(gone), 10_000);
      let total: number | undefined;
      await waitFor(async () => (total = await putTotal()) !== undefined, 10_000);
      assert.equal(total, 7, 'the three puts of the worker that was replaced are still counted');
      assert.equal((await call('/?name=mc&opt=put&data=c', { fresh: true })).body, 'HTTPSQS_PUT_OK');
      assert.equal(await putTotal(), 8);
    } finally {
      for (const c of conns.values()) c.close();
      await server.stop();
      cleanup(server.dir);
    }
  });

  it('a put in one worker wakes long polls waiting in the other; metrics add up over workers', async () => {
    const server = await startServer({ args: ['--workers', '2'] });
    const call = client(server.port);
    const [a, b] = [...(await connectionPerWorker(server)).values()];
    try {
      // One waiter surely in worker B (the kernel may give fresh connections all to one worker).
      const inB = b!.send('/?name=ww&opt=get&wait=20', 30_000).then((r) => ({ body: r.body.toString() }));
      const waiters = [inB, ...Array.from({ length: 5 }, () => call('/?name=ww&opt=get&wait=20', { fresh: true }))];
      await pollsWaiting(call, 6);
      const started = performance.now();
      // Puts in worker A: the waiter in B can only hear of them through the primary.
      for (let i = 0; i < 6; i++) assert.equal((await a!.send(`/?name=ww&opt=put&data=m${i}`)).body.toString(), 'HTTPSQS_PUT_OK');
      const got = await Promise.all(waiters);
      assert.deepEqual(got.map((r) => r.body).sort(), ['m0', 'm1', 'm2', 'm3', 'm4', 'm5']);
      assert.ok(performance.now() - started < 5000, 'waiters were not woken by puts in the other worker');
      const metrics = (await call('/metrics')).body;
      await call('/metrics');
      // A scrape is one round of messages between the processes, not a storm: all of them idle after.
      const ticks = (pid: number) =>
        readFileSync(`/proc/${pid}/stat`, 'utf8')
          .split(') ')[1]!
          .split(' ')
          .slice(11, 13)
          .reduce((a, b) => a + Number(b), 0);
      const cpu = () => [server.proc.pid!, ...server.workers()].reduce((sum, pid) => sum + ticks(pid), 0);
      await sleep(200);
      const before = cpu();
      await sleep(1000);
      const used = cpu() - before;
      assert.ok(used < 40, `the server used ${used} clock ticks in an idle second`);
      assert.match(metrics, /^httpsqs_messages_put_total\{queue="ww"\} 6$/m);
      // Taken in both workers (or the wake-ups would not have been needed): the sum is 6.
      assert.match(metrics, /^httpsqs_messages_taken_total\{queue="ww"\} 6$/m);
      assert.match(metrics, /^httpsqs_queue_unread\{queue="ww"\} 0$/m);
    } finally {
      await server.stop();
      cleanup(server.dir);
    }
  });
  it('a touch in one worker that shortens a lease wakes a long poll in the other when it ends', async () => {
    const server = await startServer({ args: ['--workers', '2'] });
    const [a, b] = [...(await connectionPerWorker(server)).values()];
    try {
      assert.equal((await a!.send('/?name=wt&opt=put&data=sooner')).body.toString(), 'HTTPSQS_PUT_OK');
      assert.equal((await a!.send('/?name=wt&opt=get&lease=60')).body.toString(), 'sooner');
      const started = performance.now();
      const poll = b!.send('/?name=wt&opt=get&wait=20', 30_000);
      await pollsWaiting(client(server.port), 1);
      assert.equal((await a!.send('/?name=wt&opt=touch&pos=1&lease=1')).body.toString(), 'HTTPSQS_TOUCH_OK');
      assert.equal((await poll).body.toString(), 'sooner');
      const took = performance.now() - started;
      assert.ok(took < 5000, `handed out ${took.toFixed(0)} ms after its lease was cut to 1 s`);
    } finally {
      a?.close();
      b?.close();
      await server.stop();
      cleanup(server.dir);
    }
  });

  it('a delayed put in one worker wakes long polls in the other when due; dead letters are shared', async () => {
    const server = await startServer({ args: ['--workers', '2'] });
    const call = client(server.port);
    try {
      const waiters = Array.from({ length: 4 }, () => call('/?name=wd&opt=get&wait=20', { fresh: true }));
      await pollsWaiting(call, 4);
      const started = performance.now();
      await call('/?name=wd&opt=mput&delay=1', { body: JSON.stringify(['d0', 'd1', 'd2', 'd3']) });
      assert.deepEqual((await Promise.all(waiters)).map((r) => r.body).sort(), ['d0', 'd1', 'd2', 'd3']);
      const took = performance.now() - started;
      assert.ok(took >= 900 && took < 5000, `handed out ${took.toFixed(0)} ms after a put delayed by 1 s`);
      assert.equal((await call('/?name=wp&opt=maxdeliveries&num=1', { fresh: true })).body, 'HTTPSQS_MAXDELIVERIES_OK');
      await call('/?name=wp&opt=put&data=bad', { fresh: true });
      const r = await call('/?name=wp&opt=get&lease=30', { fresh: true });
      assert.equal((await call(`/?name=wp&opt=nack&pos=${r.headers.pos}`, { fresh: true })).body, 'HTTPSQS_NACK_OK');
      for (let i = 0; i < 2; i++) assert.match((await call('/?name=wp&opt=status_json', { fresh: true })).body, /"dead":1,"maxdeliveries":1\}/);
      assert.equal((await call('/?name=wp&opt=redrive', { fresh: true })).body, '{"count":1,"dead":0}\n');
      assert.equal((await call('/?name=wp&opt=get', { fresh: true })).body, 'bad');
    } finally {
      await server.stop();
      cleanup(server.dir);
    }
  });
});
