/**
 * Which embedded engine serves a data directory: LMDB (the default for a new directory) or the
 * journal (`--engine journal`). A directory keeps the engine it was made with: the two lay out their files differently,
 * and moving from one to the other is an export and an import.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { StartError } from './options.js';

export type Engine = 'journal' | 'lmdb';

/** The engine whose files are in `dir`, if any. */
export function engineIn(dir: string): Engine | undefined {
  if (existsSync(join(dir, 'data.mdb'))) return 'lmdb';
  if (existsSync(join(dir, 'journal'))) return 'journal';
  return undefined;
}

/** How to move the queues of `dir` into a new directory of engine `to` (an import makes LMDB unless told). */
const move = (dir: string, to: Engine) =>
  `move its queues with: httpsqs export -x ${dir} | httpsqs import ${to === 'journal' ? '--engine journal ' : ''}-x NEWDIR -   (README: Upgrading)`;

/** The engine to open `dir` with, given `--engine` (if any) and `--workers`; a StartError says
 * why when the two cannot be had together. */
export function pickEngine(dir: string, asked: Engine | undefined, workers: number): Engine {
  const held = engineIn(dir);
  if (held && asked && held !== asked) {
    throw new StartError(`--engine ${asked}: ${dir} holds ${held === 'lmdb' ? 'an LMDB database (data.mdb)' : 'a journal (journal/)'}; ${move(dir, asked)}`);
  }
  const engine = asked ?? held ?? 'lmdb';
  if (engine === 'journal' && workers > 1) {
    throw new StartError(
      `--workers ${workers}: the journal engine is one process's (its queues live in that process's memory); use --workers 1, or LMDB (--engine lmdb) in another data directory and ${move(dir, 'lmdb')}`,
    );
  }
  return engine;
}
