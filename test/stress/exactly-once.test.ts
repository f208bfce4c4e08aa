/**
 * Exactly once under concurrency: 16 producers and 16 consumers over HTTP, 200,000 messages in 4
 * queues whose rings of 100 positions wrap about 250 times each; full-queue answers are retried.
 * Every message is delivered exactly once, from the very position it was written to, so each
 * queue hands messages out in the order they were stored.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { it } from 'node:test';
import { cleanup, keepAliveClient, startServer } from '../helpers.js';

const PRODUCERS = 16;
const CONSUMERS = 16;
const QUEUES = 4;
const PER_PRODUCER = 6_250;
const TOTAL = PRODUCERS * PER_PRODUCER;

for (const args of [
  ['--engine', 'journal'],
  ['--engine', 'lmdb'],
  ['--workers', '2'],
]) {
  it(`${TOTAL} messages, ${PRODUCERS} producers, ${CONSUMERS} consumers, ${args.join(' ')}: each delivered exactly once`, async (t) => {
    const server = await startServer({ args });
    const client = keepAliveClient(server.port, PRODUCERS + CONSUMERS);
    const putPos = new Map<string, string>();
    const delivered = new Map<string, string[]>();
    let fullAnswers = 0;
    let deliveredCount = 0;
    try {
      for (let q = 0; q < QUEUES; q++) {
        assert.equal((await client.send(`/?name=s${q}&opt=maxqueue&num=100`)).body, 'HTTPSQS_MAXQUEUE_OK');
      }
      const producer = async (p: number) => {
        const q = `s${p % QUEUES}`;
        for (let i = 0; i < PER_PRODUCER; i++) {
          const msg = `p${p}-${i}`;
          for (;;) {
            const r = await client.send(`/?name=${q}&opt=put&data=${msg}`);
            if (r.body === 'HTTPSQS_PUT_OK') {
              putPos.set(msg, r.pos!);
              break;
            }
            assert.equal(r.body, 'HTTPSQS_PUT_END');
            fullAnswers++;
            await sleep(1);
          }
        }
      };
      const consumer = async (c: number) => {
        for (let n = c; deliveredCount < TOTAL; n++) {
          const r = await client.send(`/?name=s${n % QUEUES}&opt=get`);
          if (r.body === 'HTTPSQS_GET_END') {
            await sleep(1);
            continue;
          }
          deliveredCount++;
          const seen = delivered.get(r.body);
          if (seen) seen.push(r.pos!);
          else delivered.set(r.body, [r.pos!]);
        }
      };
      await Promise.all([...Array.from({ length: PRODUCERS }, (_, p) => producer(p)), ...Array.from({ length: CONSUMERS }, (_, c) => consumer(c))]);
      t.diagnostic(`${fullAnswers} full-queue answers retried`);

      assert.equal(putPos.size, TOTAL);
      assert.equal(deliveredCount, TOTAL);
      const twice = [...delivered].filter(([, pos]) => pos.length > 1);
      assert.deepEqual(twice.slice(0, 5), [], `${twice.length} messages delivered more than once`);
      const moved = [...delivered].filter(([m, [pos]]) => putPos.get(m) !== pos);
      assert.deepEqual(moved.slice(0, 5), [], `${moved.length} messages delivered from another position than stored`);
      assert.equal(delivered.size, TOTAL);
      for (let q = 0; q < QUEUES; q++) {
        const st = JSON.parse((await client.send(`/?name=s${q}&opt=status_json`)).body);
        assert.equal(st.unread, 0);
      }
    } finally {
      client.close();
      await server.stop();
      cleanup(server.dir);
    }
  });
}
