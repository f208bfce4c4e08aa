/**
 * The primary process, like the reference's master: it serves nothing itself. It writes the PID
 * file, forks the workers, restarts one that dies (with a back-off and a log line saying why),
 * relays what the workers tell each other (ipc.ts), and on a stop signal stops them gracefully.
 *
 * One worker (the default) owns the data directory like a single server: it takes the directory
 * lock itself, so a replacement cannot open the database while a dying worker still could write.
 * `--workers N` (N > 1): the workers share the port (each accepts from the one listening socket)
 * and the LMDB environment, which LMDB is built for: write transactions are
 * serialized across processes by its lock file, and every queue operation reads its state inside
 * the write transaction. The primary takes the directory lock, and each worker holds it too.
 */
import cluster, { type Worker } from 'node:cluster';
import { lockDirectory } from '../store/lock.js';
import { giveOpenTurns } from '../store/lmdb/open-turn.js';
import { pickEngine } from './engine.js';
import { allWorkers, dispatch, primaryRelay, type FromWorker, type Handlers, type ToWorker } from './ipc.js';
import { log } from './log.js';
import type { Config } from './options.js';
import { fail, onStopSignal, refuseRunningPidFile, sayLockWait, writePidFile } from './process.js';
import { errorMessage } from '../errors.js';

/** `forked`: the command line the workers show (passwords masked), and what their environment adds (their real arguments). */
export async function runPrimary(
  config: Config,
  datadir: string,
  announce: () => void,
  forked: { args: string[]; env: Record<string, string> },
): Promise<void> {
  await refuseRunningPidFile(config.pidfile, datadir);
  // Loaded only where used: a primary of one worker serves no metrics of its own.
  const metrics = config.workers > 1 ? (await import('../server/metrics.js')).clusterMetrics() : undefined;
  const ready = new Set<Worker>();
  const relay = primaryRelay({ ready, metrics });
  let unlock = () => {};
  let lockFd: number | undefined;
  if (config.workers > 1 && config.store === 'lmdb') {
    try {
      pickEngine(datadir, config.engine, config.workers);
    } catch (err) {
      fail(errorMessage(err));
    }
    try {
      const release = await lockDirectory(datadir, process.pid, sayLockWait(datadir));
      lockFd = release.fd;
      // Other processes (an export) open the database in a turn, with the workers' writes paused
      // (store/lmdb/open-turn.ts); the workers ask for theirs through the cluster channel.
      const stopTurns = await giveOpenTurns(datadir, relay.takeTurn);
      unlock = () => {
        stopTurns();
        release();
      };
      // The database is made (or checked) here first, so that no worker finds a file another is
      // still creating (empty, to its check).
      const { LmdbStore } = await import('../store/lmdb/store.js');
      await (await LmdbStore.open({ path: datadir, shared: true })).close();
    } catch (err) {
      fail(`-x: ${errorMessage(err)}`);
    }
  }
  // Every worker accepts connections itself, from the one listening socket. Through the primary
  // (SCHED_RR), a connection handed to a worker that died before taking it stayed open, unanswered,
  // for ever; and one handed to a stopped worker waited for it. The kernel spreads connections
  // less evenly (from 50:50 to 94:6 over 50 made at once, measured here). Durable puts, bound by the
  // one LMDB writer, ran at the same rates; clients that open a connection for each request got
  // more answers (9,800 against 6,400 in 4 s).
  cluster.schedulingPolicy = cluster.SCHED_NONE; // (before setupPrimary, which fixes it)
  // Each worker is given the directory lock's descriptor (as its fd 4), and so holds the lock until
  // it has ended: one that outlives a killed primary, even by a moment, keeps a new server out. (A
  // contender that finds only such a worker is not answered: it is refused, or takes the lock once
  // the worker has gone.)
  if (lockFd !== undefined) cluster.setupPrimary({ stdio: [0, 1, 2, 'ipc', lockFd] });
  cluster.setupPrimary({ args: forked.args });
  // Workers keep V8's young generation small, semi-spaces of 8 MiB instead of 16 (BENCHMARKS.md, "A
  // worker's heap"): measured here, about 7% more durable puts and gets a second and less private
  // memory under load. A size given on the command line or in NODE_OPTIONS is left as it is.
  const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  if (!given.some((a) => a.startsWith('--max-semi-space-size'))) {
    cluster.setupPrimary({ execArgv: ['--max-semi-space-size=8', ...process.execArgv] });
  }
  let stopping = false;
  let started = false;
  let synctime = config.synctime;
  const restarts: number[] = [];

  /** Stops with `error` once every worker has ended, so that none still writes in the data
   * directory when the primary has gone (a supervisor may start the next server then). One that
   * already serves stops as on SIGTERM; one still starting dies of it; none is waited for more
   * than 10 s. */
  const stopOn = (error: string): void => {
    if (stopping) return;
    stopping = true;
    const alive = allWorkers().filter((w) => !w.isDead());
    for (const w of alive) w.process.kill('SIGTERM');
    const stuck = setTimeout(() => {
      for (const w of alive) if (!w.isDead()) w.process.kill('SIGKILL');
    }, 10_000);
    void Promise.all(alive.map((w) => new Promise((ended) => (w.isDead() ? ended(undefined) : w.once('exit', ended))))).then(() => {
      clearTimeout(stuck);
      removePidFile();
      fail(error);
    });
  };
  const startFailed = (worker: Worker, error: string, taken: boolean): void => {
    if (!started) {
      stopOn(error);
      return;
    }
    log.error({ event: 'worker-start-failed', worker: worker.process.pid }, `worker ${worker.process.pid} could not start: ${error}`);
    // With one worker, the directory is free between its death and its replacement: another
    // server that took it then keeps it, and restarting workers cannot win it back.
    if (taken) stopOn(`${error}: this server stops`);
  };
  const fork = (): Worker => {
    const worker = cluster.fork(forked.env);
    const handlers: Handlers<FromWorker> = {
      ...relay.from(worker),
      error: (error) => startFailed(worker, error, false),
      taken: (error) => startFailed(worker, error, true),
      ready() {
        ready.add(worker);
        // A worker that replaces one gets the synctime set at run time once it listens.
        if (started && worker.isConnected()) worker.send({ synctime } satisfies ToWorker);
      },
      synctime(seconds) {
        synctime = seconds;
        // A worker stays in the list between its disconnect and its exit: a send to it then would
        // be an uncaught error (ERR_IPC_CHANNEL_CLOSED) that ends the primary and every worker.
        for (const w of allWorkers()) if (w !== worker && w.isConnected()) w.send({ synctime } satisfies ToWorker);
      },
    };
    worker.on('message', (m: FromWorker) => dispatch(m, handlers));
    // A send to a worker that has just died (its channel not yet seen closed) fails with EPIPE:
    // reported here, it would otherwise end the primary, and every worker with it. Its exit restarts it.
    worker.on('error', (err) => log.debug({ event: 'worker-channel', worker: worker.process.pid }, `worker ${worker.process.pid}: ${errorMessage(err)}`));
    worker.on('exit', () => {
      ready.delete(worker);
      relay.forget(worker);
    });
    worker.on('exit', (code, signal) => {
      if (stopping || !started) return;
      // Back off when workers keep dying, so a persistent fault does not become a fork loop.
      const now = Date.now();
      while (restarts.length && restarts[0]! < now - 60_000) restarts.shift();
      restarts.push(now);
      const delay = Math.min(100 * 2 ** Math.max(0, restarts.length - 3), 10_000);
      log.error(
        { event: 'restart', worker: worker.process.pid, code, signal, delay },
        `worker ${worker.process.pid} died (${signal ?? `exit code ${code}`}); restarting in ${delay} ms`,
      );
      setTimeout(() => {
        if (stopping) return;
        fork();
      }, delay);
    });
    return worker;
  };

  // The stop handlers go in before the workers are forked: a signal while they start (a worker
  // may already answer) stops them and exits as a later one does, instead of killing the master
  // the default way.
  let removePidFile = () => {};
  onStopSignal(
    async (signal) => {
      stopping = true;
      log.info(
        { event: 'stop', signal },
        `${signal}: stopping ${config.workers} worker${config.workers > 1 ? 's' : ''}: finishing in-flight requests, flushing`,
      );
      const alive = allWorkers().filter((w) => !w.isDead());
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
    },
    (ok) => {
      for (const w of allWorkers()) if (w.isConnected()) w.send({ reopenLog: true } satisfies ToWorker);
      if (ok) log.info({ event: 'log-reopened' }, 'SIGHUP: log file reopened');
    },
  );
  const workers = Array.from({ length: config.workers }, fork);
  await Promise.all(
    workers.map(
      (w) =>
        new Promise<void>((ready) => {
          w.on('message', (m: FromWorker) => m.ready && ready());
          w.once(
            'exit',
            (code, signal) => started || stopOn(signal ? `worker killed by ${signal} during start-up` : `worker exited during start-up (exit code ${code})`),
          );
        }),
    ),
  );
  if (stopping) return; // stopped while starting: the stop handler exits
  // Asked again: another server given the same -i may have written it while these workers started.
  await refuseRunningPidFile(config.pidfile, datadir);
  started = true;
  removePidFile = writePidFile(config.pidfile);
  announce();
}
