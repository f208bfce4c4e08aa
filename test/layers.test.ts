/**
 * The shape of the tree: each layer imports only the layers below it, and no two files import each
 * other (directly or round a cycle). The core's size (npm run size) is reported.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { it } from 'node:test';
import { BUDGET, coreSize } from '../scripts/size.js';
import { ROOT } from './helpers.js';

/** What each folder of src/ may import from (besides itself); `.` is src/ itself (errors, version). */
const ALLOWED: Record<string, string[]> = {
  queue: [],
  protocol: ['queue'],
  store: ['queue', '.'],
  dashboard: ['server', '.'], // the type of a reply only
  server: ['protocol', 'queue', 'store', 'dashboard', '.'],
  client: ['protocol', 'queue', '.'],
  cli: ['protocol', 'queue', 'store', 'server', 'dashboard', '.'],
  '.': [],
};

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

const src = join(ROOT, 'src');
const graph = new Map<string, string[]>();
for (const file of files(src)) {
  const imports = [...readFileSync(file, 'utf8').matchAll(/^(?:import|export)[^'";]*from '(\.[^']+)\.js'/gm)].map((m) =>
    relative(src, resolve(dirname(file), `${m[1]}.ts`)),
  );
  graph.set(relative(src, file), imports);
}
const folder = (f: string) => (f.includes('/') ? f.split('/')[0]! : '.');
// A file under src/store/lmdb/ is in the store layer.

it('each layer imports only from the layers below it', () => {
  const wrong: string[] = [];
  for (const [file, imports] of graph) {
    for (const target of imports) {
      const from = folder(file);
      const to = folder(target);
      if (from !== to && !ALLOWED[from]!.includes(to)) wrong.push(`${file} -> ${target}`);
    }
  }
  assert.deepEqual(wrong, []);
});

it('no import cycles between files', () => {
  const cycles: string[] = [];
  const state = new Map<string, 'open' | 'done'>();
  const visit = (file: string, path: string[]) => {
    if (state.get(file) === 'done') return;
    if (state.get(file) === 'open') return void cycles.push([...path.slice(path.indexOf(file)), file].join(' -> '));
    state.set(file, 'open');
    for (const next of graph.get(file) ?? []) visit(next, [...path, file]);
    state.set(file, 'done');
  };
  for (const file of graph.keys()) visit(file, []);
  assert.deepEqual(cycles, []);
});

it('the core is counted (npm run size)', (t) => {
  const sizes = coreSize();
  const total = sizes.reduce((n, [, s]) => n + s, 0);
  t.diagnostic(`core: ${total} lines of code (budget ${BUDGET})`);
  assert.equal(sizes.length, new Set(sizes.map(([f]) => f)).size);
  assert.ok(
    sizes.every(([, n]) => n > 0),
    'every core file is there',
  );
  // The README states the figure: it must follow the code.
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8').replace(/\s+/g, ' ');
  assert.ok(readme.includes(`is ${total.toLocaleString('en-US')} lines of code by \`npm run size\``), `the README does not state the core's ${total} lines`);
});
