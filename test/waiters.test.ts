/**
 * Long polls whose store call is still in progress when the client goes, or when the server
 * stops: the store is made slow on purpose (its calls wait for the test), as Redis under load is.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { MAX_TIMER_MS, systemClock } from '../src/queue/clock.js';
import { Waiters } from '../src/server/waiters.js';
import { createHttpsqsServer } from '../src/server/server.js';
import { JournalStore } from '../src/store/journal/store.js';
import { LmdbStore } from '../src/store/lmdb/store.js';
import type { Store } from '../src/store/store.js';
import { TestClock } from './clock.js';
import { cleanup, request, tempDir, waitFor } from './helpers.js';

describe('long polls and slow store calls', () => {
  it('a waiter whose store call is in progress when the server stops ends as that call does, not at its wait time', async () => {
    const clock = new TestClock();
    const waiters = new Waiters(undefined, clock);
    let calls = 0;
    let answer!: () => void;
    const attempt = () => (++calls === 1 ? Promise.resolve(undefined) : new Promise<undefined>((r) => (answer = () => r(undefined))));
    let ended = false;
    const waited = waiters
      .wait('q', clock.now() + 30_000, new AbortController().signal, attempt, async () => undefined)
      .then((got) => {
        ended = true;
        return got;
      });
    await waitFor(() => calls === 2);
    waiters.close();
    answer();
    // No time passes on the test clock: only the stop can end it.
    await waitFor(() => ended, 2000).catch(() => assert.fail('the waiter slept on after the stop'));
    assert.equal(await waited, undefined);
    assert.equal(calls, 2);
  });

  it('a watch on other processes that failed is asked for again by the next waiter, while the queue still has waiters', async () => {
    const clock = new TestClock();
    const asked: boolean[] = [];
    const peers = {
      watch: (_name: string, on: boolean) => (asked.push(on), asked.length === 1 ? Promise.reject(new Error('subscribe failed')) : Promise.resolve()),
      notify: () => {},
    };
    const waiters = new Waiters(peers, clock);
    const none = async () => undefined;
    const first = waiters.wait('q', clock.now() + 10_000, new AbortController().signal, none, none);
    await waitFor(() => waiters.size === 1);
    const second = waiters.wait('q', clock.now() + 10_000, new AbortController().signal, none, none);
    await waitFor(() => waiters.size === 2);
    assert.deepEqual(asked, [true, true], 'the second waiter watches again');
    clock.advance(10_000);
    assert.deepEqual(await Promise.all([first, second]), [undefined, undefined]);
    assert.deepEqual(asked, [true, true, false]);
  });

  it('a watch on other processes that is never answered (a primary stopped) holds a long poll no longer than its wait', async () => {
    const clock = new TestClock();
    const peers = { watch: () => new Promise<void>(() => {}), notify: () => {} };
    const waiters = new Waiters(peers, clock);
    const none = async () => undefined;
    let ended = false;
    const poll = waiters.wait('q', clock.now() + 5000, new AbortController().signal, none, none).then((got) => ((ended = true), got));
    await waitFor(() => waiters.size === 1);
    clock.advance(4999);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(ended, false, 'answered before its wait was over');
    clock.advance(1);
    await waitFor(() => ended, 2000).catch(() => assert.fail('the long poll waited on for the watch'));
    assert.equal(await poll, undefined);
    assert.equal(waiters.size, 0);
  });

  /** A server whose store's gets wait, once `slow()` is called, until the returned `go()`. */
  async function slowServer() {
    const clock = new TestClock();
    const dir = tempDir();
    const lmdb = await LmdbStore.open({ path: dir, now: clock.now });
    let held: Promise<void> | undefined;
    let taking = false;
    const store = new Proxy(lmdb, {
      get(target, key, receiver) {
        const v = Reflect.get(target, key, receiver);
        if (key !== 'get' || typeof v !== 'function') return typeof v === 'function' ? v.bind(target) : v;
        return async (...args: Parameters<Store['get']>) => {
          if (held) {
            taking = true;
            await held;
          }
          return lmdb.get(...args);
        };
      },
    });
    const app = createHttpsqsServer(store, { keepAliveTimeout: 60, maxMessageBytes: 2 ** 20, maxWait: 30, clock });
    await new Promise<void>((r) => app.server.listen(0, '127.0.0.1', r));
    return {
      app,
      port: (app.server.address() as net.AddressInfo).port,
      taking: () => taking,
      slow(): () => void {
        let go!: () => void;
        held = new Promise((r) => (go = r));
        return () => ((held = undefined), go());
      },
      async close() {
        await app.close();
        await lmdb.close();
        cleanup(dir);
      },
    };
  }

  it('a leased long poll whose client went away while its store call took the message gives it back at once', async () => {
    const server = await slowServer();
    const { port } = server;
    try {
      const sock = net.connect(port, '127.0.0.1');
      sock.on('error', () => {});
      sock.write('GET /?name=q&opt=get&wait=20&lease=60 HTTP/1.1\r\nHost: x\r\n\r\n');
      await waitFor(() => server.app.waiters.size === 1);
      const go = server.slow();
      assert.equal((await request(port, 'GET', '/?name=q&opt=put&data=job')).body.toString(), 'HTTPSQS_PUT_OK');
      await waitFor(server.taking);
      sock.destroy();
      // The server sees the close at once on loopback; the store call then ends.
      await new Promise((r) => setTimeout(r, 50));
      go();
      // No time passes on the test clock: without the give-back, the lease of 60 s holds it.
      let again: Awaited<ReturnType<typeof request>> | undefined;
      await waitFor(async () => (again = await request(port, 'GET', '/?name=q&opt=get&lease=60')).body.toString() !== 'HTTPSQS_GET_END', 2000).catch(() =>
        assert.fail('the message stays leased to a client that is gone'),
      );
      assert.equal(again!.body.toString(), 'job');
      assert.equal(again!.headers.deliveries, '2');
    } finally {
      await server.close();
    }
  });

  it('a plain long poll whose client half-closed while its store call took the message still sends it', async () => {
    const server = await slowServer();
    const { port } = server;
    try {
      const sock = net.connect(port, '127.0.0.1');
      const chunks: Buffer[] = [];
      sock.on('data', (d: Buffer) => chunks.push(d));
      const closed = new Promise((r) => sock.on('close', r));
      sock.write('GET /?name=q&opt=get&wait=20 HTTP/1.1\r\nHost: x\r\n\r\n');
      await waitFor(() => server.app.waiters.size === 1);
      const go = server.slow();
      assert.equal((await request(port, 'GET', '/?name=q&opt=put&data=job')).body.toString(), 'HTTPSQS_PUT_OK');
      await waitFor(server.taking);
      sock.end(); // it reads on
      await new Promise((r) => setTimeout(r, 50));
      go();
      await closed;
      assert.match(Buffer.concat(chunks).toString('latin1'), /\r\n\r\njob$/);
    } finally {
      await server.close();
    }
  });
});

describe('waits longer than one timer can wait (2^31 - 1 ms)', () => {
  const DAY = 24 * 3600 * 1000;

  it('an alarm for a message due in 30 days (longer than one timer can wait) does not wake a long poll over and over', async () => {
    const waiters = new Waiters(undefined, systemClock);
    let attempts = 0;
    const got = await waiters.wait(
      'q',
      Date.now() + 300,
      new AbortController().signal,
      async () => void attempts++,
      async () => Date.now() + 30 * DAY,
    );
    waiters.close();
    assert.equal(got, undefined);
    // A first look, one after going to sleep, and none for the alarm (it fired every ms, some
    // hundreds of looks); on a loaded machine a look more or so (4 were seen once under npm test).
    assert.ok(attempts <= 6, `${attempts} looks in 300 ms`);
  });

  it('opt=synctime with an interval of years: each embedded engine in --sync interval mode flushes at most every 24.8 days, not every ms', async () => {
    for (const [engine, flush] of [
      ['lmdb', 'flush'],
      ['journal', 'flushSegments'],
    ] as const) {
      const dir = tempDir();
      const store =
        engine === 'lmdb' ? await LmdbStore.open({ path: dir, syncMode: 'interval' }) : await JournalStore.open({ path: dir, syncMode: 'interval' });
      const inside = store as unknown as Record<string, () => Promise<void>>;
      const real = inside[flush]!.bind(store);
      let flushes = 0;
      inside[flush] = () => (flushes++, real());
      store.setSyncInterval(1_000_000_000);
      await new Promise((r) => setTimeout(r, 200));
      await store.close();
      cleanup(dir);
      assert.ok(flushes <= 1, `${engine}: ${flushes} flushes in 200 ms`);
    }
  });

  it('a wait longer than one timer takes goes in steps, fires once at its time, and can be cancelled in any step', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    let fired = 0;
    systemClock.setTimeout(() => fired++, 30 * DAY);
    t.mock.timers.tick(MAX_TIMER_MS);
    t.mock.timers.tick(30 * DAY - MAX_TIMER_MS - 1);
    assert.equal(fired, 0);
    t.mock.timers.tick(1);
    assert.equal(fired, 1);
    const timer = systemClock.setTimeout(() => fired++, 30 * DAY);
    t.mock.timers.tick(MAX_TIMER_MS + 1);
    timer.cancel();
    t.mock.timers.tick(30 * DAY);
    assert.equal(fired, 1);
  });
});
