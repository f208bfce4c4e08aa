/**
 * The Store contract, run against every store and mode: one-process LMDB (positions in memory),
 * shared LMDB (as under --workers), the relaxed sync mode, and Redis. Operations are issued without
 * waiting for each other, as concurrent requests do, so reads must see writes not yet committed.
 */
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import fc from 'fast-check';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { diedAt, FIRST_SLOT, isDead, LAST_SLOT } from '../src/queue/leases.js';
import { MAX_PASSED_OVER } from '../src/queue/ring.js';
import { JournalStore } from '../src/store/journal/store.js';
import { LmdbStore } from '../src/store/lmdb/store.js';
import { RedisStore } from '../src/store/redis.js';
import { StoreError, type Store, type StoreHooks } from '../src/store/store.js';
import { TestClock } from './clock.js';
import { cleanup, tempDir } from './helpers.js';
import { noRedis, startRedis, type RedisServer } from './redis-servers.js';

const b = (s: string) => Buffer.from(s);

export function storeContract(title: string, open: (dir: string, hooks?: StoreHooks) => Store | Promise<Store>): void {
  describe(title, () => {
    const dirs: string[] = [];
    /** A new directory, removed after the suite (a case that restarts its store opens it again). */
    const newDir = () => {
      const dir = tempDir('httpsqs-store-');
      dirs.push(dir);
      return dir;
    };
    const fresh = (hooks?: StoreHooks) => open(newDir(), hooks);
    after(() => dirs.forEach(cleanup));

    it('puts and gets issued together keep their order and see each other', async () => {
      const s = await fresh();
      const puts = [1, 2, 3].map((i) => s.put('q', b(`m${i}`)));
      const gets = [1, 2, 3, 4].map(() => s.get('q'));
      assert.deepEqual(await Promise.all(puts), [1, 2, 3]);
      const got = await Promise.all(gets);
      assert.deepEqual(
        got.map((g) => g && [g.pos, g.message.toString()]),
        [[1, 'm1'], [2, 'm2'], [3, 'm3'], null],
      );
      assert.deepEqual(await s.status('q'), { putpos: 3, getpos: 3, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
      await s.close();
    });

    it('messages are bytes: NUL, high bytes and empty messages come back exactly', async () => {
      const s = await fresh();
      const raw = Buffer.from([0, 255, 10, 0, 13]);
      await s.put('bin', raw);
      await s.put('bin', Buffer.alloc(0));
      assert.deepEqual((await s.get('bin'))!.message, raw);
      assert.equal((await s.get('bin'))!.message.length, 0);
      assert.deepEqual(await s.view('bin', 1), raw);
      await s.close();
    });

    it('leftovers: a queue holding no state but records left by an import stopped before writing its state, also after a restart; none once reset', async () => {
      const dir = newDir();
      const s = await open(dir);
      assert.equal(await s.leftovers?.('left'), false);
      await s.restore('left', { messages: [3, 1_000_000_001].map((pos) => ({ pos, message: b(`old${pos}`) })) });
      assert.deepEqual(await s.status('left'), { putpos: 0, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
      assert.equal(await s.leftovers?.('left'), true);
      await s.close();
      const again = await open(dir);
      assert.equal(await again.leftovers?.('left'), true);
      await again.reset('left');
      assert.equal(await again.leftovers?.('left'), false);
      assert.equal(await again.view('left', 3), null);
      await again.close();
    });

    it('view shows a stored message and never moves the read position', async () => {
      const s = await fresh();
      await s.put('v', b('soon'));
      assert.equal((await s.view('v', 1))?.toString(), 'soon');
      assert.equal(await s.view('v', 2), null);
      assert.equal((await s.status('v')).getpos, 0);
      await s.close();
    });

    it('the ring fills, refuses, and wraps after two gets', async () => {
      const s = await fresh();
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
      const s = await fresh();
      await s.put('z', b('old1'));
      const inflight = s.put('z', b('old2'));
      const reset = s.reset('z');
      const after = s.put('z', b('new'));
      await Promise.all([inflight, reset]);
      assert.equal(await after, 1);
      assert.equal((await s.view('z', 1))?.toString(), 'new');
      assert.equal(await s.view('z', 2), null);
      assert.deepEqual(await s.status('z'), { putpos: 1, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
      await s.close();
    });

    it('what was acknowledged is there after closing and opening again', async () => {
      const dir = newDir();
      let s = await open(dir);
      await Promise.all([s.put('d', b('a')), s.put('d', b('b')), s.maxqueue('d', 50)]);
      await s.get('d');
      await s.close();
      await s.close(); // safe twice
      s = await open(dir);
      assert.deepEqual(await s.status('d'), { putpos: 2, getpos: 1, maxqueue: 50, leased: 0, delayed: 0, dead: 0 });
      assert.equal((await s.get('d'))?.message.toString(), 'b');
      await s.close();
    });

    it('putMany stores a batch in order and stops where the queue is full; getMany takes up to max', async () => {
      const s = await fresh();
      await s.maxqueue('m', 10);
      assert.deepEqual(await s.putMany('m', ['a', 'b', 'c'].map(b)), [1, 2, 3]);
      assert.deepEqual(
        await s.putMany(
          'm',
          Array.from({ length: 9 }, (_, i) => b(`${i}`)),
        ),
        [4, 5, 6, 7, 8, 9, 10],
      );
      assert.deepEqual(await s.putMany('m', [b('x')]), []);
      const got = await s.getMany('m', 4);
      assert.deepEqual(
        got.map((g) => [g.pos, g.message.toString(), g.deliveries]),
        [
          [1, 'a', 1],
          [2, 'b', 1],
          [3, 'c', 1],
          [4, '0', 1],
        ],
      );
      assert.equal((await s.getMany('m', 100)).length, 6);
      assert.deepEqual(await s.getMany('m', 5), []);
      await s.close();
    });

    it('a leased message is acked once; a nacked one comes back first, counting its deliveries', async () => {
      const s = await fresh();
      await s.putMany('l', ['one', 'two', 'three'].map(b));
      const first = await s.get('l', 60_000);
      assert.deepEqual([first?.pos, first?.deliveries], [1, 1]);
      const second = await s.get('l', 60_000);
      assert.equal((await s.status('l')).leased, 2);
      assert.equal(await s.settle('l', first!.pos, 'ack'), true);
      assert.equal(await s.settle('l', first!.pos, 'ack'), false); // already acked
      assert.equal(await s.settle('l', 3, 'nack'), false); // never leased
      assert.equal(await s.settle('l', second!.pos, 'nack'), true);
      // Given back and due again: still counted as leased (not unread) until it is taken.
      assert.deepEqual(await s.status('l'), { putpos: 3, getpos: 2, maxqueue: 1_000_000, leased: 1, delayed: 0, dead: 0 });
      const again = await s.get('l', 60_000);
      assert.deepEqual([again?.pos, again?.message.toString(), again?.deliveries], [2, 'two', 2]);
      assert.equal((await s.get('l'))?.pos, 3); // then the newer one
      assert.deepEqual(await s.status('l'), { putpos: 3, getpos: 3, maxqueue: 1_000_000, leased: 1, delayed: 0, dead: 0 });
      await s.close();
    });

    it('messages given back together come back in position order', async () => {
      const s = await fresh();
      await s.putMany(
        'o',
        Array.from({ length: 12 }, (_, i) => b(`m${i + 1}`)),
      );
      await s.getMany('o', 12, 60_000);
      for (const pos of [12, 3, 10, 1]) assert.equal(await s.settle('o', pos, 'nack'), true);
      assert.deepEqual(
        (await s.getMany('o', 10)).map((g) => g.pos),
        [1, 3, 10, 12],
      );
      await s.close();
    });

    it('an expired lease is delivered again ahead of newer messages; a plain get of it ends the lease', async () => {
      const clock = new TestClock();
      const s = await fresh({ now: clock.now });
      await s.putMany('e', ['old', 'new'].map(b));
      assert.equal((await s.get('e', 40))?.pos, 1);
      assert.equal(await s.nextExpiry('e'), clock.now() + 40);
      clock.advance(39);
      assert.equal((await s.get('e'))?.pos, 2, 'not due yet: the next one comes first');
      await s.putMany('e', [b('newer')]);
      clock.advance(1);
      const back = await s.get('e');
      assert.deepEqual([back?.pos, back?.message.toString(), back?.deliveries], [1, 'old', 2]);
      assert.equal((await s.status('e')).leased, 0);
      assert.equal(await s.nextExpiry('e'), undefined);
      assert.equal((await s.get('e'))?.pos, 3);
      assert.equal(await s.get('e'), null);
      await s.close();
    });

    it('a delayed message is stored at once, outside the ring, and handed out once due, ahead of newer ones', async () => {
      const clock = new TestClock();
      const s = await fresh({ now: clock.now });
      const [slot] = await s.putMany('dl', [b('later')], 5000);
      assert.ok(slot! > 1_000_000_000, `a slot past the ring: ${slot}`);
      assert.equal(await s.put('dl', b('now')), 1, 'the ring is untouched by the delayed put');
      assert.deepEqual(await s.status('dl'), { putpos: 1, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 1, dead: 0 });
      assert.equal(await s.nextExpiry('dl'), clock.now() + 5000);
      assert.equal((await s.get('dl'))?.message.toString(), 'now');
      assert.equal(await s.get('dl'), null, 'not before its time');
      assert.equal(await s.put('dl', b('newer')), 2);
      clock.advance(5000);
      const due = await s.get('dl', 60_000);
      assert.deepEqual([due?.pos, due?.message.toString(), due?.deliveries], [slot, 'later', 1]);
      assert.deepEqual(await s.status('dl'), { putpos: 2, getpos: 1, maxqueue: 1_000_000, leased: 1, delayed: 0, dead: 0 });
      assert.equal(await s.touch('dl', slot!, 1000, due!.lease), due!.lease);
      assert.equal(await s.settle('dl', slot!, 'ack'), true);
      assert.equal(await s.view('dl', slot!), null, 'acked, the message at a slot is deleted');
      assert.equal((await s.get('dl'))?.message.toString(), 'newer');
      assert.deepEqual(await s.status('dl'), { putpos: 2, getpos: 2, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
      await s.close();
    });

    it('delayed messages: a plain get deletes them; nack, ack and touch do not apply before delivery; at most maxqueue wait', async () => {
      const clock = new TestClock();
      const s = await fresh({ now: clock.now });
      await s.maxqueue('dm', 10);
      const slots = await s.putMany(
        'dm',
        Array.from({ length: 12 }, (_, i) => b(`d${i}`)),
        1000,
      );
      assert.equal(slots.length, 10, 'the queue keeps at most maxqueue messages outside its ring');
      assert.equal(await s.put('dm', b('more'), 1000), 0);
      assert.equal(await s.put('dm', b('ring')), 1, 'the ring is not full');
      for (const outcome of ['ack', 'nack'] as const) assert.equal(await s.settle('dm', slots[0]!, outcome), false);
      assert.equal(await s.touch('dm', slots[0]!, 1000), null);
      clock.advance(1000);
      const got = await s.getMany('dm', 20);
      assert.deepEqual(
        got.map((g) => g.message.toString()),
        [...Array.from({ length: 10 }, (_, i) => `d${i}`), 'ring'],
        'due ones first, in slot order, then the ring',
      );
      assert.ok(got.every((g) => g.deliveries === 1));
      for (const slot of slots) assert.equal(await s.view('dm', slot), null);
      assert.deepEqual(await s.status('dm'), { putpos: 1, getpos: 1, maxqueue: 10, leased: 0, delayed: 0, dead: 0 });
      assert.equal((await s.putMany('dm', [b('again')], 1000)).length, 1, 'room outside the ring again');
      await s.reset('dm');
      assert.deepEqual(await s.status('dm'), { putpos: 0, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
      assert.equal(await s.nextExpiry('dm'), undefined);
      await s.close();
    });

    it('deadLetters pages through the dead letters in position order, after a position, leaving out those redriven or discarded', async () => {
      const s = await fresh();
      await s.maxdeliveries('p', 1);
      await s.putMany('p', ['a', 'b', 'c', 'd', 'e', 'f'].map(b));
      for (let i = 0; i < 6; i++) {
        const got = await s.get('p', 60_000);
        assert.equal(await s.settle('p', got!.pos, 'nack', got!.lease), true);
      }
      const all = await s.deadLetters('p', 0, 100);
      assert.equal(all.length, 6);
      const positions = all.map((l) => l.pos);
      assert.deepEqual(
        positions,
        [...positions].sort((x, y) => x - y),
        'in position order',
      );
      assert.ok(all.every((l) => isDead(l.lease) && l.lease.deliveries === 1));
      assert.deepEqual(
        (await Promise.all(positions.map((pos) => s.view('p', pos)))).map((m) => m?.toString()),
        ['a', 'b', 'c', 'd', 'e', 'f'],
      );
      const first = await s.deadLetters('p', 0, 2);
      assert.deepEqual(
        first.map((l) => l.pos),
        positions.slice(0, 2),
      );
      assert.deepEqual(
        (await s.deadLetters('p', first[1]!.pos, 10)).map((l) => l.pos),
        positions.slice(2),
      );
      assert.equal(await s.discard('p', positions[2]!), true);
      assert.equal(await s.redrive('p', 1), 1); // the one that died first: positions[0]
      assert.deepEqual(
        (await s.deadLetters('p', 0, 100)).map((l) => l.pos),
        [positions[1], ...positions.slice(3)],
      );
      assert.deepEqual(await s.deadLetters('p', positions[5]!, 10), []);
      assert.deepEqual(await s.deadLetters('none', 0, 10), []);
      await s.close();
    });

    it('dead letters: after maxdeliveries lease endings a message is set aside, and a redrive brings it back', async () => {
      const clock = new TestClock();
      const s = await fresh({ now: clock.now });
      await s.maxdeliveries('x', 2);
      assert.deepEqual(
        (await s.list('x', undefined, 10)).map((q) => [q.name, q.status.maxdeliveries]),
        [['x', 2]],
      );
      await s.putMany('x', ['poison', 'fine'].map(b));
      const first = await s.get('x', 100);
      assert.equal(await s.settle('x', first!.pos, 'nack', first!.lease), true); // ended once
      const second = await s.get('x', 100);
      assert.deepEqual([second?.pos, second?.deliveries], [1, 2]);
      clock.advance(100); // ended twice: expired
      const next = await s.get('x', 100);
      assert.equal(next?.message.toString(), 'fine', 'the poison message is not handed out a third time');
      const st = await s.status('x');
      assert.deepEqual([st.leased, st.delayed, st.dead, st.maxdeliveries], [1, 0, 1, 2]);
      const held = (await s.leases('x')).filter((l) => isDead(l.lease));
      assert.equal(held.length, 1);
      const [{ pos: deadPos, lease }] = held as [{ pos: number; lease: { deadline: number; deliveries: number } }];
      assert.ok(deadPos > 1_000_000_000, 'kept at a slot: it holds no ring position');
      assert.deepEqual([lease.deliveries, diedAt(lease)], [2, clock.now()]);
      assert.equal((await s.view('x', deadPos))?.toString(), 'poison');
      assert.equal(await s.nextExpiry('x'), clock.now() + 100, 'a dead letter never comes due');
      assert.equal(await s.settle('x', deadPos, 'ack'), false);
      // A nack of a lease that reached maxdeliveries sets the message aside at once.
      assert.equal(await s.settle('x', next!.pos, 'nack'), true);
      const third = await s.get('x', 100);
      assert.equal(await s.settle('x', third!.pos, 'nack', third!.lease), true);
      assert.equal((await s.status('x')).dead, 2);
      assert.equal(await s.get('x'), null);
      assert.equal(await s.redrive('x', 1), 1, 'the one that died first');
      const back = await s.get('x', 100);
      assert.deepEqual([back?.pos, back?.message.toString(), back?.deliveries], [deadPos, 'poison', 1]);
      assert.equal(await s.settle('x', back!.pos, 'ack', back!.lease), true);
      assert.equal(await s.view('x', deadPos), null);
      assert.equal(await s.redrive('x', 10), 1);
      assert.equal((await s.get('x'))?.message.toString(), 'fine');
      assert.deepEqual(await s.status('x'), { putpos: 2, getpos: 2, maxqueue: 1_000_000, maxdeliveries: 2, leased: 0, delayed: 0, dead: 0 });
      await s.maxdeliveries('x', 0);
      assert.equal((await s.status('x')).maxdeliveries ?? 0, 0);
      await s.close();
    });

    it('maxdeliveries counts the deliveries made before it was set: a message given back that often is set aside at the next get', async () => {
      const clock = new TestClock();
      const s = await fresh({ now: clock.now });
      await s.putMany('md', ['nacked', 'expired', 'next'].map(b));
      const nacked = (await s.get('md', 100))!;
      assert.equal(await s.settle('md', nacked.pos, 'nack', nacked.lease), true); // given back while off
      const again = (await s.get('md', 100))!;
      assert.equal(again.pos, nacked.pos);
      const expired = (await s.get('md', 100))!;
      clock.advance(100); // both leases ran out while off: 'nacked' went out twice, 'expired' once
      await s.maxdeliveries('md', 2);
      const got = await s.get('md', 100);
      assert.equal(got?.message.toString(), 'expired', 'the one handed out twice is set aside, the other comes back');
      assert.equal(got?.deliveries, 2);
      assert.equal((await s.status('md')).dead, 1);
      assert.deepEqual(
        (await s.deadLetters('md', 0, 10)).map((d) => d.lease.deliveries),
        [2],
      );
      assert.equal(expired.pos, got?.pos);
      await s.close();
    });

    it('a delayed message that keeps failing becomes a dead letter in its slot; discard deletes one; reset clears the setting', async () => {
      const clock = new TestClock();
      const s = await fresh({ now: clock.now });
      await s.maxdeliveries('y', 1);
      const [slot] = await s.putMany('y', [b('job')], 10);
      clock.advance(10);
      const got = await s.get('y', 50);
      assert.equal(got?.pos, slot);
      clock.advance(50);
      assert.equal(await s.get('y'), null);
      assert.deepEqual(
        (await s.leases('y')).map((l) => [l.pos, l.lease.deliveries, isDead(l.lease)]),
        [[slot, 1, true]],
      );
      assert.equal(await s.discard('y', slot!), true);
      assert.equal(await s.discard('y', slot!), false, 'gone');
      assert.equal(await s.view('y', slot!), null);
      assert.equal((await s.status('y')).dead, 0);
      await s.put('y', b('ring'));
      const leased = await s.get('y', 50);
      assert.equal(await s.discard('y', leased!.pos), false, 'a lease is no dead letter');
      await s.reset('y');
      assert.deepEqual(await s.status('y'), { putpos: 0, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
      assert.deepEqual(await s.list('y', undefined, 10), []);
      await s.close();
    });

    it('a put never writes over a leased position: the queue reports full instead', async () => {
      const s = await fresh();
      await s.maxqueue('w', 10);
      await s.putMany(
        'w',
        Array.from({ length: 10 }, (_, i) => b(`${i + 1}`)),
      );
      await s.get('w', 60_000); // position 1, leased
      await s.get('w');
      assert.equal(await s.put('w', b('x')), 0); // would wrap onto position 1
      assert.equal(await s.settle('w', 1, 'ack'), true);
      assert.equal(await s.put('w', b('x')), 1);
      await s.close();
    });

    it('range shows stored messages in a span of positions; list pages through queues by prefix', async () => {
      const s = await fresh();
      await s.putMany('r', ['a', 'b', 'c'].map(b));
      await s.get('r');
      const r = await s.range('r', 2, 5);
      assert.deepEqual(
        r.map((x) => [x.pos, x.message.toString()]),
        [
          [2, 'b'],
          [3, 'c'],
        ],
      );
      for (const n of ['job:b', 'job:a', 'job:c', 'jobs', 'other']) await s.put(n, b('x'));
      await s.maxqueue('job:d', 20); // state without messages counts too
      await s.status('job:never'); // looking at a queue does not create it
      const page1 = await s.list('job:', '', 2);
      assert.deepEqual(
        page1.map((q) => q.name),
        ['job:a', 'job:b'],
      );
      const page2 = await s.list('job:', page1.at(-1)!.name, 10);
      assert.deepEqual(
        page2.map((q) => q.name),
        ['job:c', 'job:d'],
      );
      assert.deepEqual(page2[1]!.status, { putpos: 0, getpos: 0, maxqueue: 20, leased: 0, delayed: 0, dead: 0 });
      assert.deepEqual(
        (await s.list('', '', 100)).map((q) => q.name),
        ['job:a', 'job:b', 'job:c', 'job:d', 'jobs', 'other', 'r'],
      );
      await s.reset('other');
      assert.deepEqual(
        (await s.list('o', '', 100)).map((q) => q.name),
        [],
      );
      await s.close();
    });

    it('a batch with a byte budget takes only the messages that fit (at least one) and leaves the rest unread', async () => {
      const s = await fresh();
      await s.putMany('bb', [b('a'.repeat(600)), b(''), b('c'.repeat(500)), b('d'.repeat(2000)), b('e')]);
      // 600 + 0 fit in 1000, 500 more would not: two taken, the rest unread.
      assert.deepEqual(
        (await s.getMany('bb', 10, undefined, 1000)).map((d) => d.pos),
        [1, 2],
      );
      assert.equal((await s.status('bb')).getpos, 2);
      assert.deepEqual(
        (await s.range('bb', 1, 10, 1100)).map((m) => m.pos),
        [1, 2, 3],
      );
      // The first message goes whatever its size; a leased batch obeys the budget too.
      assert.deepEqual(
        (await s.getMany('bb', 10, 60_000, 400)).map((d) => d.pos),
        [3],
      );
      assert.deepEqual(
        (await s.getMany('bb', 10, 60_000, 10)).map((d) => d.pos),
        [4],
      );
      assert.deepEqual(
        (await s.range('bb', 4, 10, 10)).map((m) => m.pos),
        [4],
      );
      assert.equal((await s.status('bb')).leased, 2);
      assert.equal(await s.settle('bb', 3, 'nack'), true);
      // A message given back that does not fit stays due, ahead of the rest.
      assert.deepEqual(
        (await s.getMany('bb', 10, undefined, 500)).map((d) => d.pos),
        [3],
      );
      assert.deepEqual(
        (await s.getMany('bb', 10)).map((d) => d.pos),
        [5],
      );
      await s.close();
    });

    it('the empty name is a queue like any other, and list shows it first', async () => {
      const dir = newDir();
      let s = await open(dir);
      assert.deepEqual(await s.putMany('', ['one', 'two', 'three'].map(b)), [1, 2, 3]);
      assert.equal((await s.get(''))?.message.toString(), 'one');
      assert.equal(await s.maxqueue('', 50), true);
      for (const n of ['\0', 'a']) await s.put(n, b('x'));
      await s.close();
      s = await open(dir);
      assert.deepEqual(await s.status(''), { putpos: 3, getpos: 1, maxqueue: 50, leased: 0, delayed: 0, dead: 0 });
      assert.equal((await s.view('', 3))?.toString(), 'three');
      assert.deepEqual(
        (await s.list('', undefined, 100)).map((q) => q.name),
        ['', '\0', 'a'],
      );
      // Page by page, `after` the last name of each page: '' is a name too.
      const names: string[] = [];
      for (
        let after: string | undefined, page: Array<{ name: string }>;
        (page = await s.list('', after, 1)).length > 0 && names.length < 5;
        after = page[0]!.name
      )
        names.push(page[0]!.name);
      assert.deepEqual(names, ['', '\0', 'a']);
      assert.deepEqual(
        (await s.list('a', undefined, 100)).map((q) => q.name),
        ['a'],
      );
      await s.reset('');
      assert.deepEqual(await s.status(''), { putpos: 0, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
      assert.equal(await s.view('', 3), null);
      assert.deepEqual(
        (await s.list('', undefined, 100)).map((q) => q.name),
        ['\0', 'a'],
      );
      await s.close();
    });

    it('a message given back by a nack is no longer held: a second nack, an ack or a touch without a token find no lease', async () => {
      const s = await fresh();
      await s.putMany('nn', [b('job')]);
      const got = (await s.get('nn', 60_000))!;
      assert.equal(await s.settle('nn', got.pos, 'nack'), true);
      assert.equal(await s.settle('nn', got.pos, 'nack'), false);
      assert.equal(await s.settle('nn', got.pos, 'ack'), false);
      assert.equal(await s.touch('nn', got.pos, 60_000), null);
      const again = await s.get('nn', 60_000);
      assert.deepEqual([again?.pos, again?.deliveries], [got.pos, 2]);
      assert.equal(await s.settle('nn', got.pos, 'ack', again!.lease), true);
      await s.close();
    });

    it('a lease token names one grant: a stale ack or nack settles nothing', async () => {
      const s = await fresh();
      await s.put('t', b('job'));
      const first = await s.get('t', 60_000);
      assert.ok(first?.lease);
      assert.equal(await s.settle('t', 1, 'nack', first.lease), true);
      const second = await s.get('t', 60_000);
      assert.notEqual(second?.lease, first.lease);
      assert.equal(await s.settle('t', 1, 'ack', first.lease), false); // the first consumer is late
      assert.equal(await s.settle('t', 1, 'nack', 'nonsense'), false);
      assert.equal(await s.settle('t', 1, 'ack', second!.lease), true);
      assert.equal((await s.get('t'))?.lease, undefined); // a plain get carries none
      await s.close();
    });

    it('touch extends a running lease under the same token (a touch whose answer was lost leaves it good); an ended or given-back lease cannot be touched', async () => {
      const clock = new TestClock();
      const s = await fresh({ now: clock.now });
      await s.putMany('tc', [b('long job'), b('short')]);
      const job = await s.get('tc', 300);
      assert.equal(await s.touch('tc', 1, 30_000, job!.lease), job!.lease);
      // Touched again with the token it was granted, as a consumer whose touch got no answer does.
      const renewed = await s.touch('tc', 1, 60_000, job!.lease);
      assert.equal(renewed, job!.lease);
      assert.deepEqual(await s.leases('tc'), [{ pos: 1, lease: { deadline: clock.now() + 60_000, deliveries: 1, granted: clock.now() + 300 } }]);
      assert.equal(await s.touch('tc', 1, 60_000, 'nonsense'), null);
      clock.advance(500); // past the first deadline: still leased
      assert.equal((await s.get('tc', 300))?.message.toString(), 'short');
      clock.advance(500); // the second lease, not touched, ran out
      assert.equal(await s.touch('tc', 2, 60_000), null);
      assert.equal(await s.settle('tc', 1, 'nack', renewed), true);
      assert.equal(await s.touch('tc', 1, 60_000), null); // given back: due, not running
      assert.equal(await s.touch('tc', 3, 60_000), null); // never leased
      assert.deepEqual(
        (await s.getMany('tc', 5)).map((d) => [d.pos, d.deliveries]),
        [
          [1, 2],
          [2, 2],
        ],
      );
      await s.close();
    });

    it("a touched lease's token holds after a restart; a new grant of the message (the lease ran out) has another", async () => {
      const clock = new TestClock();
      const dir = newDir();
      let s = await open(dir, { now: clock.now });
      await s.put('tk', b('job'));
      const job = (await s.get('tk', 1000))!;
      assert.equal(await s.touch('tk', job.pos, 5000, job.lease), job.lease);
      await s.close();
      s = await open(dir, { now: clock.now });
      assert.deepEqual(await s.leases('tk'), [{ pos: 1, lease: { deadline: clock.now() + 5000, deliveries: 1, granted: clock.now() + 1000 } }]);
      assert.equal(await s.touch('tk', job.pos, 2000, job.lease), job.lease);
      clock.advance(2500); // the lease ran out: the message goes out again, under a new grant
      const again = (await s.get('tk', 1000))!;
      assert.equal(again.deliveries, 2);
      assert.notEqual(again.lease, job.lease);
      assert.equal(await s.settle('tk', 1, 'ack', job.lease), false);
      assert.equal(await s.touch('tk', 1, 1000, job.lease), null);
      assert.equal(await s.settle('tk', 1, 'ack', again.lease), true);
      await s.close();
    });

    it('reset removes leases whose writes are still queued', async () => {
      const dir = newDir();
      let s = await open(dir);
      await s.putMany('rq', ['o1', 'o2', 'o3'].map(b));
      await s.get('rq');
      await s.get('rq');
      const leased = s.get('rq', 60_000); // position 3, not yet committed when the reset comes
      await Promise.all([leased, s.reset('rq')]);
      await s.putMany('rq', ['a', 'b', 'c', 'd'].map(b));
      await s.get('rq', 60_000);
      await s.close();
      s = await open(dir);
      assert.equal((await s.status('rq')).leased, 1);
      const rest = await s.getMany('rq', 10);
      assert.deepEqual(
        rest.map((g) => [g.pos, g.message.toString(), g.deliveries]),
        [
          [2, 'b', 1],
          [3, 'c', 1],
          [4, 'd', 1],
        ],
      );
      await s.close();
    });

    it('a position with no stored message is skipped by get, not delivered empty', async () => {
      // What an import of such a queue leaves, or on LMDB a put that failed while a put queued
      // behind it committed (a full disk): the positions count it, the message is not there.
      const s = await fresh();
      await s.restore('gap', {
        messages: [
          { pos: 1, message: b('one') },
          { pos: 3, message: b('three') },
          { pos: 4, message: b('') },
        ],
        state: { putpos: 4, getpos: 0, maxqueue: 100 },
      });
      const got = [await s.get('gap'), await s.get('gap', 60_000), await s.get('gap'), await s.get('gap')];
      assert.deepEqual(
        got.map((d) => d && [d.pos, d.message.toString()]),
        [[1, 'one'], [3, 'three'], [4, ''], null],
      );
      assert.deepEqual(await s.status('gap'), { putpos: 4, getpos: 4, maxqueue: 100, leased: 1, delayed: 0, dead: 0 });
      await s.close();
    });

    it(`a get passes over at most ${MAX_PASSED_OVER} positions without a message, then answers; the next goes on from there`, async () => {
      // An import can leave a ring whose unread positions hold no message (a C HTTPSQS file with
      // records missing): passing over all of them held the engine for a billion positions.
      const s = await fresh();
      await s.restore('run', { messages: [{ pos: 1, message: b('after the wrap') }], state: { putpos: 1, getpos: 5, maxqueue: 1_000_000_000 } });
      assert.equal(await s.get('run'), null);
      assert.equal((await s.status('run')).getpos, 5 + MAX_PASSED_OVER);
      assert.equal(await s.get('run'), null);
      assert.equal((await s.status('run')).getpos, 5 + 2 * MAX_PASSED_OVER);
      // Within the bound, it is passed over as before: the reader wraps to the message at 1.
      await s.restore('short', { messages: [{ pos: 1, message: b('one') }], state: { putpos: 1, getpos: 5, maxqueue: 100 } });
      const got = await s.get('short');
      assert.deepEqual([got?.pos, got?.message.toString()], [1, 'one']);
      await s.close();
    });

    it('a slot past the ring is not handed out again after a restart, once its message is gone', async () => {
      // A client may still hold the position of the message that was there (a token-less ack,
      // a discard from a stale page): a new message must not answer to it.
      const dir = newDir();
      const clock = new TestClock();
      let s = await open(dir, { now: clock.now });
      const [first, second] = await s.putMany('sl', ['a', 'b'].map(b), 1000);
      assert.equal(second, first! + 1);
      clock.advance(1000);
      assert.equal((await s.get('sl', 60_000))?.pos, first); // held under a lease: the queue lives on
      assert.equal((await s.get('sl'))?.pos, second); // a plain get: the message at `second` is gone
      // A queue left with nothing at all still knows its slots.
      const only = await s.put('sl2', b('x'), 1000);
      clock.advance(1000);
      assert.equal((await s.get('sl2'))?.pos, only);
      assert.equal(await s.put('sl2', b('y'), 1000), only + 1);
      clock.advance(1000);
      assert.equal((await s.get('sl2'))?.pos, only + 1);
      await s.close();
      s = await open(dir, { now: clock.now });
      assert.equal(await s.put('sl', b('c'), 1000), second! + 1);
      assert.equal(await s.put('sl2', b('z'), 1000), only + 2);
      await s.close();
    });

    it('slots wrap around past the last one, skipping those held, and go on from there after a restart', async () => {
      const dir = newDir();
      const clock = new TestClock();
      let s = await open(dir, { now: clock.now });
      const waiting = { deadline: clock.now() + 60_000, deliveries: 0 };
      await s.restore('w', {
        messages: [
          { pos: FIRST_SLOT, message: b('held') },
          { pos: LAST_SLOT - 1, message: b('last but one') },
        ],
        state: { putpos: 0, getpos: 0, maxqueue: 100 },
        leases: [
          { pos: FIRST_SLOT, lease: { deadline: clock.now(), deliveries: 0 } }, // due now
          { pos: LAST_SLOT - 1, lease: waiting },
        ],
      });
      assert.deepEqual(await s.putMany('w', ['x', 'y', 'z'].map(b), 1000), [LAST_SLOT, FIRST_SLOT + 1, FIRST_SLOT + 2]);
      assert.equal((await s.get('w'))?.pos, FIRST_SLOT); // gone: free again, but just handed out
      await s.close();
      s = await open(dir, { now: clock.now });
      // After the last slot taken, not after the highest held (which would wrap to FIRST_SLOT).
      assert.equal(await s.put('w', b('after'), 1000), FIRST_SLOT + 3);
      assert.equal(await s.view('w', FIRST_SLOT), null);
      assert.equal((await s.view('w', LAST_SLOT))?.toString(), 'x');
      await s.close();
    });

    it('leases survive closing and opening again; reset removes them', async () => {
      const dir = newDir();
      let s = await open(dir);
      await s.putMany('k', ['a', 'b'].map(b));
      await s.get('k', 60_000);
      await s.get('k', 60_000);
      await s.settle('k', 2, 'nack');
      await s.close();
      s = await open(dir);
      assert.equal((await s.status('k')).leased, 2);
      const back = await s.get('k', 60_000);
      assert.deepEqual([back?.pos, back?.deliveries], [2, 2]);
      assert.equal(await s.settle('k', 1, 'ack'), true);
      await s.reset('k');
      assert.deepEqual(await s.status('k'), { putpos: 0, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
      assert.equal(await s.settle('k', 2, 'ack'), false);
      await s.close();
    });
  });
}

// Segments of 4 MiB, as a small disk gets (a new journal writes its first segment out in full,
// 64 MiB by default); a case that writes more rolls over to new segments.
const SEGMENT = 4 * 2 ** 20;
storeContract('Journal store', (path, hooks) => JournalStore.open({ path, segmentBytes: SEGMENT, ...hooks }));
storeContract('Journal store, --sync interval', (path, hooks) =>
  JournalStore.open({ path, segmentBytes: SEGMENT, syncMode: 'interval', syncInterval: 1, ...hooks }),
);
storeContract('LMDB store, one process', (path, hooks) => LmdbStore.open({ path, ...hooks }));
// The same suite on Redis: each store gets a key prefix of its own, named after its directory.
describe('on Redis', { skip: noRedis() }, () => {
  let redis: RedisServer;
  before(async () => (redis = await startRedis()));
  after(() => redis.stop());
  storeContract('Redis store', (dir, hooks) => new RedisStore({ url: `${redis.url}?prefix=${basename(dir)}:`, ...hooks }));
});
storeContract('LMDB store, shared (--workers)', (path, hooks) => LmdbStore.open({ path, shared: true, ...hooks }));
storeContract('LMDB store, --sync interval', (path, hooks) => LmdbStore.open({ path, syncMode: 'interval', syncInterval: 1, ...hooks }));

// An embedded engine acknowledges an operation once its writes are on disk, and one that writes
// nothing at once: that must not let a setting still on its way to the disk be acknowledged by a
// second request (a client's retry) that finds it already in memory, then lost in a crash.
for (const [engine, open] of [
  ['journal', (path: string) => JournalStore.open({ path, segmentBytes: SEGMENT })],
  ['LMDB, one process', (path: string) => LmdbStore.open({ path })],
  ['LMDB, shared', (path: string) => LmdbStore.open({ path, shared: true })],
] as const)
  it(`${engine}: a maxdeliveries that changes nothing is answered no sooner than the one that set it`, async () => {
    const dir = tempDir('httpsqs-store-');
    const s = await open(dir);
    try {
      const order: string[] = [];
      const set = s.maxdeliveries('mdr', 3).then(() => order.push('set'));
      const again = s.maxdeliveries('mdr', 3).then(() => order.push('again'));
      await Promise.all([set, again]);
      assert.deepEqual(order, ['set', 'again']);
      assert.equal((await s.status('mdr')).maxdeliveries, 3);
    } finally {
      await s.close();
      cleanup(dir);
    }
  });

it('one process: view and get see a message whose put is still being committed', async () => {
  const dir = tempDir('httpsqs-store-');
  const s = await LmdbStore.open({ path: dir });
  const put = s.put('v', b('soon'));
  assert.equal((await s.view('v', 1))?.toString(), 'soon');
  assert.equal((await s.get('v'))?.message.toString(), 'soon');
  assert.equal(await put, 1);
  await s.close();
  cleanup(dir);
});

it('one process: operations waiting behind an open turn are decided in the order they came, mget, nack and redrive too', async () => {
  const dir = tempDir('httpsqs-store-');
  const s = await LmdbStore.open({ path: dir });
  try {
    await s.maxdeliveries('d', 1);
    await s.put('d', b('dead soon'));
    const leased = (await s.get('d', 60_000))!;
    const resume = await s.pauseWrites!(); // as an open turn does (a worker starting, an export)
    const put = s.put('q', b('one'));
    const mget = s.getMany('q', 10); // sized on the queue: it must see the put called before it
    const nack = s.settle('d', leased.pos, 'nack', leased.lease); // the one delivery allowed: a dead letter
    const redrive = s.redrive('d', 10);
    resume();
    assert.equal(await put, 1);
    assert.deepEqual(
      (await mget).map((m) => m.message.toString()),
      ['one'],
    );
    assert.equal(await nack, true);
    assert.equal(await redrive, 1, 'the dead letter the nack before it made');
    assert.equal((await s.get('d'))?.message.toString(), 'dead soon');
  } finally {
    await s.close();
    cleanup(dir);
  }
});

it('a data directory whose name has a dot is a directory, and holds its data across a restart', async () => {
  const parent = tempDir('httpsqs-store-');
  const dir = join(parent, 'httpsqs.data');
  let s = await LmdbStore.open({ path: dir });
  assert.equal(await s.put('d', b('kept')), 1);
  await s.close();
  assert.ok(statSync(dir).isDirectory());
  s = await LmdbStore.open({ path: dir });
  assert.equal((await s.get('d'))?.message.toString(), 'kept');
  await s.close();
  cleanup(parent);
});

it('one process: memory does not grow with every queue name used; queues it forgot are read from disk again', async () => {
  const dir = tempDir('httpsqs-store-');
  const s = await LmdbStore.open({ path: dir });
  const kept = () => (s as unknown as { cache: Map<string, unknown> }).cache.size;
  // Names only looked at (a get on an empty queue, a status) are not kept at all.
  await Promise.all(Array.from({ length: 20_000 }, (_, i) => s.get(`nothing-${i}`)));
  await Promise.all(Array.from({ length: 1_000 }, (_, i) => s.status(`nothing-${i}`)));
  assert.equal(kept(), 0);
  // Queues written to are kept up to a limit; past it, those whose writes have settled are let go.
  for (let i = 0; i < 12_000; i += 1_000) {
    await Promise.all(Array.from({ length: 1_000 }, (_, j) => s.putMany(`q-${i + j}`, [b(`first of ${i + j}`), b('second')])));
  }
  assert.ok(kept() <= 10_000, `${kept()} queues in memory`);
  // The forgotten ones, read from disk again, are exactly as they were; and go on from there.
  const got = await s.get('q-0', 60_000);
  assert.deepEqual([got?.pos, got?.message.toString()], [1, 'first of 0']);
  assert.deepEqual(await s.status('q-0'), { putpos: 2, getpos: 1, maxqueue: 1_000_000, leased: 1, delayed: 0, dead: 0 });
  assert.equal(await s.put('q-1', b('third')), 3);
  await s.reset('q-2');
  await Promise.all(Array.from({ length: 3_000 }, (_, i) => s.put(`r-${i}`, b('x'))));
  assert.ok(kept() <= 10_000, `${kept()} queues in memory`);
  assert.deepEqual(await s.status('q-0'), { putpos: 2, getpos: 1, maxqueue: 1_000_000, leased: 1, delayed: 0, dead: 0 });
  assert.equal(await s.settle('q-0', 1, 'ack'), true);
  assert.deepEqual(await s.status('q-1'), { putpos: 3, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
  assert.deepEqual(await s.status('q-2'), { putpos: 0, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
  assert.equal(await s.view('q-2', 1), null);
  assert.equal((await s.list('q-', undefined, 1000)).length, 1000);
  // A burst of writes to more queues than the limit at once: all are kept while in progress, then let go.
  assert.deepEqual(new Set(await Promise.all(Array.from({ length: 15_000 }, (_, i) => s.put(`burst-${i}`, b('x'))))), new Set([1]));
  for (let i = 0; i < 2_000; i += 500) await Promise.all(Array.from({ length: 500 }, (_, j) => s.put(`after-${i + j}`, b('x'))));
  assert.ok(kept() <= 10_000, `${kept()} queues in memory`);
  assert.deepEqual(await s.status('burst-0'), { putpos: 1, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
  await s.close();
  cleanup(dir);
});

it('shared (--workers): a process does not act on the leases it read once another changed them since', async () => {
  const dir = tempDir('httpsqs-store-');
  // Two stores on one directory, as two workers have it.
  const [a, b2] = [await LmdbStore.open({ path: dir, shared: true }), await LmdbStore.open({ path: dir, shared: true })];
  try {
    await a.putMany('sh', ['one', 'two'].map(b));
    const first = await a.get('sh', 60_000); // a has read and written the leases: it keeps them
    assert.equal(first?.pos, 1);
    assert.equal(await b2.settle('sh', 1, 'ack', first!.lease), true); // b changes them
    // a sees the ack: nothing to give back, and the next get hands out the second message.
    assert.equal(await a.settle('sh', 1, 'nack', first!.lease), false);
    assert.equal((await a.get('sh', 60_000))?.pos, 2);
    assert.deepEqual(await b2.leases('sh').then((l) => l.map((x) => x.pos)), [2]);
    // The same after a reset by the other, which starts the queue's meta record again.
    await b2.reset('sh');
    await b2.put('sh', b('three'));
    assert.equal(await a.settle('sh', 2, 'ack'), false);
    const third = await a.get('sh', 60_000);
    assert.equal(third?.message.toString(), 'three');
    assert.equal((await b2.status('sh')).leased, 1);
  } finally {
    await a.close();
    await b2.close();
    cleanup(dir);
  }
});

/** The next call of `method` on the store's LMDB database `db` throws, as an LMDB error would. */
function failOnce(store: LmdbStore, db: 'lease' | 'meta', method: 'put' | 'remove'): void {
  const d = (store as unknown as Record<string, Record<string, (...x: unknown[]) => unknown>>)[db]!;
  const real = d[method]!;
  d[method] = () => {
    d[method] = real;
    throw new Error('simulated LMDB error');
  };
}

it('shared (--workers): a write that throws inside its transaction leaves no lease table kept that differs from the disk', async () => {
  const dir = tempDir('httpsqs-store-');
  const [a, b2] = [await LmdbStore.open({ path: dir, shared: true }), await LmdbStore.open({ path: dir, shared: true })];
  try {
    await a.putMany('q', [Buffer.from('m1'), Buffer.from('m2')]);
    const d = (await a.get('q', 60_000))!;
    await b2.leases('q');
    // The removal of the lease fails once (an LMDB error inside the write), after the plan changed
    // the table a keeps.
    failOnce(a, 'lease', 'remove');
    await assert.rejects(a.settle('q', d.pos, 'ack', d.lease!), /simulated/);
    assert.deepEqual(
      (await a.leases('q')).map((l) => l.pos),
      [d.pos],
      'a lost the lease the failed ack did not remove',
    );
    assert.equal(await a.settle('q', d.pos, 'ack', d.lease!), true, 'the ack tried again');
    assert.deepEqual(await b2.leases('q'), []);
  } finally {
    await a.close();
    await b2.close();
    cleanup(dir);
  }
});

it('shared (--workers): a transaction whose last write throws leaves nothing of it on disk', async () => {
  const dir = tempDir('httpsqs-store-');
  const a = await LmdbStore.open({ path: dir, shared: true });
  try {
    await a.putMany('q', [Buffer.from('m1'), Buffer.from('m2')]);
    const d = (await a.get('q', 60_000))!;
    // The ack removes the lease, then writes the queue's meta record (which counts the leases
    // held): that last write fails once.
    failOnce(a, 'meta', 'put');
    await assert.rejects(a.settle('q', d.pos, 'ack', d.lease!), /simulated/);
    // Read by a process that keeps nothing: the lease removal went with the failed transaction.
    const b2 = await LmdbStore.open({ path: dir, shared: true });
    try {
      assert.deepEqual(
        (await b2.leases('q')).map((l) => l.pos),
        [d.pos],
        'the removal of the lease was committed without the meta record that counts it',
      );
      assert.equal((await b2.status('q')).leased, 1);
      assert.equal(await b2.settle('q', d.pos, 'ack', d.lease!), true, 'the ack tried again');
      assert.deepEqual(await a.leases('q'), []);
    } finally {
      await b2.close();
    }
  } finally {
    await a.close();
    cleanup(dir);
  }
});

it('shared (--workers): a process brings the leases it keeps up to date from the lease log, reading only those changed', async () => {
  const dir = tempDir('httpsqs-store-');
  const [a, b2, c] = [
    await LmdbStore.open({ path: dir, shared: true }),
    await LmdbStore.open({ path: dir, shared: true }),
    await LmdbStore.open({ path: dir, shared: true }),
  ];
  /** How many times `s` read a queue's every lease (its lease table from scratch). */
  const fullReads = (s: LmdbStore) => {
    const db = (s as unknown as { lease: { getRange: (...a: unknown[]) => unknown } }).lease;
    const read = db.getRange.bind(db);
    let n = 0;
    db.getRange = (...args: unknown[]) => (n++, read(...args));
    return () => n;
  };
  const [readsA, readsB] = [fullReads(a), fullReads(b2)];
  /** The leases as read whole from disk (by `c`, made to forget what it keeps), and as `s` has them. */
  const sorted = async (s: LmdbStore) => (await s.leases('cu')).sort((x, y) => x.pos - y.pos);
  const same = async (s: LmdbStore, what: string) => {
    (c as unknown as { kept: Map<string, unknown> }).kept.clear();
    assert.deepEqual(await sorted(s), await sorted(c), what);
  };
  try {
    await a.putMany(
      'cu',
      Array.from({ length: 500 }, (_, i) => b(`later ${i}`)),
      600_000,
    ); // 500 delayed: leases at slots
    await a.putMany(
      'cu',
      Array.from({ length: 200 }, (_, i) => b(`now ${i}`)),
    );
    const byA = await a.get('cu', 60_000);
    const byB = await b2.get('cu', 60_000);
    const [startA, startB] = [readsA(), readsB()];
    let token = byA!.lease;
    for (let i = 0; i < 20; i++) {
      const x = await a.get('cu', 60_000);
      const y = await b2.get('cu', 60_000);
      assert.equal(await b2.settle('cu', x!.pos, 'ack', x!.lease), true);
      assert.equal(await a.settle('cu', y!.pos, i % 2 ? 'ack' : 'nack', y!.lease), true);
      token = (await b2.touch('cu', byA!.pos, 120_000, token)) ?? assert.fail('touched');
    }
    assert.equal(await a.settle('cu', byB!.pos, 'ack', byB!.lease), true);
    await same(a, 'a, brought up to date');
    await same(b2, 'b, brought up to date');
    assert.deepEqual([readsA() - startA, readsB() - startB], [0, 0], 'no table read whole again');
    assert.equal((await a.status('cu')).leased, 1);
    // Further behind than the log reaches: read whole again, and right.
    for (let i = 0; i < 70; i++) {
      const y = await b2.get('cu', 60_000);
      assert.equal(await b2.settle('cu', y!.pos, 'ack', y!.lease), true);
    }
    const log = (s: LmdbStore) => (s as unknown as { log: { getKeys: (r: unknown) => Iterable<unknown> } }).log;
    const entries = [...log(b2).getKeys({ start: Buffer.from([0, 2, 99, 117]), end: Buffer.from([0, 2, 99, 118]) })].length;
    assert.ok(entries <= 64, `${entries} entries kept in the lease log`);
    assert.equal((await a.get('cu', 60_000))?.message.toString().startsWith('now'), true);
    assert.equal(readsA() - startA, 1, 'a read its table whole once');
    await same(a, 'a, read again');
    // A reset starts the versions again: nothing kept from before is taken for current.
    await b2.reset('cu');
    await b2.putMany('cu', [b('fresh')], 600_000);
    await same(a, 'a, after the reset');
    await same(b2, 'b, after the reset');
  } finally {
    await a.close();
    await b2.close();
    await c.close();
    cleanup(dir);
  }
});

it('one process: a queue reset but not yet committed does not shorten a page of list', async () => {
  const dir = tempDir('httpsqs-store-');
  let s = await LmdbStore.open({ path: dir });
  for (const n of ['pg:a', 'pg:b', 'pg:c']) await s.put(n, b('x'));
  await s.close();
  s = await LmdbStore.open({ path: dir }); // the queues are on disk, none in memory yet
  const reset = s.reset('pg:a');
  assert.deepEqual(
    (await s.list('pg:', '', 2)).map((q) => q.name),
    ['pg:b', 'pg:c'],
  );
  await reset;
  await s.close();
  cleanup(dir);
});

for (const shared of [false, true])
  it(`${shared ? 'shared (--workers)' : 'one process'}: resetting a queue of 200,000 messages takes next to no memory`, async () => {
    const dir = tempDir('httpsqs-store-');
    const s = await LmdbStore.open({ path: dir, shared });
    const message = Buffer.alloc(100, 120);
    for (let i = 0; i < 200_000; i += 1000)
      await s.putMany(
        'huge',
        Array.from({ length: 1000 }, () => message),
      );
    const anon = () => Number(/RssAnon:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;
    const before = anon();
    // One process: the removals are read and queued before this returns. Shared: they run in a
    // write transaction, where the heap can only be sampled afterwards.
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, anon())), 5);
    const reset = s.reset('huge');
    peak = Math.max(peak, anon());
    await reset;
    clearInterval(sampler);
    const grew = Math.max(peak, anon()) - before;
    assert.ok(grew < 40, `private memory grew by ${grew.toFixed(1)} MiB while queuing the removals`);
    assert.equal(await s.put('huge', b('fresh')), 1);
    let left = 0;
    for await (const _ of s.dump('huge')) left++;
    assert.equal(left, 1);
    await s.close();
    cleanup(dir);
  });

it('one process: a message that cannot be read fails the get that reaches it, and nothing is stepped over', async () => {
  const dir = tempDir('httpsqs-store-');
  let s = await LmdbStore.open({ path: dir });
  await s.putMany('q', [b('one'), b('two'), b('three')]);
  await s.close();
  s = await LmdbStore.open({ path: dir }); // read from the disk, not from writes in memory
  const inside = s as unknown as { msg: { get(k: Buffer): Buffer | undefined } };
  const get = inside.msg.get.bind(inside.msg);
  let reads = 0;
  inside.msg.get = (k) => {
    if (++reads > 1) throw new Error('MDB_BAD_TXN: Transaction must abort, has a child, or is invalid');
    return get(k);
  };
  // A batch hands out what it read, and stops at what it could not read.
  assert.deepEqual(
    (await s.getMany('q', 3)).map((d) => d.message.toString()),
    ['one'],
  );
  await assert.rejects(s.get('q'), /MDB_BAD_TXN/);
  await assert.rejects(s.get('q', 60_000), /MDB_BAD_TXN/);
  inside.msg.get = get;
  assert.deepEqual(await s.status('q'), { putpos: 3, getpos: 1, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
  assert.deepEqual(
    (await s.getMany('q', 3)).map((d) => d.message.toString()),
    ['two', 'three'],
  );
  await s.close();
  cleanup(dir);
});

it('one process: while a failed commit fences the store, every operation is refused with that failure', async () => {
  const dir = tempDir('httpsqs-store-');
  const s = await LmdbStore.open({ path: dir });
  await s.put('q', b('one'));
  const inside = s as unknown as { env: object; meta: { put(k: Buffer, v: Buffer): Promise<boolean> } };
  // The fence lasts until the writes queued before the failure have settled (env.committed): held here.
  let settle!: () => void;
  Object.defineProperty(inside.env, 'committed', { value: new Promise<void>((r) => (settle = r)), configurable: true });
  // The next put's commit fails; the put queued behind it commits a moment later.
  const put = inside.meta.put.bind(inside.meta);
  let writes = 0;
  inside.meta.put = (k, v) => {
    const p = put(k, v);
    if (++writes === 1) return p.then(() => Promise.reject(new Error('Commit failed (see commitError for details)')));
    return writes === 2 ? p.then(async (ok) => (await sleep(20), ok)) : p;
  };
  const [failed, behind] = await Promise.allSettled([s.put('q', b('A')), s.put('q', b('B'))]);
  assert.equal(failed.status, 'rejected');
  assert.equal(behind.status, 'fulfilled');
  const refused = async (what: string, p: Promise<unknown>) => {
    const err = await p.then(
      () => assert.fail(`${what} was not refused`),
      (e: unknown) => e,
    );
    assert.ok(err instanceof StoreError, `${what} refused with ${String(err)}`);
    assert.match(err.message, /LMDB write failed: Commit failed/);
  };
  await refused('put', s.put('q', b('C')));
  await refused('get', s.get('q'));
  await refused('reset', s.reset('q'));
  await refused('check', s.check());
  settle();
  // The fence lifts once the queue it failed on is repaired (a transaction of its own).
  for (let i = 0; i < 500 && (s as unknown as { fence?: Error }).fence; i++) await sleep(10);
  // Then the queue is read from disk again (the failure was only reported: A is there too).
  assert.equal(await s.put('q', b('D')), 4);
  await s.check();
  await s.close();
  cleanup(dir);
});

/**
 * One process, a commit that fails while an operation on the same queue, decided as if it had
 * succeeded, is queued into the next commit, which succeeds. The failing operation's writes are
 * made to fail without reaching LMDB (as an I/O error would leave them); `env.committed`, which the
 * fence waits for, is held until `settle` is called.
 */
async function failingCommit(dir: string, now?: () => number) {
  const s = await LmdbStore.open({ path: dir, warn: () => {}, ...(now ? { now } : {}) });
  type Db = { put(k: Buffer, v: Buffer): Promise<boolean>; remove(k: Buffer): Promise<boolean> };
  const inside = s as unknown as { env: object; meta: Db; msg: Db; lease: Db; fence?: Error };
  let settle!: () => void;
  let failing = false;
  for (const db of [inside.meta, inside.msg, inside.lease]) {
    const put = db.put.bind(db);
    const remove = db.remove.bind(db);
    const refused = () => Promise.reject(new Error('Commit failed (see commitError for details)'));
    db.put = (k, v) => (failing ? refused() : put(k, v));
    db.remove = (k) => (failing ? refused() : remove(k));
  }
  return {
    s,
    /** Calls `op` with its writes failing, then holds the fence until `settle`. */
    failed<T>(op: () => Promise<T>): Promise<T> {
      Object.defineProperty(inside.env, 'committed', { value: new Promise<void>((r) => (settle = r)), configurable: true });
      failing = true;
      try {
        return op();
      } finally {
        failing = false;
      }
    },
    async lift() {
      settle();
      // The repair runs before the fence lifts: operations are refused until it is done.
      for (let i = 0; i < 100 && inside.fence; i++) await sleep(10);
    },
  };
}

for (const leaseMs of [60_000, undefined]) {
  it(`one process: a ${leaseMs ? 'leased' : 'plain'} get whose commit failed, with a put behind it committed, hands its message out again`, async () => {
    const dir = tempDir('httpsqs-store-');
    let { s, failed, lift } = await failingCommit(dir);
    await s.putMany('q', [b('one'), b('two')]);
    // Without the repair, the put's meta record says position 1 was read (and, leased, counts a
    // lease whose record was never written): 'one' was never handed out again.
    const [got, put] = await Promise.allSettled([failed(() => s.get('q', leaseMs)), s.put('q', b('three'))]);
    assert.equal(got.status, 'rejected');
    assert.deepEqual(put, { status: 'fulfilled', value: 3 });
    await lift();
    assert.deepEqual(await s.status('q'), { putpos: 3, getpos: 1, maxqueue: 1_000_000, leased: 0, delayed: 1, dead: 0 });
    await s.close();
    ({ s } = await failingCommit(dir));
    const all = await s.getMany('q', 10, leaseMs);
    assert.deepEqual(
      all.map((d) => [d.pos, d.message.toString(), d.deliveries]),
      [
        [1, 'one', 1],
        [2, 'two', 1],
        [3, 'three', 1],
      ],
    );
    assert.equal((await s.status('q')).leased, leaseMs ? 3 : 0);
    assert.equal((await s.status('q')).delayed, 0);
    await s.close();
    cleanup(dir);
  });
}

it('one process: a message whose put failed, taken by a get that failed with it, is not handed out by the repair', async () => {
  const dir = tempDir('httpsqs-store-');
  let { s, failed, lift } = await failingCommit(dir);
  await s.put('q', b('one'));
  // The put and the get behind it fail together; the put after them commits.
  const [put, got, after] = await Promise.allSettled([failed(() => s.put('q', b('never stored'))), failed(() => s.getMany('q', 2)), s.put('q', b('two'))]);
  assert.equal(put.status, 'rejected');
  assert.equal(got.status, 'rejected');
  assert.equal(after.status, 'fulfilled');
  await lift();
  await s.close();
  ({ s } = await failingCommit(dir));
  const all = (await s.getMany('q', 10)).map((d) => d.message.toString());
  // 'one' the failed get took comes again; the message its producer was told was not stored does not.
  assert.deepEqual(all.sort(), ['one', 'two']);
  await s.close();
  cleanup(dir);
});

for (const leaseMs of [undefined, 1000]) {
  it(`one process: a message whose put failed is not handed out by a ${leaseMs ? 'leased ' : ''}get behind it whose commit succeeded; what that get took comes again`, async () => {
    const dir = tempDir('httpsqs-store-');
    const clock = new TestClock();
    let { s, failed, lift } = await failingCommit(dir, clock.now);
    await s.put('q', b('one'));
    // The put's commit fails; the get, decided behind it on the state that counted it, commits.
    const [put, got] = await Promise.allSettled([failed(() => s.put('q', b('never stored'))), s.getMany('q', 2, leaseMs)]);
    assert.equal(put.status, 'rejected');
    assert.equal(got.status, 'rejected', `the get handed out ${JSON.stringify(got.status === 'fulfilled' && got.value.map((d) => d.message.toString()))}`);
    await lift();
    clock.advance(1500);
    await s.close();
    ({ s } = await failingCommit(dir, clock.now));
    assert.deepEqual(
      (await s.getMany('q', 10)).map((d) => d.message.toString()),
      ['one'],
    );
    await s.close();
    cleanup(dir);
  });
}

it('one process: a message a failed get took, written over by a put behind it, is stored again and handed out', async () => {
  const dir = tempDir('httpsqs-store-');
  let { s, failed, lift } = await failingCommit(dir);
  await s.maxqueue('q', 10);
  const sent = Array.from({ length: 10 }, (_, i) => `m${i + 1}`);
  await s.putMany('q', sent.map(b));
  // The mget takes positions 1 and 2; the put behind it, full ring and all, wraps to position 1.
  const [got, put] = await Promise.allSettled([failed(() => s.getMany('q', 2)), s.put('q', b('new'))]);
  assert.equal(got.status, 'rejected');
  assert.deepEqual(put, { status: 'fulfilled', value: 1 });
  await lift();
  await s.close();
  ({ s } = await failingCommit(dir));
  const all = (await s.getMany('q', 100)).map((d) => d.message.toString());
  assert.deepEqual(all.sort(), [...sent, 'new'].sort());
  assert.deepEqual(await s.getMany('q', 100), []);
  const status = await s.status('q');
  assert.equal(status.leased + status.delayed, 0);
  await s.close();
  cleanup(dir);
});

it('one process: an ack whose commit failed, with a put behind it committed, leaves the lease and its count as they were', async () => {
  const dir = tempDir('httpsqs-store-');
  const { s, failed, lift } = await failingCommit(dir);
  await s.put('q', b('one'));
  const leased = (await s.get('q', 60_000))!;
  const [acked, put] = await Promise.allSettled([failed(() => s.settle('q', leased.pos, 'ack', leased.lease)), s.put('q', b('two'))]);
  assert.equal(acked.status, 'rejected');
  assert.equal(put.status, 'fulfilled');
  await lift();
  // Its lease record is there, so its count is too: the ack can be made again.
  assert.equal((await s.status('q')).leased, 1);
  assert.equal(await s.settle('q', leased.pos, 'ack', leased.lease), true);
  assert.equal((await s.status('q')).leased, 0);
  await s.close();
  cleanup(dir);
});

it('one process: nothing is decided on a reset queue before the reset has committed (a failed reset leaves the queue as it was)', async () => {
  const dir = tempDir('httpsqs-store-');
  let { s, failed, lift } = await failingCommit(dir);
  await s.putMany('q', [b('one'), b('two')]);
  await s.get('q', 60_000);
  const [reset, put] = await Promise.allSettled([failed(() => s.reset('q')), s.put('q', b('new'))]);
  assert.equal(reset.status, 'rejected');
  // Decided on the empty queue, the put would have committed over records the reset did not remove.
  assert.equal(put.status, 'rejected');
  await lift();
  await s.close();
  ({ s } = await failingCommit(dir));
  assert.deepEqual(await s.status('q'), { putpos: 2, getpos: 1, maxqueue: 1_000_000, leased: 1, delayed: 0, dead: 0 });
  assert.equal((await s.get('q'))?.message.toString(), 'two');
  await s.close();
  cleanup(dir);
});

it('one process: failed commits with operations committed behind them lose no acknowledged message and hand out none whose put failed (random sequences)', async () => {
  type Op = { op: 'put' | 'get' | 'lget' | 'mget' | 'ack' | 'nack'; n: number; fails: boolean };
  const op = fc.record({
    op: fc.constantFrom('put', 'put', 'get', 'lget', 'mget', 'ack', 'nack'),
    n: fc.integer({ min: 0, max: 3 }),
    fails: fc.boolean(),
  }) as fc.Arbitrary<Op>;
  const round = fc.record({ ops: fc.array(op, { minLength: 1, maxLength: 5 }), later: fc.boolean() });
  await fc.assert(
    fc.asyncProperty(fc.array(round, { minLength: 1, maxLength: 25 }), async (rounds) => {
      const dir = tempDir('httpsqs-store-');
      const clock = new TestClock();
      let { s, failed, lift } = await failingCommit(dir, clock.now);
      await s.maxqueue('q', 10);
      let next = 0;
      const acknowledged = new Set<string>();
      const consumed = new Set<string>();
      const held: Array<{ pos: number; lease: string; message: string }> = [];
      const refused = new Set<string>();
      const phantoms: string[] = [];
      const received = (d: { message: Buffer; pos: number; lease?: string }) => {
        // Checked at the end: a throw here would be taken for the call's own failure.
        if (refused.has(d.message.toString())) phantoms.push(d.message.toString());
        if (d.lease) held.push({ pos: d.pos, lease: d.lease, message: d.message.toString() });
        else consumed.add(d.message.toString());
      };
      try {
        for (const { ops, later } of rounds) {
          let anyFailed = false;
          const calls = ops.map((o): Promise<void> => {
            const call = (): Promise<void> => {
              switch (o.op) {
                case 'put': {
                  const m = `m${next++}`;
                  return s.put('q', b(m)).then(
                    (pos) => void (pos && acknowledged.add(m)),
                    (err: unknown) => {
                      refused.add(m);
                      throw err;
                    },
                  );
                }
                case 'get':
                  return s.get('q').then((d) => void (d && received(d)));
                case 'lget':
                  return s.get('q', 1000).then((d) => void (d && received(d)));
                case 'mget':
                  return s.getMany('q', o.n + 1, o.n % 2 ? 1000 : undefined).then((ds) => void ds.forEach(received));
                default: {
                  const h = held[o.n % Math.max(1, held.length)];
                  if (!h) return Promise.resolve();
                  // Acked, a message is consumed; an ack that failed leaves it leased (it comes back).
                  return s.settle('q', h.pos, o.op, h.lease).then((ok) => {
                    if (ok && o.op === 'ack') consumed.add(h.message);
                    if (ok) held.splice(held.indexOf(h), 1);
                  });
                }
              }
            };
            if (!o.fails) return call();
            anyFailed = true;
            return failed(call);
          });
          await Promise.allSettled(calls);
          if (anyFailed) await lift();
          if (later) clock.advance(1500);
        }
        clock.advance(1500);
        await s.close();
        ({ s } = await failingCommit(dir, clock.now));
        for (let got = await s.getMany('q', 100); got.length > 0; got = await s.getMany('q', 100)) for (const d of got) received(d);
        const lost = [...acknowledged].filter((m) => !consumed.has(m));
        assert.deepEqual(lost, [], 'acknowledged messages never delivered');
        assert.deepEqual(phantoms, [], 'messages handed out though their producers were told they were not stored');
        const status = await s.status('q');
        assert.equal(status.leased + status.delayed + status.dead, 0, `leases counted after the drain: ${JSON.stringify(status)}`);
      } finally {
        await s.close();
        cleanup(dir);
      }
    }),
    { numRuns: 60 },
  );
});
