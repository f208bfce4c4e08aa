/**
 * Turns to open an LMDB environment (store/lmdb/open-turn.ts): a process opens the database only
 * while every write is paused, because the LMDB that lmdb-js bundles can lose a committed
 * transaction when another process opens the environment as it commits. The end to end case
 * (workers under load, processes opening next to them, nothing acknowledged lost) is in
 * stress/open-turns.test.ts.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { lockDirectory, socketName } from '../src/store/lock.js';
import { giveOpenTurns, openInTurn, TURN_FILE, turns } from '../src/store/lmdb/open-turn.js';
import { LmdbStore } from '../src/store/lmdb/store.js';
import { cleanup, ROOT, tempDir } from './helpers.js';

/** An opener that speaks the protocol by hand: what it was told, line by line. */
function opener(dir: string) {
  const word = readFileSync(join(dir, TURN_FILE), 'utf8').trim();
  const sock = net.connect(socketName(dir, 'open'));
  sock.setEncoding('latin1');
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  let text = '';
  sock.on('data', (chunk: string) => {
    text += chunk;
    for (let i: number; (i = text.indexOf('\n')) >= 0; text = text.slice(i + 1)) lines.push(text.slice(0, i));
    for (const w of waiters.splice(0)) w();
  });
  const told = async (line: string) => {
    while (!lines.includes(line)) await new Promise<void>((r) => waiters.push(r));
  };
  const say = (line: string) => sock.write(`${line === 'open' ? `open ${word}` : line}\n`);
  return { sock, lines, told, say };
}

const text = (b: Buffer | null | undefined) => b?.toString() ?? null;

describe('turns to open the LMDB environment', () => {
  let dir: string;
  let store: LmdbStore;
  before(async () => {
    dir = tempDir('httpsqs-turns-');
    store = await LmdbStore.open({ path: dir });
  });
  after(async () => {
    await store.close();
    cleanup(dir);
  });

  it('an opener is told to go once the writes in progress are on disk, and writes wait until it has opened', async () => {
    const events: string[] = [];
    const first = store.put('q', Buffer.from('first')).then(() => events.push('first put'));
    const o = opener(dir);
    o.say('open');
    await o.told('go');
    events.push('go');
    assert.deepEqual(events, ['first put', 'go'], 'the put in progress was on disk before the turn began');
    let second = false;
    const put = store.put('q', Buffer.from('second')).then((pos) => ((second = true), pos));
    // Durable puts take milliseconds here: this one waits for the turn's end instead.
    await sleep(150);
    assert.equal(second, false, 'no write while another process opens');
    o.say('opened');
    await o.told('released');
    assert.equal(await put, 2);
    await first;
    assert.equal(text((await store.get('q'))?.message), 'first');
    assert.equal(text((await store.get('q'))?.message), 'second');
  });

  it('a store of another process opens in its turn, and sees what was committed', async () => {
    await store.put('shared', Buffer.from('from the holder'));
    const other = await LmdbStore.open({ path: dir, shared: true });
    try {
      assert.equal(text(await other.view('shared', 1)), 'from the holder');
      // The holder writes again once the turn is over.
      assert.equal(await store.put('shared', Buffer.from('after')), 2);
      assert.equal((await other.status('shared')).putpos, 2);
    } finally {
      await other.close();
    }
  });

  it('an opener that goes away ends its turn', async () => {
    const o = opener(dir);
    o.say('open');
    await o.told('go');
    o.sock.destroy();
    assert.equal(await store.put('gone', Buffer.from('x')), 1);
  });

  it('a turn ends after its limit, with the opener told so, and the writes go on', async () => {
    const turnDir = tempDir('httpsqs-turn-limit-');
    const seen: string[] = [];
    const stop = await giveOpenTurns(
      turnDir,
      turns(async () => {
        seen.push('paused');
        return () => seen.push('resumed');
      }),
      100,
    );
    try {
      const o = opener(turnDir);
      o.say('open');
      await o.told('go');
      assert.deepEqual(seen, ['paused']);
      await o.told('timeout');
      assert.deepEqual(seen, ['paused', 'resumed']);
      await new Promise((r) => o.sock.once('close', r));
    } finally {
      stop();
      cleanup(turnDir);
    }
  });

  it('only a process that can read the directory gets a turn: a wrong word, or a long line without one, is let go', async () => {
    for (const ask of ['open 0123456789abcdef0123456789abcdef\n', 'open\n', `${'x'.repeat(100)}`]) {
      const sock = net.connect(socketName(dir, 'open'));
      let told = '';
      sock.setEncoding('latin1').on('data', (d: string) => (told += d));
      sock.write(ask);
      await new Promise((r) => sock.once('close', r));
      assert.equal(told, '', `told ${JSON.stringify(told)} for ${JSON.stringify(ask.slice(0, 20))}`);
    }
    // Writes were never paused.
    assert.equal(await store.put('word', Buffer.from('x')), 1);
  });

  it('the word is in a file only its owner reads, gone once the store is closed', async () => {
    const own = tempDir('httpsqs-turn-file-');
    try {
      const s = await LmdbStore.open({ path: own });
      assert.equal(statSync(join(own, TURN_FILE)).mode & 0o777, 0o600);
      await s.close();
      assert.equal(existsSync(join(own, TURN_FILE)), false);
    } finally {
      cleanup(own);
    }
  });

  it('turns are given one at a time', async () => {
    const a = opener(dir);
    const b = opener(dir);
    a.say('open');
    await a.told('go');
    b.say('open');
    await sleep(100);
    assert.deepEqual(b.lines, [], 'no second turn while the first lasts');
    a.say('opened');
    await a.told('released');
    await b.told('go');
    b.say('opened');
    await b.told('released');
  });

  it('with no server, an opener holds the directory lock for the moment of its open; a server starting then waits for it, and so does another opener', async () => {
    const free = tempDir('httpsqs-turn-free-');
    try {
      await (await LmdbStore.open({ path: free })).close();
      const lockFile = join(free, 'httpsqs.lock');
      let heldDuringOpen = '';
      const opened = await openInTurn(free, () => {
        heldDuringOpen = readFileSync(lockFile, 'utf8').trim();
        return { close: () => {} };
      });
      assert.ok(opened);
      assert.equal(heldDuringOpen, String(process.pid), 'the lock was held while it opened');
      assert.equal(existsSync(lockFile), false, 'and let go after');

      // Held as an opener holds it: a server starting waits (it is not refused), as does another opener.
      const release = await lockDirectory(free, process.pid, undefined, true);
      let serverGotIt = false;
      const server = lockDirectory(free).then((unlock) => ((serverGotIt = true), unlock));
      await sleep(150);
      assert.equal(serverGotIt, false);
      release();
      const unlock = await server;
      unlock();
      const release2 = await lockDirectory(free, process.pid, undefined, true);
      let openerDone = false;
      const other = openInTurn(free, () => ((openerDone = true), { close: () => {} }));
      await sleep(150);
      assert.equal(openerDone, false);
      release2();
      await other;
      assert.equal(openerDone, true);
    } finally {
      cleanup(free);
    }
  });
});

it('a holder of the directory lock too busy to answer for seconds as it stops (a checkpoint of a million queues) is waited for, not taken for a running server', async () => {
  const dir = tempDir('httpsqs-lock-busy-');
  const lock = JSON.stringify(join(ROOT, 'dist/src/store/lock.js'));
  // Takes the lock, says it is stopping, then holds its event loop for 3 s (over the 2 s a holder
  // has to answer) and exits, which lets the lock go.
  const script = `import { lockDirectory, markStopping } from ${lock};
    await lockDirectory(${JSON.stringify(dir)});
    markStopping();
    process.stdout.write('held\\n');
    setTimeout(() => { for (const end = Date.now() + 3000; Date.now() < end; ); process.exit(0); }, 100);`;
  const holder = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise((r) => holder.stdout.once('data', r));
    await sleep(300); // inside its busy loop
    const waited: number[] = [];
    const unlock = await lockDirectory(dir, process.pid, (pid) => waited.push(pid));
    assert.equal(holder.exitCode, 0, 'taken once the holder had gone');
    unlock();
  } finally {
    holder.kill();
    cleanup(dir);
  }
});
