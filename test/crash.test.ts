import { it } from 'node:test';
import { crashCycles } from './crash.js';

for (const engine of ['journal', 'lmdb'])
  it(`${engine}: SIGKILL under concurrent load loses no acknowledged put and repeats no acknowledged get`, (t) =>
    crashCycles(t, 1, () => 1500, ['--engine', engine]));
