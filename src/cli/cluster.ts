/**
 * Master and workers, like the reference: the primary process serves nothing itself. It writes
 * the PID file, restarts a worker that dies (with a back-off and a log line saying why), relays
 * `opt=synctime` to every worker, and on a stop signal stops the workers gracefully.
 *
 * One worker (the default) owns the data directory like a single server: it takes the directory
 * lock itself, so a replacement cannot open the database while a dying worker still could write.
 * `--workers N` (N > 1): the workers share the port (node's cluster module hands connections out
 * round robin) and the LMDB environment, which LMDB is built for: write transactions are
 * serialized across processes by its lock file, and every queue operation reads its state inside
 * the write transaction. The primary holds the directory lock for them.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Config } from './options.js';
import { lockDirectory } from '../store/lock.js';
import { log } from './log.js';
import { fail, onStopSignal, writePidFile } from './process.js';
import { serve } from './serve.js';

type FromWorker = { ready?: true; error?: string; synctime?: number };
type ToWorker = { synctime: number };

export async function runPrimary(config: Config, datadir: string, announce: () => void): Promise<void> {
  let unlock = () => {};
  if (config.workers > 1) {
    try {
      unlock = lockDirectory(datadir);
    } catch (err) {
      fail(`-x: ${(err as Error).message}`);
    }
  }
  // One worker accepts connections itself; several take turns through the primary.
  cluster.schedulingPolicy = config.workers > 1 ? cluster.SCHED_RR : cluster.SCHED_NONE;
  let stopping = false;
  let started = false;
  let synctime = config.synctime;
  const restarts: number[] = [];

  const fork = (): Worker => {
    const worker = cluster.fork();
    worker.on('message', (m: FromWorker) => {
      if (m.error && !started) fail(m.error);
      if (m.error) log.error({ event: 'worker-start-failed', worker: worker.process.pid }, `worker ${worker.process.pid} could not start: ${m.error}`);
      if (m.synctime) {
        synctime = m.synctime;
        for (const w of Object.values(cluster.workers ?? {})) if (w !== worker) w?.send({ synctime } satisfies ToWorker);
      }
    });
    worker.on('exit', (code, signal) => {
      if (stopping || !started) return;
      // Back off when workers keep dying, so a persistent fault does not become a fork loop.
      const now = Date.now();
      while (restarts.length && restarts[0]! < now - 60_000) restarts.shift();
      restarts.push(now);
      const delay = Math.min(100 * 2 ** Math.max(0, restarts.length - 3), 10_000);
      log.error({ event: 'restart', worker: worker.process.pid, code, signal, delay }, `worker ${worker.process.pid} died (${signal ?? `exit code ${code}`}); restarting in ${delay} ms`);
      setTimeout(() => {
        if (stopping) return;
        const next = fork();
        next.once('online', () => next.send({ synctime } satisfies ToWorker));
      }, delay);
    });
    return worker;
  };

  const workers = Array.from({ length: config.workers }, fork);
  await Promise.all(
    workers.map(
      (w) =>
        new Promise<void>((ready) => {
          w.on('message', (m: FromWorker) => m.ready && ready());
          w.once('exit', (code) => started || fail(`worker exited during start-up (code ${code})`));
        }),
    ),
  );
  started = true;
  const removePidFile = writePidFile(config.pidfile);
  announce();

  onStopSignal(async (signal) => {
    stopping = true;
    log.info({ event: 'stop', signal }, `${signal}: stopping ${config.workers} worker${config.workers > 1 ? 's' : ''}: finishing in-flight requests, flushing`);
    const alive = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w && !w.isDead());
    await Promise.all(
      alive.map(
        (w) =>
          new Promise<void>((done) => {
            w.once('exit', (code, signal) => {
              // A worker still starting up has no handler yet and simply dies of the SIGTERM.
              if (code !== 0 && signal !== 'SIGTERM') process.exitCode = 1;
              done();
            });
            w.process.kill('SIGTERM');
          }),
      ),
    );
    unlock();
    removePidFile();
    log.info({ event: 'stopped', exitCode: process.exitCode ?? 0 }, 'stopped');
  });
}

export async function runWorker(config: Config, datadir: string): Promise<void> {
  const serving = await serve(config, datadir, (synctime) => process.send?.({ synctime } satisfies FromWorker));
  process.on('message', (m: ToWorker) => m.synctime && serving.store.setSyncInterval(m.synctime));
  process.send?.({ ready: true } satisfies FromWorker);
  onStopSignal(async () => {
    await serving.stop();
    process.disconnect?.();
  });
}

export const isWorker = () => cluster.isWorker;
