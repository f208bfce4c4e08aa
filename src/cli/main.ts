#!/usr/bin/env node
/**
 * The `httpsqs` command: flags, data directory, port, PID file, daemon mode, workers and
 * signals. The CLI modules are the only place that exits the process.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import cluster from 'node:cluster';
import { configureLog, log } from './log.js';
import { VERSION } from '../version.js';
import { asGetopt, helpText, OPTIONS, parseConfig, StartError, type Config } from './options.js';
import { engineIn } from './engine.js';
import { redactUrl } from '../store/redis-url.js';
import { StoreError } from '../store/store.js';
import { Exiting, fail, isLoopback, openDataDir, pidFileProblem, refuseRunningPidFile, say } from './process.js';
import { errorMessage } from '../errors.js';

const DAEMON_CHILD = 'HTTPSQS_DAEMON_CHILD';
/** The arguments of a process this one starts (the `-d` child, a worker), whose command line shows
 * them without passwords (`ps` shows every user a command line, not an environment). */
const ARGS = 'HTTPSQS_ARGS';

/** This process's arguments: its command line's, or those its starter handed over in `ARGS`. */
function ownArgs(): string[] {
  const given = process.env[ARGS];
  delete process.env[ARGS];
  return given === undefined ? process.argv.slice(2) : (JSON.parse(given) as string[]);
}

/** `-d`: start a detached copy of this command and return once it listens (or failed). Its log
 * goes nowhere without --log-file, so `warning` (see `unprotected`) is said here too. */
function daemonize(args: string[], warning: string | undefined): Promise<void> {
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...shownArgs(args)], {
    detached: true,
    stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
    env: { ...process.env, [DAEMON_CHILD]: '1', [ARGS]: JSON.stringify(args) },
  });
  return new Promise((done) => {
    child.once('message', (m: { ready?: boolean; error?: string }) => {
      if (m.error) fail(m.error);
      say(`running in the background, pid ${child.pid}`);
      if (warning) say(warning);
      child.disconnect();
      child.unref();
      done();
    });
    child.once('exit', (code) => fail(`background server exited during start-up (code ${code})`));
  });
}

/** `args` as `ps` may show them: passwords given as flags masked, as the parser reads the flags
 * (`-a X`, `-aX`, `--auth=X`, in a group of short flags `-da X`), and a Redis URL's password
 * (`--store`) too. */
function shownArgs(given: string[]): string[] {
  const args = asGetopt(given);
  let hidden = false;
  const { tokens } = parseArgs({ args, options: OPTIONS, strict: false, allowPositionals: true, tokens: true });
  for (const t of tokens) {
    if (t.kind !== 'option' || t.value === undefined) continue;
    const shown = t.name === 'store' ? redactUrl(t.value) : t.name === 'auth' || t.name === 'admin-auth' ? '***' : t.value;
    if (shown === t.value) continue;
    hidden = true;
    const at = t.inlineValue ? t.index : t.index + 1;
    args[at] = `${args[at]!.slice(0, args[at]!.length - t.value.length)}${shown}`;
  }
  return hidden ? args : given;
}

/** The warning for a server that listens beyond loopback without a password, if it does. */
function unprotected(config: Config): string | undefined {
  if (isLoopback(config.listen) || config.auth !== undefined) return undefined;
  return `warning: listening on ${config.listen} without a password: anyone who can reach port ${config.port} can read and write every queue (use -a, or -l 127.0.0.1)`;
}

/** Descriptors kept for the store's files, the log and the workers' channels, besides connections. */
const FILES_BESIDES_CONNECTIONS = 64;

/** The warning for a limit on open files (`ulimit -n`) below what `--max-connections` lets in, if
 * it is: a worker out of descriptors resets the connections it cannot accept (libuv accepts and
 * closes them) without telling the server, so nothing else would say why clients are refused. */
function fewDescriptors(config: Config): string | undefined {
  let limits: string;
  try {
    limits = readFileSync('/proc/self/limits', 'utf8'); // Linux
  } catch {
    return undefined;
  }
  const soft = Number(/^Max open files\s+(\d+)/m.exec(limits)?.[1]);
  if (!Number.isFinite(soft) || soft >= config.maxConnections + FILES_BESIDES_CONNECTIONS) return undefined;
  return `warning: open files are limited to ${soft} (ulimit -n), below what --max-connections ${config.maxConnections} needs: past about ${Math.max(0, soft - FILES_BESIDES_CONNECTIONS)} connections a worker resets new ones, which this log does not show; raise ulimit -n (LimitNOFILE under systemd) or lower --max-connections`;
}

/** The start-up lines, and the `ready` a waiting `-d` parent listens for. */
function announce(config: Config, datadir: string): void {
  const warning = unprotected(config);
  if (warning) log.warn({ event: 'unprotected' }, warning);
  const few = fewDescriptors(config);
  if (few) log.warn({ event: 'fd-limit' }, few);
  const sync = config.sync === 'durable' ? 'durable (ack after flush)' : `every ${config.synctime}s`;
  const workers = `${config.workers} worker${config.workers > 1 ? 's' : ''}`;
  const store = redactUrl(config.store);
  // Only what is really used: the engine, its directory and sync mode, or the Redis store.
  const embedded = config.store === 'lmdb';
  // The worker has opened the directory by now: it holds the engine it chose.
  const engine = engineIn(datadir) ?? config.engine;
  const where = embedded ? `${engine} in ${datadir}, sync ${sync}` : `store ${store}${config.redisWait ? `, ${config.redisWait} replicas to confirm` : ''}`;
  const fields = embedded ? { store: engine, datadir, sync: config.sync } : { store, redisWait: config.redisWait };
  log.info(
    { event: 'start', version: VERSION, listen: config.listen, port: config.port, ...fields, workers: config.workers },
    `listening on ${config.listen}:${config.port}, ${where}, ${workers}`,
  );
  if (process.send) process.send({ ready: true }, () => process.disconnect?.());
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  if (command === 'export' || command === 'import') {
    // Loaded for these commands only: the stores they open, a progress bar.
    const { DataError } = await import('./data.js');
    const run = command === 'export' ? (await import('./export.js')).runExport : (await import('./import.js')).runImport;
    try {
      return await run(rest);
    } catch (err) {
      if (err instanceof DataError || err instanceof StoreError) fail(`${command}: ${err.message}`);
      throw err;
    }
  }
  const args = ownArgs();
  let config: Config;
  try {
    config = parseConfig(args);
  } catch (err) {
    if (err instanceof StartError) fail(err.message);
    throw err;
  }
  if (config.help) {
    process.stdout.write(helpText());
    return;
  }
  if (config.version) {
    process.stdout.write(`httpsqs ${VERSION}\n`);
    return;
  }
  try {
    configureLog({ file: config.logFile, level: config.logLevel });
  } catch (err) {
    fail(`--log-file: cannot open ${config.logFile}: ${errorMessage(err)}`);
  }
  // Passwords given as flags would show in `ps`: the title goes without them. (A process this one
  // starts gets them in its environment, and a command line without them from the start.)
  const shown = shownArgs(args);
  if (shown !== args) process.title = ['httpsqs', ...shown].join(' ');
  const datadir = resolve(config.datadir);
  // Each role loads what it runs: the primary only forks and watches, a worker serves.
  if (cluster.isWorker) return (await import('./worker.js')).runWorker(config, datadir);
  if (config.daemon && !process.env[DAEMON_CHILD]) {
    // In the background its PID file is the way to stop it, and its warnings go nowhere.
    await refuseRunningPidFile(config.pidfile, datadir);
    const problem = pidFileProblem(config.pidfile);
    if (problem) fail(`-i: cannot write PID file ${config.pidfile}: ${problem}`);
    return daemonize(args, unprotected(config));
  }
  if (config.store === 'lmdb') openDataDir(datadir);
  await (await import('./primary.js')).runPrimary(config, datadir, () => announce(config, datadir), {
    args: shown,
    env: shown === args ? {} : { [ARGS]: JSON.stringify(args) },
  });
}

// lmdb-js leaves an internal promise of a failed commit (disk full, I/O error) without a handler;
// the operation that failed has answered already, so log it and keep serving.
process.on('unhandledRejection', (err) => log.error({ event: 'error' }, errorMessage(err)));

main().catch((err) => {
  if (err instanceof Exiting) return;
  say(`fatal: ${(err as Error).stack ?? err}`);
  process.exit(1);
});
