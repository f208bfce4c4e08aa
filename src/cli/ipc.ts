/**
 * The messages between the primary and its workers, and what each side does with them: long polls
 * woken across workers, `opt=synctime` passed on, and /metrics and /dashboard/history answered
 * with every worker's numbers. One handler per field: a message may carry several.
 */
import cluster, { type Worker } from 'node:cluster';
import type { HistorySnapshot } from '../dashboard/history.js';
import type { clusterMetrics, WorkerMetrics } from '../server/metrics.js';
import type { Peers } from '../server/waiters.js';
import { limited, TURN_MS, type TakeTurn, turns } from '../store/lmdb/open-turn.js';
import type { Store } from '../store/store.js';
import { log, reopenLog } from './log.js';
import type { Serving } from './serve.js';

export type FromWorker = {
  /** It hears the primary now: it is paused, with the others, while a process opens the database. */
  pausable?: true;
  ready?: true;
  /** Its writes are paused, for the pause with this id. */
  writesPaused?: number;
  /** A turn to open the database (store/lmdb/open-turn.ts), please; and the end of that turn. */
  openTurn?: number;
  turnOver?: number;
  /** It could not start, and why; `taken`: because the data directory is another server's. */
  error?: string;
  taken?: string;
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
  /** This worker's metrics, for the gathering with this id. */
  metricsReply?: { id: number; metrics: WorkerMetrics };
  /** This worker's history, for the gathering with this id. */
  historyReply?: { id: number; snapshot: HistorySnapshot };
};

export type ToWorker = {
  /** Reopen the log file (SIGHUP to the primary). */
  reopenLog?: true;
  /** Pause your writes (another process opens the database), and go on. */
  pauseWrites?: number;
  resumeWrites?: number;
  /** Your turn to open the database. */
  turnGiven?: number;
  synctime?: number;
  watching?: number;
  wake?: Array<[string, number]>;
  /** Every worker's metrics added up, or why they could not be. */
  metricsText?: { id: number; text?: string; error?: string };
  /** Send your metrics for the gathering with this id. */
  metricsQuery?: number;
  /** Send your history for the gathering with this id. */
  historyQuery?: number;
  /** The other workers' histories for the request with this id. */
  histories?: { id: number; snapshots: HistorySnapshot[] };
};

export type Handlers<M> = { [K in keyof M]?: (value: NonNullable<M[K]>) => void };

/** Calls the handler of each field the message carries. */
export function dispatch<M extends object>(m: M, handlers: Handlers<M>): void {
  for (const key of Object.keys(m) as Array<keyof M>) {
    const value = m[key];
    if (value !== undefined) handlers[key]?.(value as NonNullable<M[typeof key]>);
  }
}

/** How long the primary waits for workers' histories and metrics (one may be dying). */
const GATHER_MS = 1000;
/** How long a worker may take to pause its writes: one that takes longer is stuck, and is killed
 * (then replaced) rather than let write while another process opens the database. Long enough for
 * the longest transaction (a reset of a queue of millions of messages takes seconds). */
const PAUSE_WAIT_MS = 15_000;

/** Every worker, now. */
export const allWorkers = (): Worker[] => Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);

/** Asks one worker to pause its writes; resolves once it has, or is dead. */
function pauseOne(w: Worker, id: number): Promise<void> {
  return new Promise((paused) => {
    const done = () => {
      clearTimeout(timer);
      w.off('message', heard);
      w.off('exit', done);
      paused();
    };
    const heard = (m: FromWorker) => m.writesPaused === id && done();
    const timer = setTimeout(() => {
      log.error({ event: 'worker-stuck', worker: w.process.pid }, `worker ${w.process.pid} did not pause its writes in ${PAUSE_WAIT_MS} ms: killing it`);
      w.process.kill('SIGKILL');
    }, PAUSE_WAIT_MS);
    w.on('message', heard);
    w.once('exit', done);
    // One whose channel is closed is dying: its exit ends the wait (or the timer kills it).
    if (w.isConnected()) w.send({ pauseWrites: id } satisfies ToWorker);
  });
}

/** The primary's side: what it relays between workers. `ready`: the workers that serve now;
 * `metrics`: what gathers the workers' metrics (server/metrics.ts), when there are several. */
export function primaryRelay(o: { ready: Set<Worker>; metrics: ReturnType<typeof clusterMetrics> | undefined }) {
  // Long polls across workers: which workers wait on which queue, so a put in one wakes the others.
  const watchers = new Map<string, Set<Worker>>();
  // Turns to open the database: every worker that hears the primary pauses its writes for one.
  const pausable = new Set<Worker>();
  let nextPause = 0;
  const pauseWorkers = async (): Promise<() => void> => {
    const id = nextPause++;
    const workers = [...pausable].filter((w) => w.isConnected());
    await Promise.all(workers.map((w) => pauseOne(w, id)));
    return () => {
      for (const w of workers) if (w.isConnected()) w.send({ resumeWrites: id } satisfies ToWorker);
    };
  };
  const takeTurn = turns(pauseWorkers);
  const turnsHeld = new Map<string, (why: string) => void>();
  const collect = o.metrics;
  // Answers asked of several workers at once: each gathering ends when all have come, or after
  // GATHER_MS with those that came (`done(false)`).
  let nextGathering = 0;
  const gatherings = new Map<number, { parts: unknown[]; waiting: number; done: (all: boolean) => void }>();
  function gather<T>(workers: Worker[], query: (id: number) => ToWorker, done: (parts: T[], all: boolean) => void): void {
    const id = nextGathering++;
    const parts: T[] = [];
    const end = (all: boolean) => {
      if (!gatherings.delete(id)) return;
      clearTimeout(timer);
      done(parts, all);
    };
    const timer = setTimeout(() => end(false), GATHER_MS);
    gatherings.set(id, { parts, waiting: workers.length, done: end });
    for (const w of workers) w.send(query(id));
    if (!workers.length) end(true);
  }
  const gathered = (id: number, part: unknown) => {
    const g = gatherings.get(id);
    if (!g) return;
    g.parts.push(part);
    if (--g.waiting === 0) g.done(true);
  };
  return {
    takeTurn,
    /** The handlers of the messages from `from`. */
    from(from: Worker): Handlers<FromWorker> {
      return {
        pausable() {
          pausable.add(from);
        },
        openTurn(id) {
          const key = `${from.id}:${id}`;
          void takeTurn().then((release) => {
            const gone = () => over('gone');
            const over = limited(release, TURN_MS, () => {
              turnsHeld.delete(key);
              from.off('exit', gone);
            });
            turnsHeld.set(key, over);
            from.once('exit', gone);
            if (from.isConnected()) from.send({ turnGiven: id } satisfies ToWorker);
            else over('gone');
          });
        },
        turnOver(id) {
          turnsHeld.get(`${from.id}:${id}`)?.('over');
        },
        watch({ name, on, id }) {
          let set = watchers.get(name);
          if (on) {
            if (!set) watchers.set(name, (set = new Set()));
            set.add(from);
            if (from.isConnected()) from.send({ watching: id } satisfies ToWorker);
          } else if (set?.delete(from) && set.size === 0) watchers.delete(name);
        },
        puts(puts) {
          const wakes = new Map<Worker, Array<[string, number]>>();
          for (const [name, count] of puts) {
            for (const w of watchers.get(name) ?? []) {
              if (w === from) continue;
              let list = wakes.get(w);
              if (!list) wakes.set(w, (list = []));
              list.push([name, count]);
            }
          }
          for (const [w, wake] of wakes) if (w.isConnected()) w.send({ wake } satisfies ToWorker);
        },
        // The workers that serve, this one too: one still starting (or just replaced) is not
        // asked, and the sum waits for every one asked, since a sum without one would look to
        // Prometheus like counters gone back.
        metricsRequest(id) {
          if (!collect) return;
          const answer = (m: { text?: string; error?: string }) => from.isConnected() && from.send({ metricsText: { id, ...m } } satisfies ToWorker);
          const workers = [...o.ready].filter((w) => w.isConnected());
          gather<[number, WorkerMetrics]>(
            workers,
            (q) => ({ metricsQuery: q }),
            (parts, all) => {
              if (!all) return void answer({ error: `not every worker answered within ${GATHER_MS} ms` });
              collect(parts).then(
                (text) => answer({ text }),
                (err: Error) => answer({ error: err.message }),
              );
            },
          );
        },
        metricsReply: ({ id, metrics }) => gathered(id, [from.id, metrics]),
        historyRequest(id) {
          const others = [...o.ready].filter((w) => w !== from && w.isConnected());
          gather<HistorySnapshot>(
            others,
            (q) => ({ historyQuery: q }),
            (snapshots) => {
              if (from.isConnected()) from.send({ histories: { id, snapshots } } satisfies ToWorker);
            },
          );
        },
        historyReply: ({ id, snapshot }) => gathered(id, snapshot),
      };
    },
    /** A worker is gone: it waits on nothing any more. */
    forget(worker: Worker): void {
      pausable.delete(worker);
      for (const [name, set] of watchers) if (set.delete(worker) && set.size === 0) watchers.delete(name);
    },
  };
}

/** A message to the primary. One that fails because the primary is gone (it failed to start, or
 * was killed) is no crash: this worker ends as the channel closes. */
export function toPrimary(m: FromWorker): void {
  if (process.connected) process.send?.(m, () => {});
}

/** A worker's side: the primary, as the peers of its long polls and the source of the others'
 * metrics and histories. */
export function primaryLink(): Peers & {
  fromCluster: () => Promise<string>;
  otherHistories: () => Promise<HistorySnapshot[]>;
  takeTurn: TakeTurn;
  handlers: (now: { serving?: Serving; store?: Store }) => Handlers<ToWorker>;
} {
  let next = 0;
  const confirmations = new Map<number, () => void>();
  const given = new Map<number, () => void>();
  const resumes = new Map<number, Promise<() => void>>();
  const texts = new Map<number, (m: { text?: string; error?: string }) => void>();
  const histories = new Map<number, (snapshots: HistorySnapshot[]) => void>();
  const send = toPrimary;
  const ask = <T>(pending: Map<number, (v: T) => void>, m: (id: number) => FromWorker, id = next++) =>
    new Promise<T>((resolve) => {
      pending.set(id, resolve);
      send(m(id));
    });
  const answered = <T>(pending: Map<number, (v: T) => void>, id: number, value: T) => {
    pending.get(id)?.(value);
    pending.delete(id);
  };
  let puts: Map<string, number> | undefined;
  return {
    watch(name, on) {
      if (!on || !process.connected) return (void send({ watch: { name, on } }), Promise.resolve());
      return ask<void>(confirmations, (id) => ({ watch: { name, on, id } }));
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
    fromCluster: async () => {
      const { text, error } = await ask(texts, (id) => ({ metricsRequest: id }));
      if (text === undefined) throw new Error(`the workers' metrics could not be collected: ${error}`);
      return text;
    },
    takeTurn: async () => {
      const id = next++;
      await ask(given, () => ({ openTurn: id }), id);
      return () => send({ turnOver: id });
    },
    otherHistories: () => (process.connected ? ask(histories, (id) => ({ historyRequest: id })) : Promise.resolve([])),
    // `now`: the store once it is open, the rest once it serves.
    handlers: (now) => ({
      reopenLog,
      synctime: (seconds) => now.serving?.store.setSyncInterval(seconds),
      watching: (id) => answered(confirmations, id, undefined),
      wake: (wake) => {
        for (const [name, count] of wake) now.serving?.waiters.wake(name, count);
      },
      metricsText: ({ id, ...m }) => answered(texts, id, m),
      metricsQuery: (id) => void now.serving?.metrics().then((metrics) => send({ metricsReply: { id, metrics } })),
      historyQuery: (id) => now.serving && void send({ historyReply: { id, snapshot: now.serving.history.snapshot() } }),
      histories: ({ id, snapshots }) => answered(histories, id, snapshots),
      turnGiven: (id) => answered(given, id, undefined),
      pauseWrites: (id) => {
        const resume = (now.store?.pauseWrites?.() ?? Promise.resolve(() => {})).catch(() => () => {});
        resumes.set(id, resume);
        void resume.then(() => send({ writesPaused: id }));
      },
      resumeWrites: (id) => {
        void resumes.get(id)?.then((resume) => resume());
        resumes.delete(id);
      },
    }),
  };
}
