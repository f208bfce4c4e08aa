/**
 * A process that opens the LMDB environment of a directory over and over (as `httpsqs export` or
 * a starting worker does), for open-turns.test.ts: `node opener.js DIR MS`. Prints how many times.
 */
import { LmdbStore } from '../../src/store/lmdb/store.js';

const [dir, ms] = process.argv.slice(2);
const until = Date.now() + Number(ms);
let opens = 0;
while (Date.now() < until) {
  const store = await LmdbStore.open({ path: dir!, shared: true });
  await store.close();
  opens++;
  await new Promise((r) => setTimeout(r, 5));
}
process.stdout.write(`${opens}\n`);
