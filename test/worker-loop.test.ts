/**
 * The shell worker loop of docs/EXTENSIONS.md, taken from the page as it is and run: it handles
 * and settles a message, waits instead of spinning when there is no server, and does not take
 * `HTTPSQS_AUTH_FAILED` for a message.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { HttpsqsClient } from '../src/client/index.js';
import { cleanup, freePort, needsTool, ROOT, startServer, tempDir, waitFor } from './helpers.js';

/** The ```sh block of the page that holds the loop. */
function documentedLoop(): string {
  const page = readFileSync(join(ROOT, 'docs', 'EXTENSIONS.md'), 'utf8');
  const blocks = [...page.matchAll(/^```sh\n([\s\S]*?)^```$/gm)]
    .map((m) => m[1]!)
    .filter((b) => /while true; do/.test(b) && b.includes('opt=get&wait=30&lease=300'));
  assert.equal(blocks.length, 1, 'one worker loop in docs/EXTENSIONS.md');
  return blocks[0]!;
}

/**
 * Runs the loop with `shell` against `url` (the queue's, as $Q) for as long as `until` takes.
 * `process` records each message it is given in `handled`, failing the first time it sees one
 * (so each is nacked once, then acked); every curl call is counted in `calls`.
 */
async function runLoop(shell: string, url: string, until: (seen: { handled: () => string[]; calls: () => number; stderr: () => string }) => Promise<void>) {
  const dir = tempDir('httpsqs-loop-');
  const prelude = `
Q='${url}'
process() { m=$(cat); printf '%s\\n' "$m" >>"${dir}/handled"; [ "$(grep -cxF -- "$m" "${dir}/handled")" -ge 2 ]; }
curl() { echo . >>"${dir}/calls"; command curl "$@"; }
`;
  const child = spawn(shell, ['-c', prelude + documentedLoop()], { detached: true, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, TMPDIR: dir } });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const read = (name: string) => {
    try {
      return readFileSync(join(dir, name), 'utf8').split('\n').slice(0, -1);
    } catch {
      return [];
    }
  };
  const exited = new Promise((r) => child.once('exit', r));
  try {
    await until({ handled: () => read('handled'), calls: () => read('calls').length, stderr: () => stderr });
  } finally {
    process.kill(-child.pid!, 'SIGKILL'); // the loop with its curl and sleep
    await exited;
    cleanup(dir);
  }
}

describe('the worker loop of docs/EXTENSIONS.md', { skip: needsTool('curl', 'curl') }, () => {
  for (const shell of ['bash', 'dash']) {
    it(`handles a message, gives it back when process fails, acks it when it succeeds (${shell})`, {
      skip: shell === 'dash' && needsTool('dash', 'dash'),
    }, async () => {
      const server = await startServer();
      const q = new HttpsqsClient({ url: `http://127.0.0.1:${server.port}` });
      try {
        await q.put('k-loop', 'job one');
        await q.put('k-loop', 'HTTPSQS_AUTH_FAILED'); // a message may say anything: its Pos makes it one
        await runLoop(shell, `http://127.0.0.1:${server.port}/?name=k-loop`, async (seen) => {
          await waitFor(() => seen.handled().length === 4, 15_000);
          await waitFor(async () => (await q.statusJson('k-loop')).leased === 0, 5_000);
          assert.deepEqual(seen.handled(), ['job one', 'job one', 'HTTPSQS_AUTH_FAILED', 'HTTPSQS_AUTH_FAILED']);
          assert.deepEqual(await q.statusJson('k-loop'), {
            name: 'k-loop',
            maxqueue: 1000000,
            putpos: 2,
            putlap: 1,
            getpos: 2,
            getlap: 1,
            unread: 0,
            leased: 0,
            delayed: 0,
            dead: 0,
            maxdeliveries: 0,
          });
          assert.equal(seen.stderr(), '');
        });
      } finally {
        await q.close();
        await server.stop();
        cleanup(server.dir);
      }
    });
  }

  it('waits, longer each time, while there is no server', async () => {
    const port = await freePort();
    await runLoop('bash', `http://127.0.0.1:${port}/?name=k-loop`, async (seen) => {
      await sleep(2000);
      assert.ok(seen.calls() >= 1 && seen.calls() <= 5, `${seen.calls()} curl calls in 2 s`);
      assert.deepEqual(seen.handled(), []);
      assert.match(seen.stderr(), /^worker: no answer: curl exit 7; trying again in 1 s\nworker: no answer: curl exit 7; trying again in 2 s\n$/);
    });
  });

  it('takes HTTPSQS_AUTH_FAILED for a refusal, not a message, and waits', async () => {
    const server = await startServer({ args: ['-a', 'sesame'] });
    try {
      await runLoop('bash', `http://127.0.0.1:${server.port}/?name=k-loop`, async (seen) => {
        await sleep(2000);
        assert.ok(seen.calls() >= 1 && seen.calls() <= 5, `${seen.calls()} curl calls in 2 s`);
        assert.deepEqual(seen.handled(), []);
        assert.match(seen.stderr(), /^worker: 200: HTTPSQS_AUTH_FAILED; trying again in 1 s\nworker: 200: HTTPSQS_AUTH_FAILED; trying again in 2 s\n$/);
      });
    } finally {
      await server.stop();
      cleanup(server.dir);
    }
  });
});
