import { HttpsqsClient, QueueFullError } from '../src/client/index.js';

const q = new HttpsqsClient({ url: process.env.HTTPSQS_URL ?? 'http://127.0.0.1:1218' });

// A web back end hands work to the background: one call per message, or a batch in one commit.
const pos = await q.put('mail', JSON.stringify({ to: 'ada@example.org', subject: 'Welcome' }));
console.log(`stored at position ${pos}`);
const { positions } = await q.mput('mail', ['second', 'third']);
console.log(`batch stored at ${positions.join(', ')}`);

// Bytes are stored exactly, NULs and all.
await q.put('thumbnails', new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x00, 0xff]));

const status = await q.statusJson('mail');
console.log(`mail: ${status.unread} unread`);

try {
  await q.maxqueue('tiny', 10);
  for (let i = 0; i < 11; i++) await q.put('tiny', `job ${i}`);
} catch (err) {
  if (!(err instanceof QueueFullError)) throw err;
  console.log(`tiny is full: ${err.message}`);
}
await q.close();
