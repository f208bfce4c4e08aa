/**
 * The journal's position index against a model (a plain list of entries), over random runs of
 * adds, kills, live flags, trims, checkpoint snapshots read while the index changes, and loads of
 * what a snapshot read: properties (fast-check), with arrays of 8 and 16 entries so that a short run
 * goes through the small array, the arrays of a large index, their letting go, and renumbering.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import fc from 'fast-check';
import { PositionIndex } from '../src/store/journal/positions.js';

interface Entry {
  pos: number;
  seg: number;
  off: number;
  len: number;
  live: boolean;
}

type Op =
  | { op: 'add'; pos: number; live: boolean }
  | { op: 'roll' }
  | { op: 'kill'; pos: number }
  | { op: 'live'; pos: number; live: boolean }
  | { op: 'trim'; keep: number }
  | { op: 'snapshot' }
  | { op: 'read'; entries: number }
  | { op: 'load' };

const POSITIONS = 40;
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ op: fc.constant('add' as const), pos: fc.integer({ min: 1, max: POSITIONS }), live: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('kill' as const), pos: fc.integer({ min: 1, max: POSITIONS }) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('live' as const), pos: fc.integer({ min: 1, max: POSITIONS }), live: fc.boolean() }) },
  { weight: 1, arbitrary: fc.constant({ op: 'roll' as const }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('trim' as const), keep: fc.integer({ min: 0, max: 3 }) }) },
  { weight: 1, arbitrary: fc.constant({ op: 'snapshot' as const }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('read' as const), entries: fc.integer({ min: 1, max: 12 }) }) },
  { weight: 1, arbitrary: fc.constant({ op: 'load' as const }) },
);

/** The model's entry for `pos`: the newest one, unless it is dead (as `find` answers). */
function found(model: Entry[], pos: number): Entry | undefined {
  for (let k = model.length - 1; k >= 0; k--) if (model[k]!.pos === pos) return model[k]!.seg === 0 ? undefined : model[k];
  return undefined;
}

const asEntry = (ix: PositionIndex, i: number): Entry => ({ pos: ix.pos(i), seg: ix.seg(i), off: ix.off(i), len: ix.len(i), live: ix.live(i) });

function agree(ix: PositionIndex, model: Entry[], step: number): void {
  const where = `after step ${step}`;
  assert.equal(ix.size, model.length, `${where}: size`);
  assert.deepEqual(
    [...ix.entries()].map((i) => asEntry(ix, i)),
    model.filter((e) => e.seg !== 0),
    `${where}: entries`,
  );
  for (let pos = 1; pos <= POSITIONS; pos++) {
    const i = ix.find(pos);
    assert.deepEqual(i < 0 ? undefined : asEntry(ix, i), found(model, pos), `${where}: position ${pos}`);
  }
}

/** The u32s of entries as a snapshot gives them. */
const u32s = (entries: Entry[]): number[] => entries.flatMap((e) => [e.pos, e.seg, e.off, e.len | (e.live ? 0x80000000 : 0)].map((n) => n >>> 0));

/** `pinned`: segment 1 never goes (other queues' messages keep it), whatever goes after it. */
function run(shift: number, ops: Op[], pinned: boolean): void {
  let ix = new PositionIndex(shift, 2);
  let model: Entry[] = [];
  let writes = 0;
  /** Entries held when the index last looked at every entry (as it does: `sweep`). */
  let swept = 0;
  // Records go to the current segment; a trim lets go of the segments before the last `keep` + 1.
  let seg = 1;
  // The snapshot being read: what it must give, how far it got, and the pieces it gave.
  let snap: { source: ReturnType<PositionIndex['snapshot']>; want: number[]; at: number; got: number[] } | undefined;
  const finish = () => {
    if (!snap) return;
    const rest = new Uint32Array(snap.source.length - snap.at);
    if (rest.length) snap.source.read(snap.at, rest);
    snap.got.push(...rest);
    snap.source.release();
    assert.deepEqual(snap.got, snap.want, 'the snapshot gave the entries as they were when it was taken');
    snap = undefined;
  };
  ops.forEach((o, step) => {
    switch (o.op) {
      case 'add': {
        // As the store does: the entry a position had is marked dead before it gets a new one.
        const old = ix.find(o.pos);
        if (old >= 0) ix.kill(old);
        const was = found(model, o.pos);
        if (was) was.seg = was.len = 0;
        if (was) was.live = false;
        const e: Entry = { pos: o.pos, seg, off: ++writes, len: writes % 1000, live: o.live };
        ix.add(e.pos, e.seg, e.off, e.len | (e.live ? 0x80000000 : 0));
        model.push(e);
        break;
      }
      case 'kill':
      case 'live': {
        const i = ix.find(o.pos);
        const e = found(model, o.pos);
        assert.equal(i >= 0, e !== undefined);
        if (!e) break;
        if (o.op === 'kill') {
          ix.kill(i);
          Object.assign(e, { seg: 0, len: 0, live: false });
        } else {
          ix.setLive(i, o.live);
          e.live = o.live;
        }
        break;
      }
      case 'roll':
        seg++;
        break;
      case 'trim': {
        const gone = (s: number) => s <= seg - o.keep - 1 && !(pinned && s === 1);
        ix.trim(gone);
        let h = 0;
        while (h < model.length && (model[h]!.seg === 0 || gone(model[h]!.seg))) h++;
        model = model.slice(h);
        // Each time it has doubled, and no snapshot is being read: most entries dead or gone, only the others stay.
        if (!snap && model.length >= 2 * Math.max(swept, 2 ** shift)) {
          const keep = model.filter((e) => e.seg !== 0 && !gone(e.seg));
          if (2 * keep.length < model.length) model = keep;
          swept = model.length;
        }
        break;
      }
      case 'snapshot':
        finish();
        snap = { source: ix.snapshot(), want: u32s(model), at: 0, got: [] };
        break;
      case 'read': {
        if (!snap) break;
        const n = Math.min(4 * o.entries, snap.source.length - snap.at);
        if (!n) break;
        const piece = new Uint32Array(n);
        snap.source.read(snap.at, piece);
        snap.at += n;
        snap.got.push(...piece);
        break;
      }
      case 'load': {
        // A restart: what a snapshot reads now is the index again, with dead entries left out.
        finish();
        const source = ix.snapshot();
        const all = new Uint32Array(source.length);
        source.read(0, all);
        source.release();
        ix = new PositionIndex(shift, 2);
        ix.load(all, () => false);
        model = model.filter((e) => e.seg !== 0);
        swept = 0;
        break;
      }
    }
    agree(ix, model, step);
  });
  finish();
}

for (const shift of [3, 4]) {
  for (const pinned of [false, true]) {
    it(`the position index agrees with a list of its entries (arrays of ${2 ** shift} entries${pinned ? ', its first segment kept' : ''})`, () => {
      fc.assert(
        fc.property(fc.array(opArb, { maxLength: 300, size: 'max' }), (ops) => run(shift, ops, pinned)),
        { numRuns: 300 },
      );
    });
  }
}

it('a large index takes arrays of 16,384 entries as it grows and lets them go as its entries leave', () => {
  const ix = new PositionIndex();
  for (let p = 1; p <= 100_000; p++) ix.add(p, 1 + (p >> 15), p, 1);
  assert.equal(ix.bytes, 7 * 16_384 * 16, 'seven arrays of 256 KiB');
  // The first two segments' messages leave: the arrays that held only them go.
  ix.trim((seg) => seg <= 2);
  assert.equal(ix.size, 100_000 - 65_535);
  assert.equal(ix.bytes, 4 * 16_384 * 16, 'the arrays from the one holding position 65,536 on');
  for (const p of [65_536, 80_000, 100_000]) assert.equal(ix.pos(ix.find(p)), p);
  assert.equal(ix.find(65_535), -1);
  // Nearly all gone: one small array again.
  ix.trim((seg) => seg <= 3);
  assert.equal(ix.size, 100_000 - 98_303);
  assert.equal(ix.bytes, 4096 * 16);
  for (const p of [98_304, 100_000]) assert.equal(ix.pos(ix.find(p)), p);
});

it('entries behind one that stays (its segment kept by other queues) go once most of them are dead or in segments gone', () => {
  const ix = new PositionIndex();
  ix.add(1, 1, 0, 1); // read, in segment 1, which other queues' messages keep
  // 200,000 messages read through, a segment each 1,024; all but the last segment gone.
  const through = (from: number, to: number) => {
    for (let p = from; p <= to; p++) {
      ix.add(p, 2 + (p >> 10), p, 1);
      if (p % 1000 === 0) ix.trim((seg) => seg !== 1 && seg < 2 + (p >> 10));
    }
  };
  through(2, 200_001);
  assert.ok(ix.size <= 2 * 16_384, `${ix.size} entries held`);
  for (const p of [1, 200_000, 200_001]) assert.equal(ix.pos(ix.find(p)), p);
  // Not while a snapshot reads the entries.
  const source = ix.snapshot();
  through(200_002, 300_000);
  assert.ok(ix.size > 2 * 16_384, `${ix.size} entries held`);
  source.release();
  through(300_001, 301_000);
  assert.ok(ix.size <= 2 * 16_384, `${ix.size} entries held`);
});
