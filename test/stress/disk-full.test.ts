/**
 * A full disk: puts that cannot be stored answer HTTPSQS_PUT_ERROR with a log line, /healthz
 * says so, what was stored stays intact and readable, and puts succeed again once there is room;
 * under concurrent puts, no failed put leaves anything a consumer would get. With --disk-reserve
 * (on by default) puts stop before the disk is full. The data directory is a small tmpfs (needs
 * root, as in CI).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { it } from 'node:test';
import { cleanup, request, startServer, tempDir, type RunningServer } from '../helpers.js';

function canMount(): string | false {
  const probe = tempDir('httpsqs-mount-');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', probe], { stdio: 'ignore' });
    execFileSync('umount', [probe]);
    return false;
  } catch {
    if (process.env.CI === 'true') return false; // mandatory in CI: let the test fail there
    const reason = 'SKIPPED: mounting a small tmpfs needs root; mandatory in CI';
    process.stderr.write(`\n*** ${reason} ***\n\n`);
    return reason;
  } finally {
    cleanup(probe);
  }
}

/** Runs `body` against a server whose data directory is on a new tmpfs of `size`; resolves to
 * the server's exit code once it is stopped and the tmpfs unmounted. */
async function onTmpfs(size: string, args: string[], body: (server: RunningServer, mnt: string) => Promise<void>): Promise<number | null> {
  const root = tempDir('httpsqs-full-');
  const mnt = join(root, 'mnt');
  mkdirSync(mnt);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', mnt]);
  const server = await startServer({ dir: join(mnt, 'db'), args: ['-i', join(root, 'pid'), ...args] });
  let exit: number | null;
  try {
    await body(server, mnt);
  } finally {
    exit = await server.stop();
    execFileSync('umount', [mnt]);
    cleanup(root);
  }
  return exit;
}

const message = (i: number) => `${i}:`.padEnd(10_000, 'x');

/** Puts message(1), message(2)… one at a time until one is not stored (or `max` are). */
async function putUntilRefused(port: number, max: number): Promise<{ stored: number; answer: string }> {
  let stored = 0;
  let answer = '';
  for (let i = 1; i <= max; i++) {
    answer = (await request(port, 'POST', '/?name=full&opt=put', { body: message(i) })).body.toString();
    if (answer !== 'HTTPSQS_PUT_OK') break;
    stored = i;
  }
  return { stored, answer };
}

it('disk full: PUT_ERROR and a log line, nothing stored is damaged, puts resume once there is room', { skip: canMount() }, async () => {
  const exit = await onTmpfs('2m', ['--disk-reserve', '0'], async (server, mnt) => {
    const { stored, answer } = await putUntilRefused(server.port, 1000);
    assert.equal(answer, 'HTTPSQS_PUT_ERROR');
    assert.ok(stored > 10, `${stored} messages fitted before the disk was full`);
    assert.match(server.stderr(), /put failed: LMDB write failed/);
    const health = await request(server.port, 'GET', '/healthz');
    assert.equal(health.status, 503, 'a store whose last write failed is not healthy');
    assert.match(health.body.toString(), /LMDB write failed/);

    const status = JSON.parse((await request(server.port, 'GET', '/?name=full&opt=status_json')).body.toString());
    assert.equal(status.putpos, stored, 'positions match what was acknowledged');
    assert.equal((await request(server.port, 'GET', '/?name=full&opt=get')).body.toString(), message(1));
    assert.equal((await request(server.port, 'GET', `/?name=full&opt=view&pos=${stored}`)).body.toString(), message(stored));

    execFileSync('mount', ['-o', 'remount,size=32m', mnt]);
    const again = await request(server.port, 'POST', '/?name=full&opt=put', { body: message(stored + 1) });
    assert.equal(again.body.toString(), 'HTTPSQS_PUT_OK');
    assert.equal(again.headers.pos, String(stored + 1));
    assert.equal((await request(server.port, 'GET', '/healthz')).status, 200);
    assert.equal((await request(server.port, 'GET', `/?name=full&opt=view&pos=${stored + 1}`)).body.toString(), message(stored + 1));
  });
  assert.equal(exit, 0);
});

it('disk full under 30 concurrent producers: every acknowledged message is delivered once, intact; nothing of a failed put is', { skip: canMount() }, async () => {
  await onTmpfs('2m', ['--disk-reserve', '0'], async (server) => {
    const base = `http://127.0.0.1:${server.port}/?name=full`;
    const acked = new Map<number, string>(); // position -> body
    const refused = new Set<string>();
    let seq = 0;
    let errors = 0;
    let lost = 0;
    const producer = async () => {
      while (errors + lost < 100) {
        const i = ++seq;
        const body = `${i}:`.padEnd(3000 + (i % 7) * 1000, 'x');
        try {
          const res = await fetch(`${base}&opt=put`, { method: 'POST', body });
          const answer = await res.text();
          if (answer === 'HTTPSQS_PUT_OK') acked.set(Number(res.headers.get('pos')), body);
          else if (answer === 'HTTPSQS_PUT_ERROR') refused.add(body), errors++;
          else assert.fail(`unexpected answer ${answer}`);
        } catch {
          // No answer (the connection dropped): this put may or may not be stored.
          lost++;
          await sleep(100);
        }
      }
    };
    await Promise.all(Array.from({ length: 30 }, producer));
    // (lmdb-js itself may abort the worker after a run of failed commits: the primary restarts it,
    // and its requests then go unanswered. Nothing acknowledged may be lost either way.)
    assert.ok(errors > 0 && acked.size > 50, `${acked.size} stored, ${errors} refused, ${lost} unanswered`);
    // Drain: a position whose put failed must not come out as a message (an empty one, say).
    const delivered = new Map<number, string>();
    for (let tries = 0; ; ) {
      let res: Response;
      try {
        res = await fetch(`${base}&opt=get`);
      } catch {
        assert.ok(++tries < 50, 'the server did not answer again');
        await sleep(100);
        continue;
      }
      const body = await res.text();
      if (body === 'HTTPSQS_GET_END') break;
      const pos = Number(res.headers.get('pos'));
      assert.ok(body.length > 0, `position ${pos} came out empty`);
      assert.ok(!refused.has(body), `a put answered PUT_ERROR was delivered at ${pos}`);
      assert.ok(!delivered.has(pos), `position ${pos} delivered twice`);
      delivered.set(pos, body);
    }
    for (const [pos, body] of acked) assert.equal(delivered.get(pos), body, `acknowledged message at ${pos}`);
  });
});

it('--disk-reserve: puts stop while less than the reserve is free, said once; a reset or more room lets them resume', { skip: canMount() }, async () => {
  const exit = await onTmpfs('16m', ['--disk-reserve', '8'], async (server, mnt) => {
    const free = () => statfsSync(mnt).bavail * statfsSync(mnt).bsize;
    const said = (what: RegExp) => server.stderr().match(new RegExp(what, 'g'))?.length ?? 0;
    const refused = /below --disk-reserve 8 MiB: puts are refused until there is room/;
    const resumed = /MiB free for .*: puts are accepted again/;
    const putSoon = async () => {
      let answer = '';
      for (let i = 0; i < 30 && answer !== 'HTTPSQS_PUT_OK'; i++) {
        await sleep(100);
        answer = (await request(server.port, 'POST', '/?name=other&opt=put', { body: 'room again' })).body.toString();
      }
      return answer;
    };
    const { stored, answer } = await putUntilRefused(server.port, 2000);
    assert.equal(answer, 'HTTPSQS_PUT_ERROR');
    assert.ok(stored > 50, `${stored} messages fitted`);
    assert.ok(free() >= 6 * 2 ** 20, `${free()} bytes left: the reserve was not kept`);
    // Refused again, and said once, not per request.
    assert.equal((await request(server.port, 'POST', '/?name=full&opt=put', { body: 'more' })).body.toString(), 'HTTPSQS_PUT_ERROR');
    assert.equal(said(refused), 1, server.stderr());
    assert.doesNotMatch(server.stderr(), /put failed/);
    const health = await request(server.port, 'GET', '/healthz');
    assert.equal(health.status, 503);
    assert.match(health.body.toString(), /below the reserve of 8 MiB/);
    // Consumers go on.
    assert.equal((await request(server.port, 'GET', '/?name=full&opt=get')).body.toString(), message(1));

    // A reset frees the queue's pages inside the database (not on the disk): they count as room.
    assert.equal((await request(server.port, 'GET', '/?name=full&opt=reset')).body.toString(), 'HTTPSQS_RESET_OK');
    assert.equal(await putSoon(), 'HTTPSQS_PUT_OK');
    assert.equal(said(resumed), 1, server.stderr());

    // Full again; then the disk grows.
    assert.equal((await putUntilRefused(server.port, 2000)).answer, 'HTTPSQS_PUT_ERROR');
    assert.equal(said(refused), 2, server.stderr());
    execFileSync('mount', ['-o', 'remount,size=64m', mnt]);
    assert.equal(await putSoon(), 'HTTPSQS_PUT_OK');
    assert.equal(said(resumed), 2, server.stderr());
    assert.equal((await request(server.port, 'GET', '/healthz')).status, 200);
  });
  assert.equal(exit, 0);
});
