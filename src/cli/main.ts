#!/usr/bin/env node
/**
 * The `httpsqs` command: flags, data directory, port, PID file, daemon mode and signals. The only
 * module that exits the process.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname, resolve } from 'node:path';
import { createHttpsqsServer } from '../server/server.js';
import { LmdbStore } from '../store/lmdb.js';
import { helpText, parseConfig, UsageError, type Config } from './options.js';

const DAEMON_CHILD = 'HTTPSQS_DAEMON_CHILD';

function say(line: string): void {
  process.stderr.write(`httpsqs: ${line}\n`);
}

function fail(message: string): never {
  say(message);
  // Tell a waiting `-d` parent why we could not start.
  if (process.send) process.send({ error: message }, () => process.exit(1));
  else process.exit(1);
  throw new Error('unreachable');
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

/** `-d`: start a detached copy of this command and return once it listens (or failed). */
function daemonize(): Promise<void> {
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    detached: true,
    stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
    env: { ...process.env, [DAEMON_CHILD]: '1' },
  });
  return new Promise((done) => {
    child.once('message', (m: { ready?: boolean; error?: string }) => {
      if (m.error) fail(m.error);
      say(`running in the background, pid ${child.pid}`);
      child.disconnect();
      child.unref();
      done();
    });
    child.once('exit', (code) => fail(`background server exited during start-up (code ${code})`));
  });
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

function openDataDir(dir: string): void {
  try {
    ensureDir(dir);
    accessSync(dir, constants.W_OK | constants.R_OK);
  } catch (err) {
    fail(`-x: cannot use data directory ${dir}: ${(err as Error).message}`);
  }
}

function writePidFile(file: string): () => void {
  try {
    writeFileSync(file, `${process.pid}\n`);
  } catch (err) {
    say(`-i: cannot write PID file ${file}: ${(err as Error).message}`);
    return () => {};
  }
  return () => {
    // Only remove the file while it is still ours: another server may have taken the path since.
    try {
      if (readFileSync(file, 'utf8').trim() === String(process.pid)) rmSync(file);
    } catch {
      /* already gone */
    }
  };
}

async function run(config: Config): Promise<void> {
  const datadir = resolve(config.datadir);
  openDataDir(datadir);
  let store: LmdbStore;
  try {
    store = new LmdbStore({ path: datadir, syncMode: config.sync, syncInterval: config.synctime });
  } catch (err) {
    fail(`-x: cannot open the database in ${datadir}: ${(err as Error).message}`);
  }
  const app = createHttpsqsServer(store, {
    auth: config.auth,
    keepAliveTimeout: config.timeout,
    maxMessageBytes: config.maxMessageBytes,
  });
  await new Promise<void>((ready) => {
    app.server.once('error', (err: NodeJS.ErrnoException) => {
      const where = `${config.listen}:${config.port}`;
      if (err.code === 'EADDRINUSE') fail(`-p: port ${config.port} is already in use on ${config.listen}`);
      if (err.code === 'EADDRNOTAVAIL') fail(`-l: ${config.listen} is not an address of this machine`);
      if (err.code === 'EACCES') fail(`-p: no permission to listen on ${where}`);
      fail(`cannot listen on ${where}: ${err.message}`);
    });
    app.server.listen(config.port, config.listen, ready);
  });
  app.server.on('error', (err) => say(`server error: ${err.message}`));
  const removePidFile = writePidFile(config.pidfile);
  if (!isLoopback(config.listen) && config.auth === undefined) {
    say(`warning: listening on ${config.listen} without a password: anyone who can reach port ${config.port} can read and write every queue (use -a, or -l 127.0.0.1)`);
  }
  say(`listening on ${config.listen}:${config.port}, data in ${datadir}, sync ${config.sync === 'durable' ? 'durable (ack after flush)' : `every ${config.synctime}s`}, pid ${process.pid}`);
  if (process.send) process.send({ ready: true }, () => process.disconnect?.());

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    say(`${signal}: finishing in-flight requests, flushing and stopping`);
    try {
      await app.close();
      await store.close();
    } catch (err) {
      say(`error while stopping: ${(err as Error).message}`);
      process.exitCode = 1;
    }
    removePidFile();
    say('stopped');
    process.exit();
  };
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT'] as const) process.on(sig, () => void stop(sig));
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = parseConfig(process.argv.slice(2));
  } catch (err) {
    if (err instanceof UsageError) fail(err.message);
    throw err;
  }
  if (config.help) {
    process.stdout.write(helpText());
    return;
  }
  if (config.daemon && !process.env[DAEMON_CHILD]) return daemonize();
  await run(config);
}

main().catch((err) => fail(`fatal: ${(err as Error).stack ?? err}`));
