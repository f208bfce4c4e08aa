/** One serving process: the store, the HTTP server on its port, and a clean stop. Problems at
 * start-up are thrown as StartErrors, for the caller to report. */
import type { AddressInfo } from 'node:net';
import { mergeHistories, RateHistory, type HistorySnapshot } from '../dashboard/history.js';
import { createMetrics, type Metrics, type WorkerMetrics } from '../server/metrics.js';
import { createHttpsqsServer, type HttpsqsServer } from '../server/server.js';
import type { Peers, Waiters } from '../server/waiters.js';
import { mib } from '../store/lmdb/disk-reserve.js';
import { DamagedDataFile } from '../store/lmdb/datafile.js';
import { DirectoryInUse } from '../store/lock.js';
import { JournalDamaged, JournalStore } from '../store/journal/store.js';
import type { TakeTurn } from '../store/lmdb/open-turn.js';
import type { RedisStore } from '../store/redis.js';
import type { Store, StoreHooks } from '../store/store.js';
import { DirectoryTaken, StartError, type Config } from './options.js';
import { pickEngine } from './engine.js';
import { sayLockWait } from './process.js';
import { log, repeats } from './log.js';
import { VERSION } from '../version.js';
import { errorMessage } from '../errors.js';

const storeWarning = (message: string) => log.warn({ event: 'store' }, message);

export interface Serving {
  /** The port it listens on (the one asked for, or the one given for port 0). */
  port: number;
  store: Store;
  waiters: Waiters;
  /** This process's puts and gets for the dashboard's charts. */
  history: RateHistory;
  /** This process's metrics, for the primary to add up (`--workers`). */
  metrics: () => Promise<WorkerMetrics>;
  /** Stop accepting, finish in-flight requests, flush, close. */
  stop(): Promise<void>;
}

export interface ServeHooks {
  /** `opt=synctime` changed this process's interval (to tell other workers). */
  onSynctime?: (seconds: number) => void;
  /** The other workers, for long polls. */
  peers?: Peers | undefined;
  /** Every worker's metrics, through the primary. */
  fromCluster?: (() => Promise<string>) | undefined;
  /** The other workers' dashboard histories, through the primary. */
  otherHistories?: (() => Promise<HistorySnapshot[]>) | undefined;
  /** A worker of several: its turn to open the database, from the primary (open-turn.ts). */
  takeTurn?: TakeTurn | undefined;
  /** The store is open (before the port is). */
  opened?: (store: Store) => void;
}

export async function serve(config: Config, datadir: string, hooks: ServeHooks = {}): Promise<Serving> {
  // The store reports each write's time to the metrics, made once the store is there.
  let metrics: Metrics | undefined;
  const observe = (op: string, seconds: number) => metrics?.observeWrite(op, seconds);
  const store: Store = config.store === 'lmdb' ? await openEmbedded(config, datadir, observe, hooks.takeTurn) : await openRedis(config, observe);
  hooks.opened?.(store);
  // A store that several servers share (Redis) wakes their long polls itself.
  const peers = store.wakes ? { watch: store.wakes.watch, notify: () => {} } : hooks.peers;
  let app: HttpsqsServer | undefined;
  const facts = { version: VERSION, started: Date.now(), ...store.describe(), workers: config.workers };
  metrics = createMetrics({
    store,
    connections: () => app?.connections() ?? 0,
    waiting: () => app?.waiters.size ?? 0,
    buffered: () => app?.buffered() ?? { bytes: 0, waiting: 0, refused: 0 },
    fromCluster: hooks.fromCluster,
  });
  const history = new RateHistory();
  const others = hooks.otherHistories;
  const failures = failureLog();
  const server = createHttpsqsServer(store, {
    auth: config.auth,
    adminAuth: config.adminAuth,
    keepAliveTimeout: config.timeout,
    maxMessageBytes: config.maxMessageBytes,
    maxHeaderBytes: config.maxHeaderBytes,
    maxReplyBytes: config.maxReplyBytes,
    maxBufferedBytes: config.maxBufferedBytes,
    maxConnections: config.maxConnections,
    maxWait: config.maxWait,
    allowedHosts: config.allowedHosts,
    onSynctime: hooks.onSynctime,
    peers,
    metrics,
    facts: () => facts,
    history,
    historyFromCluster: others && (async () => mergeHistories([history.snapshot(), ...(await others())])),
    log: failures.add,
  });
  app = server;
  store.wakes?.onWake((name, count) => server.waiters.wake(name, count));
  try {
    await new Promise<void>((ready, failed) => {
      server.server.once('error', failed);
      server.server.listen(config.port, config.listen, ready);
    });
  } catch (err) {
    await store.close();
    const { code, message } = err as NodeJS.ErrnoException;
    if (code === 'EADDRINUSE') throw new StartError(`-p: port ${config.port} is already in use on ${config.listen}`);
    if (code === 'EADDRNOTAVAIL') throw new StartError(`-l: ${config.listen} is not an address of this machine`);
    if (code === 'EACCES') throw new StartError(`-p: no permission to listen on ${config.listen}:${config.port}`);
    throw new StartError(`cannot listen on ${config.listen}:${config.port}: ${message}`);
  }
  server.server.on('error', (err) => log.error({ event: 'error', err }, `server error: ${err.message}`));
  const dropped = dropNotice(config.maxConnections);
  server.server.on('drop', dropped.drop);
  return {
    port: (server.server.address() as AddressInfo).port,
    store,
    waiters: server.waiters,
    history,
    metrics: () => metrics.registry.getMetricsAsJSON(),
    async stop() {
      dropped.stop();
      failures.stop();
      await server.close();
      await store.close();
    },
  };
}

/** Connections over `--max-connections` are closed as soon as they come (node's maxConnections),
 * which their clients see as resets and node reports nowhere. The log says so at the first one,
 * then once a minute with how many more, while they go on. */
export function dropNotice(limit: number, everyMs = 60_000): { drop: () => void; stop: () => void } {
  const notice = repeats(
    (_, count, first) =>
      log.warn(
        { event: 'connections-refused', dropped: count, limit },
        `${first ? 'a new connection was closed at once' : `${count} more new connection${count === 1 ? '' : 's'} closed at once in the last ${everyMs / 1000} s`}: this process holds ${limit} connections, its --max-connections; raise it (and ulimit -n), or look for clients that keep idle connections open`,
      ),
    everyMs,
  );
  return { drop: () => notice.add(''), stop: notice.stop };
}

/** Requests that failed (the store's error), a line for each kind of failure, then a count once a
 * minute while they go on: a store that is down fails every request alike. */
export function failureLog(everyMs = 60_000): { add: (line: string) => void; stop: () => void } {
  return repeats(
    (line, count, first) =>
      first
        ? log.error({ event: 'error' }, line)
        : log.error({ event: 'error', repeated: count }, `${line} (${count} more time${count === 1 ? '' : 's'} in the last ${everyMs / 1000} s)`),
    everyMs,
  );
}

/** Says that the disk is full at once, and that puts fit again once they have fitted for
 * `settleMs` with none refused: on a full disk, a small put can fit in the room a commit left
 * between two that do not, and each such put logged disk-room and disk-full again. */
export function settled(say: (full: boolean) => void, settleMs = 1000): (full: boolean) => void {
  let full = false;
  let timer: NodeJS.Timeout | undefined;
  return (now) => {
    if (now) {
      clearTimeout(timer);
      timer = undefined;
      if (!full) say((full = true));
    } else if (full && !timer)
      timer = setTimeout(() => {
        timer = undefined;
        say((full = false));
      }, settleMs).unref();
  };
}

async function openEmbedded(config: Config, datadir: string, observe: StoreHooks['observe'], takeTurn: TakeTurn | undefined): Promise<Store> {
  const engine = pickEngine(datadir, config.engine, config.workers);
  const disk = {
    reserveBytes: config.diskReserve * 2 ** 20,
    onDiskSpace: (low: boolean, free: number) => {
      const left = `${mib(free)} free for ${datadir}`;
      if (low) log.warn({ event: 'disk-low', free }, `${left}, below --disk-reserve ${config.diskReserve} MiB: puts are refused until there is room`);
      else log.info({ event: 'disk-ok', free }, `${left}: puts are accepted again`);
    },
    onDiskFull: settled((full: boolean) => {
      if (full) log.warn({ event: 'disk-full' }, `the disk of ${datadir} is full: puts are refused until there is room`);
      else log.info({ event: 'disk-room' }, `room again on the disk of ${datadir}: puts are accepted again`);
    }),
    warn: storeWarning,
    observe,
    onLockWait: sayLockWait(datadir),
  };
  try {
    if (engine === 'journal') {
      // This is a worker: the process to stop is its master.
      return await JournalStore.open({
        path: datadir,
        syncMode: config.sync,
        syncInterval: config.synctime,
        owner: process.ppid,
        repair: config.repair,
        ...disk,
      });
    }
    // Several workers share the environment (the primary holds the directory lock for them); a
    // single worker owns it, lock included.
    // Loaded when used, as the Redis client is: start-up loads only the engine it runs.
    const { LmdbStore } = await import('../store/lmdb/store.js');
    return await LmdbStore.open({
      path: datadir,
      syncMode: config.sync,
      syncInterval: config.synctime,
      shared: config.workers > 1,
      takeTurn,
      owner: process.ppid,
      ...disk,
    });
  } catch (err) {
    if (err instanceof DirectoryInUse) throw new DirectoryTaken(`-x: ${err.message}`);
    if (err instanceof DamagedDataFile || err instanceof JournalDamaged) throw new StartError(`-x: ${err.message}`);
    throw new StartError(`-x: cannot open the ${engine === 'lmdb' ? 'database' : 'journal'} in ${datadir}: ${errorMessage(err)}`);
  }
}

async function openRedis(config: Config, observe: StoreHooks['observe']): Promise<RedisStore> {
  const { RedisStore } = await import('../store/redis.js');
  const store = new RedisStore({ url: config.store, wait: config.redisWait, waitMs: config.redisWaitMs, announce: true, warn: storeWarning, observe });
  try {
    return await store.ready();
  } catch (err) {
    await store.close();
    throw new StartError(`--store: ${errorMessage(err)}`);
  }
}
