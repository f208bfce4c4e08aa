/** A worker process: it serves, and hears from the primary (ipc.ts). */
import { dispatch, primaryLink, toPrimary, type ToWorker } from './ipc.js';
import { reopenLog } from './log.js';
import { DirectoryTaken, StartError, type Config } from './options.js';
import { fail, onStopSignal } from './process.js';
import type { Store } from '../store/store.js';
import { serve, type Serving } from './serve.js';

export async function runWorker(config: Config, datadir: string): Promise<void> {
  const link = config.workers > 1 ? primaryLink() : undefined;
  const now: { serving?: Serving; store?: Store } = {};
  const handlers = link?.handlers(now) ?? { reopenLog, synctime: (seconds: number) => now.serving?.store.setSyncInterval(seconds) };
  // Heard from the start: the primary pauses this worker's writes while another process opens the
  // database, from the moment this one has it open.
  process.on('message', (m: ToWorker) => dispatch(m, handlers));
  toPrimary({ pausable: true });
  let serving: Serving;
  try {
    serving = await serve(config, datadir, {
      onSynctime: (synctime) => toPrimary({ synctime }),
      peers: link,
      fromCluster: link?.fromCluster,
      otherHistories: link?.otherHistories,
      takeTurn: link?.takeTurn,
      opened: (store) => void (now.store = store),
    });
  } catch (err) {
    if (err instanceof StartError) fail(err.message, err instanceof DirectoryTaken);
    throw err;
  }
  now.serving = serving;
  toPrimary({ ready: true });
  onStopSignal(async () => {
    await serving.stop();
    process.disconnect?.();
  });
}
