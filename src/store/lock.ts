/**
 * One server per data directory: `httpsqs.lock` holds the PID of the process that owns it. The
 * single-process store keeps queue positions in memory, so a second server on the same
 * directory (or an import into it) must be refused rather than allowed to interleave writes.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export class DirectoryInUse extends Error {
  constructor(readonly dir: string, readonly pid: number) {
    super(`data directory ${dir} is in use by process ${pid}`);
  }
}

function alive(pid: number): boolean {
  if (pid === process.pid) return false; // a lock we left behind in an earlier life (containers reuse PIDs)
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes a file holding a PID, but only while it is still this process's. */
export function removeIfOurs(file: string): void {
  try {
    if (readFileSync(file, 'utf8').trim() === String(process.pid)) rmSync(file);
  } catch {
    /* already gone */
  }
}

/** Takes the directory's lock or throws DirectoryInUse; returns the release function. */
export function lockDirectory(dir: string): () => void {
  const file = join(dir, 'httpsqs.lock');
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(file, `${process.pid}\n`, { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw err;
      const owner = Number(readFileSync(file, 'utf8').trim());
      if (owner > 0 && alive(owner)) throw new DirectoryInUse(dir, owner);
      rmSync(file, { force: true }); // stale: its owner is gone
    }
  }
  return () => removeIfOurs(file);
}
