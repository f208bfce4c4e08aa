/** `httpsqs export`: a store's queues as JSON lines (the format is in data.ts). */
import { isUtf8 } from 'node:buffer';
import { createWriteStream } from 'node:fs';
import { finished } from 'node:stream/promises';
import { everyQueue, type QueueRecord, type Store } from '../store/store.js';
import { DataError, openStore, parseDataArgs, progress, USAGE } from './data.js';

const nameField = (name: string) => {
  const bytes = Buffer.from(name, 'latin1');
  return isUtf8(bytes) ? `"queue":${JSON.stringify(bytes.toString('utf8'))}` : `"queue64":"${bytes.toString('base64')}"`;
};

/**
 * A queue's status, messages and leases, in that order. A store that reads them from one snapshot
 * (LMDB) does so, so that they agree while servers write; the others are read one after another.
 */
export async function* queueRecords(store: Store, name: string): AsyncGenerator<QueueRecord> {
  if (store.exportRecords) return yield* store.exportRecords(name);
  yield { status: await store.status(name) };
  yield* store.dump(name);
  for (const l of await store.leases(name)) yield l;
}

async function exportAll(store: Store, prefix: string, file: string | undefined): Promise<void> {
  const toFile = file && file !== '-' ? file : undefined;
  const out = toFile ? createWriteStream(toFile) : process.stdout;
  // A reader that stopped early (`| head`) ends the export; it only ever read, so nothing is lost.
  // Any other write error (a full disk, a directory that is not there) ends it with that error.
  let broken: DataError | undefined;
  const failed = new Promise<never>((_, reject) =>
    out.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(0);
      reject((broken ??= new DataError(`cannot write ${toFile ?? 'standard output'}: ${err.message}`)));
    }),
  );
  failed.catch(() => {});
  const write = (line: string) => {
    if (broken) throw broken;
    return out.write(`${line}\n`) ? undefined : Promise.race([new Promise<void>((r) => out.once('drain', () => r())), failed]);
  };
  await write('{"format":"httpsqs-export","version":2}');
  const queues: string[] = [];
  for await (const q of everyQueue(store, prefix)) queues.push(q.name);
  const bar = toFile ? progress(queues.length, 'queues') : undefined;
  let messages = 0;
  for (const [i, name] of queues.entries()) {
    const q = nameField(name);
    for await (const r of queueRecords(store, name)) {
      if ('status' in r) {
        const s = r.status;
        const md = s.maxdeliveries ? `,"maxdeliveries":${s.maxdeliveries}` : '';
        await write(`{${q},"maxqueue":${s.maxqueue},"putpos":${s.putpos},"getpos":${s.getpos}${md}}`);
      } else if ('message' in r) {
        await write(`{${q},"pos":${r.pos},"data":"${r.message.toString('base64')}"}`);
        messages++;
      } else {
        const granted = r.lease.granted === undefined ? '' : `,"granted":${r.lease.granted}`;
        await write(`{${q},"pos":${r.pos},"deadline":${r.lease.deadline},"deliveries":${r.lease.deliveries}${granted}}`);
      }
    }
    bar?.update(i + 1, { count: i + 1 });
  }
  // The end line: an import of a copy cut short (a failed or stopped export) finds it missing.
  await write(`{"end":true,"queues":${queues.length},"messages":${messages}}`);
  bar?.stop();
  if (out !== process.stdout) {
    out.end();
    await Promise.race([finished(out), failed]);
  }
  if (broken) throw broken;
  process.stderr.write(`exported ${queues.length} queues, ${messages} messages\n`);
}

/** `httpsqs export …`: every queue (or those with a prefix) as JSON lines. */
export async function runExport(argv: string[]): Promise<void> {
  const { values } = parseDataArgs(argv);
  if (values.help) return void process.stdout.write(USAGE);
  const store = await openStore(values, false);
  try {
    await store.ready();
    // Queue names are byte strings (one char a byte); the prefix comes as UTF-8 text.
    await exportAll(store, Buffer.from(values.prefix ?? '', 'utf8').toString('latin1'), values.output);
  } finally {
    await store.close();
  }
}
