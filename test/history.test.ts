/** The dashboard's rate history: buckets, its bound on queues, and the sum over workers. A fake
 * clock moves time; nothing sleeps. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mergeHistories, RateHistory, type HistorySnapshot, type Series } from '../src/dashboard/history.js';

const S = 5000; // a bucket

function clock(start = 1_700_000_000_000) {
  let t = start;
  return { now: () => t, tick: (ms: number) => void (t += ms) };
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const tail = (s: Series, n: number) => ({ put: s.put.slice(-n), get: s.get.slice(-n) });

/** total = every queue + other, bucket by bucket. */
function assertAddsUp(h: HistorySnapshot) {
  for (const key of ['put', 'get'] as const) {
    h.total[key].forEach((t, i) => {
      assert.equal(h.other[key][i]! + sum(h.queues.map((q) => q[key][i]!)), t, `${key} bucket ${i}`);
      assert.ok(h.other[key][i]! >= 0);
    });
  }
}

describe('rate history', () => {
  it('counts into 5 s buckets that roll, and forgets after the window', () => {
    const c = clock(1_700_000_000_000); // a bucket boundary
    const h = new RateHistory({ now: c.now, buckets: 4 });
    h.record('a', 3, 0);
    h.record('a', 0, 1);
    c.tick(S - 1);
    h.record('b', 2, 0);
    let s = h.snapshot();
    assert.equal(s.last, 1_700_000_000_000 / S);
    assert.deepEqual(s.total, { put: [0, 0, 0, 5], get: [0, 0, 0, 1] });
    assert.deepEqual(
      s.queues.map((q) => [q.name, q.put, q.get]),
      [
        ['a', [0, 0, 0, 3], [0, 0, 0, 1]],
        ['b', [0, 0, 0, 2], [0, 0, 0, 0]],
      ],
    );

    c.tick(1); // the next bucket
    h.record('a', 1, 1);
    c.tick(2 * S); // one bucket with nothing, then the current one
    h.record('b', 0, 4);
    s = h.snapshot();
    assert.equal(s.last, 1_700_000_000_000 / S + 3);
    assert.deepEqual(s.total, { put: [5, 1, 0, 0], get: [1, 1, 0, 4] });
    assert.deepEqual(tail(s.queues.find((q) => q.name === 'a')!, 4), { put: [3, 1, 0, 0], get: [1, 1, 0, 0] });

    // A clock that steps back counts into the current bucket.
    c.tick(-3 * S);
    h.record('b', 0, 1);
    c.tick(3 * S);
    assert.deepEqual(h.snapshot().total.get, [1, 1, 0, 5]);

    // `a` idle for the whole window is forgotten; the window's older buckets are gone.
    c.tick(3 * S);
    s = h.snapshot();
    assert.deepEqual(s.total, { put: [0, 0, 0, 0], get: [5, 0, 0, 0] });
    assert.deepEqual(
      s.queues.map((q) => q.name),
      ['b'],
    );
    c.tick(10 * S);
    s = h.snapshot();
    assert.deepEqual(s.queues, []);
    assert.deepEqual(s.total, { put: [0, 0, 0, 0], get: [0, 0, 0, 0] });
    assert.equal(h.names, 0);
  });

  it('holds at most maxQueues queues however many there are; the busiest get their own series', () => {
    const c = clock();
    const h = new RateHistory({ now: c.now, maxQueues: 10 });
    let puts = 0;
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < 5000; i++) h.record(`q${round}-${i}`, 1, 0);
      puts += 5000;
      // Two queues get busy late, after every place was taken.
      if (round >= 10) {
        h.record('hot', 50, 40);
        h.record('warm', 30, 0);
        puts += 80;
      }
      assert.ok(h.names <= 20, `${h.names} names held`);
      c.tick(S);
    }
    const s = h.snapshot();
    assert.equal(s.queues.length, 10);
    assert.equal(sum(s.total.put), puts);
    assert.equal(sum(s.total.get), 400);
    assertAddsUp(s);
    assert.deepEqual(
      s.queues.slice(0, 2).map((q) => q.name),
      ['hot', 'warm'],
    );
    // Their counts from the bucket where they were still candidates are theirs too.
    assert.equal(sum(s.queues[0]!.put), 500);
    assert.equal(sum(s.queues[0]!.get), 400);
  });

  it('adds up the histories of several workers, lined up by bucket', () => {
    const c = clock(1_700_000_000_000);
    const workers = [0, 1, 2].map(() => new RateHistory({ now: c.now, buckets: 6 }));
    workers[0]!.record('shared', 1, 0);
    workers[1]!.record('shared', 2, 1);
    workers[2]!.record('solo', 0, 3);
    const behind = workers[2]!.snapshot(); // taken just before the next bucket began
    c.tick(S);
    workers[0]!.record('shared', 4, 4);
    workers[1]!.record('x', 1, 0);
    const m = mergeHistories([workers[0]!.snapshot(), workers[1]!.snapshot(), behind]);
    assert.equal(m.last, behind.last + 1);
    assert.deepEqual(tail(m.total, 2), { put: [3, 5], get: [4, 4] });
    assert.deepEqual(
      m.queues.map((q) => [q.name, q.put.slice(-2), q.get.slice(-2)]),
      [
        ['shared', [3, 4], [1, 4]],
        ['solo', [0, 0], [3, 0]],
        ['x', [0, 1], [0, 0]],
      ],
    );
    assertAddsUp(m);

    // Over the cap, the quietest go into `other`.
    const capped = mergeHistories([workers[0]!.snapshot(), workers[1]!.snapshot(), behind], 1);
    assert.deepEqual(
      capped.queues.map((q) => q.name),
      ['shared'],
    );
    assert.deepEqual(tail(capped.other, 2), { put: [0, 1], get: [3, 0] });
    assertAddsUp(capped);
  });
});
