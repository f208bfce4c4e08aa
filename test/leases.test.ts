/**
 * The lease table's walk of due leases, and the bound the engines take from it for the room a get
 * needs: properties over random tables (fast-check), against the table's own `due` and the plan
 * a get runs.
 */
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { it } from 'node:test';
import fc from 'fast-check';
import { DEAD, FIRST_SLOT, isDead, LAST_SLOT, type Lease, LeaseTable } from '../src/queue/leases.js';
import type { QueueState } from '../src/queue/ring.js';
import { type Draft, spentLeases, takePlan } from '../src/store/plans.js';

const NOW = 1_000_000;

/** A lease: due (deadline at or before NOW) or not, delivered 0 (a delayed message) to 4 times, or dead. */
const leaseArb = fc.record({
  pos: fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: FIRST_SLOT, max: FIRST_SLOT + 5 })),
  deadline: fc.integer({ min: NOW - 50, max: NOW + 50 }),
  deliveries: fc.integer({ min: 0, max: 4 }),
  dead: fc.boolean(),
});
type LeaseOp = { pos: number; deadline: number; deliveries: number; dead: boolean } | { pos: number; remove: true };
const opArb: fc.Arbitrary<LeaseOp> = fc.oneof(
  { weight: 4, arbitrary: leaseArb },
  { weight: 1, arbitrary: fc.record({ pos: fc.integer({ min: 1, max: 40 }), remove: fc.constant(true as const) }) },
);

/** A table after `ops` (leases set again and removed leave stale heap entries behind, as in use). */
function tableOf(ops: LeaseOp[]): LeaseTable {
  const t = new LeaseTable();
  for (const o of ops) {
    if ('remove' in o) t.delete(o.pos);
    else t.set(o.pos, { deadline: o.dead ? DEAD + o.deadline : o.deadline, deliveries: o.dead ? Math.max(1, o.deliveries) : o.deliveries });
  }
  return t;
}

it('dueInOrder walks the due leases in the order due() hands them out, leaving the table as it was', () => {
  fc.assert(
    fc.property(fc.array(opArb, { maxLength: 120 }), fc.integer({ min: NOW - 60, max: NOW + 60 }), (ops, now) => {
      const t = tableOf(ops);
      const before = [...t.entries()];
      const walked = [...t.dueInOrder(now)].map(([pos]) => pos);
      assert.deepEqual([...t.entries()], before);
      assert.deepEqual(
        [...t.dueInOrder(now)].map(([pos]) => pos),
        walked,
        'a second walk finds the same',
      );
      // What due() gives, lease after lease, on a copy from which each is removed once given.
      const copy = tableOf(ops);
      const given: number[] = [];
      for (let d = copy.due(now); d; d = copy.due(now)) {
        given.push(d[0]);
        copy.delete(d[0]);
      }
      assert.deepEqual(walked, given);
    }),
    { numRuns: 300 },
  );
});

/** A queue in memory for a plan: its messages by position. */
function draftOf(s: QueueState, leases: LeaseTable, messages: Map<number, Buffer>): Draft & { buried: number[] } {
  const d = {
    q: { s, leases },
    buried: [] as number[],
    read: (pos: number) => messages.get(pos),
    put(pos: number, message: Buffer) {
      messages.set(pos, message);
      d.q.s = { ...d.q.s, putpos: pos };
    },
    store: (pos: number, message: Buffer) => void messages.set(pos, message),
    drop: (pos: number) => void messages.delete(pos),
    advance(next: QueueState) {
      d.q.s = next;
    },
    maxqueue() {},
    maxdeliveries() {},
    lease(pos: number, lease: Lease | undefined) {
      if (lease && isDead(lease)) d.buried.push(pos);
      if (lease) leases.set(pos, lease);
      else leases.delete(pos);
    },
  };
  return d;
}

it('spentLeases bounds what a get of up to `limit` messages sets aside as dead letters', () => {
  fc.assert(
    fc.property(
      fc.array(opArb, { maxLength: 80 }),
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 1, max: 6 }),
      fc.uniqueArray(fc.integer({ min: 1, max: 40 }), { maxLength: 30 }),
      // Positions with no message: a put that failed while a later one was written.
      (ops, maxdeliveries, limit, missing) => {
        // 40 positions written and read (the leases are on them), and 5 more unread.
        const s: QueueState = { putpos: 45, getpos: 40, maxqueue: 100, maxdeliveries };
        const messages = new Map<number, Buffer>();
        for (let p = 1; p <= 45; p++) if (!missing.includes(p)) messages.set(p, Buffer.from(`m${p}`));
        for (let p = FIRST_SLOT; p <= FIRST_SLOT + 5; p++) messages.set(p, Buffer.from(`slot${p}`));
        const leases = tableOf(ops);
        const bound = spentLeases({ s, leases }, NOW, undefined, limit, (p) => messages.has(p));
        const d = draftOf(s, leases, messages);
        takePlan(limit, () => NOW, 30_000, Infinity)(d);
        // A dead letter is made at a new slot (from a ring position) or where it waits (a slot).
        assert.ok(d.buried.length <= bound.length, `${d.buried.length} set aside, ${bound.length} counted`);
      },
    ),
    { numRuns: 500 },
  );
});

it('deadAfter pages through the dead letters in position order, as a sort of every lease would', () => {
  // Dead letters come at ever higher slots; some are redriven (alive again) or discarded, and a
  // table rebuilt at start-up gets them in any order.
  const step = fc.oneof(
    fc.record({ die: fc.constant(true as const) }),
    fc.record({ revive: fc.nat(), discard: fc.boolean() }),
    fc.record({ pos: fc.integer({ min: FIRST_SLOT, max: FIRST_SLOT + 60 }), dead: fc.boolean() }),
  );
  fc.assert(
    fc.property(
      fc.array(step, { maxLength: 150 }),
      fc.integer({ min: FIRST_SLOT - 1, max: FIRST_SLOT + 70 }),
      fc.integer({ min: 1, max: 20 }),
      (steps, after, limit) => {
        const t = new LeaseTable();
        for (const o of steps) {
          if ('die' in o) {
            const slot = t.takeSlot();
            if (slot) t.set(slot, { deadline: DEAD + NOW, deliveries: 2 });
          } else if ('revive' in o) {
            const dead = t.deadLetters();
            const victim = dead[o.revive % Math.max(1, dead.length)];
            if (victim && o.discard) t.delete(victim[0]);
            else if (victim) t.set(victim[0], { deadline: 0, deliveries: 0 });
          } else t.set(o.pos, o.dead ? { deadline: DEAD + NOW, deliveries: 1 } : { deadline: NOW, deliveries: 1 });
          const want = [...t.entries()]
            .filter(([pos, l]) => pos > after && isDead(l))
            .sort((a, b) => a[0] - b[0])
            .slice(0, limit);
          assert.deepEqual(t.deadAfter(after, limit), want);
        }
      },
    ),
    { numRuns: 300 },
  );
});

it('deadLetters(max) gives the first max dead letters by when they died (ties: lower position), as a sort of every lease would', () => {
  // tableOf's dead letters die at times in any order against their positions, with ties.
  fc.assert(
    fc.property(fc.array(opArb, { maxLength: 120 }), fc.integer({ min: 0, max: 30 }), (ops, max) => {
      const t = tableOf(ops);
      const want = [...t.entries()].filter(([, l]) => isDead(l)).sort((a, b) => a[1].deadline - b[1].deadline || a[0] - b[0]);
      assert.deepEqual(t.deadLetters(max), want.slice(0, max));
      assert.deepEqual(t.deadLetters(), want);
    }),
    { numRuns: 500 },
  );
});

it('takeSlot takes the first free slot after the cursor, past the last back to the first, as a scan of every slot would', () => {
  // Slots held near both ends, the cursor anywhere near the end.
  const near = fc.oneof(fc.integer({ min: FIRST_SLOT, max: FIRST_SLOT + 8 }), fc.integer({ min: LAST_SLOT - 8, max: LAST_SLOT }));
  fc.assert(
    fc.property(fc.uniqueArray(near, { maxLength: 12 }), near, fc.integer({ min: 1, max: 6 }), (held, cursor, takes) => {
      const t = new LeaseTable();
      for (const pos of held) t.set(pos, { deadline: NOW, deliveries: 0 });
      t.setSlotCursor(cursor);
      const taken = new Set(held);
      let at = cursor;
      for (let k = 0; k < takes; k++) {
        do at = at >= LAST_SLOT ? FIRST_SLOT : at + 1;
        while (taken.has(at));
        const slot = t.takeSlot();
        assert.equal(slot, at);
        assert.equal(t.slotCursor, slot);
        taken.add(slot);
        t.set(slot, { deadline: NOW, deliveries: 0 });
      }
    }),
    { numRuns: 300 },
  );
});

it('the table answers as a map of leases would, across many sets and removals (rows freed, reused and packed)', () => {
  const posArb = fc.oneof(fc.integer({ min: 1, max: 300 }), fc.integer({ min: FIRST_SLOT, max: FIRST_SLOT + 300 }));
  const setArb = fc.record({
    pos: posArb,
    deadline: fc.integer({ min: NOW - 50, max: NOW + 50 }),
    deliveries: fc.integer({ min: 0, max: 4 }),
    dead: fc.boolean(),
    granted: fc.option(fc.integer({ min: 1, max: NOW }), { nil: undefined }),
  });
  const removeArb = fc.record({ pos: posArb, remove: fc.constant(true as const) });
  type Op = fc.Arbitrary<typeof setArb extends fc.Arbitrary<infer S> ? S : never> | typeof removeArb;
  let packed = 0;
  fc.assert(
    fc.property(
      fc.array(setArb, { minLength: 100, maxLength: 400 }),
      fc.integer({ min: 0, max: 40 }),
      fc.array(fc.oneof(removeArb as Op, setArb as Op), { maxLength: 200 }),
      (sets, keep, rest) => {
        const t = new LeaseTable();
        const model = new Map<number, Lease>();
        // Most of what was set goes (all but `keep` positions), then more comes and goes.
        const removals = [...new Set(sets.map((o) => o.pos))].slice(keep).map((pos) => ({ pos, remove: true as const }));
        for (const o of [...sets, ...removals, ...rest] as Array<{
          pos: number;
          remove?: true;
          deadline?: number;
          deliveries?: number;
          dead?: boolean;
          granted?: number | undefined;
        }>) {
          if (o.remove) {
            assert.equal(t.delete(o.pos), model.delete(o.pos));
            continue;
          }
          const l: Lease = { deadline: o.dead ? DEAD + o.deadline! : o.deadline!, deliveries: o.dead ? Math.max(1, o.deliveries!) : o.deliveries! };
          if (o.granted !== undefined) l.granted = o.granted;
          t.set(o.pos, l);
          model.set(o.pos, { ...l });
        }
        const byPos = (a: [number, Lease], b: [number, Lease]) => a[0] - b[0];
        assert.deepEqual([...t.entries()].sort(byPos), [...model].sort(byPos));
        for (const [pos, l] of model) assert.deepEqual(t.get(pos), l);
        const all = [...model.values()];
        assert.deepEqual(
          [t.size, t.dead, t.delayed, t.slots],
          [
            model.size,
            all.filter(isDead).length,
            all.filter((l) => !isDead(l) && l.deliveries === 0).length,
            [...model.keys()].filter((p) => p >= FIRST_SLOT).length,
          ],
        );
        // Due ones: earliest deadline first, then the lower position; dead letters never.
        const due = [...model].filter(([, l]) => !isDead(l) && l.deadline <= NOW).sort((a, b) => a[1].deadline - b[1].deadline || a[0] - b[0]);
        assert.deepEqual([...t.dueInOrder(NOW)], due);
        const live = [...model].filter(([, l]) => !isDead(l));
        assert.equal(t.nextDeadline(), live.length ? Math.min(...live.map(([, l]) => l.deadline)) : undefined);
        const dead = [...model].filter(([, l]) => isDead(l));
        assert.deepEqual(t.deadAfter(0, Infinity), [...dead].sort(byPos));
        assert.deepEqual(
          t.deadLetters(),
          [...dead].sort((a, b) => a[1].deadline - b[1].deadline || a[0] - b[0]),
        );
        if ((t as unknown as { end: number }).end < new Set(sets.map((o) => o.pos)).size) packed++; // rows were packed
      },
    ),
    { numRuns: 200 },
  );
  assert.ok(packed > 10, `the rows were packed in ${packed} runs`);
});

/** The heap and typed arrays in use after a full collection. */
async function used(): Promise<number> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  // Typed arrays' memory is let go after the collection, in a later turn.
  await new Promise((r) => setTimeout(r, 20));
  gc();
  return process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
}

it('a million delayed messages take under 100 bytes each in their table (objects took 184), and give it back once gone', async () => {
  const before = await used();
  const t = new LeaseTable();
  for (let i = 0; i < 1_000_000; i++) t.set(t.takeSlot(), { deadline: NOW + i, deliveries: 0 });
  const each = ((await used()) - before) / 1_000_000;
  assert.ok(each < 100, `${each.toFixed(1)} bytes a delayed message`);
  for (let d = t.due(Infinity); d; d = t.due(Infinity)) t.delete(d[0]);
  assert.equal(t.size, 0);
  const left = (await used()) - before;
  assert.ok(left < 1_000_000, `${left} bytes left once all went`);
});

it('leases due at the same time come in position order after rows were freed and reused (a stale heap entry keeps its own position)', () => {
  // An mget under one lease gives its messages the same deadline; so does a delayed mput.
  const t = new LeaseTable();
  const at = (deliveries: number): Lease => ({ deadline: NOW, deliveries });
  t.set(4, at(1));
  t.set(3, at(1));
  t.set(4, at(2)); // its first heap entry is stale now
  t.delete(4); // its row is freed...
  t.set(2, at(1)); // ...and reused by position 2, under the stale entry
  t.set(5, at(1));
  assert.deepEqual(
    [...t.dueInOrder(NOW)].map(([pos]) => pos),
    [2, 3, 5],
  );
  const order: number[] = [];
  for (let d = t.due(NOW); d; d = t.due(NOW)) {
    order.push(d[0]);
    t.delete(d[0]);
  }
  assert.deepEqual(order, [2, 3, 5]);
});

it('a table that never held a lease takes under 1 KiB (most queues never hold one: the journal keeps a table for each queue)', async () => {
  const before = await used();
  const tables = Array.from({ length: 100_000 }, () => new LeaseTable());
  const each = ((await used()) - before) / tables.length;
  assert.ok(each < 1000, `${each.toFixed(0)} bytes an empty table (2,300 when each had its columns)`);
  // It grows on its first lease, and answers as one made with room would.
  const t = tables[0]!;
  for (let i = 1; i <= 20; i++) t.set(i, { deadline: NOW + 1000 - i, deliveries: 1 });
  assert.deepEqual(t.due(NOW + 1000)?.[0], 20);
  for (let i = 1; i <= 20; i++) assert.equal(t.delete(i), true);
  assert.equal(t.due(Infinity), undefined);
  assert.equal(tables[1]!.due(Infinity), undefined);
  assert.equal(tables[1]!.nextDeadline(), undefined);
});
