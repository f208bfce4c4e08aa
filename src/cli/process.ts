/** Process-level helpers of the CLI: messages, exit, PID file, data directory, signals. */
import cluster from 'node:cluster';
import { randomBytes } from 'node:crypto';
import {
  accessSync,
  closeSync,
  constants,
  existsSync,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { isIP } from 'node:net';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { holderOf, markStopping, removeIfOurs, STOPPING_MS } from '../store/lock.js';
import { DATA_DIR_MODE } from '../store/store.js';
import { log, logsToFile, reopenLog } from './log.js';
import { errorMessage } from '../errors.js';

export function say(line: string): void {
  process.stderr.write(`httpsqs: ${line}\n`);
}

/** Thrown by `fail` to stop the code that called it while the process exits. */
export class Exiting extends Error {}

/**
 * Exits 1 with one line saying why: printed here, or, when a parent waits for this process to
 * start (`-d`, or the master of a worker), sent to the parent, which prints it once. `taken`: the
 * data directory is another server's (a worker's primary stops then).
 */
export function fail(message: string, taken = false): never {
  if (process.send && process.connected) {
    process.send(taken ? { taken: message } : { error: message }, () => process.exit(1));
    setTimeout(() => process.exit(1), 2000).unref();
  } else {
    say(message);
    process.exit(1);
  }
  throw new Exiting(message);
}

process.on('uncaughtException', (err) => {
  if (err instanceof Exiting) return;
  // A worker whose primary has gone (it failed to start, or was killed) fails to tell it anything
  // (node's own cluster messages too): that is no crash, and the worker ends.
  if (cluster.isWorker && (err as NodeJS.ErrnoException).code === 'EPIPE' && (err as NodeJS.ErrnoException).syscall === 'write') process.exit(1);
  log.fatal({ event: 'crash', err }, 'uncaught exception');
  process.exit(1);
});

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

/**
 * Creates the directory one level at a time: node 20's recursive mkdir spins forever on paths
 * such as /proc/x, where the parent exists but nothing can be created.
 */
function ensureDir(dir: string): void {
  if (existsSync(dir)) return;
  const parent = dirname(dir);
  if (parent !== dir) ensureDir(parent);
  mkdirSync(dir, { mode: DATA_DIR_MODE });
}

export function openDataDir(dir: string): void {
  try {
    ensureDir(dir);
    if (!statSync(dir).isDirectory()) throw new Error('it is a file, not a directory');
    accessSync(dir, constants.W_OK | constants.R_OK);
  } catch (err) {
    fail(`-x: cannot use data directory ${dir}: ${errorMessage(err)}`);
  }
}

/** Why the PID file could not be written, or undefined when it can. */
export function pidFileProblem(file: string): string | undefined {
  try {
    accessSync(dirname(file), constants.W_OK);
    return undefined;
  } catch (err) {
    // In a directory we cannot write to, a regular file there is written in place (writeInPlace).
    try {
      if (lstatSync(file).isFile()) {
        accessSync(file, constants.W_OK);
        return undefined;
      }
    } catch {
      /* the directory's reason is the one to give */
    }
    return errorMessage(err);
  }
}

/**
 * Whether a process is an httpsqs server, by its command line: a main.js of this package (this one,
 * one installed elsewhere, or a relative path to it as `npm start` runs it), or a command named
 * httpsqs (the installed bin, the C server, the title set when passwords are hidden). A stale PID
 * may name any other process by now; a gone one has no command line.
 */
function isHttpsqs(pid: number): boolean {
  try {
    const args = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
    return args.some((a) => /(^|\/)dist\/src\/cli\/main\.js$/.test(a) || /(^|\/)httpsqs( |$)/.test(a));
  } catch {
    return false;
  }
}

/** The running httpsqs (not this process) that the PID file names, if any. Only a regular file
 * is read, and only one of this user's or root's: any local user can leave a file at the default
 * `/tmp/httpsqs.pid`, naming a process of theirs whose command line says httpsqs, and must not
 * keep the server from starting. */
function pidFileOwner(file: string): number | undefined {
  let text: string;
  try {
    const fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const stat = fstatSync(fd);
      if (!stat.isFile()) return undefined;
      if (stat.uid !== 0 && stat.uid !== process.geteuid?.()) return undefined;
      const buf = Buffer.alloc(32);
      text = buf.toString('latin1', 0, readSync(fd, buf));
    } finally {
      closeSync(fd);
    }
  } catch {
    return undefined;
  }
  const pid = Number(text.trim());
  // Our own PID there was left by an earlier life (containers reuse PIDs).
  return Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && isHttpsqs(pid) ? pid : undefined;
}

/** Stops the start when the PID file names a running httpsqs: overwriting it would leave that one
 * without the file its stop scripts read. Unless that one is stopping (the lock of `datadir` says
 * so: a restart right after a stop), which is waited for. */
export async function refuseRunningPidFile(file: string, datadir: string): Promise<void> {
  let owner = pidFileOwner(file);
  if (owner === undefined) return;
  const holder = await holderOf(datadir, STOPPING_MS);
  if (holder?.pid === owner && holder.state === 'stopping') {
    log.info({ event: 'wait', pid: owner }, `-i: PID file ${file} names httpsqs process ${owner}, which is stopping: waiting for it`);
    for (const until = Date.now() + STOPPING_MS; pidFileOwner(file) === owner && Date.now() < until; ) await sleep(50);
    owner = pidFileOwner(file);
    if (owner === undefined) return;
  }
  fail(`-i: PID file ${file} names httpsqs process ${owner}, which is running: stop it first, or give this server another -i`);
}

/** For the directory lock: says that the data directory's holder is stopping, and is waited for. */
export const sayLockWait = (datadir: string) => (pid: number) =>
  log.info({ event: 'wait', pid }, `-x: data directory ${datadir} is held by httpsqs process ${pid}, which is stopping: waiting for it`);

/** Writes the PID file; returns the function that removes it (only while it is still ours). */
export function writePidFile(file: string): () => void {
  try {
    replaceFile(file, `${process.pid}\n`);
  } catch (err) {
    log.warn({ event: 'pidfile' }, `-i: cannot write PID file ${file}: ${errorMessage(err)}`);
    return () => {};
  }
  return () => removeIfOurs(file);
}

/**
 * Writes a new file beside `file` and renames it over `file`: a symlink (anyone can leave one in
 * /tmp) or a hard link there is replaced, never written through, so a server running as root
 * cannot be made to overwrite what it points at.
 */
function replaceFile(file: string, content: string): void {
  const tmp = `${file}.${process.pid}-${randomBytes(6).toString('hex')}.tmp`;
  let fd: number;
  try {
    fd = openSync(tmp, 'wx', 0o644);
  } catch (err) {
    if (!['EACCES', 'EPERM', 'EROFS'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
    writeInPlace(file, content, err);
    return;
  }
  try {
    try {
      writeSync(fd, content);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

/**
 * Where this process cannot create a file (a root-owned /run holding one made for the server), an
 * existing regular file is written in place, without following a symlink.
 */
function writeInPlace(file: string, content: string, why: unknown): void {
  let fd: number;
  try {
    fd = openSync(file, constants.O_WRONLY | constants.O_TRUNC | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    throw why;
  }
  try {
    if (!fstatSync(fd).isFile()) throw why;
    writeSync(fd, content);
  } finally {
    closeSync(fd);
  }
}

/**
 * Runs `stop` once on the first of the signals the reference also stops on. With `--log-file`,
 * SIGHUP instead reopens the log (what logrotate sends), and `reopened` passes it on.
 */
export function onStopSignal(stop: (signal: string) => Promise<void>, reopened?: (ok: boolean) => void): void {
  let stopping = false;
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT'] as const) {
    process.on(sig, () => {
      if (sig === 'SIGHUP' && logsToFile()) {
        reopened?.(reopenLog());
        return;
      }
      if (stopping) return;
      stopping = true;
      markStopping();
      // A stop that fails (a last flush that cannot be made) exits 1, saying why, not 0 in silence.
      void stop(sig).then(
        () => process.exit(),
        (err: unknown) => {
          log.error({ event: 'stop-failed', signal: sig }, `${sig}: stopping failed: ${errorMessage(err)}`);
          process.exit(1);
        },
      );
    });
  }
}
