/**
 * A full disk: puts that cannot be stored answer HTTPSQS_PUT_ERROR with a log line, /healthz
 * says so, what was stored stays intact and readable, consumers go on, and puts succeed again once
 * there is room; under concurrent puts, no failed put leaves anything a consumer would get. No
 * commit ever meets the full disk: lmdb-js's report of a failed page write corrupts its heap
 * (src/store/room.ts), so its "Write error" on stderr fails a test even when glibc did not abort.
 * With --disk-reserve (on by default) puts stop before the disk is full. The data directory is a
 * small tmpfs (needs root, as in CI).
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readSync, statfsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { it } from 'node:test';
import { canMount, cleanup, keepAliveClient, request, startServer, tempDir, waitFor, type RunningServer } from '../helpers.js';

/** Runs `body` against a server whose data directory is on a new tmpfs of `size`; resolves to
 * the server's exit code once it is stopped and the tmpfs unmounted. */
async function onTmpfs(size: string, args: string[], body: (server: RunningServer, mnt: string) => Promise<void>): Promise<number | null> {
  const root = tempDir('httpsqs-full-');
  const mnt = join(root, 'mnt');
  mkdirSync(mnt);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', mnt]);
  // These hold LMDB to its room-taking (src/store/lmdb/room.ts); the journal's full disk is in test/journal.test.ts.
  const server = await startServer({ dir: join(mnt, 'db'), args: ['-i', join(root, 'pid'), '--engine', 'lmdb', ...args] });
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

/** The worker never died, and lmdb-js never reported a failed page write. */
function assertUnharmed(server: RunningServer, worker: number[]): void {
  const line = (what: RegExp) => what.exec(server.stderr())?.[0];
  assert.equal(line(/^.*"event":"restart".*$/m), undefined, 'the worker died');
  assert.deepEqual(server.workers(), worker, 'the worker is the one that started');
  assert.equal(line(/^.*(Write error|Attempting to write page).*$/m), undefined, 'lmdb-js met the full disk');
}

/** Answers by kind, with how often each came. */
class Answers {
  readonly seen = new Map<string, number>();
  add(kind: string, answer: string): void {
    const key = `${kind}: ${answer}`;
    this.seen.set(key, (this.seen.get(key) ?? 0) + 1);
  }
  /** The kinds of answer that came for `kind`. */
  of(kind: string): string[] {
    return [...this.seen.keys()].filter((k) => k.startsWith(`${kind}: `)).map((k) => k.slice(kind.length + 2));
  }
  toString(): string {
    return JSON.stringify(Object.fromEntries(this.seen));
  }
}

/** An answer as the tests compare it: a reply token, JSON, or a MESSAGE. */
const answerOf = (r: { status: number; body: string }) =>
  r.status !== 200 ? `HTTP ${r.status}` : /^HTTPSQS_\w+$/.test(r.body) ? r.body : r.body.startsWith('{') ? 'JSON' : 'MESSAGE';

/** Bytes of the data file past LMDB's last page (in its newer meta page, see datafile.ts): the
 * room the store took from the disk ahead of LMDB. */
function tail(dir: string): number {
  const file = join(dir, 'data.mdb');
  const fd = openSync(file, 'r');
  try {
    const meta = Buffer.alloc(160);
    readSync(fd, meta, 0, meta.length, 0);
    const pageSize = meta.readUInt32LE(48);
    let newest = { txnid: -1n, end: 0 };
    for (const at of [0, pageSize]) {
      readSync(fd, meta, 0, meta.length, at);
      const txnid = meta.readBigUInt64LE(152);
      if (txnid > newest.txnid) newest = { txnid, end: (Number(meta.readBigUInt64LE(144)) + 1) * pageSize };
    }
    return statSync(file).size - newest.end;
  } finally {
    closeSync(fd);
  }
}

/** Puts `body` until one is accepted (the disk was given more room a moment ago). */
async function putSoon(port: number, body = 'room again'): Promise<string> {
  let answer = '';
  for (let i = 0; i < 30 && answer !== 'HTTPSQS_PUT_OK'; i++) {
    if (i) await sleep(100);
    answer = (await request(port, 'POST', '/?name=full&opt=put', { body })).body.toString();
  }
  return answer;
}

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
    const worker = server.workers();
    const { stored, answer } = await putUntilRefused(server.port, 1000);
    assert.equal(answer, 'HTTPSQS_PUT_ERROR');
    assert.ok(stored > 10, `${stored} messages fitted before the disk was full`);
    assertUnharmed(server, worker);
    assert.match(server.stderr(), /"event":"disk-full".*is full: puts are refused until there is room/);
    assert.doesNotMatch(server.stderr(), /put failed/);
    const health = await request(server.port, 'GET', '/healthz');
    assert.equal(health.status, 503, 'a store that refuses puts is not healthy');
    assert.match(health.body.toString(), /the disk of the data directory is full/);

    const status = JSON.parse((await request(server.port, 'GET', '/?name=full&opt=status_json')).body.toString());
    assert.equal(status.putpos, stored, 'positions match what was acknowledged');
    assert.equal((await request(server.port, 'GET', '/?name=full&opt=get')).body.toString(), message(1));
    assert.equal((await request(server.port, 'GET', `/?name=full&opt=view&pos=${stored}`)).body.toString(), message(stored));

    execFileSync('mount', ['-o', 'remount,size=32m', mnt]);
    assert.equal((await request(server.port, 'GET', '/healthz')).status, 200, 'healthy again without a put');
    const again = await request(server.port, 'POST', '/?name=full&opt=put', { body: message(stored + 1) });
    assert.equal(again.body.toString(), 'HTTPSQS_PUT_OK');
    assert.equal(again.headers.pos, String(stored + 1));
    await waitFor(() => /"event":"disk-room".*puts are accepted again/.test(server.stderr()));
    assert.equal((await request(server.port, 'GET', `/?name=full&opt=view&pos=${stored + 1}`)).body.toString(), message(stored + 1));
    assertUnharmed(server, worker);
  });
  assert.equal(exit, 0);
});

it('small puts into a full disk: the log says disk-full once, not once a put, and disk-room once puts fit again', { skip: canMount() }, async (t) => {
  await onTmpfs('2m', ['--disk-reserve', '0'], async (server, mnt) => {
    const { answer } = await putUntilRefused(server.port, 1000);
    assert.equal(answer, 'HTTPSQS_PUT_ERROR');
    const client = keepAliveClient(server.port, 4);
    const answers = new Answers();
    try {
      // Puts small enough for the room a commit leaves fit between others that do not, until
      // they have filled it.
      const putter = async () => {
        for (let i = 0; i < 500; i++) answers.add('put', answerOf(await client.send('/?name=small&opt=put', message(0).slice(0, 1000))));
      };
      await Promise.all([putter(), putter(), putter(), putter()]);
      t.diagnostic(answers.toString());
      const said = (event: string) =>
        server
          .stderr()
          .split('\n')
          .filter((l) => l.includes(`"event":"${event}"`)).length;
      assert.ok(answers.of('put').includes('HTTPSQS_PUT_ERROR'), answers.toString());
      assert.equal(said('disk-full'), 1, server.stderr());
      assert.equal(said('disk-room'), 0, 'puts were still refused');
      execFileSync('mount', ['-o', 'remount,size=32m', mnt]);
      assert.equal(await putSoon(server.port), 'HTTPSQS_PUT_OK');
      await waitFor(() => said('disk-room') === 1);
      assert.equal(said('disk-full'), 1);
    } finally {
      client.close();
    }
  });
});

it('disk full under 30 concurrent producers: every put is answered, every acknowledged message is delivered once, intact; nothing of a refused put is', {
  skip: canMount(),
}, async () => {
  await onTmpfs('2m', ['--disk-reserve', '0'], async (server) => {
    const worker = server.workers();
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
    assertUnharmed(server, worker);
    assert.ok(errors > 0 && acked.size > 50 && lost === 0, `${acked.size} stored, ${errors} refused, ${lost} unanswered`);
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
    const { stored, answer } = await putUntilRefused(server.port, 2000);
    assert.equal(answer, 'HTTPSQS_PUT_ERROR');
    assert.ok(stored > 50, `${stored} messages fitted`);
    // The room the store took ahead in its data file counts as free, as LMDB writes there first.
    const left = free() + tail(join(mnt, 'db'));
    assert.ok(left >= 6 * 2 ** 20, `${left} bytes left: the reserve was not kept`);
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
    assert.equal(await putSoon(server.port), 'HTTPSQS_PUT_OK');
    assert.equal(said(resumed), 1, server.stderr());

    // Full again; then the disk grows.
    assert.equal((await putUntilRefused(server.port, 2000)).answer, 'HTTPSQS_PUT_ERROR');
    assert.equal(said(refused), 2, server.stderr());
    execFileSync('mount', ['-o', 'remount,size=64m', mnt]);
    assert.equal(await putSoon(server.port), 'HTTPSQS_PUT_OK');
    assert.equal(said(resumed), 2, server.stderr());
    assert.equal((await request(server.port, 'GET', '/healthz')).status, 200);
  });
  assert.equal(exit, 0);
});

it('a producer that goes on putting into a full disk (--disk-reserve 0): every put answers HTTPSQS_PUT_ERROR, gets and status are served, the worker lives on, and puts resume after a remount', {
  skip: canMount(),
}, async (t) => {
  await onTmpfs('12m', ['--disk-reserve', '0'], async (server, mnt) => {
    const worker = server.workers();
    const { stored, answer } = await putUntilRefused(server.port, 2000);
    assert.equal(answer, 'HTTPSQS_PUT_ERROR');
    assert.ok(stored > 500, `${stored} messages fitted`);
    const client = keepAliveClient(server.port, 1);
    const answers = new Answers();
    try {
      for (const end = Date.now() + 2000; Date.now() < end; ) {
        answers.add('put', await client.send('/?name=full&opt=put', message(0)).then(answerOf, () => 'no answer'));
      }
      t.diagnostic(`${stored} stored, then ${answers}`);
      assert.deepEqual(answers.of('put'), ['HTTPSQS_PUT_ERROR'], answers.toString());
      assertUnharmed(server, worker);
      assert.equal((await client.send('/?name=full&opt=get')).body, message(1));
      const status = JSON.parse((await client.send('/?name=full&opt=status_json')).body);
      assert.deepEqual([status.putpos, status.getpos], [stored, 1]);
      execFileSync('mount', ['-o', 'remount,size=32m', mnt]);
      assert.equal(await putSoon(server.port, message(stored + 1)), 'HTTPSQS_PUT_OK');
      assert.equal((await client.send(`/?name=full&opt=view&pos=${stored + 1}`)).body, message(stored + 1));
      assert.equal((await request(server.port, 'GET', '/healthz')).status, 200);
      assertUnharmed(server, worker);
    } finally {
      client.close();
    }
  });
});

it('a disk filled by another process under a consumer (get&lease, ack, nack, status) and a producer: consumers are served throughout, puts answer HTTPSQS_PUT_ERROR while it is full, the worker lives on', {
  skip: canMount(),
}, async (t) => {
  await onTmpfs('16m', ['--disk-reserve', '0'], async (server, mnt) => {
    const worker = server.workers();
    const batch = JSON.stringify(Array.from({ length: 100 }, (_, i) => `${i}:`.padEnd(1000, 'y')));
    for (let i = 0; i < 30; i++) assert.match((await request(server.port, 'POST', '/?name=full&opt=mput', { body: batch })).body.toString(), /^\{/);
    const client = keepAliveClient(server.port, 2);
    const answers = new Answers();
    let phase: 'before' | 'full' | 'after' = 'before';
    let stop = false;
    const consumer = async () => {
      for (let i = 0; !stop; i++) {
        const got = await client.send('/?name=full&opt=get&lease=30').catch(() => undefined);
        answers.add(`get ${phase}`, got ? answerOf(got) : 'no answer');
        // Every third message stays leased (its lease record stays); the others are acked or nacked.
        if (got?.pos && i % 3 !== 2)
          answers.add('settle', await client.send(`/?name=full&opt=${i % 2 ? 'ack' : 'nack'}&pos=${got.pos}`).then(answerOf, () => 'no answer'));
        if (i % 10 === 0) answers.add('status', await client.send('/?name=full&opt=status_json').then(answerOf, () => 'no answer'));
      }
    };
    const producer = async () => {
      for (let i = 1; !stop; i++) answers.add(`put ${phase}`, await client.send('/?name=full&opt=put', message(i)).then(answerOf, () => 'no answer'));
    };
    const running = Promise.all([consumer(), producer()]);
    try {
      await sleep(500);
      // dd stops with "No space left on device" once the disk is full.
      await new Promise((done) => execFile('dd', ['if=/dev/zero', `of=${join(mnt, 'filler')}`, 'bs=64k'], done));
      phase = 'full';
      // Until puts have used up the room taken ahead of the full disk and are refused, and a
      // consumer was served meanwhile (a fixed 2 s was not enough on a loaded machine).
      await waitFor(() => answers.of('put full').includes('HTTPSQS_PUT_ERROR') && answers.of('get full').includes('MESSAGE'), 60_000).catch(() => {});
      await sleep(500);
      execFileSync('mount', ['-o', 'remount,size=64m', mnt]);
      phase = 'after';
      await waitFor(() => answers.of('put after').includes('HTTPSQS_PUT_OK'), 30_000).catch(() => {});
    } finally {
      stop = true;
      await running;
      client.close();
    }
    t.diagnostic(answers.toString());
    const only = (kind: string, allowed: string[]) =>
      assert.deepEqual(
        answers.of(kind).filter((a) => !allowed.includes(a)),
        [],
        answers.toString(),
      );
    for (const when of ['before', 'full', 'after']) {
      only(`get ${when}`, ['MESSAGE', 'HTTPSQS_GET_END']);
      only(`put ${when}`, ['HTTPSQS_PUT_OK', 'HTTPSQS_PUT_ERROR']);
    }
    only('settle', ['HTTPSQS_ACK_OK', 'HTTPSQS_NACK_OK']);
    only('status', ['JSON']);
    assert.ok(answers.of('get full').includes('MESSAGE'), `consumers were served while the disk was full: ${answers}`);
    assert.ok(answers.of('put full').includes('HTTPSQS_PUT_ERROR'), `the disk was full for puts: ${answers}`);
    assert.ok(answers.of('put after').includes('HTTPSQS_PUT_OK'), `puts resumed: ${answers}`);
    assert.equal((await request(server.port, 'GET', '/healthz')).status, 200);
    assertUnharmed(server, worker);
  });
});
