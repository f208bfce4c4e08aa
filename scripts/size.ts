/**
 * `npm run size`: lines of code of the core, what the reference protocol needs (protocol, ring
 * rules, store contract, the embedded engine with its turns to open, directory lock, HTTP,
 * dispatch), without blank lines and comments. The README states the figure against the budget;
 * a test counts it (layers.test.ts).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const CORE = [
  'src/protocol/query.ts',
  'src/protocol/reply.ts',
  'src/queue/ring.ts',
  'src/store/store.ts',
  'src/store/plans.ts',
  'src/store/lock.ts',
  'src/store/lmdb/codec.ts',
  'src/store/lmdb/pending.ts',
  'src/store/lmdb/store.ts',
  'src/store/lmdb/room.ts',
  'src/store/lmdb/datafile.ts',
  'src/store/lmdb/open-turn.ts',
  'src/server/http.ts',
  'src/server/ops.ts',
  'src/server/server.ts',
];
export const BUDGET = 1000;

const root = new URL('../../', import.meta.url);

/** Lines with code on them: block and line comments and blank lines left out. */
export function codeLines(source: string): number {
  const stripped = source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  return stripped.split('\n').filter((l) => l.trim() !== '').length;
}

export function coreSize(): Array<[string, number]> {
  return CORE.map((f) => [f, codeLines(readFileSync(new URL(f, root), 'utf8'))]);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const sizes = coreSize();
  for (const [f, n] of sizes) console.log(`${String(n).padStart(5)}  ${f}`);
  console.log(`${String(sizes.reduce((n, [, s]) => n + s, 0)).padStart(5)}  core lines of code (budget ${BUDGET})`);
}
