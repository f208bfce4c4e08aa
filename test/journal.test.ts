/**
 * The journal engine's own promises (src/store/journal/): a torn or damaged tail recovers to the
 * last whole batch at every offset, damage in the middle is refused (and --repair drops it),
 * checkpoints bound the replay, compaction gives space back, memory stays bounded, and what was
 * acknowledged survives a crash. A "crash image" is a copy of the files while the store runs: every
 * acknowledged write is on disk by then (O_DSYNC), nothing else is promised.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, linkSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { FIRST_SLOT, isDead } from '../src/queue/leases.js';
import { crc32 } from '../src/store/journal/crc32.js';
import { decodeCheckpoint } from '../src/store/journal/files.js';
import { PositionIndex } from '../src/store/journal/positions.js';
import { JournalDamaged, JournalStore, type JournalOptions } from '../src/store/journal/store.js';
import { BATCH_BYTES } from '../src/store/journal/records.js';
import { DiskLowError, StoreError } from '../src/store/store.js';
import { TestClock } from './clock.js';
import { canMount, cleanup, freePort, request, runCli, startServer, tempDir } from './helpers.js';

const b = (s: string) => Buffer.from(s);
const SEG = 64 * 1024;
const dirs: string[] = [];
after(() => dirs.forEach(cleanup));
const dir = () => {
  const d = tempDir('httpsqs-journal-');
  dirs.push(d);
  return d;
};

let warnings: string[] = [];
/** A store of `SEG`-byte segments; idle, it keeps them (the test of `shrink` says otherwise). */
const open = (path: string, extra: Partial<JournalOptions> = {}) =>
  JournalStore.open({ path, segmentBytes: SEG, shrinkAfterMs: Infinity, warn: (m) => warnings.push(m), ...extra });

/** What a crash would leave of a running store: its files as they are now. */
function crashImage(from: string): string {
  const to = dir();
  cpSync(join(from, 'journal'), join(to, 'journal'), { recursive: true });
  return to;
}

const segFile = (d: string, id = 1) => join(d, 'journal', `${String(id).padStart(10, '0')}.seg`);
const segments = (d: string) => readdirSync(join(d, 'journal')).filter((f) => f.endsWith('.seg'));
/** Bytes of the segments on disk; one deleted between the listing and its stat counts as none. */
const sizeOf = (d: string, f: string) => statSync(join(d, 'journal', f), { throwIfNoEntry: false })?.size ?? 0;
const diskUse = (d: string) => segments(d).reduce((n, f) => n + sizeOf(d, f), 0);
/** A private field of the store, for what only the engine can tell. */
const inside = <T>(s: JournalStore, field: string): T => (s as unknown as Record<string, T>)[field]!;

/** Once no checkpoint is being written (one may start another as it ends). */
async function checkpointed(s: JournalStore): Promise<void> {
  for (let c = inside<Promise<void> | undefined>(s, 'checkpointing'); c; c = inside(s, 'checkpointing')) await c;
}
/** A message of about 1 KiB that starts `m<i>-`. */
const msg = (i: number) => b(`m${i}-`.padEnd(1000, 'x'));

/** [start, end) of each batch at the start of a segment's bytes. */
function batchesOf(seg: Buffer): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let at = 0; at + BATCH_BYTES <= seg.length && seg.readUInt32LE(at) !== 0; ) {
    const end = at + BATCH_BYTES + seg.readUInt32LE(at + 19);
    out.push([at, end]);
    at = end;
  }
  return out;
}

/** Six puts and a get, each its own batch, in a crash image; its segment's bytes and batches. */
async function sevenBatches(): Promise<{ image: string; seg: Buffer; bounds: Array<[number, number]> }> {
  const d = dir();
  const s = await open(d);
  for (let i = 1; i <= 6; i++) await s.put('q', b(`message ${i}`));
  await s.get('q');
  const image = crashImage(d);
  await s.close();
  const seg = readFileSync(segFile(image));
  const bounds = batchesOf(seg);
  assert.equal(bounds.length, 7);
  return { image, seg, bounds };
}

/** A directory holding `seg` as its only segment. */
function withSegment(seg: Buffer): string {
  const d = dir();
  mkdirSync(join(d, 'journal'));
  writeFileSync(segFile(d), seg);
  return d;
}

async function expectState(s: JournalStore, puts: number, gets: number): Promise<void> {
  assert.deepEqual(await s.status('q'), { putpos: puts, getpos: gets, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
  for (let p = 1; p <= 6; p++) assert.equal((await s.view('q', p))?.toString() ?? null, p <= puts ? `message ${p}` : null, `view ${p}`);
}

it('journal: the CRC-32 of any range, continued from any CRC, is that of a bit-by-bit reference (short ranges in JavaScript, long ones in zlib)', () => {
  const reference = (bytes: Uint8Array, crc = 0) => {
    let c = ~crc;
    for (const b of bytes) {
      c ^= b;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    }
    return ~c >>> 0;
  };
  const buf = Buffer.alloc(1200);
  for (let i = 0; i < buf.length; i++) buf[i] = (i * 151 + 7) & 0xff;
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926); // the standard check value
  for (const start of [0, 1, 5]) {
    for (let len = 0; len <= 1100; len += len < 300 ? 1 : 61) {
      const end = start + len;
      assert.equal(crc32(buf, start, end), reference(buf.subarray(start, end)), `[${start}, ${end})`);
      assert.equal(crc32(buf, start, end, 0x12345678), reference(buf.subarray(start, end), 0x12345678), `[${start}, ${end}) continued`);
    }
  }
});

describe('journal: a torn or damaged tail', () => {
  it('cut at every byte offset of its last three batches, recovers to the last whole batch and says what it dropped', async () => {
    const { seg, bounds } = await sevenBatches();
    for (let cut = bounds.at(-3)![0]; cut <= bounds.at(-1)![1]; cut++) {
      const torn = Buffer.from(seg);
      torn.fill(0, cut);
      const d = withSegment(torn);
      warnings = [];
      const s = await open(d);
      // A cut through zero bytes of a batch (a field's high bytes) leaves it whole.
      const whole = bounds.filter(([start, end]) => torn.subarray(start, end).equals(seg.subarray(start, end))).length;
      await expectState(s, Math.min(whole, 6), whole === 7 ? 1 : 0);
      const kept = whole ? bounds[whole - 1]![1] : 0;
      const dropped = torn.subarray(kept).some((x) => x !== 0);
      assert.equal(warnings.length, dropped ? 1 : 0, `cut at ${cut}: ${warnings.join('; ')}`);
      if (dropped) assert.match(warnings[0]!, new RegExp(`torn journal tail dropped: \\d+ bytes at offset ${kept} of .*0000000001\\.seg`));
      await s.close();
      cleanup(d);
    }
  });

  it('a file cut short (truncated) opens too, and the journal goes on after a dropped tail', async () => {
    const { seg, bounds } = await sevenBatches();
    const d = withSegment(seg.subarray(0, bounds.at(-1)![0] + 5));
    let s = await open(d);
    await expectState(s, 6, 0);
    assert.equal(await s.put('q', b('message 7')), 7);
    await s.close();
    s = await open(d);
    assert.equal((await s.view('q', 7))?.toString(), 'message 7');
    await s.close();
  });

  it('a byte flipped anywhere in the last batch drops that batch; never a damaged message', async () => {
    const { seg, bounds } = await sevenBatches();
    const [start, end] = bounds.at(-1)!;
    for (let at = start; at < end; at++) {
      const flipped = Buffer.from(seg);
      flipped[at]! ^= 0x41;
      const d = withSegment(flipped);
      warnings = [];
      const s = await open(d);
      await expectState(s, 6, 0);
      assert.equal(warnings.length, 1, `flip at ${at}`);
      await s.close();
      cleanup(d);
    }
  });

  it('damage followed by intact batches is refused, naming the file, the offset and --repair; --repair drops the rest of that segment', async () => {
    const { seg, bounds } = await sevenBatches();
    const [start, end] = bounds[5]!; // the sixth put; the get follows it
    for (let at = start; at < end; at += 3) {
      const flipped = Buffer.from(seg);
      flipped[at]! ^= 0x08;
      const d = withSegment(flipped);
      await assert.rejects(open(d), (err: Error) => {
        assert.ok(err instanceof JournalDamaged);
        assert.match(
          err.message,
          new RegExp(
            `journal segment .*0000000001\\.seg is damaged at offset ${start}, and intact records follow it \\(at offset ${bounds[6]![0]}\\).*--repair`,
          ),
        );
        return true;
      });
      warnings = [];
      const s = await open(d, { repair: true });
      await expectState(s, 5, 0);
      assert.match(warnings.join('\n'), /damaged journal tail dropped: .*\(--repair\)/);
      await s.close();
      // Repaired for good: it opens without --repair now.
      await (await open(d)).close();
      cleanup(d);
    }
  });

  it('the server refuses to start on such damage with one line saying what to do, and starts with --repair', async () => {
    const { seg, bounds } = await sevenBatches();
    const flipped = Buffer.from(seg);
    flipped[bounds[2]![0] + 12]! ^= 1;
    const d = withSegment(flipped);
    const refused = await runCli(['-l', '127.0.0.1', '-p', String(await freePort()), '-x', d, '-i', join(d, 'pid')]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /-x: journal segment .*0000000001\.seg is damaged at offset \d+, .*start with --repair/);
    const server = await startServer({ dir: d, args: ['--repair'] });
    try {
      assert.equal((await request(server.port, 'GET', '/?name=q&opt=view&pos=2')).body.toString(), 'message 2');
      assert.match(server.stderr(), /damaged journal tail dropped/);
    } finally {
      await server.stop();
    }
  });
});

/** 500,000 one-byte messages in `name`: an index of 8 MB, a checkpoint written in several pieces. */
async function fill(s: JournalStore, name: string): Promise<void> {
  for (let i = 0; i < 50; i++)
    await s.putMany(
      name,
      Array.from({ length: 10_000 }, () => b('m')),
    );
}

describe('journal: checkpoints, replay and restarts', () => {
  it('a checkpoint is written when a segment fills; start-up replays only the records after it', async () => {
    const d = dir();
    const s = await open(d);
    const message = b('m'.repeat(100));
    for (let i = 0; i < 40; i++)
      await s.putMany(
        'c',
        Array.from({ length: 50 }, () => message),
      );
    await inside<Promise<void> | undefined>(s, 'checkpointing');
    const c = decodeCheckpoint(readFileSync(join(d, 'journal', 'checkpoint')));
    assert.ok(c.seg >= 3, `the checkpoint covers segments before ${c.seg}`);
    const image = crashImage(d);
    await s.close();
    const t = await open(image);
    const replayed = inside<number>(t, 'replayed');
    // At most what fits in the segments from the checkpoint's on.
    const after = segments(image).filter((f) => Number(f.slice(0, 10)) >= c.seg).length;
    assert.ok(replayed > 0 && replayed <= (after * SEG) / 100, `${replayed} records replayed`);
    assert.deepEqual(await t.status('c'), { putpos: 2000, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
    assert.deepEqual(await t.view('c', 1), message);
    assert.deepEqual(await t.view('c', 2000), message);
    await t.close();
    // After a clean close nothing is replayed.
    const u = await open(image);
    assert.equal(inside<number>(u, 'replayed'), 0);
    await u.close();
  });

  it('a checkpoint is written in pieces while requests go on: a put made meanwhile is on disk before the checkpoint is; a restart finds everything', async () => {
    const d = dir();
    let s = await open(d, { segmentBytes: 64 * 2 ** 20 });
    // Their checkpoint is written a MiB a turn.
    await fill(s, 'big');
    await inside<Promise<void>>(s, 'ckptFiles'); // the growth of its room, which it would wait for
    const [tmp, file] = [join(d, 'journal', 'checkpoint.tmp'), join(d, 'journal', 'checkpoint')];
    const written = inside<() => Promise<void>>(s, 'checkpoint').call(s);
    await s.put('during', b('put while the checkpoint was written'));
    // It is written into its room, taken ahead: how much of it is written does not show in its size.
    const atPut = { writing: existsSync(tmp), inPlace: existsSync(file) };
    await written;
    const size = statSync(file).size;
    assert.ok(size > 8_000_000, `checkpoint ${size} bytes`);
    assert.deepEqual(atPut, { writing: true, inPlace: false }, 'the put was answered while the checkpoint was being written');
    const image = crashImage(d);
    await s.close();
    s = await open(image, { segmentBytes: 64 * 2 ** 20 });
    assert.equal((await s.get('during'))?.message.toString(), 'put while the checkpoint was written');
    assert.equal((await s.status('big')).putpos, 500_000);
    assert.deepEqual(await s.view('big', 500_000), b('m'));
    await s.close();
  });

  it('a checkpoint goes into the room taken for it, never into a file linked elsewhere: a room left linked to the checkpoint (a crash inside its install), a copy made with hard links', async () => {
    const d = dir();
    let s = await open(d);
    for (let i = 0; i < 70; i++) await s.put('q', msg(i)); // a roll-over: a checkpoint
    await s.close();
    const [file, room, copy] = ['checkpoint', 'checkpoint.room', 'copy'].map((f) => join(d, 'journal', f)) as [string, string, string];
    rmSync(room);
    linkSync(file, room);
    linkSync(file, copy);
    const before = readFileSync(copy);
    s = await open(d);
    for (let i = 0; i < 3; i++) {
      await s.put('q', msg(100 + i));
      await inside<() => Promise<void>>(s, 'checkpoint').call(s);
    }
    await s.close();
    assert.deepEqual(readFileSync(copy), before, 'the old checkpoint was written over');
    s = await open(d);
    assert.equal((await s.status('q')).putpos, 73);
    await s.close();
  });

  it('a checkpoint holds the state of the moment it was started, however the index changes while it is written', async () => {
    const d = dir();
    const s = await open(d, { segmentBytes: 64 * 2 ** 20 });
    await fill(s, 'snap');
    const written = inside<() => Promise<void>>(s, 'checkpoint').call(s);
    // Meanwhile: messages read from the front and the back of the index changes, a ring overwrite.
    await s.getMany('snap', 1000);
    await s.maxqueue('wrap', 10);
    for (let i = 0; i < 12; i++) await s.put('wrap', b(`w${i}`));
    await written;
    const c = decodeCheckpoint(readFileSync(join(d, 'journal', 'checkpoint')));
    const q = c.queues.find((x) => x.name === 'snap')!;
    assert.equal(q.s.getpos, 0, 'the state of the moment it was started');
    assert.equal(q.entries.length, 4 * 500_000);
    let live = 0;
    for (let o = 3; o < q.entries.length; o += 4) if (q.entries[o]! & 0x80000000) live++;
    assert.equal(live, 500_000, 'entries read while it was written are still unread in it');
    assert.equal(
      c.queues.find((x) => x.name === 'wrap'),
      undefined,
    );
    await s.close();
  });

  it('what was acknowledged survives a crash with writes in flight; gets acknowledged are not handed out again', async () => {
    const d = dir();
    const s = await open(d);
    const acked = await Promise.all(Array.from({ length: 300 }, (_, i) => s.put('k', b(`m${i}`))));
    const got = await Promise.all(Array.from({ length: 100 }, () => s.get('k')));
    const leased = await s.get('k', 60_000);
    // More in flight as the image is taken.
    const inFlight = [...Array.from({ length: 100 }, (_, i) => s.put('k', b(`late${i}`))), s.get('k')];
    const image = crashImage(d);
    await Promise.all(inFlight);
    await s.close();
    const t = await open(image);
    const st = await t.status('k');
    assert.ok(st.putpos >= 300 && st.getpos >= 101, JSON.stringify(st));
    assert.equal(st.leased, 1);
    for (const [i, pos] of acked.entries()) assert.equal((await t.view('k', pos))?.toString(), `m${i}`);
    const next = await t.get('k');
    assert.ok(next && !got.some((g) => g?.pos === next.pos) && next.pos !== leased?.pos && next.pos > 101);
    await t.close();
  });

  it('maxqueue changes and ring wraps: view finds every stored position, read or not, across restarts', async () => {
    const d = dir();
    let s = await open(d);
    const model = new Map<number, string>();
    const put = async (m: string) => {
      const pos = await s.put('r', b(m));
      if (pos) model.set(pos, m);
      return pos;
    };
    const check = async (when: string) => {
      for (let p = 1; p <= 14; p++) assert.equal((await s.view('r', p))?.toString() ?? null, model.get(p) ?? null, `${when}: view ${p}`);
    };
    assert.equal(await s.maxqueue('r', 12), true);
    for (let i = 1; i <= 12; i++) await put(`a${i}`);
    for (let i = 1; i <= 12; i++) await s.get('r');
    assert.equal(await put('b1'), 1); // wrapped
    await s.get('r');
    assert.equal(await s.maxqueue('r', 10), true); // positions 11 and 12 keep their read messages
    for (let i = 2; i <= 10; i++) await put(`b${i}`);
    assert.equal(await put('c1'), 0); // full
    for (let i = 0; i < 4; i++) await s.get('r');
    assert.equal(await put('c1'), 1);
    assert.equal(await put('c2'), 2);
    await check('running');
    await s.close();
    s = await open(d);
    await check('after a restart');
    const image = crashImage(d);
    assert.equal(await put('c3'), 3);
    await s.close();
    model.delete(3);
    model.set(3, 'b3');
    s = await open(image);
    await check('from a crash image');
    await s.close();
  });

  it('a reset forgets a queue for good: messages, leases and their live bytes', async () => {
    const d = dir();
    let s = await open(d);
    await s.putMany(
      'z',
      Array.from({ length: 100 }, (_, i) => b(`m${i}`)),
    );
    await s.getMany('z', 10, 60_000);
    await s.reset('z');
    assert.equal(
      [...inside<Map<number, { live: number }>>(s, 'segs').values()].reduce((n, g) => n + g.live, 0),
      0,
    );
    const image = crashImage(d);
    await s.close();
    for (const from of [d, image]) {
      s = await open(from);
      assert.deepEqual(await s.status('z'), { putpos: 0, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
      assert.equal(await s.view('z', 50), null);
      assert.deepEqual(await s.list('', undefined, 10), []);
      await s.close();
    }
  });

  it('a message larger than a segment gets a segment of its own size', async () => {
    const d = dir();
    let s = await open(d);
    const big = Buffer.alloc(3 * SEG, 7);
    assert.equal(await s.put('big', big), 1);
    assert.equal(await s.put('big', b('after')), 2);
    await s.close();
    s = await open(d);
    assert.deepEqual(await s.view('big', 1), big);
    assert.equal((await s.get('big'))?.message.length, big.length);
    await s.close();
  });

  it('a checkpoint begun in the middle of a turn covers whole batches: the gets acknowledged in that turn stay done after a crash', async () => {
    const d = dir();
    const s = await open(d);
    // A crash before the roll-over's checkpoint: the restart below replays segment 2.
    const inner = s as unknown as { checkpoint: () => Promise<void> };
    inner.checkpoint = () => Promise.resolve();
    let n = 0;
    while (!existsSync(segFile(d, 2)) || n < 80) await s.put('q', msg(++n));
    const image = crashImage(d);
    await s.close();
    const t = await open(image);
    // One turn of 70 gets: the one that reads segment 1's last message starts a checkpoint.
    const gets = await Promise.all(Array.from({ length: 70 }, () => t.get('q')));
    assert.deepEqual([gets[0]?.pos, gets.at(-1)?.pos], [1, 70]);
    await checkpointed(t);
    const after = crashImage(image);
    await t.close();
    warnings = [];
    const u = await open(after);
    assert.equal((await u.status('q')).getpos, 70);
    assert.deepEqual(warnings, []);
    assert.equal((await u.get('q'))?.pos, 71);
    await u.close();
  });

  it('a segment emptied by a get is deleted only once that get is on disk', async () => {
    const d = dir();
    const s = await open(d);
    for (let n = 1; n <= 80; n++) await s.put('q', msg(n));
    await checkpointed(s);
    const ix = inside<Map<string, { index: PositionIndex }>>(s, 'queues').get('q')!.index;
    let last = 0;
    for (let p = 1; p <= 80; p++) if (ix.seg(ix.find(p)) === 1) last = p;
    for (let p = 1; p < last; p++) await s.get('q');
    // The write of the get of segment 1's last message is held (a flush behind another, or a
    // crash before it).
    const inner = s as unknown as { writeFile: (...a: unknown[]) => void };
    const write = inner.writeFile;
    let held: unknown[] | undefined;
    inner.writeFile = (...args: unknown[]) => void (held = args);
    const pending = s.get('q');
    for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 5));
    assert.ok(held, 'the write was not held');
    assert.ok(existsSync(segFile(d, 1)), 'segment 1 went before the get that emptied it was on disk');
    const image = crashImage(d);
    inner.writeFile = write;
    write(...held);
    assert.equal((await pending)?.pos, last);
    await s.close();
    const t = await open(image);
    const g = await t.get('q');
    assert.deepEqual([g?.pos, g?.message.toString().slice(0, 4)], [last, `m${last}-`.slice(0, 4)]);
    await t.close();
  });
});

/** Waits until compaction has nothing left to do. */
async function compacted(s: JournalStore): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    await inside<Promise<void> | undefined>(s, 'checkpointing');
    await inside<Promise<void> | undefined>(s, 'compacting');
    await nextTurn();
    if (!inside(s, 'compacting') && !inside(s, 'checkpointing')) return;
  }
}

/** Queue `fast` put and read through many segments, some of its messages left unread for a
 * while (live data in many segments), compacting as it goes and at the end. */
async function churn(s: JournalStore): Promise<void> {
  const message = b('f'.repeat(200));
  for (let i = 0; i < 300; i++) {
    await s.putMany(
      'fast',
      Array.from({ length: 10 }, () => message),
    );
    await s.getMany('fast', 10);
    if (i % 3 === 0) await s.put('fast', message);
    if (i % 9 === 0) await compacted(s);
  }
  await compacted(s);
}

describe('journal: space and memory', () => {
  it('dead segments go and sparse ones are copied forward: disk stays within 1.5x the live data plus one segment, besides the current and next ones; one old message pins nothing', async () => {
    const d = dir();
    let s = await open(d);
    await s.put('slow', b('the old one'));
    await churn(s);
    const live = [...inside<Map<number, { live: number }>>(s, 'segs').values()].reduce((n, g) => n + g.live, 0);
    assert.ok(diskUse(d) <= 1.5 * live + 3 * SEG, `${diskUse(d)} bytes on disk for ${live} live`);
    assert.ok(!existsSync(segFile(d, 1)), 'the first segment (with the old message) is gone');
    assert.equal((await s.view('slow', 1))?.toString(), 'the old one');
    const image = crashImage(d);
    await s.close();
    for (const from of [d, image]) {
      s = await open(from);
      assert.equal((await s.get('slow'))?.message.toString(), 'the old one');
      await s.close();
    }
    // Drained: back to the segment in use and at most the next one.
    s = await open(d);
    while ((await s.getMany('fast', 1000)).length);
    await s.get('slow');
    for (let i = 0; i < 50; i++) await s.putMany('churn', [b('f'.repeat(200))]).then(() => s.get('churn'));
    await compacted(s);
    assert.ok(segments(d).length <= 3, `${segments(d).length} segments left`);
    await s.close();
  });

  it('a queue drained in order is not copied forward (its unread messages are about to be read); its segments go as they are read', async () => {
    const d = dir();
    const ops: string[] = [];
    const s = await open(d, { observe: (op) => ops.push(op) });
    const message = b('d'.repeat(200));
    for (let i = 0; i < 40; i++)
      await s.putMany(
        'drain',
        Array.from({ length: 50 }, () => message),
      );
    assert.ok(segments(d).length >= 6, `${segments(d).length} segments`);
    for (let i = 0; i < 100; i++) {
      await s.getMany('drain', 20);
      await compacted(s);
    }
    for (let i = 0; i < 700; i++) await s.putMany('other', [message]).then(() => s.get('other'));
    await compacted(s);
    assert.equal(ops.filter((op) => op === 'compact').length, 0, 'messages were copied forward');
    assert.ok(segments(d).length <= 3, `${segments(d).length} segments left`);
    await s.close();
  });

  it('segments just deleted do not count as sealed: one old message among read ones is not copied forward over and over', async () => {
    const d = dir();
    const ops: string[] = [];
    const s = await open(d, { observe: (op) => ops.push(op) });
    await s.put('slow', b('kept for later'));
    for (let i = 0; i < 60; i++) {
      await s.putMany(
        'fast',
        Array.from({ length: 100 }, () => b('f'.repeat(100))),
      );
      await s.getMany('fast', 100);
      await compacted(s);
    }
    // One sealed segment with a live message is within 1.5 times the live data plus one segment.
    assert.equal(ops.filter((op) => op === 'compact').length, 0, 'the old message was copied forward');
    assert.equal((await s.get('slow'))?.message.toString(), 'kept for later');
    await s.close();
  });

  it('a drained journal gives its disk back: idle with nothing live, it goes on in a segment a quarter of the size; writes then get a whole one', async () => {
    const d = dir();
    let s = await open(d, { shrinkAfterMs: 0 });
    const message = b('s'.repeat(1000));
    /** Waits (a bounded number of event-loop turns and idle checks) for `done`. */
    const until = async (done: () => boolean, what: string) => {
      for (let i = 0; i < 2000 && !done(); i++) await new Promise((r) => setTimeout(r, 1));
      await compacted(s);
      assert.ok(done(), what);
    };
    for (let i = 0; i < 100; i++) await s.put('q', message); // two segments of 64 KiB and part of a third
    assert.ok(segments(d).length >= 2, `${segments(d).length} segments`);
    // Idle, but with live messages: nothing is given back.
    await until(() => inside(s, 'idle') !== undefined, 'the idle check is armed');
    await until(() => inside(s, 'idle') === undefined, 'the idle check ran');
    assert.ok(diskUse(d) >= 2 * SEG, `${diskUse(d)} bytes with 100 KB live`);
    for (let i = 0; i < 99; i++) await s.get('q');
    await until(() => inside(s, 'idle') === undefined, 'the idle check ran');
    const sizes = () => segments(d).map((f) => sizeOf(d, f));
    assert.ok(
      sizes().every((n) => n === SEG),
      `one message still live keeps whole segments: ${sizes().join(', ')}`,
    );
    assert.equal((await s.get('q'))?.pos, 100);
    await until(() => diskUse(d) === SEG / 4, `one small segment left, not ${segments(d).join(', ')}`);
    assert.equal(segments(d).length, 1);
    assert.deepEqual(await s.status('q'), { putpos: 100, getpos: 100, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
    // Writes resume: a whole segment is made to go on in, and nothing is lost across a restart.
    for (let i = 0; i < 20; i++) await s.put('q', message);
    await until(() => diskUse(d) === SEG / 4 + SEG, `${segments(d).join(', ')}`);
    await s.close();
    s = await open(d, { shrinkAfterMs: 0 });
    assert.deepEqual(await s.status('q'), { putpos: 120, getpos: 100, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
    for (let pos = 101; pos <= 120; pos++) assert.deepEqual(await s.get('q'), { pos, message, deliveries: 1 });
    await s.close();
  });

  it('a drain that ends while a segment is being made still gives the disk back, once it is made', async () => {
    const d = dir();
    const s = await open(d, { shrinkAfterMs: 0 });
    const inner = s as unknown as { makeFile: (...a: unknown[]) => Promise<void> };
    const make = inner.makeFile;
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let asked = 0;
    inner.makeFile = async (...a: unknown[]) => {
      asked++;
      await held;
      return make(...a);
    };
    // 50 KB in a 64 KiB segment: past three quarters, so the next one is being made (held back).
    for (let i = 0; i < 50; i++) await s.put('q', b('m'.repeat(1000)));
    assert.equal(asked, 1);
    for (let i = 0; i < 50; i++) await s.get('q');
    // Drained, and idle checks come and go while the segment is still being made.
    for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 1));
    assert.equal(diskUse(d), SEG);
    release();
    for (let i = 0; i < 2000 && diskUse(d) !== SEG / 4; i++) await new Promise((r) => setTimeout(r, 1));
    await compacted(s);
    assert.equal(diskUse(d), SEG / 4, `one small segment left, not ${segments(d).join(', ')}`);
    assert.deepEqual(await s.status('q'), { putpos: 50, getpos: 50, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
    await s.close();
  });

  it('the position index takes at most 20 bytes a stored message, and read ones leave with their segments', async () => {
    const d = dir();
    const s = await open(d);
    for (let i = 0; i < 100; i++)
      await s.putMany(
        'big',
        Array.from({ length: 1000 }, () => b('x')),
      );
    const index = () => inside<Map<string, { index: { size: number; bytes: number } }>>(s, 'queues').get('big')!.index;
    assert.equal(index().size, 100_000);
    assert.ok(index().bytes / index().size <= 20, `${index().bytes / index().size} bytes a message`);
    for (let i = 0; i < 100; i++) await s.getMany('big', 1000);
    // Other writes fill two more segments, so that the segments holding big's messages (messages
    // compaction copied forward while they were being read included) are all sealed behind a
    // checkpoint.
    for (let i = 0; i < 700; i++) await s.putMany('other', [Buffer.alloc(200, 121)]).then(() => s.get('other'));
    await compacted(s);
    assert.ok(index().size < SEG / 20, `${index().size} entries left`);
    await s.close();
  });

  it("an import writes a queue's messages before its state: none is lost meanwhile, those read by that state then go, and all holds after a restart", async () => {
    const d = dir();
    let s = await open(d);
    // 300 messages of 1 KB in batches of 50, as the importer writes them: about five segments,
    // sealed and checkpointed (and compacted) before the state comes.
    for (let from = 1; from <= 300; from += 50)
      await s.restore('imp', { messages: Array.from({ length: 50 }, (_, k) => ({ pos: from + k, message: msg(from + k) })) });
    await compacted(s);
    assert.ok(existsSync(segFile(d, 1)), 'the first segment is still there');
    const lease = { deadline: Date.now() + 3_600_000, deliveries: 1 };
    await s.restore('imp', { state: { putpos: 300, getpos: 100, maxqueue: 1000 }, leases: [{ pos: 100, lease }] });
    // Messages 1 to about 60, read and not leased, were all segment 1 held.
    for (let i = 0; i < 60; i++) await s.put('other', msg(i)).then(() => s.get('other'));
    await compacted(s);
    assert.ok(!existsSync(segFile(d, 1)), 'the segment of read messages is gone');
    for (let round = 0; round < 2; round++) {
      assert.equal((await s.view('imp', 100))?.toString(), msg(100).toString(), 'the leased message');
      for (let pos = 101; pos <= 300; pos++) assert.equal((await s.view('imp', pos))?.toString(), msg(pos).toString(), `message ${pos}`);
      await s.close();
      s = await open(d);
    }
    const got = await s.getMany('imp', 1000);
    assert.deepEqual(
      got.map((g) => g.pos),
      Array.from({ length: 200 }, (_, k) => 101 + k),
    );
    await s.close();
  });

  it("an import that stopped before a queue's state (a crash, a bad line) pins nothing after a restart: its messages are dead, their segments go", async () => {
    const d = dir();
    let s = await open(d);
    // About five segments of messages whose state never comes.
    for (let from = 1; from <= 300; from += 50)
      await s.restore('imp', { messages: Array.from({ length: 50 }, (_, k) => ({ pos: from + k, message: msg(from + k) })) });
    await s.put('other', b('kept'));
    await compacted(s);
    assert.ok(segments(d).length >= 5, `${segments(d).length} segments`);
    const crashed = crashImage(d); // Ctrl-C: the records after the last roll-over's checkpoint
    await s.close(); // a bad line: the import closes the store, its checkpoint holds them live
    const liveBytes = (s: JournalStore) => [...inside<Map<number, { live: number }>>(s, 'segs').values()].reduce((n, g) => n + Math.max(0, g.live), 0);
    for (const at of [d, crashed]) {
      s = await open(at);
      await compacted(s);
      assert.ok(liveBytes(s) < 100, `${liveBytes(s)} live bytes: only the message of 'other'`);
      assert.deepEqual(await s.status('imp'), { putpos: 0, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
      // The checkpoint of a close covers them all: they go at once; after a crash, by the next one.
      await s.close();
      s = await open(at);
      await compacted(s);
      assert.ok(segments(at).length <= 2, `${segments(at).join(', ')} left`);
      assert.equal((await s.get('other'))?.message.toString(), 'kept');
      await s.close();
    }
  });

  it("'interval' mode: a segment goes only once what emptied it (the copies compaction made of its messages included) is flushed", async () => {
    const d = dir();
    const ops: string[] = [];
    const s = await open(d, { syncMode: 'interval', syncInterval: 3600, observe: (op) => ops.push(op) });
    const inner = s as unknown as { compactSoon: () => void; dropSegment: (seg: unknown) => Promise<void>; unflushed: Set<unknown> };
    const compactSoon = inner.compactSoon;
    inner.compactSoon = () => {}; // held back while the segments fill, then run with nothing else written
    const drop = inner.dropSegment;
    const unflushedAtDrop: number[] = [];
    inner.dropSegment = function (this: unknown, seg: unknown) {
      unflushedAtDrop.push(inner.unflushed.size);
      return drop.call(this, seg);
    };
    await s.put('slow', b('precious 1'));
    for (let i = 0; i < 70; i++) await s.put('fast', msg(i)).then(() => s.get('fast'));
    await s.put('slow', b('precious 2'));
    for (let i = 0; i < 200; i++) await s.put('fast', msg(i)).then(() => s.get('fast'));
    await checkpointed(s);
    inner.compactSoon = compactSoon;
    inner.compactSoon.call(s);
    await compacted(s);
    assert.ok(ops.includes('compact'), 'messages were copied forward');
    assert.ok(unflushedAtDrop.length > 0, 'segments were deleted');
    assert.deepEqual(
      unflushedAtDrop.filter((n) => n > 0),
      [],
      'a segment was deleted with writes not flushed',
    );
    await s.close();
  });

  it('a queue whose oldest message stays in a segment other queues keep does not keep an index entry for every message it read', async () => {
    const d = dir();
    const s = await open(d);
    await s.put('fast', b('first'));
    await s.get('fast');
    await s.putMany(
      'backlog',
      Array.from({ length: 55 }, (_, i) => msg(i)),
    ); // segment 1 stays
    for (let i = 0; i < 400; i++) {
      await s.putMany(
        'fast',
        Array.from({ length: 100 }, () => b('f'.repeat(100))),
      );
      await s.getMany('fast', 100);
      if (i % 20 === 0) await compacted(s);
    }
    await compacted(s);
    assert.ok(existsSync(segFile(d, 1)), 'segment 1 is kept');
    const index = inside<Map<string, { index: { size: number } }>>(s, 'queues').get('fast')!.index;
    assert.ok(index.size <= 2 * 16_384, `${index.size} entries for 40,001 messages read`);
    await s.close();
  });

  it("'interval' mode: a flush is done only once the flushes begun before it are (a segment another took is not flushed yet)", async () => {
    const s = await open(dir(), { syncMode: 'interval', syncInterval: 3600 });
    const inner = s as unknown as { datasync: (fd: number, cb: (err: Error | null) => void) => void; flushSegments: () => Promise<void> };
    const datasync = inner.datasync;
    const held: Array<() => void> = [];
    inner.datasync = (fd, cb) => void held.push(() => datasync(fd, cb));
    await s.put('q', b('one'));
    let [first, second] = [false, false];
    const flushes = [
      inner.flushSegments.call(s).then(() => (first = true)), // the interval's flush, say: it takes the segment
      inner.flushSegments.call(s).then(() => (second = true)), // compaction's, before it deletes a segment
    ];
    for (let i = 0; i < 10; i++) await nextTurn();
    assert.equal(held.length, 1);
    assert.ok(!first && !second, 'a flush was done before the segment was flushed');
    inner.datasync = datasync;
    for (const go of held) go();
    await Promise.all(flushes);
    await s.close();
  });

  it('a record damaged on disk after it was written is never served, nor stepped over: a get and a view fail naming it, until --repair drops it', async () => {
    const d = dir();
    warnings = [];
    let s = await open(d, { segmentBytes: 8 * 2 ** 20 });
    await s.putMany('c', [b('first-message'), b('second-message'), b('third-message')]);
    // Written batches are not kept in memory: what a get hands out comes from the segment.
    const fd = openSync(segFile(d), 'r+');
    const bytes = readFileSync(segFile(d));
    for (const m of ['first-message', 'second-message']) writeSync(fd, b('XXXXX'), 0, 5, bytes.indexOf(m));
    closeSync(fd);
    const named = (pos: number) =>
      new RegExp(`damaged journal record at offset \\d+ of .*0000000001\\.seg \\(queue "c", position ${pos}\\): it stays where it is; .* --repair`);
    await assert.rejects(s.view('c', 2), named(2));
    assert.equal((await s.view('c', 3))?.toString(), 'third-message');
    // The get fails, and takes nothing: the message it could not read is not lost to a later get.
    for (let i = 0; i < 2; i++) await assert.rejects(s.get('c'), named(1));
    assert.equal((await s.status('c')).getpos, 0);
    await s.close();
    // A checkpoint covers them now (a clean close): start-up does not read them, gets still refuse.
    s = await open(d, { segmentBytes: 8 * 2 ** 20 });
    await assert.rejects(s.get('c'), named(1));
    await s.close();
    // An export reads what can be read, and says what it left out.
    warnings = [];
    s = await open(d, { segmentBytes: 8 * 2 ** 20, readOnly: true });
    const dumped: string[] = [];
    for await (const { message } of s.dump('c')) dumped.push(message.toString());
    assert.deepEqual(dumped, ['third-message']);
    assert.match(warnings.join('\n'), /\(queue "c", position 2\): left out/);
    await s.close();
    warnings = [];
    s = await open(d, { segmentBytes: 8 * 2 ** 20, repair: true });
    assert.equal((await s.get('c'))?.message.toString(), 'third-message');
    assert.equal(await s.get('c'), null);
    for (const pos of [1, 2])
      assert.match(
        warnings.join('\n'),
        new RegExp(`damaged journal record at offset \\d+ of .*0000000001\\.seg \\(queue "c", position ${pos}\\): dropped \\(--repair\\)`),
      );
    await s.close();
  });

  it('after a restart, gets read the segments a window at a time: every message intact and in order across segments; a damaged one inside a window is not served', async () => {
    const d = dir();
    warnings = [];
    let s = await open(d, { segmentBytes: 2 * 2 ** 20 });
    const message = (i: number) => b(`message-${i}-`.padEnd(1000, 'x'));
    for (let i = 1; i <= 3000; i += 100)
      await s.putMany(
        'w',
        Array.from({ length: 100 }, (_, k) => message(i + k)),
      );
    await s.close();
    assert.ok(segments(d).length >= 2, 'the messages span segments');
    // Damage message 1500 on disk, well inside a window.
    const file = readdirSync(join(d, 'journal'))
      .filter((f) => f.endsWith('.seg'))
      .map((f) => join(d, 'journal', f))
      .find((f) => readFileSync(f).includes(message(1500)))!;
    const at = readFileSync(file).indexOf(message(1500));
    const fd = openSync(file, 'r+');
    writeSync(fd, b('#'), 0, 1, at + 20);
    closeSync(fd);
    s = await open(d, { segmentBytes: 2 * 2 ** 20 });
    let windows = 0;
    let last: unknown;
    for (let i = 1; i <= 3000; i++) {
      if (i === 1500) {
        // Not served, not stepped over: the get fails until a start with --repair drops it.
        await assert.rejects(s.get('w'), /damaged journal record at offset \d+ of .*\.seg \(queue "w", position 1500\): it stays where it is/);
        await s.close();
        s = await open(d, { segmentBytes: 2 * 2 ** 20, repair: true });
        continue;
      }
      const got = await s.get('w');
      assert.equal(got?.pos, i);
      assert.ok(got!.message.equals(message(i)), `message ${i}`);
      if (inside<unknown>(s, 'ahead') !== last) [windows, last] = [windows + 1, inside<unknown>(s, 'ahead')];
    }
    assert.equal(await s.get('w'), null);
    // 3 MB read in windows of 256 KiB, one more where a segment ends: not one read a message.
    assert.ok(windows >= 12 && windows <= 21, `${windows} windows read`);
    assert.match(warnings.join('\n'), /damaged journal record at offset \d+ of .*\.seg \(queue "w", position 1500\): dropped \(--repair\)/);
    await s.close();
  });
});

describe('journal: delayed messages and dead letters', () => {
  /** Everything a queue holds, as export sees it (`from`: stored messages from that position on). */
  async function holding(s: JournalStore, name: string, from = 0) {
    const dump: Array<[number, string]> = [];
    for await (const m of s.dump(name)) if (m.pos >= from) dump.push([m.pos, m.message.toString()]);
    return {
      status: await s.status(name),
      leases: (await s.leases(name)).sort((x, y) => x.pos - y.pos),
      dump,
      nextExpiry: await s.nextExpiry(name),
    };
  }

  /** A queue with ring messages, delayed ones, dead letters (one redriven), a leased slot and
   * maxdeliveries 2; and a queue that holds nothing but its maxdeliveries. */
  async function fill(s: JournalStore, clock: TestClock): Promise<number[]> {
    await s.maxdeliveries('dq', 2);
    await s.maxdeliveries('setting-only', 5);
    await s.putMany('dq', ['r1', 'r2', 'r3', 'r4'].map(b));
    const later = await s.putMany('dq', ['later1', 'later2'].map(b), 3_600_000);
    const soon = await s.put('dq', b('soon'), 1000);
    assert.deepEqual(later, [FIRST_SLOT, FIRST_SLOT + 1]);
    assert.equal(soon, FIRST_SLOT + 2);
    // r1: nacked twice, a dead letter at once.
    for (let i = 1; i <= 2; i++) {
      const g = await s.get('dq', 100);
      assert.deepEqual([g?.pos, g?.deliveries], [1, i]);
      assert.equal(await s.settle('dq', 1, 'nack', g!.lease), true);
    }
    // r2: its lease ends twice; the get after that sets it aside and hands out r3.
    for (let i = 1; i <= 2; i++) {
      assert.deepEqual((await s.get('dq', 100))?.pos, 2);
      clock.advance(100);
    }
    assert.equal((await s.get('dq', 3_600_000))?.message.toString(), 'r3');
    // 'soon' comes due and is leased at its slot.
    clock.advance(1000);
    const due = await s.get('dq', 3_600_000);
    assert.deepEqual([due?.pos, due?.message.toString()], [soon, 'soon']);
    const dead = (await s.leases('dq')).filter((l) => isDead(l.lease)).map((l) => l.pos);
    assert.deepEqual(dead, [FIRST_SLOT + 3, FIRST_SLOT + 4]);
    // The first dead letter is moved back (due at once), the other stays.
    assert.equal(await s.redrive('dq', 1), 1);
    const st = await s.status('dq');
    assert.deepEqual([st.leased, st.delayed, st.dead, st.maxdeliveries], [2, 3, 1, 2]);
    return dead;
  }

  it('delayed messages, dead letters and maxdeliveries come back as they were: from the records alone (a crash), and from a checkpoint (a clean close)', async () => {
    const clock = new TestClock();
    const d = dir();
    let s = await open(d, { now: clock.now });
    await fill(s, clock);
    const before = await holding(s, 'dq');
    assert.deepEqual(
      before.dump.filter(([pos]) => pos >= FIRST_SLOT),
      [
        [FIRST_SLOT, 'later1'],
        [FIRST_SLOT + 1, 'later2'],
        [FIRST_SLOT + 2, 'soon'],
        [FIRST_SLOT + 3, 'r1'],
        [FIRST_SLOT + 4, 'r2'],
      ],
      'dump holds the messages at slots',
    );
    const list = async (t: JournalStore) => (await t.list('', undefined, 10)).map((q) => [q.name, q.status.maxdeliveries]);
    assert.deepEqual(await list(s), [
      ['dq', 2],
      ['setting-only', 5],
    ]);
    const image = crashImage(d);
    await s.close();
    assert.ok(!existsSync(join(image, 'journal', 'checkpoint')), 'the crash image has no checkpoint: all is replayed');
    const c = decodeCheckpoint(readFileSync(join(d, 'journal', 'checkpoint')));
    const saved = c.queues.find((q) => q.name === 'dq')!;
    assert.equal(saved.s.maxdeliveries, 2);
    assert.equal(saved.slots.length, 4 * 5, 'five entries of slots in the checkpoint');
    for (const [from, replayed] of [
      [image, true],
      [d, false],
    ] as const) {
      s = await open(from, { now: clock.now });
      assert.equal(inside<number>(s, 'replayed') > 0, replayed, from);
      assert.deepEqual(await holding(s, 'dq'), before, from);
      assert.deepEqual(await list(s), [
        ['dq', 2],
        ['setting-only', 5],
      ]);
      // It goes on from there: new slots past the ones held, maxdeliveries applied.
      assert.equal(await s.put('dq', b('new'), 10), FIRST_SLOT + 5);
      const back = await s.get('dq', 100);
      assert.deepEqual([back?.pos, back?.message.toString(), back?.deliveries], [FIRST_SLOT + 3, 'r1', 1], 'the redriven one first');
      assert.equal(await s.settle('dq', back!.pos, 'ack', back!.lease), true);
      assert.equal(await s.view('dq', FIRST_SLOT + 3), null);
      await s.close();
    }
    // A reset clears the setting for good.
    s = await open(d, { now: clock.now });
    await s.reset('dq');
    await s.maxdeliveries('setting-only', 0);
    const image2 = crashImage(d);
    await s.close();
    for (const from of [d, image2]) {
      s = await open(from, { now: clock.now });
      assert.deepEqual(await s.list('', undefined, 10), []);
      assert.deepEqual(await s.status('dq'), { putpos: 0, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
      assert.equal(await s.view('dq', FIRST_SLOT + 4), null);
      await s.close();
    }
  });

  it('a slot whose message went is not used again after a restart, from a checkpoint or a crash: the new message is found, never the old one', async () => {
    for (const crash of [true, false]) {
      const clock = new TestClock();
      let path = dir();
      let s = await open(path, { now: clock.now });
      const restart = async () => {
        const image = crashImage(path);
        await s.close();
        if (crash) path = image;
        s = await open(path, { now: clock.now });
      };
      assert.deepEqual(await s.putMany('re', ['x', 'y'].map(b), 10), [FIRST_SLOT, FIRST_SLOT + 1]);
      clock.advance(10);
      assert.deepEqual(
        (await s.getMany('re', 10)).map((g) => g.message.toString()),
        ['x', 'y'],
      );
      await restart();
      for (const pos of [FIRST_SLOT, FIRST_SLOT + 1]) assert.equal(await s.view('re', pos), null, 'a plain get deleted it');
      // New slots are taken after the last one taken: replayed, the ended leases say which it
      // was; a checkpoint keeps it (one of version 2 did not, and its slots were used again).
      const slot = FIRST_SLOT + 2;
      assert.equal(await s.put('re', b('z'), 10), slot);
      assert.equal((await s.view('re', slot))?.toString(), 'z');
      await restart();
      assert.equal((await s.view('re', slot))?.toString(), 'z', `crash: ${crash}`);
      for (const pos of [FIRST_SLOT, FIRST_SLOT + 1, FIRST_SLOT + 2]) if (pos !== slot) assert.equal(await s.view('re', pos), null);
      assert.deepEqual(await s.leases('re'), [{ pos: slot, lease: { deadline: clock.now() + 10, deliveries: 0 } }]);
      clock.advance(10);
      assert.deepEqual([(await s.get('re'))?.pos, (await s.get('re'))?.pos], [slot, undefined]);
      await restart();
      assert.equal(await s.view('re', slot), null);
      assert.equal(await s.get('re'), null);
      assert.deepEqual(await s.list('', undefined, 10), []);
      await s.close();
    }
  });

  it('dead letters and delayed messages in old segments are copied forward by compaction, and survive it across restarts', async () => {
    const clock = new TestClock();
    const d = dir();
    const ops: string[] = [];
    let s = await open(d, { now: clock.now, observe: (op) => ops.push(op) });
    await s.maxdeliveries('slow', 1);
    await s.putMany('slow', ['dead-1', 'dead-2', 'dead-3'].map(b));
    for (let i = 0; i < 3; i++) {
      const g = await s.get('slow', 1000);
      assert.equal(await s.settle('slow', g!.pos, 'nack'), true);
    }
    await s.putMany('slow', ['delayed-1', 'delayed-2'].map(b), 3_600_000);
    await s.put('slow', b('leased'), 1);
    clock.advance(1);
    assert.equal((await s.get('slow', 3_600_000))?.message.toString(), 'leased');
    // Read messages of the ring leave with their segments: those at slots must not.
    const before = await holding(s, 'slow', FIRST_SLOT);
    assert.deepEqual([before.status.dead, before.status.delayed, before.status.leased], [3, 2, 1]);
    await churn(s);
    assert.ok(!existsSync(segFile(d, 1)), 'the first segment (with the slots) is gone');
    assert.ok(ops.includes('compact'), 'messages were copied forward');
    assert.deepEqual(await holding(s, 'slow', FIRST_SLOT), before);
    const image = crashImage(d);
    await s.close();
    for (const from of [d, image]) {
      s = await open(from, { now: clock.now });
      assert.deepEqual(await holding(s, 'slow', FIRST_SLOT), before, from);
      assert.equal(await s.redrive('slow', 10), 3);
      assert.deepEqual(
        (await s.getMany('slow', 10)).map((g) => g.message.toString()),
        ['dead-1', 'dead-2', 'dead-3'],
      );
      await s.close();
    }
  });

  it('a get that sets many expired leases aside at once has room for their copies: no segment grows past its size', async () => {
    const clock = new TestClock();
    const d = dir();
    const s = await open(d, { now: clock.now });
    await s.maxdeliveries('many', 1);
    const message = (i: number) => b(`${i}-`.padEnd(1024, 'm'));
    for (let i = 0; i < 40; i++) await s.put('many', message(i));
    assert.equal((await s.getMany('many', 40, 100)).length, 40);
    // The current segment left with less room than the copies take.
    const left = () => inside<{ size: number }>(s, 'cur').size - inside<number>(s, 'end');
    while (left() > 10_000) await s.put('filler', Buffer.alloc(1024));
    clock.advance(100);
    // One get finds 40 leases ended for the last time allowed: 40 KiB of copies in one batch.
    assert.equal(await s.get('many'), null);
    assert.equal((await s.status('many')).dead, 40);
    // Segments are made whole before use (SEG, or whole MiB for a larger need); a write past the
    // end would leave a size of neither.
    for (const f of segments(d)) assert.equal(sizeOf(d, f) % SEG, 0, f);
    const image = crashImage(d);
    await s.close();
    for (const from of [image, d]) {
      const t = await open(from, { now: clock.now });
      assert.equal((await t.status('many')).dead, 40);
      assert.equal(await t.redrive('many', 100), 40);
      const back = await t.getMany('many', 100);
      assert.deepEqual(
        back.map((g) => g.message.toString()),
        Array.from({ length: 40 }, (_, i) => message(i).toString()),
      );
      await t.close();
    }
  });

  it('a checkpoint of version 1 (before slots and maxdeliveries) is still read', async () => {
    const d = dir();
    let s = await open(d);
    await s.putMany('old', ['a', 'b', 'c'].map(b));
    const g = await s.get('old', 3_600_000);
    await s.close();
    const file = join(d, 'journal', 'checkpoint');
    const c = decodeCheckpoint(readFileSync(file));
    // The same state, as version 1 wrote it.
    const parts: Buffer[] = [];
    const u32 = (n: number) => void parts.push(Buffer.from(new Uint32Array([n]).buffer));
    const f64 = (n: number) => void parts.push(Buffer.from(new Float64Array([n]).buffer));
    const size = () => parts.reduce((n, p) => n + p.length, 0);
    [0x4a515348, 1, c.seg, c.off, c.segments.length].forEach(u32);
    for (const sg of c.segments) [u32(sg.id), u32(sg.size), f64(sg.live)];
    u32(c.queues.length);
    for (const q of c.queues) {
      parts.push(Buffer.from([q.name.length & 255, q.name.length >> 8]), Buffer.from(q.name, 'latin1'));
      [q.s.putpos, q.s.getpos, q.s.maxqueue, q.leases.length].forEach(u32);
      for (const [pos, l] of q.leases) [u32(pos), f64(l.deadline), u32(l.deliveries)];
      u32(q.entries.length);
      if (size() % 4) parts.push(Buffer.alloc(4 - (size() % 4)));
      parts.push(Buffer.from(q.entries.buffer, q.entries.byteOffset, q.entries.byteLength));
    }
    const body = Buffer.concat(parts);
    const crc = Buffer.alloc(4);
    crc.writeUInt32LE(crc32(body, 0, body.length));
    writeFileSync(file, Buffer.concat([body, crc]));
    s = await open(d);
    assert.equal(inside<number>(s, 'replayed'), 0);
    assert.deepEqual(await s.status('old'), { putpos: 3, getpos: 1, maxqueue: 1_000_000, leased: 1, delayed: 0, dead: 0 });
    assert.deepEqual(await s.leases('old'), [{ pos: 1, lease: { deadline: g!.lease ? Number(g!.lease.split('-')[1]) : 0, deliveries: 1 } }]);
    assert.deepEqual(
      (await s.getMany('old', 5)).map((m) => m.message.toString()),
      ['b', 'c'],
    );
    await s.close();
  });

  it('the position index finds positions in runs with gaps (slots whose messages went, copies made by compaction)', () => {
    const ix = new PositionIndex();
    // Each entry says which it is: its offset is its position, its length the write's number.
    const written = new Map<number, number>();
    let n = 0;
    const add = (pos: number) => (ix.add(pos, 1, pos, ++n), written.set(pos, n));
    const found = (pos: number) => {
      const i = ix.find(pos);
      return i < 0 ? undefined : [ix.pos(i), ix.off(i), ix.len(i)];
    };
    const check = (when: string) => {
      for (const [pos, len] of written) assert.deepEqual(found(pos), [pos, pos, len], `${when}: position ${pos}`);
      for (const pos of [0, 51, FIRST_SLOT + 1, FIRST_SLOT + 299, FIRST_SLOT + 300]) assert.equal(found(pos), undefined, `${when}: position ${pos}`);
    };
    for (let p = 1; p <= 50; p++) add(p); // a run of consecutive positions
    for (let p = FIRST_SLOT; p < FIRST_SLOT + 300; p += 3) add(p); // increasing, with gaps
    for (const p of [20, 21, 22]) add(p); // written again: newer entries, found first
    // 1..50 and the slots make one run (positions increase); 20..22 written again start another.
    const runs = () => inside<number[]>(ix as unknown as JournalStore, 'runs');
    assert.equal(runs().length / 3, 2, `runs: ${runs().join(',')}`);
    check('added');
    // Dropped from the oldest end (the entries move to the front): the runs left still find theirs.
    for (let p = 1; p <= 50; p++) {
      ix.kill(p - 1);
      if (p < 20 || p > 22) written.delete(p);
    }
    ix.trim(() => false);
    check('after a trim');
    ix.kill(ix.find(FIRST_SLOT));
    written.delete(FIRST_SLOT);
    ix.trim(() => false);
    check('after another');
    assert.equal(found(FIRST_SLOT), undefined);
    assert.equal(found(19), undefined);
  });
  it('with maxdeliveries, a get among many due delayed messages looks at a few leases, not at every one due', async () => {
    const clock = new TestClock();
    const s = await open(dir(), { now: clock.now, segmentBytes: 8 * 2 ** 20 });
    await s.maxdeliveries('q', 5);
    for (let i = 0; i < 10; i++)
      await s.putMany(
        'q',
        Array.from({ length: 1000 }, () => b('x')),
        1000,
      );
    clock.advance(1000);
    const leases = inside<Map<string, { leases: { dueInOrder: (at: number) => Iterable<unknown> } }>>(s, 'queues').get('q')!.leases;
    const dueInOrder = leases.dueInOrder;
    let looked = 0;
    leases.dueInOrder = function* (this: unknown, at: number) {
      for (const l of dueInOrder.call(this, at)) {
        looked++;
        yield l;
      }
    };
    for (let i = 0; i < 10; i++) assert.equal((await s.get('q'))?.message.toString(), 'x');
    assert.ok(looked <= 100, `${looked} due leases looked at for 10 gets`);
    await s.close();
  });
});

describe('journal: failures', () => {
  it('a full disk: puts are refused with DiskLowError once no new segment can be made, gets go on, puts resume when there is room', async () => {
    const d = dir();
    let free = 2 ** 40;
    const s = await open(d, { diskFree: () => free });
    await s.putMany('q', [b('kept')]);
    free = 0;
    let refused: unknown;
    for (let i = 0; i < 200 && !refused; i++) await s.put('q', Buffer.alloc(1024, 1)).catch((err: unknown) => (refused = err));
    assert.ok(refused instanceof DiskLowError, String(refused));
    await assert.rejects(s.check(), DiskLowError);
    assert.equal((await s.get('q'))?.message.toString(), 'kept');
    assert.equal((await s.getMany('q', 5)).length, 5);
    free = 2 ** 40;
    await s.check();
    assert.ok((await s.put('q', b('again'))) > 0);
    await s.close();
  });

  it('a full disk (a small tmpfs) from the roll-over on: consumers get and ack every message, the segments they read go (their checkpoints have room), puts resume', {
    skip: canMount(),
  }, async () => {
    const root = dir();
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', root]);
    let s: JournalStore | undefined;
    try {
      warnings = [];
      const told: boolean[] = [];
      const d = join(root, 'db');
      // Segments as the disk's size makes them (1 MiB).
      s = await open(d, { segmentBytes: undefined, onDiskFull: (full) => told.push(full) });
      let puts = 0;
      const put = () => s!.put('q', msg(puts + 1)).then(() => ++puts);
      // Once the next segment is made, another program takes the rest of the disk: the roll-over's
      // checkpoint, which the segment read first waits for, meets the full disk.
      while (!inside(s, 'spare')) await put();
      const fd = openSync(join(root, 'filler'), 'w');
      assert.throws(() => {
        for (;;) writeSync(fd, Buffer.alloc(4096, 1));
      }, /ENOSPC/);
      closeSync(fd);
      await assert.rejects(async () => {
        for (;;) await put();
      }, DiskLowError);
      assert.ok(inside<{ id: number }>(s, 'cur').id === 2 && puts > 1500, `${puts} messages stored`);
      for (let pos = 1; pos <= puts; pos++) {
        const got = await s.get('q', 60_000);
        assert.equal(got?.message.toString(), msg(pos).toString(), `message ${pos}`);
        assert.equal(await s.settle('q', pos, 'ack', got!.lease), true);
      }
      assert.doesNotMatch(warnings.join('\n'), /checkpoint not written/);
      // The segments read went: there is room for puts again.
      await compacted(s);
      await s.check();
      assert.equal(await s.put('q', b('again')), puts + 1);
      assert.deepEqual(told, [true, false]);
      await s.close();
      s = await open(d);
      assert.equal((await s.get('q'))?.message.toString(), 'again');
    } finally {
      await s?.close();
      execFileSync('umount', [root]);
    }
  });

  it("puts wait for the next checkpoint's room as for a segment: refused when it cannot grow, gets go on; the checkpoint fits in it, with what puts leave to the others", async () => {
    const d = dir();
    let free = 2 ** 40;
    const s = await open(d, { segmentBytes: 8 * 2 ** 20, diskFree: () => free });
    await inside<Promise<void>>(s, 'ckptFiles'); // the room made at start-up
    free = 0;
    let refused: unknown;
    for (let i = 0; i < 100 && !refused; i++)
      await s
        .putMany(
          'q',
          Array.from({ length: 1000 }, () => b('m')),
        )
        .catch((err: unknown) => (refused = err));
    assert.ok(refused instanceof DiskLowError && /no room for the next journal checkpoint/.test(refused.message), String(refused));
    assert.equal((await s.getMany('q', 1000)).length, 1000);
    const room = statSync(join(d, 'journal', 'checkpoint.room')).size;
    await inside<() => Promise<void>>(s, 'checkpoint').call(s);
    const size = statSync(join(d, 'journal', 'checkpoint')).size;
    assert.ok(size > 100_000 && size <= room - 256 * 1024, `a checkpoint of ${size} bytes, a room of ${room}`);
    free = 2 ** 40;
    await s.check();
    assert.ok((await s.put('q', b('again'))) > 0);
    await s.close();
  });

  it('no file descriptor left for the next segment: puts are refused, gets go on, and puts resume once one can be opened', async () => {
    const d = dir();
    warnings = [];
    const s = await open(d);
    const inner = s as unknown as { openFile: (...a: unknown[]) => number };
    const openFile = inner.openFile;
    inner.openFile = () => {
      throw Object.assign(new Error('EMFILE: too many open files, open'), { code: 'EMFILE' });
    };
    let refused: unknown;
    let puts = 0;
    for (let i = 0; i < 100 && !refused; i++)
      await s.put('q', msg(i)).then(
        () => puts++,
        (err: unknown) => (refused = err),
      );
    assert.ok(refused instanceof DiskLowError, String(refused));
    assert.match(warnings.join('\n'), /cannot make a journal segment: EMFILE/);
    assert.equal((await s.get('q'))?.message.toString(), msg(0).toString());
    inner.openFile = openFile;
    await s.check();
    for (let i = puts; i < puts + 100; i++) await s.put('q', msg(i));
    const got = await s.getMany('q', 1000);
    assert.deepEqual(
      got.map((g) => g.message.toString()),
      Array.from({ length: puts + 99 }, (_, k) => msg(k + 1).toString()),
    );
    await s.close();
  });

  it('a checkpoint that cannot be put in place leaves no checkpoint.tmp behind, which would hold its room on a full disk', async () => {
    const d = dir();
    warnings = [];
    const s = await open(d);
    mkdirSync(join(d, 'journal', 'checkpoint', 'in-the-way'), { recursive: true }); // the rename fails
    for (let i = 0; i < 70; i++) await s.put('q', msg(i)); // a roll-over: a checkpoint
    await checkpointed(s);
    assert.match(warnings.join('\n'), /journal checkpoint not written/);
    assert.ok(!existsSync(join(d, 'journal', 'checkpoint.tmp')), 'checkpoint.tmp is left');
    await s.close();
  });

  it('a segment that cannot be opened now (no file descriptor left) fails the get: nothing is stepped over, and all comes later', async () => {
    const d = dir();
    let s = await open(d);
    const sent = Array.from({ length: 200 }, (_, i) => msg(i));
    for (const m of sent) await s.put('q', m);
    await s.close();
    assert.ok(segments(d).length >= 3, `${segments(d).length} segments`);
    // Opened again, the store opens a segment when it first reads from it: all but the first fail.
    s = await open(d);
    const inner = s as unknown as { openFile: (path: string, flags: number) => number };
    const openFile = inner.openFile;
    inner.openFile = (path, flags) => {
      if (path !== segFile(d, 1)) throw Object.assign(new Error(`EMFILE: too many open files, open '${path}'`), { code: 'EMFILE' });
      return openFile(path, flags);
    };
    // A batch hands out what it could read, and stops at what it could not.
    const first = await s.getMany('q', 200);
    assert.ok(first.length > 0 && first.length < 200, `${first.length} handed out`);
    assert.deepEqual(
      first.map((m) => m.message),
      sent.slice(0, first.length),
    );
    for (const take of [() => s.get('q'), () => s.get('q', 60_000), () => s.getMany('q', 10)]) {
      await assert.rejects(take(), (err) => err instanceof StoreError && /journal read failed .*EMFILE/.test(err.message));
    }
    await assert.rejects(s.range('q', 1, 200), /EMFILE/);
    assert.deepEqual(await s.status('q'), { putpos: 200, getpos: first.length, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
    // Descriptors free again: the rest comes out, in order, after a restart too.
    inner.openFile = openFile;
    const next = await s.get('q');
    assert.deepEqual(next?.message, sent[first.length]);
    await s.close();
    s = await open(d);
    const rest = await s.getMany('q', 200);
    assert.deepEqual(
      rest.map((m) => m.message),
      sent.slice(first.length + 1),
    );
    await s.close();
  });

  it('a failed write fences the store: its operations fail, memory is read back from disk, and the store goes on', async () => {
    const d = dir();
    const s = await open(d);
    await s.put('q', b('one'));
    const inner = s as unknown as { writeFile: (...a: unknown[]) => void };
    const write = inner.writeFile;
    inner.writeFile = (...args: unknown[]) => {
      inner.writeFile = write;
      (args.at(-1) as (err: Error) => void)(Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' }));
    };
    const [failed, behind] = await Promise.allSettled([s.put('q', b('two')), s.get('q')]);
    for (const r of [failed, behind]) {
      assert.equal(r.status, 'rejected');
      assert.ok(r.reason instanceof StoreError && /journal write failed: EIO/.test(r.reason.message));
    }
    await assert.rejects(s.check(), /journal write failed/);
    // Compaction, which stops while fenced, starts again once memory is read back.
    let compactions = 0;
    const compact = (s as unknown as { compact: () => Promise<void> }).compact;
    (s as unknown as { compact: () => Promise<void> }).compact = function (this: unknown) {
      compactions++;
      return compact.call(this);
    };
    for (let i = 0; i < 100 && inside(s, 'fence'); i++) await nextTurn();
    await compacted(s);
    assert.ok(compactions > 0, 'compaction did not start again after the reload');
    assert.deepEqual(await s.status('q'), { putpos: 1, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
    assert.equal(await s.put('q', b('three')), 2);
    await s.check();
    assert.equal((await s.get('q'))?.message.toString(), 'one');
    await s.close();
  });
  it('a write that reached the file but failed (a flush error) is not read back: a get whose client was told it failed is not counted done', async () => {
    const d = dir();
    let s = await open(d);
    await s.putMany('q', [b('one'), b('two')]);
    const inner = s as unknown as { writeFile: (...a: unknown[]) => void };
    const write = inner.writeFile;
    inner.writeFile = (...args: unknown[]) => {
      inner.writeFile = write;
      const done = args.at(-1) as (err: Error | null) => void;
      // The bytes are written, then the write reports an error, as O_DSYNC does when the flush fails.
      (write as (...a: unknown[]) => void)(...args.slice(0, -1), () => done(Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' })));
    };
    await assert.rejects(s.get('q', 60_000), /journal write failed: EIO/);
    for (let i = 0; i < 100 && inside(s, 'fence'); i++) await nextTurn();
    assert.deepEqual(await s.status('q'), { putpos: 2, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
    await s.close();
    s = await open(d);
    assert.equal((await s.status('q')).getpos, 0);
    assert.deepEqual(
      (await s.getMany('q', 10)).map((g) => g.message.toString()),
      ['one', 'two'],
    );
    await s.close();
  });

  it('a write that fails while compaction runs stops it: segments memory only thought dead (a get whose write failed) are not deleted', async () => {
    const d = dir();
    const s = await open(d);
    const inner = s as unknown as { compactSoon: () => void; copyForward: (seg: unknown) => Promise<void>; writeFile: (...a: unknown[]) => void };
    const compactSoon = inner.compactSoon;
    inner.compactSoon = () => {}; // held back while the segments fill
    // Segments 1 to 3 each hold one queue's unread messages, and read ones (sparse).
    for (const name of ['v', 'w', 'x']) {
      await s.putMany(name, [msg(1), msg(2), msg(3)]);
      for (let i = 0; i < 70; i++) await s.put('fast', msg(i)).then(() => s.get('fast'));
    }
    await checkpointed(s);
    // Compaction copies segment 1 (the sparsest) forward; meanwhile a get of all of 'v' fails to be written.
    const copyForward = inner.copyForward;
    const write = inner.writeFile;
    inner.copyForward = async function (this: unknown, seg: unknown) {
      inner.copyForward = copyForward;
      inner.writeFile = (...args: unknown[]) => {
        inner.writeFile = write;
        (args.at(-1) as (err: Error) => void)(Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' }));
      };
      await assert.rejects(s.getMany('v', 3), /journal write failed: EIO/);
      // Held back again: the compaction that starts once memory is read back (it may copy segment 1
      // forward, rightly) is not the one under test.
      inner.compactSoon = () => {};
      return copyForward.call(this, seg);
    };
    inner.compactSoon = compactSoon;
    inner.compactSoon.call(s);
    await compacted(s);
    for (let i = 0; i < 100 && inside(s, 'fence'); i++) await nextTurn();
    assert.ok(existsSync(segFile(d, 1)), 'the segment of the unread messages is there');
    assert.deepEqual(
      (await s.getMany('v', 3)).map((g) => g.message.toString().slice(0, 3)),
      ['m1-', 'm2-', 'm3-'],
    );
    await s.close();
  });
});

describe('journal: choosing the engine', () => {
  it('a new directory gets LMDB, or a journal with --engine journal; each directory keeps its engine; --engine or --workers against the directory are refused with the way out', async () => {
    const fresh = dir();
    let server = await startServer({ dir: fresh, args: ['--engine', 'journal'] });
    await server.stop();
    assert.ok(existsSync(join(fresh, 'journal')) && !existsSync(join(fresh, 'data.mdb')));
    // Without --engine, it keeps its journal.
    server = await startServer({ dir: fresh });
    assert.match(server.stderr(), /listening on .*, journal in /);
    await server.stop();
    const lmdb = dir();
    server = await startServer({ dir: lmdb });
    await request(server.port, 'GET', '/?name=q&opt=put&data=x');
    await server.stop();
    server = await startServer({ dir: lmdb });
    assert.equal((await request(server.port, 'GET', '/?name=q&opt=get')).body.toString(), 'x');
    assert.match(server.stderr(), /listening on .*, lmdb in /);
    await server.stop();
    assert.ok(!existsSync(join(lmdb, 'journal')));
    const start = async (d: string, ...args: string[]) => runCli(['-l', '127.0.0.1', '-p', String(await freePort()), '-x', d, '-i', join(d, 'pid'), ...args]);
    let r = await start(lmdb, '--engine', 'journal');
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^httpsqs: --engine journal: .* holds an LMDB database \(data\.mdb\); move its queues with: httpsqs export -x .* \| httpsqs import -x NEWDIR -/,
    );
    r = await start(fresh, '--workers', '2');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^httpsqs: --workers 2: the journal engine is one process's/);
    // export and import say it the same way.
    r = await runCli(['import', '--engine', 'journal', '-x', lmdb, '-']);
    assert.equal(r.stderr, `httpsqs: import: --engine journal: ${lmdb} holds an LMDB database (data.mdb)\n`);
    r = await runCli(['import', '-x', lmdb]);
    assert.match(r.stderr, /^httpsqs: import: give one file/);
    // export reads a journal next to its running server; import makes a journal in a new directory when asked.
    server = await startServer({ dir: fresh });
    await request(server.port, 'GET', '/?name=e&opt=put&data=exported');
    const out = await runCli(['export', '-x', fresh]);
    await server.stop();
    assert.equal(out.code, 0, out.stderr);
    const moved = dir();
    const file = join(moved, 'export.jsonl');
    writeFileSync(file, out.stdout);
    const imported = join(moved, 'data');
    assert.equal((await runCli(['import', '--engine', 'journal', '-x', imported, file])).code, 0);
    assert.ok(existsSync(join(imported, 'journal')));
    server = await startServer({ dir: imported });
    assert.equal((await request(server.port, 'GET', '/?name=e&opt=get')).body.toString(), 'exported');
    await server.stop();
  });
});

it('start-up on a journal of 100,000 messages of 1 KiB replays nothing after a clean close, one segment at most after a crash (times printed)', async (t) => {
  const d = dir();
  let s = await JournalStore.open({ path: d });
  const message = Buffer.alloc(1024, 109);
  for (let i = 0; i < 100; i++)
    await s.putMany(
      'scale',
      Array.from({ length: 1000 }, () => message),
    );
  const image = crashImage(d);
  await s.close();
  const time = async (from: string) => {
    const t0 = performance.now();
    s = await JournalStore.open({ path: from });
    const ms = performance.now() - t0;
    const replayed = inside<number>(s, 'replayed');
    assert.equal((await s.status('scale')).putpos, 100_000);
    await s.close();
    return { ms, replayed };
  };
  const clean = await time(d);
  const crashed = await time(image);
  // Loading the checkpoint grows with the messages (16 bytes each in it); the replay after a crash
  // is of one segment at most (64 MiB: about 62,000 puts of 1 KiB), whatever the size.
  const load4g = clean.ms * ((4 * 2 ** 30) / (100_000 * 1024));
  const replaySegment = ((crashed.ms - clean.ms) / crashed.replayed) * ((64 * 2 ** 20) / 1050);
  t.diagnostic(
    `open after a clean close ${clean.ms.toFixed(0)} ms, after a crash ${crashed.ms.toFixed(0)} ms (${crashed.replayed} records replayed); ` +
      `for 4 GiB: about ${load4g.toFixed(0)} ms, plus at most ${replaySegment.toFixed(0)} ms of replay after a crash`,
  );
  // What start-up reads is bounded: nothing is replayed after a clean close, at most the records
  // after the last checkpoint (one segment's) after a crash. The time on a multi-GB directory is
  // measured by `npm run bench:scale` (BENCHMARKS.md), not asserted here.
  assert.equal(clean.replayed, 0);
  assert.ok(crashed.replayed > 0 && crashed.replayed <= Math.ceil((64 * 2 ** 20) / 1050), `${crashed.replayed} records replayed after a crash`);
});
