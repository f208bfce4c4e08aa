/**
 * The curl sessions of docs/EXTENSIONS.md (its ```console blocks), taken from the page as they are
 * and run in order against a real server, each command's output compared with the page's. Times
 * in ms since the epoch (13 digits) differ from run to run: only their place is compared.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { cleanup, needsTool, ROOT, startInProcess } from './helpers.js';

interface Step {
  command: string;
  output: string;
}

/** Every `$ command` of the page's console blocks, with the lines after it up to the next. */
function documentedSteps(): Step[] {
  const page = readFileSync(join(ROOT, 'docs', 'EXTENSIONS.md'), 'utf8');
  const steps: Step[] = [];
  for (const [, block] of page.matchAll(/^```console\n([\s\S]*?)^```$/gm)) {
    for (const line of block!.split('\n').slice(0, -1)) {
      if (line.startsWith('$ ')) steps.push({ command: line.slice(2), output: '' });
      else steps.at(-1)!.output += `${line}\n`;
    }
  }
  return steps;
}

/** Output as the page shows it: times as such, and a reply without a final newline (the
 * reference's tokens have none) on a line of its own. */
const shown = (s: string) =>
  s
    .replace(/\r/g, '')
    .replace(/\n$/, '')
    .replace(/\b\d{13}\b/g, '<ms>');

describe('the curl sessions of docs/EXTENSIONS.md', { skip: needsTool('curl', 'curl') }, () => {
  it('give the outputs the page shows, in order', async () => {
    const steps = documentedSteps();
    assert.ok(steps.length >= 10, `${steps.length} documented commands`);
    const server = await startInProcess();
    try {
      const Q = `http://127.0.0.1:${server.port}/?name=jobs`;
      for (const { command, output } of steps) {
        // Asynchronously: the server runs in this process.
        const run = await new Promise<{ stdout: string; status: number | null }>((resolve) => {
          const child = spawn('bash', ['-c', command], { env: { ...process.env, Q }, stdio: ['ignore', 'pipe', 'inherit'] });
          let stdout = '';
          child.stdout.on('data', (d: Buffer) => (stdout += d));
          child.once('close', (status: number | null) => resolve({ stdout, status }));
        });
        assert.equal(run.status, 0, `${command} exited ${run.status}`);
        assert.equal(shown(run.stdout), shown(output), command);
      }
    } finally {
      await server.stop();
      cleanup(server.dir);
    }
  });
});
