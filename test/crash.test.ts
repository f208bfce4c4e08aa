import assert from 'node:assert/strict';
import { it } from 'node:test';
import { crashCycles } from './crash.js';
import { cleanup, keepAliveClient, startServer } from './helpers.js';

for (const engine of ['journal', 'lmdb'])
  it(`${engine}: SIGKILL under concurrent load loses no acknowledged put and repeats no acknowledged get`, (t) =>
    crashCycles(t, 1, () => 1500, ['--engine', engine]));

/** Long enough for the kill and a restart (about 1 s, more on a busy machine: then the check that
 * nothing is handed out early is left to the first long poll's time, and said). */
const DELAY_S = 5;

for (const engine of ['journal', 'lmdb'])
  it(`${engine}: SIGKILL keeps every delayed message and dead letter, and delivers none early`, async (t) => {
    const args = ['--engine', engine];
    let server = await startServer({ args });
    let client = keepAliveClient(server.port);
    const q = '/?name=held';
    try {
      assert.equal((await client.send(`${q}&opt=maxdeliveries&num=1`)).body, 'HTTPSQS_MAXDELIVERIES_OK');
      // Dead letters: each message leased once and given back.
      const dead = Array.from({ length: 20 }, (_, i) => `dead-${i}`);
      for (const m of dead) await client.send(`${q}&opt=put&data=${m}`);
      for (let i = 0; i < dead.length; i++) {
        const got = await client.send(`${q}&opt=get&lease=60`);
        assert.equal((await client.send(`${q}&opt=nack&pos=${got.pos}`)).body, 'HTTPSQS_NACK_OK');
      }
      // Delayed messages, put concurrently; the server is killed as the last answers arrive, with
      // more puts on their way (which may or may not have been stored).
      const delayed = Array.from({ length: 300 }, (_, i) => `later-${i}`);
      const acked = new Set<string>();
      const putAt = Date.now();
      await Promise.all(
        delayed.map(async (m) => {
          if ((await client.send(`${q}&opt=put&delay=${DELAY_S}&data=${m}`)).body === 'HTTPSQS_PUT_OK') acked.add(m);
        }),
      );
      const inFlight = Array.from({ length: 50 }, (_, i) => client.send(`${q}&opt=put&delay=${DELAY_S}&data=extra-${i}`).catch(() => undefined));
      await server.kill();
      await Promise.all(inFlight);
      client.close();
      assert.equal(acked.size, delayed.length);

      server = await startServer({ dir: server.dir, args });
      client = keepAliveClient(server.port);
      const status = JSON.parse((await client.send(`${q}&opt=status_json`)).body);
      assert.equal(status.dead, dead.length);
      assert.ok(status.delayed >= acked.size, `delayed after the restart: ${status.delayed}`);
      assert.equal(status.maxdeliveries, 1);
      const listed = JSON.parse((await client.send(`${q}&opt=dead&num=1000`)).body) as Array<{ data: string; deliveries: number }>;
      assert.deepEqual(listed.map((d) => d.data).sort(), [...dead].sort());
      assert.ok(listed.every((d) => d.deliveries === 1));
      // None is handed out before its time: a long poll gets the first once it is due.
      if (Date.now() - putAt < DELAY_S * 1000 - 500) assert.equal((await client.send(`${q}&opt=get`)).body, 'HTTPSQS_GET_END');
      else t.diagnostic('the restart took too long to look before the delayed messages were due');
      const first = await client.send(`${q}&opt=get&wait=20`);
      assert.ok(Date.now() - putAt >= DELAY_S * 1000 - 50, `a delayed message was handed out ${Date.now() - putAt} ms after its put`);
      const got = new Set([first.body]);
      // The puts took a while: the last ones come due a little after the first.
      for (;;) {
        const r = await client.send(`${q}&opt=get&wait=2`);
        if (r.body === 'HTTPSQS_GET_END') break;
        got.add(r.body);
      }
      assert.deepEqual(
        [...acked].filter((m) => !got.has(m)),
        [],
        'acknowledged delayed puts lost',
      );
      assert.equal(JSON.parse((await client.send(`${q}&opt=redrive`)).body).count, dead.length);
      let back = 0;
      while ((await client.send(`${q}&opt=get`)).body !== 'HTTPSQS_GET_END') back++;
      assert.equal(back, dead.length);
    } finally {
      client.close();
      await server.stop();
      cleanup(server.dir);
    }
  });
