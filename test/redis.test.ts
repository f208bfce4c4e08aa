/**
 * httpsqs on Redis: the reference transcripts, two frontends on one Redis behaving as one server
 * (exactly-once delivery, long polls woken across frontends), a three-primary cluster with
 * queues spread over its shards, and --redis-wait. Real redis-server processes on loopback ports.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import calculateSlot from 'cluster-key-slot';
import { type Cluster, Redis } from 'ioredis';
import { after, before, describe, it } from 'node:test';
import { queueRecords } from '../src/cli/export.js';
import { DEAD, FIRST_SLOT, type Lease } from '../src/queue/leases.js';
import { RedisStore } from '../src/store/redis.js';
import type { QueueRecord, QueueStatus } from '../src/store/store.js';
import { replayConformance } from './conformance.js';
import {
  assertExportIgnoresNack,
  cleanup,
  freePort,
  keepAliveClient,
  produceAndConsume,
  request,
  runCli,
  startServer,
  tempDir,
  type RunningServer,
} from './helpers.js';
import { noRedis, startRedis, startRedisCluster, type RedisCluster, type RedisServer } from './redis-servers.js';

const skip = noRedis();
let redis: RedisServer;
before(async () => {
  if (!skip) redis = await startRedis();
});
after(() => redis?.stop());

// Every scenario on a fresh store: a key prefix of its own in the shared Redis.
replayConformance('conformance on Redis', (scenario) => ['--store', `${redis.url}?prefix=${scenario}:`], { skip });

const get = async (port: number, target: string) => (await request(port, 'GET', target)).body.toString();

describe('two frontends on one Redis', { skip }, () => {
  let a: RunningServer;
  let b: RunningServer;
  before(async () => {
    const start = () => startServer({ args: ['--store', `${redis.url}?prefix=two:`] });
    [a, b] = await Promise.all([start(), start()]);
  });
  after(async () => {
    await Promise.all([a.stop(), b.stop()]);
    cleanup(a.dir);
    cleanup(b.dir);
  });

  it('see one set of queues', async () => {
    assert.equal(await get(a.port, '/?name=shared&opt=put&data=from-a'), 'HTTPSQS_PUT_OK');
    assert.equal(await get(b.port, '/?name=shared&opt=get'), 'from-a');
    assert.match(await get(b.port, '/?name=shared&opt=status_json'), /"putpos":1,.*"getpos":1/);
    assert.deepEqual(
      JSON.parse(await get(a.port, '/?opt=list')).map((q: { name: string }) => q.name),
      ['shared'],
    );
  });

  it('concurrent producers and consumers on both: every message delivered exactly once', async (t) => {
    const clients = [a, b].flatMap((s) => Array.from({ length: 8 }, () => keepAliveClient(s.port, 1)));
    const PRODUCERS = 8;
    const PER_PRODUCER = 250;
    try {
      await get(a.port, '/?name=eo&opt=maxqueue&num=50'); // a small ring: it wraps and fills
      const { delivered } = await produceAndConsume({
        producers: clients.slice(0, PRODUCERS),
        consumers: clients.slice(PRODUCERS),
        queues: ['eo'],
        perProducer: PER_PRODUCER,
      });
      t.diagnostic(`${delivered.size} delivered`);
      assert.deepEqual(
        [...delivered].filter(([, n]) => n > 1),
        [],
      );
      assert.equal(delivered.size, PRODUCERS * PER_PRODUCER);
    } finally {
      for (const c of clients) c.close();
    }
  });

  it('a put on one frontend wakes long polls waiting on the other', async () => {
    const waiting = Array.from({ length: 3 }, () => get(b.port, '/?name=lp&opt=get&wait=20'));
    await sleep(300);
    const started = performance.now();
    assert.match(await get(a.port, '/?name=lp&opt=mput'), /HTTPSQS_PUT_ERROR/); // (no body)
    await request(a.port, 'POST', '/?name=lp&opt=mput', { body: '["x","y","z"]' });
    assert.deepEqual((await Promise.all(waiting)).sort(), ['x', 'y', 'z']);
    assert.ok(performance.now() - started < 5000, 'the waiters were not woken by the other frontend');
  });

  it('a delayed put on one frontend wakes a long poll on the other when due; dead letters are shared', async () => {
    const poll = get(b.port, '/?name=later&opt=get&wait=20');
    await sleep(300);
    const started = performance.now();
    const put = await request(a.port, 'GET', '/?name=later&opt=put&data=due&delay=1');
    assert.match(String(put.headers.scheduled), /^\d{10}$/);
    assert.equal(await poll, 'due');
    const took = performance.now() - started;
    assert.ok(took >= 900 && took < 5000, `handed out ${took.toFixed(0)} ms after a put delayed by 1 s`);
    assert.equal(await get(a.port, '/?name=poison&opt=maxdeliveries&num=1'), 'HTTPSQS_MAXDELIVERIES_OK');
    await get(a.port, '/?name=poison&opt=put&data=bad');
    const r = await request(b.port, 'GET', '/?name=poison&opt=get&lease=30');
    assert.equal(await get(a.port, `/?name=poison&opt=nack&pos=${r.headers.pos}`), 'HTTPSQS_NACK_OK');
    assert.match(await get(b.port, '/?name=poison&opt=status_json'), /"dead":1,"maxdeliveries":1\}/);
    assert.equal(await get(b.port, '/?name=poison&opt=redrive'), '{"count":1,"dead":0}\n');
    assert.equal(await get(a.port, '/?name=poison&opt=get'), 'bad');
  });

  it('a touch on one frontend that shortens a lease wakes a long poll on the other when it ends', async () => {
    await get(b.port, '/?name=short&opt=put&data=job');
    const r = await request(b.port, 'GET', '/?name=short&opt=get&lease=600');
    const poll = get(a.port, '/?name=short&opt=get&wait=20');
    await sleep(300);
    const started = performance.now();
    assert.equal(await get(b.port, `/?name=short&opt=touch&pos=${r.headers.pos}&lease=1`), 'HTTPSQS_TOUCH_OK');
    assert.equal(await poll, 'job');
    const took = performance.now() - started;
    assert.ok(took < 5000, `handed out ${took.toFixed(0)} ms after its lease was cut to 1 s`);
  });

  it('leases taken on one frontend are acked on the other', async () => {
    await get(a.port, '/?name=ls&opt=put&data=job');
    const r = await request(a.port, 'GET', '/?name=ls&opt=get&lease=30');
    assert.equal(await get(b.port, `/?name=ls&opt=ack&pos=${r.headers.pos}&token=${r.headers.lease}`), 'HTTPSQS_ACK_OK');
  });
});

describe('Redis Cluster with three primaries', { skip }, () => {
  let cluster: RedisCluster;
  let server: RunningServer;
  before(async () => {
    cluster = await startRedisCluster();
    server = await startServer({ args: ['--store', cluster.url, '--workers', '2'] });
  });
  after(async () => {
    await server?.stop();
    if (server) cleanup(server.dir);
    await cluster?.stop();
  });

  it('spreads queues over the shards, each queue on one, and serves them all', async () => {
    const names = Array.from({ length: 30 }, (_, i) => `queue-${i}`);
    for (const n of names) {
      assert.equal(await get(server.port, `/?name=${n}&opt=put&data=${n}-1`), 'HTTPSQS_PUT_OK');
      await get(server.port, `/?name=${n}&opt=put&data=${n}-2`);
      await get(server.port, `/?name=${n}&opt=get&lease=30`);
    }
    // Every primary holds some queues, and all keys of a queue are on the same one.
    const keysPerNode = cluster.nodes.map((n) => n.cli('--scan', '--pattern', '{q*').split('\n').filter(Boolean));
    assert.ok(
      keysPerNode.every((keys) => keys.length > 0),
      `keys per node: ${keysPerNode.map((k) => k.length)}`,
    );
    for (const keys of keysPerNode) {
      for (const k of keys) {
        const tag = /^\{(q[^}]*)\}/.exec(k)![1];
        assert.ok(
          ['s', 'm', 'l', 'd'].every((kind) => !keysPerNode.some((other) => other !== keys && other.includes(`{${tag}}:${kind}`))),
          `${k} split`,
        );
      }
    }
    for (const n of names) {
      assert.equal(await get(server.port, `/?name=${n}&opt=get`), `${n}-2`);
      assert.match(await get(server.port, `/?name=${n}&opt=status_json`), /"leased":1}/);
    }
    const listed = JSON.parse(await get(server.port, '/?opt=list&prefix=queue-&limit=1000'));
    assert.equal(listed.length, 30);
    assert.equal(await get(server.port, '/?name=&opt=put&data=empty-name'), 'HTTPSQS_PUT_OK'); // '' is a queue too
  });

  it("--redis-wait asks the primary of each queue, after a write of its own in that queue's slot", async () => {
    const plain = await new RedisStore({ url: cluster.url }).ready();
    const waiting = await new RedisStore({ url: cluster.url, wait: 1, waitMs: 200, warn: () => {} }).ready();
    try {
      const names = Array.from({ length: 12 }, (_, i) => `confirm-${i}`);
      for (const n of names) await plain.put(n, Buffer.from(n));
      // No primary has a replica: gets hand out what they took, puts are refused as unconfirmed (a
      // write sent to a node that does not own its slot would be refused as MOVED instead).
      assert.deepEqual(await Promise.all(names.map(async (n) => (await waiting.get(n))?.message.toString())), names);
      for (const n of names.slice(0, 3))
        await assert.rejects(waiting.put(n, Buffer.from('again')), /stored on the primary, but only 0 of 1 replicas confirmed it in time/);
    } finally {
      await Promise.all([plain.close(), waiting.close()]);
    }
  });

  it('a put or a get whose connection closed before its answer fails, and is not run a second time', async () => {
    const store = await new RedisStore({ url: cluster.url }).ready();
    try {
      await store.putMany('dropped', [Buffer.from('a'), Buffer.from('b')]);
      const conn = (store as unknown as { redis: Cluster & { slots: string[][] } }).redis;
      // The node is kept busy while the command waits in its socket, which closes meanwhile: the
      // node runs it once it can, and its answer has nowhere to go.
      const dropping = async <T>(op: () => Promise<T>) => {
        await store.status('dropped'); // connected again after the one before
        const owner = conn.slots[calculateSlot(Buffer.from('{qdropped}:s'))]![0];
        const node = conn.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === owner)!;
        const busy = new Redis({ port: node.options.port! });
        try {
          const held = busy.eval(
            "local t = redis.call('TIME') local s = t[1] * 1e6 + t[2] repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - s > 1000000 return 1",
            0,
          );
          // Margins for a loaded machine (npm test runs four files at once): the script must have
          // started before the command is sent, and the command be in the socket before it closes.
          await sleep(250);
          const result = op().then(
            (r) => ({ answered: r }),
            (err: Error) => ({ failed: err.message }),
          );
          await sleep(50);
          node.stream.destroy();
          await held;
          return await result;
        } finally {
          busy.disconnect();
        }
      };
      assert.deepEqual(await dropping(() => store.put('dropped', Buffer.from('c'))), {
        failed: 'Redis: the connection closed before the answer (the command may have taken effect)',
      });
      assert.deepEqual(await dropping(() => store.get('dropped')), {
        failed: 'Redis: the connection closed before the answer (the command may have taken effect)',
      });
      assert.deepEqual(await store.status('dropped'), { putpos: 3, getpos: 1, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
    } finally {
      await store.close();
    }
  });
});

describe('--redis-wait on a setting the queue already has', { skip }, () => {
  it('a maxdeliveries repeated (a retry of one not yet confirmed) is acknowledged only once replicas have it too', async () => {
    // No replica: every write is unconfirmed, so each call must fail; before, the second found the
    // value set (by the first) and was answered without asking the replicas.
    const waiting = await new RedisStore({ url: `${redis.url}?prefix=again:`, wait: 1, waitMs: 100, warn: () => {} }).ready();
    try {
      for (let i = 0; i < 2; i++) await assert.rejects(waiting.maxdeliveries('md', 3), /only 0 of 1 replicas confirmed it in time/, `call ${i + 1}`);
    } finally {
      await waiting.close();
    }
  });
});

describe('a reset racing a put on another frontend', { skip }, () => {
  it('leaves the queue the put recreated in the list', async () => {
    const url = `${redis.url}?prefix=race:`;
    const [a, b] = [new RedisStore({ url }), new RedisStore({ url })];
    try {
      await a.put('r', Buffer.from('old'));
      // The put lands between the reset's DEL and its removal from the index: arranged by holding
      // back the removal until the other frontend's put is done.
      const conn = (a as unknown as { redis: { zrem: (...args: unknown[]) => Promise<unknown> } }).redis;
      const zrem = conn.zrem.bind(conn);
      conn.zrem = async (...args: unknown[]) => {
        assert.equal(await b.put('r', Buffer.from('new')), 1);
        return zrem(...args);
      };
      await a.reset('r');
      assert.deepEqual(
        (await a.list('', '', 10)).map((q) => [q.name, q.status.putpos]),
        [['r', 1]],
      );
      assert.equal((await b.get('r'))?.message.toString(), 'new');
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});

describe('frontends whose clocks disagree', { skip }, () => {
  it("go by Redis's clock: one an hour ahead takes no leased or delayed message early, and counts the others as running", async () => {
    const url = `${redis.url}?prefix=skew:`;
    const right = new RedisStore({ url, announce: true });
    // A store reads the time as it was made to (a test's clock, or the default): this one is made,
    // and then works, while this process's clock runs an hour ahead.
    const realNow = Date.now;
    const HOUR = 3_600_000;
    const ahead = async <T>(f: () => T | Promise<T>): Promise<T> => {
      Date.now = () => realNow() + HOUR;
      try {
        return await f();
      } finally {
        Date.now = realNow;
      }
    };
    const fast = await ahead(() => new RedisStore({ url }));
    const redisNow = () => {
      const [s, us] = redis.cli('time').split('\n').map(Number);
      return s! * 1000 + Math.floor(us! / 1000);
    };
    try {
      await right.put('q', Buffer.from('leased'));
      const got = await right.get('q', 30_000);
      assert.equal(got?.message.toString(), 'leased');
      const deadline = Number(got!.lease!.split('-')[1]);
      assert.ok(Math.abs(deadline - (redisNow() + 30_000)) < 5000, `deadline ${deadline - redisNow()} ms from Redis's now`);
      // Its clock says the lease ran out an hour ago; Redis's says 30 s to go.
      assert.equal(await ahead(() => fast.get('q')), null);
      await right.put('q', Buffer.from('later'), 60_000);
      assert.equal(await ahead(() => fast.get('q')), null);
      // The alarm of a long poll: when the lease ends on the asking frontend's clock.
      const expiry = await ahead(() => fast.nextExpiry('q'));
      assert.ok(Math.abs(expiry! - (realNow() + HOUR + 30_000)) < 5000, `expiry ${expiry! - realNow()} ms from now`);
      // A touch renews from Redis's now, not from the frontend's.
      assert.equal(await ahead(() => fast.touch('q', got!.pos, 10_000, got!.lease)), got!.lease);
      const touched = (await right.leases('q')).find((l) => l.pos === got!.pos)!.lease.deadline;
      assert.ok(Math.abs(touched - (redisNow() + 10_000)) < 5000, `touched to ${touched - redisNow()} ms from Redis's now`);
      const { leased, delayed } = await right.status('q');
      assert.deepEqual({ leased, delayed }, { leased: 1, delayed: 1 });
      // Nor does it take the other frontend for one that is gone (an import would then go ahead).
      assert.equal(await ahead(() => fast.frontendsRunning()), 1);
    } finally {
      await Promise.all([right.close(), fast.close()]);
    }
  });
});

describe('dead letters by position', { skip }, () => {
  it('a page is read from the by-position set, which is built once for dead letters written before it existed', async () => {
    const store = new RedisStore({ url: `${redis.url}?prefix=dlpos:` });
    try {
      await store.maxdeliveries('d', 1);
      await store.putMany(
        'd',
        ['a', 'b', 'c', 'd', 'e'].map((s) => Buffer.from(s)),
      );
      for (let i = 0; i < 5; i++) {
        const got = await store.get('d', 60_000);
        assert.equal(await store.settle('d', got!.pos, 'nack', got!.lease), true);
      }
      const byPosition = 'dlpos:{qd}:z';
      const members = () => redis.cli('zrange', byPosition, '0', '-1', 'withscores').split('\n');
      const all = (await store.deadLetters('d', 0, 10)).map((l) => l.pos);
      assert.equal(all.length, 5);
      assert.deepEqual(
        members(),
        all.flatMap((pos) => [String(pos).padStart(10, '0'), String(pos)]),
      );
      // As a version before this set left the data: the page is still right, and the set is back.
      redis.cli('del', byPosition);
      assert.deepEqual(
        (await store.deadLetters('d', all[1]!, 2)).map((l) => l.pos),
        all.slice(2, 4),
      );
      assert.equal(members().length, 10);
      // Kept in step from then on: a discard and a redrive take theirs out.
      assert.equal(await store.discard('d', all[0]!), true);
      assert.equal(await store.redrive('d', 1), 1);
      assert.equal(redis.cli('zcard', byPosition), '3');
      assert.deepEqual(
        (await store.deadLetters('d', 0, 10)).map((l) => l.pos),
        all.slice(2),
      );
    } finally {
      await store.close();
    }
  });
});

describe('?read=delete', { skip }, () => {
  it('deletes a message once read (a plain get, an ack, a dead letter copied to a slot), keeps a leased one until it is acked', async () => {
    const store = new RedisStore({ url: `${redis.url}?prefix=readdelete:&read=delete` });
    const stored = () => redis.cli('hlen', 'readdelete:{qr}:m');
    try {
      await store.ready();
      await store.maxdeliveries('r', 1);
      for (let i = 1; i <= 5; i++) await store.put('r', Buffer.from(`m${i}`));
      assert.equal(stored(), '5');
      assert.equal((await store.get('r'))?.message.toString(), 'm1');
      assert.equal(await store.view('r', 1), null);
      assert.equal(stored(), '4');
      // Leased: kept until acked.
      const leased = (await store.get('r', 60_000))!;
      assert.equal((await store.view('r', 2))?.toString(), 'm2');
      assert.equal(await store.settle('r', leased.pos, 'ack', leased.lease), true);
      assert.equal(await store.view('r', 2), null);
      // Nacked for the last time: a dead letter, copied to a slot; the ring's copy goes.
      const spent = (await store.get('r', 60_000))!;
      assert.equal(await store.settle('r', spent.pos, 'nack', spent.lease), true);
      assert.equal(await store.view('r', 3), null);
      const [dead] = await store.deadLetters('r', 0, 10);
      assert.equal((await store.view('r', dead!.pos))?.toString(), 'm3');
      assert.equal(await store.discard('r', dead!.pos), true);
      // A batch.
      assert.deepEqual(
        (await store.getMany('r', 10)).map((d) => d.message.toString()),
        ['m4', 'm5'],
      );
      assert.equal(stored(), '0');
      const { putpos, getpos } = await store.status('r');
      assert.deepEqual([putpos, getpos], [5, 5]);
    } finally {
      await store.close();
    }
  });

  it('without it, read messages stay viewable until a put writes over them (the reference)', async () => {
    const store = new RedisStore({ url: `${redis.url}?prefix=readkeep:` });
    try {
      await store.put('k', Buffer.from('m1'));
      assert.equal((await store.get('k'))?.message.toString(), 'm1');
      assert.equal((await store.view('k', 1))?.toString(), 'm1');
    } finally {
      await store.close();
    }
  });

  it('a full Redis takes puts again once consumers have read what filled it', async () => {
    const full = await startRedis(['--maxmemory', '8mb', '--maxmemory-policy', 'noeviction']);
    const store = new RedisStore({ url: `${full.url}?read=delete` });
    try {
      await store.maxqueue('q', 100_000);
      const big = Buffer.alloc(64 * 1024, 'm');
      let stored = 0;
      while (
        await store.put('q', big).then(
          () => true,
          () => false,
        )
      )
        assert.ok(++stored < 1000, 'Redis never refused a put');
      assert.equal((await store.getMany('q', stored)).length, stored);
      assert.equal(await store.put('q', big), stored + 1);
    } finally {
      await store.close();
      await full.stop();
    }
  });
});

describe('restore', { skip }, () => {
  it('writes 70,000 leases given in one call (a script at a time), the state with the last', async () => {
    const store = new RedisStore({ url: `${redis.url}?prefix=many:` });
    try {
      const N = 70_000;
      const deadline = Date.now() + 3_600_000;
      const slots = Array.from({ length: N }, (_, i) => 1_000_000_001 + i);
      await store.restore('q', {
        messages: slots.map((pos) => ({ pos, message: Buffer.from(`m${pos}`) })),
        state: { putpos: 0, getpos: 0, maxqueue: 1_000_000 },
        leases: slots.map((pos) => ({ pos, lease: { deadline, deliveries: 0 } })),
      });
      assert.deepEqual(await store.status('q'), { putpos: 0, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: N, dead: 0 });
      assert.equal((await store.view('q', slots.at(-1)!))?.toString(), `m${slots.at(-1)}`);
      assert.deepEqual(
        (await store.list('', undefined, 10)).map((q) => q.name),
        ['q'],
      );
    } finally {
      await store.close();
    }
  });
});

describe("an import re-run after one killed before a queue's state", { skip }, () => {
  it('clears what that one left of the queue (messages with no state) before writing it', async () => {
    const url = `${redis.url}?prefix=left:`;
    const store = new RedisStore({ url });
    const file = join(tempDir('httpsqs-left-'), 'export.jsonl');
    try {
      // What an import killed after a batch of the queue's messages, before its leases and state,
      // leaves: messages and no state. (Leases written count in the state: a re-run refuses then.)
      await store.restore('left', { messages: [3, 5, 1_000_000_001].map((pos) => ({ pos, message: Buffer.from(`old${pos}`) })) });
      assert.deepEqual(await store.status('left'), { putpos: 0, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
      writeFileSync(
        file,
        [
          '{"format":"httpsqs-export","version":2}',
          '{"queue":"left","maxqueue":1000000,"putpos":2,"getpos":0}',
          '{"queue":"left","pos":1,"data":"bmV3MQ=="}',
          '{"queue":"left","pos":2,"data":"bmV3Mg=="}',
          '{"end":true,"queues":1,"messages":2}',
          '',
        ].join('\n'),
      );
      const out = await runCli(['import', '--store', url, file]);
      assert.equal(out.code, 0, out.stderr);
      // Before, the old records stayed: view showed them, the next export carried them, and the
      // message at a slot, leased by no state, was never deleted.
      assert.deepEqual(await store.status('left'), { putpos: 2, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
      const left = await store.range('left', 1, 5);
      assert.deepEqual(
        left.map((m) => `${m.pos}=${m.message}`),
        ['1=new1', '2=new2'],
      );
      assert.equal(await store.view('left', 1_000_000_001), null);
      assert.deepEqual(await store.leases('left'), []);
    } finally {
      await store.close();
      cleanup(dirname(file));
    }
  });
});

describe('a Redis out of reach', { skip }, () => {
  it('is named with the cause, at start and when it goes away', async () => {
    const nobody = new RedisStore({ url: `redis://127.0.0.1:${await freePort()}` });
    await assert.rejects(nobody.ready(), /^StoreError: Redis at redis:\/\/127\.0\.0\.1:\d+: cannot reach it \(connect ECONNREFUSED 127\.0\.0\.1:\d+\)$/);
    await nobody.close();
    const own = await startRedis();
    const store = await new RedisStore({ url: own.url }).ready();
    try {
      assert.equal(await store.put('q', Buffer.from('x')), 1);
      // Frozen rather than gone: a health check answers within its own limit, and recovers.
      own.proc.kill('SIGSTOP');
      await assert.rejects(store.check(), /^StoreError: Redis: no answer within 2000 ms$/);
      own.proc.kill('SIGCONT');
      await store.check();
      await own.stop();
      // Sent as the connection closes, a command is told so; sent after, it is told why it cannot go.
      await assert.rejects(store.status('q'), /^StoreError: Redis: (the connection closed before the answer|cannot reach it \(.*ECONNREFUSED)/);
      await assert.rejects(store.status('q'), /^StoreError: Redis: cannot reach it \(.*ECONNREFUSED/);
    } finally {
      await store.close();
    }
  });
});

describe('a Redis that loads its data for longer than a command may wait', { skip }, () => {
  it('fails a get sent meanwhile, and the get is never run after: its message is the next one handed out', { timeout: 90_000 }, async () => {
    const port = await freePort();
    const dir = tempDir('httpsqs-loading-');
    const cli = (...args: string[]) => spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8', input: '' }).stdout.trim();
    const start = (...extra: string[]) => {
      const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extra], {
        stdio: 'ignore',
      });
      return { proc, exited: new Promise((r) => proc.once('exit', r)) };
    };
    let redis = start();
    const store = new RedisStore({ url: `redis://127.0.0.1:${port}/0`, warn: () => {} });
    try {
      for (let i = 0; cli('ping') !== 'PONG'; i++) assert.ok(i < 200, 'redis-server did not start'), await sleep(50);
      await store.ready();
      await store.put('jobs', Buffer.from('job1'));
      await store.put('jobs', Buffer.from('job2'));
      // 12,000 keys, loaded at a millisecond each after the restart: longer than the 10 s a command waits.
      spawnSync('redis-cli', ['-p', String(port)], { input: `${Array.from({ length: 12_000 }, (_, i) => `SET filler:${i} x`).join('\n')}\n` });
      cli('shutdown', 'save');
      await redis.exited;
      redis = start('--key-load-delay', '1000', '--loading-process-events-interval-bytes', '1024');
      for (let i = 0; !cli('info', 'persistence').includes('loading:1'); i++) assert.ok(i < 200, 'Redis did not begin loading'), await sleep(50);
      // Before, the get waited in ioredis's queue, failed after 10 s, and was sent once Redis had loaded: job1 was taken, and lost.
      await assert.rejects(store.get('jobs'), /^StoreError: Redis: /);
      for (let i = 0; cli('info', 'persistence').includes('loading:1'); i++) assert.ok(i < 600, 'Redis did not finish loading'), await sleep(100);
      await store.ready();
      await sleep(500);
      assert.equal((await store.status('jobs')).getpos, 0);
      assert.equal((await store.get('jobs'))?.message.toString(), 'job1');
    } finally {
      await store.close();
      redis.proc.kill('SIGKILL');
      await redis.exited;
      cleanup(dir);
    }
  });
});

describe('a connection to one Redis that closes with commands in flight', { skip }, () => {
  it('fails them at once, without running them a second time; what is sent while it reconnects goes once', async (t) => {
    const store = await new RedisStore({ url: `${redis.url}?prefix=dropped:` }).ready();
    const conn = (store as unknown as { redis: Redis }).redis;
    const busy = new Redis({ port: redis.port });
    try {
      await store.putMany('q', [Buffer.from('a'), Buffer.from('b')]);
      // Redis is kept busy while the command waits in its socket, which closes meanwhile: Redis
      // runs it once it can, and its answer has nowhere to go. The same operation, sent again
      // right after, waits for the new connection.
      const dropping = async <T>(op: () => Promise<T>) => {
        await store.status('q'); // connected again after the one before
        const held = busy.eval(
          "local t = redis.call('TIME') local s = t[1] * 1e6 + t[2] repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - s > 300000 return 1",
          0,
        );
        await sleep(50);
        const sent = performance.now();
        const dropped = op().then(
          (r) => ({ answered: r }),
          (err: Error) => ({ failed: err.message, ms: performance.now() - sent }),
        );
        await sleep(20);
        conn.stream.destroy();
        const meanwhile = op();
        await held;
        const { ms, ...outcome } = (await dropped) as { failed?: string; ms?: number };
        t.diagnostic(`failed ${ms?.toFixed(0)} ms after it was sent`);
        assert.ok(ms !== undefined && ms < 2000, `failed after ${ms?.toFixed(0)} ms, not at once`);
        return [outcome, await meanwhile] as const;
      };
      assert.deepEqual(await dropping(() => store.put('q', Buffer.from('c'))), [
        { failed: 'Redis: the connection closed before the answer (the command may have taken effect)' },
        4,
      ]);
      const [outcome, got] = await dropping(() => store.get('q'));
      assert.deepEqual(
        [outcome, got?.message.toString()],
        [{ failed: 'Redis: the connection closed before the answer (the command may have taken effect)' }, 'b'],
      );
      // Each ran once: the dropped put stored 'c' and the dropped get took 'a'.
      assert.deepEqual(await store.status('q'), { putpos: 4, getpos: 2, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
    } finally {
      busy.disconnect();
      await store.close();
    }
  });
});

describe('the frontends running on a Redis', { skip }, () => {
  it('one killed outright is forgotten: a running one removes its expired entry, and the set expires after the last', async () => {
    const key = 'frontends:httpsqs:frontends';
    // What a frontend killed with kill -9 leaves: an entry that expired, and is never removed.
    redis.cli('zadd', key, String(Date.now() - 1000), 'killed');
    const store = await new RedisStore({ url: `${redis.url}?prefix=frontends:`, announce: true }).ready();
    try {
      const origin = (store as unknown as { origin: string }).origin;
      assert.deepEqual(redis.cli('zrange', key, '0', '-1'), origin);
      const ttl = Number(redis.cli('pttl', key));
      assert.ok(ttl > 0 && ttl <= 15_000, `the set expires in ${ttl} ms`);
    } finally {
      await store.close();
    }
    assert.equal(redis.cli('exists', key), '0');
  });
});

describe('the list index', { skip }, () => {
  it('a put whose queue could not be added to the index still succeeds, and list adds it later', async () => {
    // A user that may run the scripts but not write the index: the put is stored, its ZADD fails.
    redis.cli('acl', 'setuser', 'noindex', 'on', '>pw', '~*', '&*', '+@all', '-zadd');
    const store = new RedisStore({ url: `redis://noindex:pw@127.0.0.1:${redis.port}/0?prefix=noindex:` });
    try {
      assert.equal(await store.put('jobs', Buffer.from('once')), 1);
      assert.equal(await store.put('jobs', Buffer.from('twice')), 2);
      assert.deepEqual(await store.list('', '', 10), []); // still not allowed
      redis.cli('acl', 'setuser', 'noindex', '+zadd');
      assert.deepEqual(
        (await store.list('', '', 10)).map((q) => [q.name, q.status.putpos]),
        [['jobs', 2]],
      );
      assert.equal((await store.get('jobs'))?.message.toString(), 'once');
    } finally {
      await store.close();
      redis.cli('acl', 'deluser', 'noindex');
    }
  });
});

/** A queue `name` (under `prefix`) holding `message`, whose index entry was lost: refused (as when
 * the connection or the process goes between the script and the ZADD), and the frontend that
 * would have tried again has ended. */
async function lostFromIndex(prefix: string, name: string, message: string): Promise<void> {
  redis.cli('acl', 'setuser', 'noindex-lost', 'on', '>pw', '~*', '&*', '+@all', '-zadd');
  const a = new RedisStore({ url: `redis://noindex-lost:pw@127.0.0.1:${redis.port}/0?prefix=${prefix}`, warn: () => {} });
  try {
    assert.equal(await a.put(name, Buffer.from(message)), 1);
  } finally {
    await a.close();
    redis.cli('acl', 'deluser', 'noindex-lost');
  }
}

describe('the list index, after a lost entry', { skip }, () => {
  it('a queue whose index entry was lost with its frontend goes in with its next write, from any frontend', async () => {
    await lostFromIndex('lost:', 'jobs', 'once');
    const b = new RedisStore({ url: `${redis.url}?prefix=lost:` });
    try {
      assert.deepEqual(await b.list('', '', 10), []);
      assert.equal(await b.put('jobs', Buffer.from('twice')), 2);
      assert.deepEqual(
        (await b.list('', '', 10)).map((q) => [q.name, q.status.putpos]),
        [['jobs', 2]],
      );
      // Marked as indexed: the next write does not add it again.
      assert.equal(redis.cli('hget', 'lost:{qjobs}:s', 'i'), '1');
    } finally {
      await b.close();
    }
  });
});

describe('the list index, before an export', { skip }, () => {
  it('an export adds the queues that hold state but are missing from the index (never written since their entry was lost), and exports them', async () => {
    await lostFromIndex('lost*[3]:', 'jobs\u00e9', 'kept');
    const url = `${redis.url}?prefix=lost*[3]:`;
    const b = new RedisStore({ url });
    try {
      assert.deepEqual(await b.list('', '', 10), [], 'not in the index');
    } finally {
      await b.close();
    }
    const out = await runCli(['export', '--store', url]);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stderr, /1 queue holding messages but missing from the list index added to it/);
    assert.match(out.stdout, /"kept"|a2VwdA==/);
    assert.match(out.stderr, /exported 1 queues, 1 messages/);
    // In the index for good: a second export finds it without adding anything.
    const again = await runCli(['export', '--store', url]);
    assert.doesNotMatch(again.stderr, /missing from the list index/);
    assert.match(again.stderr, /exported 1 queues, 1 messages/);
  });
});

describe("Redis's memory", { skip }, () => {
  it('a Redis that evicts keys when full (a maxmemory-policy but noeviction) is named at start: messages would be lost', async () => {
    const evicting = await startRedis(['--maxmemory-policy', 'allkeys-lru']);
    const said: string[] = [];
    try {
      for (const [url, warnings] of [
        [redis.url, []],
        [
          evicting.url,
          [
            `Redis at 127.0.0.1:${evicting.port} evicts keys when its memory is full (maxmemory-policy allkeys-lru): messages would be lost; set maxmemory-policy noeviction`,
          ],
        ],
      ] as const) {
        said.length = 0;
        const store = new RedisStore({ url, warn: (m) => said.push(m) });
        await store.ready();
        await store.close();
        assert.deepEqual(said, warnings, url);
      }
    } finally {
      await evicting.stop();
    }
  });
  for (const replicas of [0, 1])
    it(`a full Redis (noeviction, at maxmemory) refuses puts, and still lets consumers get, ack, nack, touch, redrive and discard, and takes a reset${replicas ? ', under --redis-wait' : ''}`, async () => {
      // A replica's first sync starts at once (not after the 5 s Redis waits for others to join).
      const full = await startRedis(['--maxmemory', '8mb', '--maxmemory-policy', 'noeviction', '--repl-diskless-sync-delay', '0']);
      const replica = replicas ? await startRedis(['--replicaof', '127.0.0.1', String(full.port)]) : undefined;
      const store = new RedisStore({ url: full.url, ...(replicas ? { wait: 1, waitMs: 5000 } : {}) });
      try {
        for (let i = 0; replica && !replica.cli('info', 'replication').includes('master_link_status:up'); i++) {
          assert.ok(i < 200, 'the replica did not finish its first sync');
          await sleep(50);
        }
        await store.ready();
        await store.maxqueue('q', 100_000);
        await store.maxdeliveries('q', 2);
        const big = Buffer.alloc(64 * 1024, 'm');
        let stored = 0;
        // Filled until Redis refuses a put for want of memory.
        for (;;) {
          const refused = await store.put('q', big).then(
            () => undefined,
            (err: Error) => err,
          );
          if (refused) {
            assert.match(refused.message, /OOM/);
            break;
          }
          stored++;
          assert.ok(stored < 1000, 'Redis never refused a put');
        }
        assert.ok(stored >= 4, `${stored} stored`);
        await assert.rejects(store.put('q', big), /OOM/);
        // A plain get; a leased get acked; one nacked, taken again, touched, nacked for the last
        // time (a dead letter), redriven, taken, nacked, and discarded.
        assert.equal((await store.get('q'))?.pos, 1);
        const acked = (await store.get('q', 60_000))!;
        assert.equal(await store.settle('q', acked.pos, 'ack', acked.lease), true);
        const nacked = (await store.get('q', 60_000))!;
        assert.equal(await store.settle('q', nacked.pos, 'nack', nacked.lease), true);
        const again = (await store.get('q', 60_000))!;
        assert.deepEqual([again.pos, again.deliveries], [nacked.pos, 2]);
        const touched = await store.touch('q', again.pos, 120_000, again.lease);
        assert.ok(touched);
        assert.equal(await store.settle('q', again.pos, 'nack', touched), true);
        const [dead] = await store.deadLetters('q', 0, 10);
        assert.ok(dead, 'no dead letter');
        assert.equal(await store.redrive('q', 10), 1);
        const redriven = (await store.get('q', 60_000))!;
        assert.equal(redriven.pos, dead.pos);
        assert.equal(await store.settle('q', redriven.pos, 'ack', redriven.lease), true);
        for (let i = 0; i < 2; i++) {
          const next = (await store.get('q', 60_000))!;
          assert.deepEqual([next.pos, next.deliveries], [4, i + 1]);
          assert.equal(await store.settle('q', next.pos, 'nack', next.lease), true);
        }
        const [buried] = await store.deadLetters('q', 0, 10);
        assert.ok(buried, 'no dead letter');
        assert.equal(await store.discard('q', buried.pos), true);
        const drained = await store.getMany('q', stored);
        assert.equal(drained.length, stored - 4);
        // Read messages stay viewable until puts write over them (the reference's ring): memory
        // comes back with a reset, which a full Redis takes too.
        await assert.rejects(store.put('q', big), /OOM/);
        await store.reset('q');
        // A reset UNLINKs: Redis frees the memory in a thread of its own, a moment later.
        let put: number | Error;
        for (let i = 0; (put = await store.put('q', big).catch((err: Error) => err)) instanceof Error; i++) {
          assert.match(put.message, /OOM/);
          assert.ok(i < 100, 'the reset freed no memory');
          await sleep(50);
        }
        assert.equal(put, 1);
      } finally {
        await store.close();
        await replica?.stop();
        await full.stop();
      }
    });
});

describe('export from a read-only replica', { skip }, () => {
  it('reads every indexed queue, and says that one missing from the index cannot be added there', async () => {
    const primary = await startRedis();
    const replica = await startRedis(['--replicaof', '127.0.0.1', String(primary.port)]);
    const store = new RedisStore({ url: primary.url });
    try {
      await store.put('jobs', Buffer.from('kept'));
      for (let i = 0; replica.cli('hget', '{qjobs}:m', '1') !== 'kept'; i++) {
        assert.ok(i < 200, 'the replica did not get the message');
        await sleep(50);
      }
      // Before, mending the index (a ZADD) failed the whole export with READONLY.
      const out = await runCli(['export', '--store', replica.url]);
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stderr, /is a read-only replica: a queue missing from the list index/);
      assert.match(out.stderr, /exported 1 queues, 1 messages/);
      assert.match(out.stdout, /"queue":"jobs","pos":1,"data":"a2VwdA=="/);
    } finally {
      await store.close();
      await Promise.all([replica.stop(), primary.stop()]);
    }
  });
});

describe('export of a queue over 64 MiB from a read-only replica', { skip }, () => {
  it('is read as it is (no copy can be made there), and fails when the primary writes to it meanwhile', async () => {
    const primary = await startRedis();
    const replica = await startRedis(['--replicaof', '127.0.0.1', String(primary.port)]);
    const store = new RedisStore({ url: primary.url });
    const reader = new RedisStore({ url: replica.url });
    try {
      // Over the 64 MiB an export holds while it reads: before, it was copied in Redis, which a replica refuses.
      const mib = (i: number) => Buffer.alloc(2 ** 20, i);
      for (let i = 0; i < 66; i++) await store.put('big', mib(i));
      await store.get('big', 30_000);
      assert.equal(primary.cli('wait', '1', '10000'), '1');
      const out = await runCli(['export', '--store', replica.url], { timeoutMs: 90_000 });
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stderr, /exported 1 queues, 66 messages/);
      const lines = out.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      assert.deepEqual(lines[1], { queue: 'big', maxqueue: 1000000, putpos: 66, getpos: 1 });
      const messages = lines.filter((l) => 'data' in l);
      assert.deepEqual(
        messages.map((l) => l.pos).sort((a, b) => a - b),
        Array.from({ length: 66 }, (_, i) => i + 1),
      );
      for (const l of messages) assert.ok(Buffer.from(l.data, 'base64').equals(mib(l.pos - 1)), `message ${l.pos}`);
      assert.deepEqual(
        lines.filter((l) => 'deadline' in l).map((l) => l.pos),
        [1],
      );
      // A write that reaches the replica between two pages: what was handed on is no longer one moment's.
      await reader.ready();
      const records = reader.exportRecords('big')[Symbol.asyncIterator]();
      assert.ok('status' in (await records.next()).value!);
      await store.put('big', Buffer.from('later'));
      assert.equal(primary.cli('wait', '1', '10000'), '1');
      await assert.rejects(
        (async () => {
          while (!(await records.next()).done);
        })(),
        /queue "big" changed while it was exported from a read-only replica \(its primary wrote to it\)/,
      );
    } finally {
      await Promise.all([store.close(), reader.close()]);
      await Promise.all([replica.stop(), primary.stop()]);
    }
  });
});

describe('--redis-wait', { skip }, () => {
  it('acknowledges once a replica has the change, and answers with an error when none confirms in time', async () => {
    const primary = await startRedis();
    const replica = await startRedis(['--replicaof', '127.0.0.1', String(primary.port)]);
    // A second for the replica to confirm: enough on a loaded machine, short enough to wait out.
    const server = await startServer({ args: ['--store', primary.url, '--redis-wait', '1', '--redis-wait-ms', '1000'] });
    try {
      for (let i = 0; !replica.cli('info', 'replication').includes('master_link_status:up'); i++) {
        assert.ok(i < 200, 'the replica did not finish its first sync');
        await sleep(50);
      }
      assert.equal(await get(server.port, '/?name=w&opt=put&data=replicated'), 'HTTPSQS_PUT_OK');
      assert.equal(replica.cli('hget', '{qw}:m', '1'), 'replicated');
      await replica.stop();
      for (let i = 0; !primary.cli('info', 'replication').includes('connected_slaves:0'); i++) {
        assert.ok(i < 200, 'the primary still sees its replica');
        await sleep(50);
      }
      assert.equal(await get(server.port, '/?name=w&opt=put&data=alone'), 'HTTPSQS_PUT_ERROR');
      assert.match(server.stderr(), /only 0 of 1 replicas confirmed it in time/);
      // A get took its message on the primary: it is handed out (failing the get lost it), and logged once.
      assert.equal(await get(server.port, '/?name=w&opt=get'), 'replicated');
      assert.equal(await get(server.port, '/?name=w&opt=get'), 'alone');
      assert.equal(server.stderr().match(/messages taken on the primary are handed out, though only 0 of 1 replicas/g)?.length, 1);
      // What changed nothing waits for no replica: a get of an empty queue answers as usual.
      assert.equal(await get(server.port, '/?name=empty&opt=get'), 'HTTPSQS_GET_END');
    } finally {
      await server.stop();
      cleanup(server.dir);
      await Promise.all([replica.stop(), primary.stop()]);
    }
  });
});

describe('--redis-wait while no replica confirms', { skip }, () => {
  it('gets made together share WAITs on a connection of their own: none waits behind the others, fails, or loses its message', {
    timeout: 60_000,
  }, async () => {
    const alone = await startRedis();
    const filler = new RedisStore({ url: alone.url });
    const store = new RedisStore({ url: alone.url, wait: 1, waitMs: 1000, warn: () => {} });
    try {
      for (let i = 1; i <= 15; i++) await filler.put('w', Buffer.from(`m${i}`));
      // Before, every WAIT went on the one connection the commands share, which it holds until it
      // answers: the k-th get answered after k seconds, and from the 11th on each failed at the
      // command time limit with its message taken.
      const got = await Promise.allSettled(Array.from({ length: 15 }, () => store.get('w')));
      assert.deepEqual(
        got.map((r) => (r.status === 'fulfilled' ? r.value?.message.toString() : String(r.reason))).sort(),
        Array.from({ length: 15 }, (_, i) => `m${i + 1}`).sort(),
      );
      assert.equal((await filler.status('w')).getpos, 15);
      // A put is still refused when no replica confirms it.
      await assert.rejects(store.put('w', Buffer.from('unconfirmed')), /stored on the primary, but only 0 of 1 replicas confirmed it in time/);
    } finally {
      await Promise.all([filler.close(), store.close()]);
      await alone.stop();
    }
  });
});

describe('export of a queue while frontends write', { skip }, () => {
  /** What a backup of the queue must agree with: each lease at a slot has its message there and
   * each message there its lease, and the status counts the leases exported. */
  function assertConsistent(records: QueueRecord[]) {
    const status = (records[0] as { status: QueueStatus }).status;
    const messages = new Set(records.filter((r) => 'message' in r).map((r) => r.pos));
    const leases = records.filter((r): r is { pos: number; lease: Lease } => 'lease' in r);
    const slots = [...messages].filter((pos) => pos >= FIRST_SLOT).sort();
    assert.deepEqual(
      slots,
      leases
        .filter((l) => l.pos >= FIRST_SLOT)
        .map((l) => l.pos)
        .sort(),
      'messages at slots and their leases',
    );
    const dead = leases.filter((l) => l.lease.deadline >= DEAD).length;
    const delayed = leases.filter((l) => l.lease.deadline < DEAD && l.lease.deliveries === 0).length;
    assert.deepEqual(
      { leased: status.leased, delayed: status.delayed, dead: status.dead },
      { leased: leases.length - dead - delayed, delayed, dead },
      'the status counts the leases exported',
    );
  }
  const collect = async (records: AsyncIterable<QueueRecord>) => {
    const out: QueueRecord[] = [];
    for await (const r of records) out.push(r);
    return out;
  };
  type Scripts = Record<string, (...args: unknown[]) => Promise<unknown>>;

  it('is read as it was at one moment: a nack while it is read changes nothing of it', async () => {
    const store = new RedisStore({ url: `${redis.url}?prefix=export1:` });
    try {
      await assertExportIgnoresNack(store, store, 1);
    } finally {
      await store.close();
    }
  });

  it('a change between its pages reads the queue again; one on every read has it copied, and the copy deleted', async () => {
    const store = new RedisStore({ url: `${redis.url}?prefix=export2:` });
    const scripts = (store as unknown as { scripts: Scripts }).scripts;
    const { exportPage, snapshot } = scripts;
    try {
      await store.maxdeliveries('q', 1);
      await store.putMany(
        'q',
        ['a', 'b', 'c', 'd'].map((s) => Buffer.from(s)),
      );
      const held = await store.getMany('q', 4, 600_000);
      assert.equal(held.length, 4);
      // A nack after the messages' page and before the leases' one, on `nacks` reads of the queue.
      const exportWith = async (nacks: number) => {
        let pages = 0;
        let copies = 0;
        scripts.exportPage = async (...args) => {
          if (pages++ % 2 === 1 && nacks-- > 0) assert.equal(await store.settle('q', held.pop()!.pos, 'nack'), true);
          return exportPage!(...args);
        };
        scripts.snapshot = async (...args) => (copies++, snapshot!(...args));
        const records = await collect(queueRecords(store, 'q'));
        assertConsistent(records);
        return { records, pages, copies };
      };
      const once = await exportWith(1);
      assert.deepEqual([once.pages, once.copies], [4, 0]);
      assert.equal((once.records[0] as { status: QueueStatus }).status.dead, 1);
      const always = await exportWith(3);
      assert.deepEqual([always.pages, always.copies], [8, 1]);
      assert.equal((always.records[0] as { status: QueueStatus }).status.dead, 4);
      assert.equal(redis.cli('--scan', '--pattern', 'export2:*export*'), '');
    } finally {
      Object.assign(scripts, { exportPage, snapshot });
      await store.close();
    }
  });

  it('holds 64 MiB of a queue at most: a larger one is copied in Redis and read from the copy', async () => {
    const store = new RedisStore({ url: `${redis.url}?prefix=export5:` });
    const scripts = (store as unknown as { scripts: Scripts }).scripts;
    const { snapshot } = scripts;
    let copies = 0;
    scripts.snapshot = async (...args) => (copies++, snapshot!(...args));
    try {
      const MiB = 2 ** 20;
      for (let i = 0; i < 72; i += 8)
        await store.putMany(
          'huge',
          Array.from({ length: 8 }, (_, j) => Buffer.alloc(MiB, i + j)),
        );
      let count = 0;
      let bytes = 0;
      for await (const r of queueRecords(store, 'huge')) {
        if (!('message' in r)) continue;
        assert.equal(r.message[0], r.pos - 1, `the message at ${r.pos}`);
        count++;
        bytes += r.message.length;
      }
      assert.deepEqual([count, bytes, copies], [72, 72 * MiB, 1]);
      assert.equal(redis.cli('--scan', '--pattern', 'export5:*export*'), '');
    } finally {
      Object.assign(scripts, { snapshot });
      await store.close();
    }
  });

  it('reads a page of a few MiB at most, however large the messages', async () => {
    const store = new RedisStore({ url: `${redis.url}?prefix=export4:` });
    const scripts = (store as unknown as { scripts: Scripts }).scripts;
    const { exportPage } = scripts;
    try {
      const N = 200;
      for (let i = 0; i < N; i += 20)
        await store.putMany(
          'big',
          Array.from({ length: 20 }, (_, j) => Buffer.alloc(100_000, i + j)),
        );
      const pages: number[] = [];
      scripts.exportPage = async (...args) => {
        const page = (await exportPage!(...args)) as [Buffer, Buffer, number[], Buffer[]];
        pages.push(page[3].reduce((n, b) => n + b.length, 0));
        return page;
      };
      const records = await collect(queueRecords(store, 'big'));
      assert.equal(records.filter((r) => 'message' in r).length, N);
      assert.ok(Math.max(...pages) < 6 * 2 ** 20, `pages of ${pages} bytes`);
    } finally {
      scripts.exportPage = exportPage!;
      await store.close();
    }
  });

  it('gets, nacks and redrives from another frontend during exports leave each export consistent', async () => {
    const url = `${redis.url}?prefix=export3:`;
    const [exporter, writer] = [new RedisStore({ url }), new RedisStore({ url })];
    try {
      await writer.maxdeliveries('q', 2);
      const N = 3000;
      for (let i = 0; i < N; i += 500)
        await writer.putMany(
          'q',
          Array.from({ length: 500 }, (_, j) => Buffer.from(`m${i + j}`.repeat(20))),
        );
      let stop = false;
      const writing = (async () => {
        while (!stop) {
          for (const d of await writer.getMany('q', 20, 600_000)) await writer.settle('q', d.pos, 'nack', d.lease);
          if ((await writer.status('q')).dead > 500) await writer.redrive('q', 400);
        }
      })();
      try {
        for (let i = 0; i < 5; i++) {
          const records = await collect(queueRecords(exporter, 'q'));
          assert.equal(records.filter((r) => 'message' in r && r.pos < FIRST_SLOT).length, N);
          assertConsistent(records);
        }
      } finally {
        stop = true;
        await writing;
      }
    } finally {
      await Promise.all([exporter.close(), writer.close()]);
    }
  });
});
