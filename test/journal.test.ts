/**
 * The journal engine's own promises (src/store/journal/): a torn or damaged tail recovers to the
 * last whole batch at every offset, damage in the middle is refused (and --repair drops it), and
 * checkpoints bound the replay. A "crash image" is a copy of the files while the store runs: every
 * acknowledged write is on disk by then (O_DSYNC), nothing else is promised. Space, memory and
 * failures are in journal-space.test.ts; delayed messages, choosing the engine and start-up in
 * journal-engine.test.ts; the helpers in journal-helpers.ts.
 */
import assert from 'node:assert/strict';
import fs, {
  closeSync,
  existsSync,
  linkSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { crc32 } from '../src/store/journal/crc32.js';
import { decodeCheckpoint } from '../src/store/journal/files.js';
import type { PositionIndex } from '../src/store/journal/positions.js';
import { Batch, BATCH_BYTES, messageStart, T } from '../src/store/journal/records.js';
import { JournalDamaged, type JournalStore, Queues } from '../src/store/journal/store.js';
import { cleanup, freePort, request, runCli, startServer } from './helpers.js';
import {
  b,
  batchesOf,
  SEG,
  dir,
  warnings,
  open,
  crashImage,
  segFile,
  segments,
  inside,
  checkpointed,
  msg,
  sevenBatches,
  withSegment,
  expectState,
  fill,
  compacted,
} from './journal-helpers.js';

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
      warnings.length = 0;
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

  it('a segment shorter than the checkpoint says it was made is refused, naming the file and --repair: its cut part is not a torn write, and acknowledged gets must not come undone', async () => {
    const d = dir();
    const s = await open(d);
    for (let i = 1; i <= 6; i++) await s.put('q', b(`message ${i}`));
    await checkpointed(s); // the checkpoint of the start, which knows the segment's size
    for (let i = 1; i <= 4; i++) assert.equal((await s.get('q'))?.message.toString(), `message ${i}`);
    const image = crashImage(d);
    await s.close();
    const clean = crashImage(d);
    // A crash image (gets after the checkpoint) and a clean close (everything before it), each cut
    // inside the gets, or before the checkpoint's offset, or to nothing.
    const ends = batchesOf(readFileSync(segFile(image)));
    for (const [from, cut] of [
      [image, ends.at(-2)![0] + 3],
      [image, 0],
      [clean, ends.at(-1)![1] - 10],
      [clean, 0],
    ] as const) {
      const t = dir();
      fs.cpSync(join(from, 'journal'), join(t, 'journal'), { recursive: true });
      fs.truncateSync(segFile(t), cut);
      await assert.rejects(open(t), (err: Error) => {
        assert.ok(err instanceof JournalDamaged, `${err}`);
        assert.match(err.message, new RegExp(`journal segment .*0000000001\\.seg is ${cut} bytes, shorter than the ${SEG} it was made with.*--repair`));
        return true;
      });
      warnings.length = 0;
      const r = await open(t, { repair: true });
      assert.match(warnings.join('\n'), /0000000001\.seg is \d+ bytes, shorter than .*--repair/);
      // --repair takes what is left as it is (the records cut are gone, and said so).
      await r.put('q', b('after'));
      await r.close();
      await (await open(t)).close(); // repaired for good
    }
  });

  it('a journal whose checkpoint is missing after segments were let go is refused, naming the file: replayed from the segments left, gets would be undone', async () => {
    const d = dir();
    const s = await open(d);
    for (let n = 1; n <= 200; n++) await s.put('q', msg(n));
    for (let n = 1; n <= 150; n++) assert.equal((await s.get('q'))?.message.subarray(0, 5).toString(), msg(n).subarray(0, 5).toString());
    await checkpointed(s);
    await compacted(s);
    await s.close();
    assert.ok(!segments(d).includes('0000000001.seg'), 'segment 1 was not let go');
    const t = dir();
    fs.cpSync(join(d, 'journal'), join(t, 'journal'), { recursive: true });
    fs.rmSync(join(t, 'journal', 'checkpoint'));
    await assert.rejects(open(t), (err: Error) => {
      assert.ok(err instanceof JournalDamaged, `${err}`);
      assert.match(err.message, /journal checkpoint .*checkpoint is missing, and the segments before .*0+3\.seg are gone.*--repair/);
      return true;
    });
    warnings.length = 0;
    await (await open(t, { repair: true })).close();
    assert.match(warnings.join('\n'), /checkpoint is missing.*--repair/);
    // A new journal, and one killed before its first checkpoint (segment 1 still there), open.
    const n = dir();
    await (await open(n)).close();
    fs.rmSync(join(n, 'journal', 'checkpoint'));
    await (await open(n)).close();
  });

  it('a byte flipped anywhere in the last batch drops that batch; never a damaged message', async () => {
    const { seg, bounds } = await sevenBatches();
    const [start, end] = bounds.at(-1)!;
    for (let at = start; at < end; at++) {
      const flipped = Buffer.from(seg);
      flipped[at]! ^= 0x41;
      const d = withSegment(flipped);
      warnings.length = 0;
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
      const descriptors = readdirSync('/proc/self/fd').length;
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
      // A start that failed leaves no descriptor open (an export retries its read-only open).
      assert.equal(readdirSync('/proc/self/fd').length, descriptors, `descriptors left open, flip at ${at}`);
      warnings.length = 0;
      const s = await open(d, { repair: true });
      await expectState(s, 5, 0);
      assert.match(warnings.join('\n'), /damaged journal tail dropped: .*\(--repair\)/);
      await s.close();
      // Repaired for good: it opens without --repair now.
      await (await open(d)).close();
      cleanup(d);
    }
  });

  it('a batch forged inside a message of a write cut short is not taken for intact records: the torn tail is dropped, the journal starts', async () => {
    const d = dir();
    const s = await open(d);
    await s.put('q', b('message 1'));
    const image = crashImage(d);
    const start = batchesOf(readFileSync(segFile(image))).at(-1)![1];
    // The next put's message, from a client that knows where it will land: a valid batch (this
    // segment, its own offset) two pages into the message, with a put of its own.
    const at = start + BATCH_BYTES + messageStart('q') + 8192;
    const forged = new Batch(1, at);
    forged.add(T.put, 'evil', [1], b('forged'));
    forged.seal();
    const message = Buffer.concat([Buffer.alloc(8192, 'p'), forged.buf.subarray(0, forged.used), Buffer.alloc(4096, 'p')]);
    await s.put('q', message);
    const written = readFileSync(segFile(d));
    await s.close();
    // A power loss in that write: its header and last pages reached the disk, a page between did not.
    const torn = Buffer.from(written.subarray(0, SEG));
    torn.fill(0, start + 4096, start + 8192);
    const t = withSegment(torn);
    warnings.length = 0;
    const r = await open(t);
    assert.deepEqual(await r.status('q'), { putpos: 1, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
    assert.equal((await r.status('evil')).putpos, 0);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, new RegExp(`torn journal tail dropped: \\d+ bytes at offset ${start} of `));
    await r.close();
  });

  it('a start killed while it zeroes a torn tail leaves the header of that tail: a batch forged inside its message never stops the next start', async () => {
    const d = dir();
    const size = 16 * 2 ** 20;
    const s = await open(d, { segmentBytes: size });
    await s.put('q', b('message 1'));
    const start = batchesOf(readFileSync(segFile(d))).at(-1)![1];
    // A message of 6 MiB with a valid batch (this segment, its own offset) 5 MiB into it: a
    // torn tail longer than the 4 MiB that start-up zeroes at a time.
    const at = start + BATCH_BYTES + messageStart('q') + 5 * 2 ** 20;
    const forged = new Batch(1, at);
    forged.add(T.put, 'evil', [1], b('forged'));
    forged.seal();
    const message = Buffer.concat([Buffer.alloc(5 * 2 ** 20, 'p'), forged.buf.subarray(0, forged.used), Buffer.alloc(2 ** 20, 'p')]);
    await s.put('q', message);
    const written = readFileSync(segFile(d));
    await s.close();
    // That write torn by a power loss (a page missing): the start drops it, zeroing it a piece at
    // a time, and is killed after the first piece.
    const torn = Buffer.from(written);
    torn.fill(0, start + 4096, start + 8192);
    const t = withSegment(torn);
    const real = fs.writeSync;
    let pieces = 0;
    fs.writeSync = ((fd: number, buf: Buffer, ...rest: unknown[]) => {
      if (buf.length === 4 * 2 ** 20 && !buf.some((x) => x !== 0) && ++pieces > 1) throw new Error('killed');
      return (real as (...a: unknown[]) => number)(fd, buf, ...rest);
    }) as typeof fs.writeSync;
    syncBuiltinESMExports();
    try {
      await assert.rejects(open(t, { segmentBytes: size }), /killed/);
    } finally {
      fs.writeSync = real;
      syncBuiltinESMExports();
    }
    warnings.length = 0;
    const r = await open(t, { segmentBytes: size });
    assert.equal((await r.status('q')).putpos, 1);
    assert.equal((await r.status('evil')).putpos, 0);
    assert.match(warnings.join('\n'), /torn journal tail dropped/);
    await r.close();
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

describe('journal: checkpoints, replay and restarts', () => {
  it("a touched lease's grant comes back from its record after a crash, and from the checkpoint", async () => {
    const d = dir();
    const s = await open(d);
    await s.put('t', b('job'));
    const job = (await s.get('t', 60_000))!;
    assert.equal(await s.touch('t', 1, 120_000, job.lease), job.lease);
    const [held] = await s.leases('t');
    assert.ok(held?.lease.granted, 'touched, the lease keeps the deadline it was granted with');
    const image = crashImage(d);
    await s.close();
    for (const from of [image, d]) {
      const r = await open(from);
      assert.deepEqual(await r.leases('t'), [held], from === d ? 'from the checkpoint' : 'replayed');
      assert.equal(await r.settle('t', 1, 'ack', job.lease), true);
      await r.close();
      cleanup(from);
    }
  });

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
    const atPut = { writing: existsSync(tmp), inPlace: statSync(file).size > 8_000_000 }; // the one made with the journal is small
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

  it('a checkpoint of many small queues takes a few writes, not a few for each queue; each comes back whole', async () => {
    const d = dir();
    const s = await open(d);
    const n = 3000;
    for (let i = 0; i < n; i += 100) await Promise.all(Array.from({ length: 100 }, (_, k) => s.putMany(`q${i + k}`, [b(`m${i + k}`), b('second')])));
    // One big queue past the stage (its index is written straight from the index's pieces).
    await s.putMany(
      'big',
      Array.from({ length: 5000 }, (_, k) => b(`b${k}`)),
    );
    await checkpointed(s);
    const real = fs.write;
    let writes = 0;
    fs.write = ((...args: unknown[]) => {
      writes++;
      return (real as (...a: unknown[]) => void)(...args);
    }) as typeof fs.write;
    syncBuiltinESMExports();
    try {
      await s.close();
    } finally {
      fs.write = real;
      syncBuiltinESMExports();
    }
    assert.ok(writes < 50, `the checkpoint of ${n} queues took ${writes} writes`);
    const r = await open(d);
    assert.equal(inside<number>(r, 'replayed'), 0, 'everything came from the checkpoint');
    for (const i of [0, 1, 1234, n - 1]) {
      assert.deepEqual(await r.view(`q${i}`, 1), b(`m${i}`));
      assert.deepEqual(await r.view(`q${i}`, 2), b('second'));
    }
    assert.deepEqual(await r.view('big', 4321), b('b4320'));
    assert.equal((await r.status('big')).putpos, 5000);
    await r.close();
  });

  it('a clean close after no write keeps the checkpoint that covers everything instead of writing it again; the next start replays nothing', async () => {
    const d = dir();
    let s = await open(d);
    await s.putMany('kept', [b('one'), b('two')]);
    await s.close();
    const file = join(d, 'journal', 'checkpoint');
    const written = statSync(file).ino;
    s = await open(d);
    assert.deepEqual(await s.view('kept', 2), b('two'));
    await s.close();
    assert.equal(statSync(file).ino, written, 'the checkpoint was not written again');
    s = await open(d);
    assert.equal(inside<number>(s, 'replayed'), 0);
    await s.get('kept');
    await s.close();
    assert.notEqual(statSync(file).ino, written, 'after a write it is');
    s = await open(d);
    assert.equal(inside<number>(s, 'replayed'), 0);
    assert.deepEqual(await s.status('kept'), { putpos: 2, getpos: 1, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
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
    warnings.length = 0;
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

describe('journal: read-only, next to a server that writes', () => {
  it('a segment the server moved past while it was read is read to its end before the next: no later batch without an earlier one', async () => {
    // The server's files at two moments: early (segment 1 partly written), late (segment 1 full,
    // segment 2 begun). The reader opens the early files; as it first reads segment 2, the late
    // bytes are put in place, as the server's writes would have landed meanwhile. Before, it
    // read segment 2 and never the rest of segment 1: positions in the middle had no message,
    // and an export of that state (exit 0) lost them.
    const d = dir();
    const w = await open(d);
    let n = 0;
    while (n < 5) await w.put('q', msg(++n));
    const early = crashImage(d);
    while (inside<{ id: number }>(w, 'cur').id < 2 || inside<number>(w, 'end') === 0) await w.put('q', msg(++n));
    await w.put('q', msg(++n));
    const late = crashImage(d);
    await w.close();
    if (!existsSync(segFile(early, 2))) writeFileSync(segFile(early, 2), Buffer.alloc(statSync(segFile(late, 2)).size));
    const target = realpathSync(segFile(early, 2));
    let moved = false;
    const real = fs.readSync;
    fs.readSync = ((fd: number, ...rest: unknown[]) => {
      if (!moved && readlinkSync(`/proc/self/fd/${fd}`) === target) {
        moved = true;
        for (const id of [1, 2]) {
          const bytes = readFileSync(segFile(late, id));
          const out = openSync(segFile(early, id), 'r+');
          writeSync(out, bytes, 0, bytes.length, 0);
          closeSync(out);
        }
      }
      return (real as (...a: unknown[]) => number)(fd, ...rest);
    }) as typeof fs.readSync;
    syncBuiltinESMExports();
    let r: JournalStore;
    try {
      r = await open(early, { readOnly: true });
    } finally {
      fs.readSync = real;
      syncBuiltinESMExports();
    }
    try {
      assert.ok(moved, 'segment 2 was read');
      const { putpos } = await r.status('q');
      const missing: number[] = [];
      for (let pos = 1; pos <= putpos; pos++) if (!(await r.view('q', pos))?.equals(msg(pos))) missing.push(pos);
      assert.deepEqual(missing, [], `putpos ${putpos}`);
      assert.equal(putpos, n);
    } finally {
      await r.close();
    }
  });
});

it('journal: the queue names in byte order stay right as queues come and go between pages, and a page after a change sorts only what changed', () => {
  const byBytes = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  fc.assert(
    fc.property(
      fc.array(fc.oneof(fc.record({ op: fc.constantFrom('set', 'delete'), name: fc.string({ maxLength: 3 }) }), fc.constant({ op: 'names', name: '' })), {
        maxLength: 200,
      }),
      (ops) => {
        const q = new Queues();
        const model = new Set<string>();
        for (const { op, name } of ops) {
          if (op === 'set') [q.set(name, {} as never), model.add(name)];
          else if (op === 'delete') assert.equal(q.delete(name), model.delete(name));
          else assert.deepEqual(q.names(), [...model].sort(byBytes));
        }
        assert.deepEqual(q.names(), [...model].sort(byBytes));
      },
    ),
  );
  const q = new Queues();
  for (let i = 0; i < 100_000; i++) q.set(`q${(i * 7919) % 100_003}`, {} as never);
  q.names();
  const sort = Array.prototype.sort;
  const sorted: number[] = [];
  Array.prototype.sort = function (this: unknown[], ...args: unknown[]) {
    sorted.push(this.length);
    return (sort as (...a: unknown[]) => unknown[]).apply(this, args);
  } as typeof sort;
  try {
    q.set('new', {} as never);
    q.delete('q7919');
    assert.equal(q.from('new', true), q.names().indexOf('new'));
  } finally {
    Array.prototype.sort = sort;
  }
  assert.ok(Math.max(0, ...sorted) < 10, `sorted arrays of ${sorted} names`);
  assert.equal(q.names().length, 100_000);
  assert.ok(!q.names().includes('q7919'));
});
