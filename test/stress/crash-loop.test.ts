import { it } from 'node:test';
import { crashCycles } from '../crash.js';

for (const engine of ['journal', 'lmdb'])
  it(`${engine}: 20 SIGKILLs at random moments under load: nothing acknowledged lost or repeated, the database always opens`, (t) =>
    crashCycles(t, 20, () => 300 + Math.floor(Math.random() * 1200), ['--engine', engine]));
