/** What the journal's test files share: directories, a store of small segments, crash images,
 * and looks inside the engine. */
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { after } from 'node:test';
import { JournalStore, type JournalOptions } from '../src/store/journal/store.js';
import { BATCH_BYTES } from '../src/store/journal/records.js';
import { cleanup, tempDir } from './helpers.js';

export const b = (s: string) => Buffer.from(s);
export const SEG = 64 * 1024;
export const dirs: string[] = [];
after(() => dirs.forEach(cleanup));
export const dir = () => {
  const d = tempDir('httpsqs-journal-');
  dirs.push(d);
  return d;
};

export const warnings: string[] = [];
/** A store of `SEG`-byte segments; idle, it keeps them (the test of `shrink` says otherwise). */
export const open = (path: string, extra: Partial<JournalOptions> = {}) =>
  JournalStore.open({ path, segmentBytes: SEG, shrinkAfterMs: Infinity, warn: (m) => warnings.push(m), ...extra });

/** What a crash would leave of a running store: its files as they are now. */
export function crashImage(from: string): string {
  const to = dir();
  // A checkpoint being written may be renamed into place between the listing and its copy: a file
  // gone meanwhile is one the image should not hold, so the copy is made again.
  for (let tries = 1; ; tries++) {
    try {
      cpSync(join(from, 'journal'), join(to, 'journal'), { recursive: true });
      return to;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || tries === 5) throw err;
      rmSync(join(to, 'journal'), { recursive: true, force: true });
    }
  }
}

export const segFile = (d: string, id = 1) => join(d, 'journal', `${String(id).padStart(10, '0')}.seg`);
export const segments = (d: string) => readdirSync(join(d, 'journal')).filter((f) => f.endsWith('.seg'));
/** Bytes of the segments on disk; one deleted between the listing and its stat counts as none. */
export const sizeOf = (d: string, f: string) => statSync(join(d, 'journal', f), { throwIfNoEntry: false })?.size ?? 0;
export const diskUse = (d: string) => segments(d).reduce((n, f) => n + sizeOf(d, f), 0);
/** A private field of the store, for what only the engine can tell. */
export const inside = <T>(s: JournalStore, field: string): T => (s as unknown as Record<string, T>)[field]!;

/** Once no checkpoint is being written (one may start another as it ends). */
export async function checkpointed(s: JournalStore): Promise<void> {
  for (let c = inside<Promise<void> | undefined>(s, 'checkpointing'); c; c = inside(s, 'checkpointing')) await c;
}
/** A message of about 1 KiB that starts `m<i>-`. */
export const msg = (i: number) => b(`m${i}-`.padEnd(1000, 'x'));

/** [start, end) of each batch at the start of a segment's bytes. */
export function batchesOf(seg: Buffer): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let at = 0; at + BATCH_BYTES <= seg.length && seg.readUInt32LE(at) !== 0; ) {
    const end = at + BATCH_BYTES + seg.readUInt32LE(at + 19);
    out.push([at, end]);
    at = end;
  }
  return out;
}

/** Six puts and a get, each its own batch, in a crash image; its segment's bytes and batches. */
export async function sevenBatches(): Promise<{ image: string; seg: Buffer; bounds: Array<[number, number]> }> {
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
export function withSegment(seg: Buffer): string {
  const d = dir();
  mkdirSync(join(d, 'journal'));
  writeFileSync(segFile(d), seg);
  return d;
}

export async function expectState(s: JournalStore, puts: number, gets: number): Promise<void> {
  assert.deepEqual(await s.status('q'), { putpos: puts, getpos: gets, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
  for (let p = 1; p <= 6; p++) assert.equal((await s.view('q', p))?.toString() ?? null, p <= puts ? `message ${p}` : null, `view ${p}`);
}

/** 500,000 one-byte messages in `name`: an index of 8 MB, a checkpoint written in several pieces. */
export async function fill(s: JournalStore, name: string): Promise<void> {
  for (let i = 0; i < 50; i++)
    await s.putMany(
      name,
      Array.from({ length: 10_000 }, () => b('m')),
    );
}

/** Waits until compaction has nothing left to do. */
export async function compacted(s: JournalStore): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    await inside<Promise<void> | undefined>(s, 'checkpointing');
    await inside<Promise<void> | undefined>(s, 'compacting');
    await nextTurn();
    if (!inside(s, 'compacting') && !inside(s, 'checkpointing')) return;
  }
}

/** Queue `fast` put and read through many segments, some of its messages left unread for a
 * while (live data in many segments), compacting as it goes and at the end. */
export async function churn(s: JournalStore): Promise<void> {
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
