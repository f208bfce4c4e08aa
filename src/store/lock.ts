/**
 * One server per data directory. The single-process store keeps queue positions in memory, so a
 * second server on the same directory (or an import into it) must be refused rather than allowed
 * to interleave writes.
 *
 * The lock is an abstract Unix socket named after the directory's device and inode, so that two
 * paths to one directory share it. The kernel frees it the instant its holder's descriptors close:
 * a crash never leaves it behind, whether the dead process lingers as a zombie or its PID is
 * reused. A contender connects to it and is told which process to stop, and whether it is stopping
 * already (then the contender waits for the lock, as a restart right after a stop needs).
 * `httpsqs.lock` holds that PID for people to read; it is not the lock. An abstract socket belongs
 * to a network namespace: servers in two containers with namespaces of their own, sharing one
 * volume, do not see each other.
 */
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export class DirectoryInUse extends Error {
  constructor(
    readonly dir: string,
    readonly pid: number | undefined,
  ) {
    super(`data directory ${dir} is in use by ${!pid ? 'another process' : alive(pid) ? `process ${pid}` : `a worker of process ${pid}, which has ended`}`);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes a file holding a PID, but only while it still holds that one. */
export function removeIfOurs(file: string, pid = process.pid): void {
  try {
    if (readFileSync(file, 'utf8').trim() === String(pid)) rmSync(file);
  } catch {
    /* already gone */
  }
}

/** How long a live holder may take to answer (its event loop may be busy). */
const ANSWER_MS = 2000;
/** How long a holder that is stopping is waited for: a stop lets requests in progress finish (10 s
 * at most), then flushes. */
export const STOPPING_MS = 15_000;

/** This process is stopping: its locks say so to contenders, which wait for them. */
let stopping = false;
export const markStopping = () => void (stopping = true);

/** `opening`: a process that holds it only while it opens the database (lmdb/open-turn.ts). Both
 * `stopping` and `opening` holders are waited for. */
export type Holder = { pid: number; state: 'running' | 'stopping' | 'opening' };

function listen(name: string): Promise<net.Server | undefined> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' ? resolve(undefined) : reject(err)));
    // `exclusive`: a cluster worker binds the socket itself rather than through the primary.
    server.listen({ path: name, exclusive: true }, () => resolve(server));
  });
}

/** The holder's answer: its PID and whether it is stopping; undefined when it closed without one (it
 * is dying, or was gone); 'silent' when it did not answer in time. */
function ask(name: string): Promise<Holder | undefined | 'silent'> {
  return new Promise((resolve) => {
    const sock = net.connect(name);
    let text = '';
    sock.setEncoding('latin1');
    sock.setTimeout(ANSWER_MS, () => (resolve('silent'), sock.destroy()));
    sock.on('data', (d: string) => (text += d));
    sock.on('error', () => {});
    sock.on('close', () => {
      const [pid, state] = text.trim().split(' ');
      resolve(Number(pid) > 0 ? { pid: Number(pid), state: state === 'stopping' || state === 'opening' ? state : 'running' } : undefined);
    });
  });
}

function pidIn(file: string): number | undefined {
  try {
    return Number(readFileSync(file, 'utf8').trim()) || undefined;
  } catch {
    return undefined;
  }
}

/**
 * Takes the directory's lock or throws DirectoryInUse; resolves to the release function, with the
 * lock's descriptor (`fd`). `owner` is
 * the PID a contender is told to stop: a cluster worker names its master. A holder that is
 * stopping is waited for (`waiting` is told its PID, once), as is one that holds it only while it
 * opens the database (`opening`: an export with no server running).
 */
export async function lockDirectory(
  dir: string,
  owner = process.pid,
  waiting?: (pid: number) => void,
  opening = false,
): Promise<(() => void) & { fd: number }> {
  const name = socketName(dir);
  const file = join(dir, 'httpsqs.lock');
  const until = Date.now() + STOPPING_MS;
  let unanswered = 0;
  for (;;) {
    const server = await listen(name);
    if (server) {
      // The lock alone must not keep the process running.
      server.unref();
      // Whether it is stopping is told as it is at the time of asking.
      const state = () => (opening ? ' opening' : stopping ? ' stopping' : '');
      server.on('connection', (sock) => sock.on('error', () => {}).end(`${owner}${state()}\n`));
      try {
        writeFileSync(file, `${owner}\n`);
      } catch (err) {
        server.close();
        throw err;
      }
      const release = () => {
        // The file first: once the socket is closed, a successor may write its own.
        removeIfOurs(file, owner);
        server.close();
      };
      // The socket's descriptor (not in net.Server's typings): a child process given it holds the
      // lock until it has ended too.
      return Object.assign(release, { fd: (server as unknown as { _handle: { fd: number } })._handle.fd });
    }
    const holder = await ask(name);
    // A holder too busy to answer in time may be stopping (a journal of a million queues writes its
    // checkpoint for seconds): while the process it names lives, it is asked again, for as long as
    // a stopping one is waited for. One whose owner has ended (a worker left behind) is not.
    if (holder === 'silent') {
      const pid = pidIn(file);
      if (Date.now() > until || pid === undefined || !alive(pid)) throw new DirectoryInUse(dir, pid);
      continue;
    }
    if (holder && (holder.state === 'running' || Date.now() > until)) throw new DirectoryInUse(dir, holder.pid);
    if (holder?.state === 'stopping') {
      waiting?.(holder.pid);
      waiting = undefined; // told once
    }
    // A holder that is being killed closes without answering: its lock is about to be free.
    if (!holder && ++unanswered > 40) throw new DirectoryInUse(dir, pidIn(file));
    await sleep(25);
  }
}

/** The abstract socket of a directory's lock, or of its open turns (lmdb/open-turn.ts). */
export function socketName(dir: string, role: 'lock' | 'open' = 'lock'): string {
  const { dev, ino } = statSync(dir, { bigint: true });
  return `\0httpsqs${role === 'open' ? '-open' : ''}:${dev}:${ino}`;
}

/** Who holds the lock of `dir` now, if anyone answers (no such directory: no one). With
 * `patientMs`, a holder too busy to answer is asked again for up to that long. */
export async function holderOf(dir: string, patientMs = 0): Promise<Holder | undefined> {
  const until = Date.now() + patientMs;
  let holder = existsSync(dir) ? await ask(socketName(dir)) : undefined;
  while (holder === 'silent' && Date.now() < until) holder = await ask(socketName(dir));
  return holder === 'silent' ? undefined : holder;
}
