/**
 * What `httpsqs export` (export.ts) and `httpsqs import` (import.ts) share. They back up, restore,
 * move queues between stores (LMDB and Redis), and migrate from the C HTTPSQS through Tokyo
 * Cabinet's own dump tool. Both stream, so memory stays flat for a database of any size; a
 * progress bar shows on a terminal.
 *
 * The export format (JSON lines, one record a line):
 *   {"format":"httpsqs-export","version":2}                               first line
 *   {"queue":"Q","maxqueue":M,"putpos":P,"getpos":G}                       a queue, before its records
 *   {"queue":"Q","pos":N,"data":"<base64>"}                                a stored message
 *   {"queue":"Q","pos":N,"deadline":MS,"deliveries":D}                     a lease
 *   {"end":true,"queues":Q,"messages":M}                                   last line: what came before
 * A queue name that is not UTF-8 is written as "queue64" (base64) instead of "queue".
 * Version 1 is the same without the end line; import still reads it, but cannot tell whether it
 * is whole. A version 2 input without its end line, or whose counts differ from what came
 * before it, was cut off or changed: import refuses it.
 */
import { constants } from 'node:buffer';
import { rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { SingleBar } from 'cli-progress';
import { DamagedDataFile, repairedCopy } from '../store/lmdb/datafile.js';
import { DirectoryInUse } from '../store/lock.js';
import { JournalDamaged, JournalStore } from '../store/journal/store.js';
import type { Store } from '../store/store.js';
import { errorMessage } from '../errors.js';
import { engineIn } from './engine.js';

/**
 * The longest input line an import reads, by default: a message of the server's default
 * --max-message-bytes (32 MiB) as an export writes it (base64, 43 MiB) or as `tcbmgr list -px`
 * dumps it (a hex pair and a space a byte, 96 MiB), with room for the rest of the line.
 */
export const MAX_LINE = { export: 64 * 2 ** 20, tcbmgr: 128 * 2 ** 20 };

export const USAGE = `Usage:
  httpsqs export [-x DIR | --store URL] [--prefix P] [-o FILE]     all queues as JSON lines (stdout by default)
  httpsqs import [-x DIR | --store URL] [--replace] [--max-line-bytes N] FILE|-
                                              restore an export
  httpsqs import [-x DIR | --store URL] [--replace] [--max-line-bytes N] --from-tcbmgr FILE|-
                                              the C server's data: the output of
                                              tcbmgr list -pv -px httpsqs.db   (or -pv, for text-only data)
-x defaults to ./data. An import into a new directory makes an LMDB database there (--engine journal for a journal).
An import never writes over a queue that holds state unless --replace is
given, and never into the directory of a running server or a Redis that servers use (stop them
first; export works while they run).
An import stops at a line longer than --max-line-bytes: by default ${MAX_LINE.export} (64 MiB) for an
export, ${MAX_LINE.tcbmgr} (128 MiB) for a tcbmgr dump, enough for a message of 32 MiB (the server's
default --max-message-bytes). Raise it for larger messages, up to ${constants.MAX_STRING_LENGTH}.
`;

/** Thrown for anything the user can fix; main prints the message and exits with 1. */
export class DataError extends Error {}

export async function openStore(o: { datadir?: string; store?: string; engine?: string }, forWriting: boolean): Promise<Store> {
  // An export first adds any queue missing from the list index, which it reads the queues from.
  if (o.store && o.store !== 'lmdb') return new (await import('../store/redis.js')).RedisStore({ url: o.store, reindex: !forWriting });
  const dir = o.datadir ?? './data';
  const held = engineIn(dir);
  // A mistyped -x must not give an empty backup (nor leave a new database behind).
  if (!forWriting && !held) throw new DataError(`-x ${dir}: no httpsqs data there (no journal/, no data.mdb), so nothing to export`);
  if (o.engine !== undefined && o.engine !== 'journal' && o.engine !== 'lmdb') throw new DataError(`--engine: expected "journal" or "lmdb", got "${o.engine}"`);
  if (held && o.engine && held !== o.engine)
    throw new DataError(`--engine ${o.engine}: ${dir} holds ${held === 'lmdb' ? 'an LMDB database (data.mdb)' : 'a journal (journal/)'}`);
  if ((held ?? o.engine ?? 'lmdb') === 'journal') return openJournal(dir, forWriting);
  const { LmdbStore } = await import('../store/lmdb/store.js');
  try {
    // Export only reads, which LMDB allows next to a running server; import takes the directory.
    return await LmdbStore.open({ path: dir, shared: !forWriting });
  } catch (err) {
    if (err instanceof DamagedDataFile) {
      const { intact, newest, problem } = err.found;
      if (forWriting || !intact) throw new DataError(`-x: ${err.message}`);
      // What can still be read is read from a copy, so that the damaged file stays as it is.
      const copy = repairedCopy(err.file, intact);
      process.once('exit', () => rmSync(copy, { recursive: true, force: true }));
      const lost = intact === newest ? 'the damaged meta page may have named a newer one' : `the newest, ${newest!.txnid}, is lost`;
      process.stderr.write(
        `data file ${err.file} ${problem}: exporting its last intact transaction (${intact.txnid}; ${lost}) from a repaired copy in ${copy}\n`,
      );
      return await LmdbStore.open({ path: copy, shared: true });
    }
    if (err instanceof DirectoryInUse) {
      throw new DataError(
        `-x ${dir} is in use by a running server${err.pid ? ` (PID ${err.pid})` : ''}: stop it before importing (export works while it runs)`,
      );
    }
    throw new DataError(`-x: cannot open ${dir}: ${errorMessage(err)}`);
  }
}

async function openJournal(dir: string, forWriting: boolean): Promise<Store> {
  try {
    // Export reads next to a running server (no lock, no writes); import takes the directory.
    return await JournalStore.open({ path: dir, readOnly: !forWriting });
  } catch (err) {
    if (err instanceof DirectoryInUse) {
      throw new DataError(
        `-x ${dir} is in use by a running server${err.pid ? ` (PID ${err.pid})` : ''}: stop it before importing (export works while it runs)`,
      );
    }
    if (err instanceof JournalDamaged) throw new DataError(`-x: ${err.message}`);
    throw new DataError(`-x: cannot open the journal in ${dir}: ${errorMessage(err)}`);
  }
}

export function progress(total: number, unit: string): SingleBar | undefined {
  if (!process.stderr.isTTY || !total) return undefined;
  const bar = new SingleBar({ format: `{bar} {percentage}% | {count} ${unit}`, stream: process.stderr, hideCursor: true });
  bar.start(total, 0, { count: 0 });
  return bar;
}

/** The flags of export and import (each ignores the other's). */
export function parseDataArgs(argv: string[]) {
  try {
    return parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        datadir: { type: 'string', short: 'x' },
        store: { type: 'string' },
        engine: { type: 'string' },
        prefix: { type: 'string' },
        output: { type: 'string', short: 'o' },
        replace: { type: 'boolean' },
        'from-tcbmgr': { type: 'string' },
        'max-line-bytes': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    throw new DataError(`${errorMessage(err)}\n${USAGE}`);
  }
}
