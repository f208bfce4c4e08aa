/**
 * `--workers 2`: two processes on one port and one LMDB environment behave as one server.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { replayConformance } from './conformance.js';
import { cleanup, keepAliveClient, produceAndConsume, request, runCli, startServer, waitFor, workerPids } from './helpers.js';

replayConformance('conformance with --workers 2', ['--workers', '2']);

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
