import { HttpsqsClient } from '../src/client/index.js';

const q = new HttpsqsClient({ url: process.env.HTTPSQS_URL ?? 'http://127.0.0.1:1218' });
await q.mput('jobs', ['resize 1.jpg', 'resize 2.jpg', 'resize 3.jpg', 'resize 4.jpg']);

// Four handlers at a time; each message is leased while its handler runs, acked when it
// resolves, and given back (to be delivered again) when it throws.
const stop = new AbortController();
let done = 0;
await q.consume(
  'jobs',
  async (message) => {
    console.log(`working on ${message.text()} (delivery ${message.deliveries})`);
    if (++done === 4) stop.abort(); // a real worker runs until SIGTERM
  },
  { concurrency: 4, lease: 60, wait: 20, signal: stop.signal },
);

// The same, one message at a time, as an async iterator.
await q.put('jobs', 'resize 5.jpg');
const alone = new AbortController();
for await (const message of q.messages('jobs', { lease: 30, wait: 5, signal: alone.signal })) {
  console.log(`got ${message.text()}`);
  await message.ack();
  alone.abort();
}
await q.close();
