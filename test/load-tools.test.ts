/**
 * Real load generators as clients: ApacheBench speaks HTTP/1.0 with keep-alive (`ab -k`), wrk
 * speaks HTTP/1.1 keep-alive. Both must complete every request on reused connections.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { cleanup, needsTool, request, startServer } from './helpers.js';

describe('load generators as clients', () => {
  it('ab -k (HTTP/1.0 keep-alive): every put completes on kept-alive connections', { skip: needsTool('ab', 'apache2-utils') }, async () => {
    const server = await startServer();
    try {
      const N = 500;
      const out = run('ab', ['-k', '-q', '-n', String(N), '-c', '10', `http://127.0.0.1:${server.port}/?name=ab&opt=put&data=hello`]);
      assert.match(out, new RegExp(`Complete requests:\\s+${N}\\b`));
      assert.match(out, /Failed requests:\s+0\b/);
      assert.match(out, new RegExp(`Keep-Alive requests:\\s+${N}\\b`));
      const status = JSON.parse((await request(server.port, 'GET', '/?name=ab&opt=status_json')).body.toString());
      assert.equal(status.putpos, N);
    } finally {
      await server.stop();
      cleanup(server.dir);
    }
  });

  it('wrk (HTTP/1.1 keep-alive): no errors, no non-200 answers', { skip: needsTool('wrk', 'wrk') }, async () => {
    const server = await startServer();
    try {
      const out = run('wrk', ['-t1', '-c10', '-d1s', `http://127.0.0.1:${server.port}/?name=w&opt=put&data=x`]);
      assert.doesNotMatch(out, /Socket errors|Non-2xx/, out);
      const done = Number(/(\d+) requests in/.exec(out)?.[1]);
      assert.ok(done > 0, out);
      const status = JSON.parse((await request(server.port, 'GET', '/?name=w&opt=status_json')).body.toString());
      // wrk may cut the last in-flight requests at the deadline; every counted one was stored.
      assert.ok(status.putpos >= done, `${status.putpos} stored, ${done} answered`);
    } finally {
      await server.stop();
      cleanup(server.dir);
    }
  });
});

function run(cmd: string, args: string[]): string {
  // Load tools run in a child so the server (another process) is not starved by this one.
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `${cmd} failed: ${r.stderr}`);
  return r.stdout;
}
