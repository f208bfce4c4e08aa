/**
 * Master and workers, like the reference: the primary process serves nothing itself. It writes
 * the PID file, restarts a worker that dies (with a back-off and a log line saying why), relays
 * `opt=synctime` to every worker, and the metrics and dashboard histories of the others to the one
 * answering /metrics or /dashboard/history, and on a stop signal stops the workers gracefully.
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
import { log, reopenLog } from './log.js';
import { fail, onStopSignal, refuseRunningPidFile, writePidFile } from './process.js';
import type { HistorySnapshot } from '../dashboard/history.js';
import { clusterMetrics } from '../server/metrics.js';
import type { Peers } from '../server/waiters.js';
import { serve, type Serving } from './serve.js';

type FromWorker = {
  ready?: true;
  error?: string;
  synctime?: number;
  /** Start (with an id to confirm) or stop telling this worker of puts to a queue. */
  watch?: { name: string; on: boolean; id?: number };
  /** Queues that got messages here, with how many. */
  puts?: Array<[string, number]>;
  /** A /metrics request to answer with every worker's metrics. (Not `metrics`: prom-client's own
   * messages between primary and workers, which pass here too, have a field of that name.) */
  metricsRequest?: number;
  /** A /dashboard/history request: the other workers' histories, please. */
  historyRequest?: number;
  /** This worker's history, for the gathering with this id. */
  historyReply?: { id: number; snapshot: HistorySnapshot };
};
type ToWorker = {
  /** Reopen the log file (SIGHUP to the primary). */
  reopenLog?: true;
  synctime?: number;
  watching?: number;
  wake?: Array<[string, number]>;
  metricsText?: { id: number; text: string };
  /** Send your history for the gathering with this id. */
  historyQuery?: number;
  /** The other workers' histories for the request with this id. */
  histories?: { id: number; snapshots: HistorySnapshot[] };
};

/** How long the primary waits for workers' histories (one may be dying). */
const HISTORY_WAIT_MS = 1000;

export async function runPrimary(config: Config, datadir: string, announce: () => void): Promise<void> {
  refuseRunningPidFile(config.pidfile);
  let unlock = () => {};
  if (config.workers > 1 && config.store === 'lmdb') {
    try {
      unlock = await lockDirectory(datadir);
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
  // Long polls across workers: which workers wait on which queue, so a put in one wakes the others.
  const watchers = new Map<string, Set<Worker>>();
  const collect = config.workers > 1 ? clusterMetrics() : undefined;
  const ready = new Set<Worker>();
  let nextGathering = 0;
  const gatherings = new Map<number, { snapshots: HistorySnapshot[]; waiting: number; done: () => void }>();

  const relay = (from: Worker, m: FromWorker) => {
    if (m.watch) {
      const { name, on, id } = m.watch;
      let set = watchers.get(name);
      if (on) {
        if (!set) watchers.set(name, (set = new Set()));
        set.add(from);
        from.send({ watching: id } satisfies ToWorker);
      } else if (set?.delete(from) && set.size === 0) watchers.delete(name);
    }
    if (m.puts) {
      const wakes = new Map<Worker, Array<[string, number]>>();
      for (const [name, count] of m.puts) {
        for (const w of watchers.get(name) ?? []) {
          if (w === from) continue;
          let list = wakes.get(w);
          if (!list) wakes.set(w, (list = []));
          list.push([name, count]);
        }
      }
      for (const [w, wake] of wakes) if (w.isConnected()) w.send({ wake } satisfies ToWorker);
    }
    if (m.metricsRequest !== undefined && collect) {
      const id = m.metricsRequest;
      const answer = (text: string) => from.isConnected() && from.send({ metricsText: { id, text } } satisfies ToWorker);
      collect().then(answer, (err: Error) => answer(`# metrics could not be collected: ${err.message}\n`));
    }
    if (m.historyRequest !== undefined) {
      const id = m.historyRequest;
      const gathering = nextGathering++;
      const others = [...ready].filter((w) => w !== from && w.isConnected());
      const snapshots: HistorySnapshot[] = [];
      const done = () => {
        if (!gatherings.delete(gathering)) return;
        clearTimeout(timer);
        if (from.isConnected()) from.send({ histories: { id, snapshots } } satisfies ToWorker);
      };
      const timer = setTimeout(done, HISTORY_WAIT_MS);
      gatherings.set(gathering, { snapshots, waiting: others.length, done });
      for (const w of others) w.send({ historyQuery: gathering } satisfies ToWorker);
      if (!others.length) done();
    }
    if (m.historyReply) {
      const g = gatherings.get(m.historyReply.id);
      if (g) {
        g.snapshots.push(m.historyReply.snapshot);
        if (--g.waiting === 0) g.done();
      }
    }
  };

  const fork = (): Worker => {
    const worker = cluster.fork();
    worker.on('message', (m: FromWorker) => relay(worker, m));
    worker.on('exit', () => {
      ready.delete(worker);
      for (const [name, set] of watchers) if (set.delete(worker) && set.size === 0) watchers.delete(name);
    });
    worker.on('message', (m: FromWorker) => {
      if (m.error && !started) fail(m.error);
      if (m.error) log.error({ event: 'worker-start-failed', worker: worker.process.pid }, `worker ${worker.process.pid} could not start: ${m.error}`);
      // A worker that replaces one gets the synctime set at run time once it listens (its 'ready').
      if (m.ready) ready.add(worker);
      if (m.ready && started) worker.send({ synctime } satisfies ToWorker);
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
        fork();
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
          w.once('exit', (code, signal) => started || fail(signal ? `worker killed by ${signal} during start-up` : `worker exited during start-up (exit code ${code})`));
        }),
    ),
  );
  started = true;
  const removePidFile = writePidFile(config.pidfile);
  // The stop handlers go in before the start is announced: a signal sent as soon as it was
  // could kill the master the default way, leaving the PID file behind.
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
  }, () => {
    for (const w of Object.values(cluster.workers ?? {})) if (w?.isConnected()) w.send({ reopenLog: true } satisfies ToWorker);
    log.info({ event: 'log-reopened' }, 'SIGHUP: log file reopened');
  });
  announce();
}

/** This worker's side of long polls, metrics and dashboard histories across workers, through the primary. */
function primaryLink(): Peers & {
  fromCluster: () => Promise<string>;
  otherHistories: () => Promise<HistorySnapshot[]>;
  onMessage: (m: ToWorker, serving: Serving) => void;
} {
  let next = 0;
  const confirmations = new Map<number, () => void>();
  const texts = new Map<number, (text: string) => void>();
  const histories = new Map<number, (snapshots: HistorySnapshot[]) => void>();
  const send = (m: FromWorker) => process.connected && process.send?.(m);
  let puts: Map<string, number> | undefined;
  return {
    watch(name, on) {
      if (!on || !process.connected) return void send({ watch: { name, on } }), Promise.resolve();
      const id = next++;
      return new Promise((resolve) => {
        confirmations.set(id, resolve);
        send({ watch: { name, on, id } });
      });
    },
    // Sent once per event-loop turn, however many puts it had.
    notify(name, count) {
      if (!puts) {
        puts = new Map();
        setImmediate(() => {
          send({ puts: [...puts!] });
          puts = undefined;
        });
      }
      puts.set(name, (puts.get(name) ?? 0) + count);
    },
    fromCluster() {
      const id = next++;
      return new Promise((resolve) => {
        texts.set(id, resolve);
        send({ metricsRequest: id });
      });
    },
    otherHistories() {
      if (!process.connected) return Promise.resolve([]);
      const id = next++;
      return new Promise((resolve) => {
        histories.set(id, resolve);
        send({ historyRequest: id });
      });
    },
    onMessage(m, serving) {
      if (m.synctime) serving.store.setSyncInterval(m.synctime);
      if (m.watching !== undefined) confirmations.get(m.watching)?.(), confirmations.delete(m.watching);
      if (m.wake) for (const [name, count] of m.wake) serving.waiters.wake(name, count);
      if (m.metricsText) texts.get(m.metricsText.id)?.(m.metricsText.text), texts.delete(m.metricsText.id);
      if (m.historyQuery !== undefined) send({ historyReply: { id: m.historyQuery, snapshot: serving.history.snapshot() } });
      if (m.histories) histories.get(m.histories.id)?.(m.histories.snapshots), histories.delete(m.histories.id);
    },
  };
}

export async function runWorker(config: Config, datadir: string): Promise<void> {
  const link = config.workers > 1 ? primaryLink() : undefined;
  const serving = await serve(config, datadir, {
    onSynctime: (synctime) => process.send?.({ synctime } satisfies FromWorker),
    peers: link,
    fromCluster: link?.fromCluster,
    otherHistories: link?.otherHistories,
  });
  process.on('message', (m: ToWorker) => {
    if (m.reopenLog) reopenLog();
    if (link) link.onMessage(m, serving);
    else if (m.synctime) serving.store.setSyncInterval(m.synctime);
  });
  process.send?.({ ready: true } satisfies FromWorker);
  onStopSignal(async () => {
    await serving.stop();
    process.disconnect?.();
  });
}

export const isWorker = () => cluster.isWorker;
