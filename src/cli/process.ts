/** Process-level helpers of the CLI: messages, exit, PID file, data directory, signals. */
import { accessSync, constants, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname } from 'node:path';
import { removeIfOurs } from '../store/lock.js';
import { log } from './log.js';

export function say(line: string): void {
  process.stderr.write(`httpsqs: ${line}\n`);
}

/** Thrown by `fail` to stop the code that called it while the process exits. */
export class Exiting extends Error {}

/**
 * Exits 1 with one line saying why: printed here, or, when a parent waits for this process to
 * start (`-d`, or the master of a worker), sent to the parent, which prints it once.
 */
export function fail(message: string): never {
  if (process.send && process.connected) {
    process.send({ error: message }, () => process.exit(1));
    setTimeout(() => process.exit(1), 2000).unref();
  } else {
    say(message);
    process.exit(1);
  }
  throw new Exiting(message);
}

process.on('uncaughtException', (err) => {
  if (err instanceof Exiting) return;
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
  mkdirSync(dir);
}

export function openDataDir(dir: string): void {
  try {
    ensureDir(dir);
    accessSync(dir, constants.W_OK | constants.R_OK);
  } catch (err) {
    fail(`-x: cannot use data directory ${dir}: ${(err as Error).message}`);
  }
}

/** Why the PID file could not be written, or undefined when it can. */
export function pidFileProblem(file: string): string | undefined {
  try {
    accessSync(existsSync(file) ? file : dirname(file), constants.W_OK);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Writes the PID file; returns the function that removes it (only while it is still ours). */
export function writePidFile(file: string): () => void {
  try {
    writeFileSync(file, `${process.pid}\n`);
  } catch (err) {
    log.warn({ event: 'pidfile' }, `-i: cannot write PID file ${file}: ${(err as Error).message}`);
    return () => {};
  }
  return () => removeIfOurs(file);
}

/** Runs `stop` once on the first of the signals the reference also stops on. */
export function onStopSignal(stop: (signal: string) => Promise<void>): void {
  let stopping = false;
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT'] as const) {
    process.on(sig, () => {
      if (stopping) return;
      stopping = true;
      void stop(sig).finally(() => process.exit());
    });
  }
}
