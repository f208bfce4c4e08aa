/**
 * Durability under SIGKILL: concurrent producers and consumers run while the server is killed,
 * `cycles` times, restarting it on the same directory each time. Then everything left is drained
 * and checked: no acknowledged put lost, no acknowledged get handed out again.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TestContext } from 'node:test';
import { cleanup, keepAliveClient, startServer } from './helpers.js';

const PRODUCERS = 8;
const CONSUMERS = 8;
const QUEUE = 'crash';

export async function crashCycles(t: TestContext, cycles: number, loadMs: () => number, args: string[] = []): Promise<void> {
  let server = await startServer({ args });
  const base = `/?name=${QUEUE}`;
  const ackedPuts = new Set<string>();
  const ackedGets: string[] = [];
  let lostGetAnswers = 0; // gets sent whose answer never came: their message may be gone (at most once)
  // A failed check stops the server too: left running, it would hold the test file open.
  try {
    for (let cycle = 0; cycle < cycles; cycle++) {
      const client = keepAliveClient(server.port);
      let running = true;
      const producer = async (id: number) => {
        for (let seq = 0; running; seq++) {
          const msg = `c${cycle}p${id}-${seq}`;
          try {
            if ((await client.send(`${base}&opt=put&data=${msg}`)).body === 'HTTPSQS_PUT_OK') ackedPuts.add(msg);
          } catch {
            return; // the server is gone: this put was never acknowledged
          }
        }
      };
      const consumer = async () => {
        while (running) {
          try {
            const { body } = await client.send(`${base}&opt=get`);
            if (body === 'HTTPSQS_GET_END') await sleep(1);
            else ackedGets.push(body);
          } catch {
            lostGetAnswers++;
            return;
          }
        }
      };
      const load = [...Array.from({ length: PRODUCERS }, (_, i) => producer(i)), ...Array.from({ length: CONSUMERS }, () => consumer())];
      const started = Date.now();
      await sleep(loadMs());
      // On a machine busy with other tests the load may have barely begun: it goes on until it has
      // done enough to be checked (up to 30 s; the checks below say if it never did).
      const enough = () => ackedPuts.size > 100 * (cycle + 1) && ackedGets.length > 20 * (cycle + 1);
      while (!enough() && Date.now() - started < 30_000) await sleep(50);
      await server.kill();
      running = false;
      await Promise.all(load);
      client.close();
      // The database always opens again.
      server = await startServer({ dir: server.dir, args });
    }

    assert.ok(ackedPuts.size > 100 * cycles, `the load really ran (${ackedPuts.size} puts acknowledged)`);
    assert.ok(ackedGets.length > 20 * cycles, `consumers really ran (${ackedGets.length} gets acknowledged)`);
    assert.equal(new Set(ackedGets).size, ackedGets.length, 'no message was handed out twice');

    const client = keepAliveClient(server.port);
    try {
      const drained: string[] = [];
      for (;;) {
        const { body } = await client.send(`${base}&opt=get`);
        if (body === 'HTTPSQS_GET_END') break;
        drained.push(body);
      }
      t.diagnostic(
        `${cycles} kills: acked puts ${ackedPuts.size}, acked gets ${ackedGets.length}, unanswered gets ${lostGetAnswers}, drained ${drained.length}`,
      );
      const got = new Set(ackedGets);
      assert.deepEqual(
        drained.filter((m) => got.has(m)),
        [],
        'an acknowledged get was handed out again after a restart',
      );
      const seen = new Set([...ackedGets, ...drained]);
      const missing = [...ackedPuts].filter((m) => !seen.has(m));
      // A get whose answer was cut by a kill may have taken a message for good (plain get is at
      // most once); anything beyond that would be an acknowledged put lost.
      assert.ok(
        missing.length <= lostGetAnswers,
        `${missing.length} acknowledged puts lost (only ${lostGetAnswers} gets were unanswered): ${missing.slice(0, 5).join(', ')}`,
      );
      // Each producer's messages come out of the (sequential) drain in the order they were put.
      const lastSeq = new Map<string, number>();
      for (const m of drained) {
        const [p, s] = m.split('-') as [string, string];
        assert.ok((lastSeq.get(p) ?? -1) < Number(s), `order of ${p} broken at ${m}`);
        lastSeq.set(p, Number(s));
      }
    } finally {
      client.close();
    }
  } finally {
    await server.stop();
    cleanup(server.dir);
  }
}
