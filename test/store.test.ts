/**
 * The Store contract, run against every store and mode: one-process LMDB (positions in memory),
 * shared LMDB (as under --workers), and the relaxed sync mode. Operations are issued without
 * waiting for each other, as concurrent requests do, so reads must see writes not yet committed.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { LmdbStore } from '../src/store/lmdb.js';
import type { Store } from '../src/store/store.js';
import { cleanup, tempDir } from './helpers.js';

const b = (s: string) => Buffer.from(s);

export function storeContract(title: string, open: (dir: string) => Store): void {
  describe(title, () => {
    const dirs: string[] = [];
    const fresh = () => {
      const dir = tempDir('httpsqs-store-');
      dirs.push(dir);
      return open(dir);
    };
    after(() => dirs.forEach(cleanup));

    it('puts and gets issued together keep their order and see each other', async () => {
      const s = fresh();
      const puts = [1, 2, 3].map((i) => s.put('q', b(`m${i}`)));
      const gets = [1, 2, 3, 4].map(() => s.get('q'));
      assert.deepEqual(await Promise.all(puts), [1, 2, 3]);
      const got = await Promise.all(gets);
      assert.deepEqual(got.map((g) => g && [g.pos, g.message.toString()]), [[1, 'm1'], [2, 'm2'], [3, 'm3'], null]);
      assert.deepEqual(await s.status('q'), { putpos: 3, getpos: 3, maxqueue: 1_000_000 });
      await s.close();
    });

    it('messages are bytes: NUL, high bytes and empty messages come back exactly', async () => {
      const s = fresh();
      const raw = Buffer.from([0, 255, 10, 0, 13]);
      await s.put('bin', raw);
      await s.put('bin', Buffer.alloc(0));
      assert.deepEqual((await s.get('bin'))!.message, raw);
      assert.equal((await s.get('bin'))!.message.length, 0);
      assert.deepEqual(await s.view('bin', 1), raw);
      await s.close();
    });

    it('view shows a stored message and never moves the read position', async () => {
      const s = fresh();
      await s.put('v', b('soon'));
      assert.equal((await s.view('v', 1))?.toString(), 'soon');
      assert.equal(await s.view('v', 2), null);
      assert.equal((await s.status('v')).getpos, 0);
      await s.close();
    });

    it('the ring fills, refuses, and wraps after two gets', async () => {
      const s = fresh();
      assert.equal(await s.maxqueue('r', 10), true);
      const puts = await Promise.all(Array.from({ length: 11 }, (_, i) => s.put('r', b(`${i}`))));
      assert.deepEqual(puts, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0]);
      await s.get('r');
      assert.equal(await s.put('r', b('x')), 0);
      await s.get('r');
      assert.equal(await s.put('r', b('wrapped')), 1);
      assert.equal(await s.maxqueue('r', 100), false); // writer a lap ahead
      assert.equal((await s.view('r', 1))?.toString(), 'wrapped');
      await s.close();
    });

    it('reset deletes messages, including ones still in flight, and a put after it starts at 1', async () => {
      const s = fresh();
      await s.put('z', b('old1'));
      const inflight = s.put('z', b('old2'));
      const reset = s.reset('z');
      const after = s.put('z', b('new'));
      await Promise.all([inflight, reset]);
      assert.equal(await after, 1);
      assert.equal((await s.view('z', 1))?.toString(), 'new');
      assert.equal(await s.view('z', 2), null);
      assert.deepEqual(await s.status('z'), { putpos: 1, getpos: 0, maxqueue: 1_000_000 });
      await s.close();
    });

    it('what was acknowledged is there after closing and opening again', async () => {
      const dir = tempDir('httpsqs-store-');
      dirs.push(dir);
      let s = open(dir);
      await Promise.all([s.put('d', b('a')), s.put('d', b('b')), s.maxqueue('d', 50)]);
      await s.get('d');
      await s.close();
      await s.close(); // safe twice
      s = open(dir);
      assert.deepEqual(await s.status('d'), { putpos: 2, getpos: 1, maxqueue: 50 });
      assert.equal((await s.get('d'))?.message.toString(), 'b');
      await s.close();
    });
  });
}

storeContract('LMDB store, one process', (path) => new LmdbStore({ path }));
storeContract('LMDB store, shared (--workers)', (path) => new LmdbStore({ path, shared: true }));
storeContract('LMDB store, --sync interval', (path) => new LmdbStore({ path, syncMode: 'interval', syncInterval: 1 }));

it('one process: view and get see a message whose put is still being committed', async () => {
  const dir = tempDir('httpsqs-store-');
  const s = new LmdbStore({ path: dir });
  const put = s.put('v', b('soon'));
  assert.equal((await s.view('v', 1))?.toString(), 'soon');
  assert.equal((await s.get('v'))?.message.toString(), 'soon');
  assert.equal(await put, 1);
  await s.close();
  cleanup(dir);
});
