/** Passwords: from a flag, a file or the environment; the admin password; never shown in `ps`. */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { cleanup, freePort, request, runCli, startServer, tempDir } from './helpers.js';

const text = async (port: number, target: string) => (await request(port, 'GET', target)).body.toString();

describe('passwords', () => {
  it('from HTTPSQS_AUTH or --auth-file, like -a', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'pw'), 'from-file\n');
    for (const [args, env, pw] of [
      [[], { HTTPSQS_AUTH: 'from-env' }, 'from-env'],
      [['--auth-file', join(dir, 'pw')], {}, 'from-file'],
    ] as const) {
      const server = await startServer({ args: [...args], env });
      assert.equal(await text(server.port, '/?name=q&opt=put&data=x'), 'HTTPSQS_AUTH_FAILED');
      assert.equal(await text(server.port, `/?name=q&opt=put&data=x&auth=${pw}`), 'HTTPSQS_PUT_OK');
      await server.stop();
      cleanup(server.dir);
    }
    cleanup(dir);
  });

  it('an empty password, from a flag, a file or the environment, stops the start with one line naming it', async () => {
    const dir = tempDir();
    const blankFirst = join(dir, 'blank-first');
    writeFileSync(blankFirst, '\r\nthe second line\n');
    const start = ['-l', '127.0.0.1', '-p', String(await freePort()), '-x', join(dir, 'data'), '-i', join(dir, 'pid')];
    for (const [args, env, source] of [
      [['-a', ''], {}, /^httpsqs: -a\/--auth: the password is empty/],
      [['--admin-auth='], {}, /^httpsqs: --admin-auth: the password is empty/],
      [['--auth-file', '/dev/null'], {}, /^httpsqs: --auth-file: the first line of \/dev\/null is empty/],
      // Anyone could reset with auth= (or none) while -a guards the rest.
      [['-a', 's3cret', '--admin-auth-file', '/dev/null'], {}, /^httpsqs: --admin-auth-file: the first line of \/dev\/null is empty/],
      [['--auth-file', blankFirst], {}, /^httpsqs: --auth-file: the first line of .*blank-first is empty/],
      [[], { HTTPSQS_AUTH: '' }, /^httpsqs: HTTPSQS_AUTH is set but empty/],
      [['-a', 's3cret'], { HTTPSQS_ADMIN_AUTH: '' }, /^httpsqs: HTTPSQS_ADMIN_AUTH is set but empty/],
    ] as const) {
      const { code, stderr } = await runCli([...start, ...args], { env, timeoutMs: 5000 });
      assert.equal(code, 1, `${args.join(' ')} ${JSON.stringify(env)}: ${stderr}`);
      assert.equal(stderr.trim().split('\n').length, 1, stderr);
      assert.match(stderr, source);
    }
    cleanup(dir);
  });

  it('--admin-auth is the only password for reset, maxqueue and synctime; -a still guards the rest', async () => {
    const server = await startServer({ args: ['-a', 'user-pw', '--admin-auth', 'admin-pw'] });
    const p = server.port;
    try {
      assert.equal(await text(p, '/?name=q&opt=put&data=x&auth=user-pw'), 'HTTPSQS_PUT_OK');
      assert.equal(await text(p, '/?name=q&opt=put&data=x&auth=admin-pw'), 'HTTPSQS_AUTH_FAILED');
      for (const op of ['reset', 'maxqueue&num=100', 'synctime&num=5']) {
        assert.equal(await text(p, `/?name=q&opt=${op}&auth=user-pw`), 'HTTPSQS_AUTH_FAILED', op);
        assert.equal(await text(p, `/?name=q&opt=${op}`), 'HTTPSQS_AUTH_FAILED', op);
      }
      assert.equal(await text(p, '/?name=q&opt=maxqueue&num=100&auth=admin-pw'), 'HTTPSQS_MAXQUEUE_OK');
      assert.equal(await text(p, '/?name=q&opt=synctime&num=5&auth=admin-pw'), 'HTTPSQS_SYNCTIME_OK');
      assert.equal(await text(p, '/?name=q&opt=reset&auth=admin-pw'), 'HTTPSQS_RESET_OK');
      // Passwords never reach the process title (ps) or the log.
      const cmdline = readFileSync(`/proc/${server.proc.pid}/cmdline`, 'utf8');
      assert.doesNotMatch(cmdline, /user-pw|admin-pw/);
      assert.match(cmdline, /-a \*\*\*/);
      assert.doesNotMatch(server.stderr(), /user-pw|admin-pw/);
    } finally {
      await server.stop();
      cleanup(server.dir);
    }
  });

  it('an admin password alone leaves the other operations open', async () => {
    const server = await startServer({ env: { HTTPSQS_ADMIN_AUTH: 'adm' } });
    try {
      assert.equal(await text(server.port, '/?name=q&opt=put&data=x'), 'HTTPSQS_PUT_OK');
      assert.equal(await text(server.port, '/?name=q&opt=reset'), 'HTTPSQS_AUTH_FAILED');
      assert.equal(await text(server.port, '/?name=q&opt=reset&auth=adm'), 'HTTPSQS_RESET_OK');
    } finally {
      await server.stop();
      cleanup(server.dir);
    }
  });
});
