/**
 * The journal engine (src/store/journal/): compaction gives space back, memory stays bounded, and
 * failures (a full disk, no file descriptor, failed writes) damage nothing. Helpers in
 * journal-helpers.ts; the rest of the journal's promises in journal.test.ts.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { preallocate } from '../src/store/journal/files.js';
import type { JournalStore } from '../src/store/journal/store.js';
import { DiskLowError, StoreError } from '../src/store/store.js';
import { canMount } from './helpers.js';
import { b, SEG, dir, warnings, open, crashImage, segFile, segments, sizeOf, diskUse, inside, checkpointed, msg, compacted, churn } from './journal-helpers.js';

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
    warnings.length = 0;
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
    warnings.length = 0;
    s = await open(d, { segmentBytes: 8 * 2 ** 20, readOnly: true });
    const dumped: string[] = [];
    for await (const { message } of s.dump('c')) dumped.push(message.toString());
    assert.deepEqual(dumped, ['third-message']);
    assert.match(warnings.join('\n'), /\(queue "c", position 2\): left out/);
    await s.close();
    warnings.length = 0;
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
    warnings.length = 0;
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

  it('a put that fits the next segment is taken there, though it leaves less than puts may use of a segment with no next one made', async () => {
    // Before, the check that rolled over to the next segment was made once more after it, with no
    // next segment left, and the put was refused as if the disk were full: every other put of
    // nearly a segment's size (a small disk's segments, a raised --max-message-bytes).
    const told: boolean[] = [];
    const segment = 2 ** 20;
    const s = await open(dir(), { segmentBytes: segment, onDiskFull: (full) => told.push(full) });
    // Leaves less of a segment than the eighth that puts leave to the others while no next one is made.
    const big = Buffer.alloc(segment - 100 * 1024, 'm');
    for (let i = 1; i <= 4; i++) assert.equal(await s.put('q', big), i);
    assert.deepEqual(told, []);
    for (let i = 1; i <= 4; i++) assert.ok((await s.get('q'))?.message.equals(big), `message ${i}`);
    await s.close();
  });

  it('a segment the disk takes only part of (a short write, no error, as tmpfs does when full) is never put in place', { skip: canMount() }, async () => {
    const root = dir();
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1536k', 'tmpfs', root]);
    try {
      // Room for the first MiB of zeros and half the second.
      await assert.rejects(preallocate(root, 7, 2 * 2 ** 20), (err: NodeJS.ErrnoException) => err.code === 'ENOSPC');
      assert.deepEqual(readdirSync(root), [], 'neither the segment nor its .tmp is left');
    } finally {
      execFileSync('umount', [root]);
    }
  });

  it('a full disk (a small tmpfs) from the roll-over on: consumers get and ack every message, the segments they read go (their checkpoints have room), puts resume', {
    skip: canMount(),
  }, async () => {
    const root = dir();
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', root]);
    let s: JournalStore | undefined;
    try {
      warnings.length = 0;
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
    warnings.length = 0;
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
    warnings.length = 0;
    const s = await open(d);
    // The rename fails: a directory in place of the checkpoint written as the journal was made.
    rmSync(join(d, 'journal', 'checkpoint'));
    mkdirSync(join(d, 'journal', 'checkpoint', 'in-the-way'), { recursive: true });
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
