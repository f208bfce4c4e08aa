/** One serving process: the store, the HTTP server on its port, and a clean stop. */
import { createHttpsqsServer } from '../server/server.js';
import { DirectoryInUse } from '../store/lock.js';
import { LmdbStore } from '../store/lmdb.js';
import type { Config } from './options.js';
import { log } from './log.js';
import { fail } from './process.js';

export interface Serving {
  store: LmdbStore;
  /** Stop accepting, finish in-flight requests, flush, close. */
  stop(): Promise<void>;
}

export async function serve(config: Config, datadir: string, onSynctime?: (seconds: number) => void): Promise<Serving> {
  let store: LmdbStore;
  try {
    // Several workers share the environment (the primary holds the directory lock for them); a
    // single worker owns it, lock included.
    store = new LmdbStore({ path: datadir, syncMode: config.sync, syncInterval: config.synctime, shared: config.workers > 1 });
  } catch (err) {
    if (err instanceof DirectoryInUse) fail(`-x: ${err.message}`);
    fail(`-x: cannot open the database in ${datadir}: ${(err as Error).message}`);
  }
  const app = createHttpsqsServer(store, {
    auth: config.auth,
    adminAuth: config.adminAuth,
    keepAliveTimeout: config.timeout,
    maxMessageBytes: config.maxMessageBytes,
    maxConnections: config.maxConnections,
    onSynctime,
    log: (line) => log.error({ event: 'error' }, line),
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
  app.server.on('error', (err) => log.error({ event: 'error', err }, `server error: ${err.message}`));
  return {
    store,
    async stop() {
      await app.close();
      await store.close();
    },
  };
}
