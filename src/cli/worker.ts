/** A worker process: it serves, and hears from the primary (ipc.ts). */
import { dispatch, primaryLink, type FromWorker, type ToWorker } from './ipc.js';
import { reopenLog } from './log.js';
import { StartError, type Config } from './options.js';
import { fail, onStopSignal } from './process.js';
import { serve, type Serving } from './serve.js';

export async function runWorker(config: Config, datadir: string): Promise<void> {
  const link = config.workers > 1 ? primaryLink() : undefined;
  let serving: Serving;
  try {
    serving = await serve(config, datadir, {
      onSynctime: (synctime) => process.send?.({ synctime } satisfies FromWorker),
      peers: link,
      fromCluster: link?.fromCluster,
      otherHistories: link?.otherHistories,
    });
  } catch (err) {
    if (err instanceof StartError) fail(err.message);
    throw err;
  }
  const handlers = link?.handlers(serving) ?? { reopenLog, synctime: (seconds: number) => serving.store.setSyncInterval(seconds) };
  process.on('message', (m: ToWorker) => dispatch(m, handlers));
  process.send?.({ ready: true } satisfies FromWorker);
  onStopSignal(async () => {
    await serving.stop();
    process.disconnect?.();
  });
}
