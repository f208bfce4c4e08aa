/**
 * A crash of the whole server, master and worker killed at once (kill -9 of the process group),
 * followed at once by a restart on the same directory: the restart is never refused, however
 * long the killed worker stays a zombie or whichever process later reuses its PID.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { cleanup, request, startServer, tempDir } from '../helpers.js';

const CYCLES = 30;

it(`${CYCLES} kills of master and worker at once, each followed by an immediate restart that serves within 5 s`, async (t) => {
  const dir = tempDir();
  let server = await startServer({ dir, detached: true });
  const port = server.port;
  const slowest = { ms: 0 };
  try {
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      assert.equal((await request(port, 'GET', `/?name=k&opt=put&data=c${cycle}`)).body.toString(), 'HTTPSQS_PUT_OK');
      const killed = server.proc;
      const gone = new Promise((r) => (killed.exitCode !== null || killed.signalCode !== null ? r(null) : killed.once('exit', r)));
      process.kill(-killed.pid!, 'SIGKILL');
      const killedAt = Date.now();
      // Once the master is gone (its worker may linger as a zombie): until then it is a running
      // httpsqs named by the PID file, which a loaded machine can take a moment to end.
      await gone;
      server = await startServer({ dir, port, detached: true });
      const put = await request(port, 'GET', `/?name=k&opt=put&data=r${cycle}`);
      const ms = Date.now() - killedAt;
      slowest.ms = Math.max(slowest.ms, ms);
      assert.equal(put.body.toString(), 'HTTPSQS_PUT_OK');
      assert.ok(ms < 5000, `cycle ${cycle}: serving ${ms} ms after the kill`);
    }
    t.diagnostic(`slowest restart: ${slowest.ms} ms from the kill to an answered put`);
    // Every acknowledged put survived the kills.
    const status = JSON.parse((await request(port, 'GET', '/?name=k&opt=status_json')).body.toString());
    assert.equal(status.putpos, 2 * CYCLES);
  } finally {
    await server.stop();
    cleanup(dir);
  }
});
