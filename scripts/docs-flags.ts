/** Rewrites the README's flag table from the option definitions (`npm run docs:flags`). */
import { readFileSync, writeFileSync } from 'node:fs';
import { flagTable } from '../src/cli/options.js';

const file = new URL('../../README.md', import.meta.url);
const readme = readFileSync(file, 'utf8');
const next = readme.replace(/(<!-- flags:start -->\n)[\s\S]*?(\n<!-- flags:end -->)/, `$1${flagTable()}$2`);
if (next === readme) console.log('README flag table already up to date');
else writeFileSync(file, next), console.log('README flag table rewritten');
