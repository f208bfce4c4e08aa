/** Passwords: from a flag, a file or the environment; the admin password; never shown in `ps`. */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { cleanup, freePort, request, runCli, startInProcess, startServer, tempDir } from './helpers.js';

const text = async (port: number, target: string) => (await request(port, 'GET', target)).body.toString();

describe('passwords', () => {
  it('from HTTPSQS_AUTH or --auth-file, like -a', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'pw'), 'from-file\n');
    for (const [args, env, pw] of [
      [[], { HTTPSQS_AUTH: 'from-env' }, 'from-env'],
      [['--auth-file', join(dir, 'pw')], {}, 'from-file'],
    ] as const) {
      const server = await startInProcess({ args: [...args], env });
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

  it('a non-ASCII password is its UTF-8 bytes, from a flag, the environment or a file alike', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'pw'), '密码\r\nnot this line\n');
    const utf8 = '%E5%AF%86%E7%A0%81';
    // Each character cut to its low byte (U+5BC6 U+7801): how a latin1 reading of 密码 sees it.
    const misread = '%C6%01';
    for (const [args, env] of [
      [['-a', '密码', '--admin-auth', 'ü'], {}],
      [[], { HTTPSQS_AUTH: '密码', HTTPSQS_ADMIN_AUTH: 'ü' }],
      [['--auth-file', join(dir, 'pw'), '--admin-auth', 'ü'], {}],
    ] as const) {
      const server = await startInProcess({ args: [...args], env });
      const p = server.port;
      try {
        assert.equal(await text(p, `/?name=q&opt=put&data=x&auth=${utf8}`), 'HTTPSQS_PUT_OK', args.join(' '));
        assert.equal(await text(p, `/?name=q&opt=put&data=x&auth=${misread}`), 'HTTPSQS_AUTH_FAILED', args.join(' '));
        assert.equal(await text(p, '/?name=q&opt=reset&auth=%FC'), 'HTTPSQS_AUTH_FAILED');
        assert.equal(await text(p, '/?name=q&opt=reset&auth=%C3%BC'), 'HTTPSQS_RESET_OK');
        // The dashboard and /metrics compare the same way.
        for (const path of ['/metrics', '/dashboard/info', '/dashboard/history']) {
          assert.equal((await request(p, 'GET', `${path}?auth=${utf8}`)).status, 200, path);
          assert.equal((await request(p, 'GET', `${path}?auth=${misread}`)).status, 401, path);
        }
      } finally {
        await server.stop();
        cleanup(server.dir);
      }
    }
    // A file holds bytes: a password that is not UTF-8 (GBK here) is compared as those bytes.
    writeFileSync(join(dir, 'gbk'), Buffer.from([0xc4, 0xe3, 0xba, 0xc3, 0x0d, 0x0a]));
    const server = await startInProcess({ args: ['--auth-file', join(dir, 'gbk')] });
    try {
      assert.equal(await text(server.port, '/?name=q&opt=put&data=x&auth=%C4%E3%BA%C3'), 'HTTPSQS_PUT_OK');
      assert.equal(await text(server.port, '/?name=q&opt=put&data=x&auth=%C4%E3%BA%C3%0D'), 'HTTPSQS_AUTH_FAILED');
    } finally {
      await server.stop();
      cleanup(server.dir);
    }
    cleanup(dir);
  });

  it('--admin-auth is the only password for reset, maxqueue, synctime, maxdeliveries, redrive and discard; -a still guards the rest', async () => {
    const server = await startServer({ args: ['-a', 'user-pw', '--admin-auth', 'admin-pw'] });
    const p = server.port;
    try {
      assert.equal(await text(p, '/?name=q&opt=put&data=x&auth=user-pw'), 'HTTPSQS_PUT_OK');
      assert.equal(await text(p, '/?name=q&opt=put&data=x&auth=admin-pw'), 'HTTPSQS_AUTH_FAILED');
      for (const op of ['reset', 'maxqueue&num=100', 'synctime&num=5', 'maxdeliveries&num=3', 'redrive', 'discard&pos=1000000001']) {
        assert.equal(await text(p, `/?name=q&opt=${op}&auth=user-pw`), 'HTTPSQS_AUTH_FAILED', op);
        assert.equal(await text(p, `/?name=q&opt=${op}`), 'HTTPSQS_AUTH_FAILED', op);
      }
      assert.equal(await text(p, '/?name=q&opt=maxqueue&num=100&auth=admin-pw'), 'HTTPSQS_MAXQUEUE_OK');
      assert.equal(await text(p, '/?name=q&opt=synctime&num=5&auth=admin-pw'), 'HTTPSQS_SYNCTIME_OK');
      assert.equal(await text(p, '/?name=q&opt=maxdeliveries&num=3&auth=admin-pw'), 'HTTPSQS_MAXDELIVERIES_OK');
      assert.equal(await text(p, '/?name=q&opt=redrive&auth=admin-pw'), '{"count":0,"dead":0}\n');
      assert.equal(await text(p, '/?name=q&opt=dead&auth=user-pw'), '[]\n');
      assert.equal(await text(p, '/?name=q&opt=discard&pos=1000000001&auth=admin-pw'), 'HTTPSQS_DEAD_NOT_FOUND');
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

  it("a password in a group of short flags (-da X, -daX) does not reach the process title, nor a Redis URL's in an error", async () => {
    for (const group of [['-da', 'Grouped-pw1'], ['-daGrouped-pw1']]) {
      const dir = tempDir();
      const port = await freePort();
      const pidfile = join(dir, 'httpsqs.pid');
      const started = await runCli(['-l', '127.0.0.1', '-p', String(port), '-x', dir, '-i', pidfile, ...group]);
      assert.equal(started.code, 0, started.stderr);
      const primary = Number(readFileSync(pidfile, 'utf8'));
      try {
        assert.equal(await text(port, '/?name=q&opt=put&data=x&auth=Grouped-pw1'), 'HTTPSQS_PUT_OK');
        const cmdline = readFileSync(`/proc/${primary}/cmdline`, 'utf8');
        assert.doesNotMatch(cmdline, /Grouped-pw1/, group.join(' '));
        assert.match(cmdline, /-da ?\*\*\*/);
      } finally {
        process.kill(primary, 'SIGTERM');
        for (let i = 0; i < 200 && existsSync(`/proc/${primary}`); i++) await sleep(25);
        cleanup(dir);
      }
    }
    // Typed with a raw @ the password's rest would come in the host part, which errors name.
    for (const url of [
      'redis://:Redis/Secret9@127.0.0.1:6379',
      'redis://:RedisSecret9@127.0.0.1:63x79',
      'redis://:Redis@Secret9@127.0.0.1:6379',
      'redis://:Redis@Secret9:x@127.0.0.1:6379',
    ]) {
      const refused = await runCli(['-l', '127.0.0.1', '-x', tempDir(), '--store', url]);
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(refused.stderr, /--store: .*redis:\/\/\*\*\*@127\.0\.0\.1/);
      assert.doesNotMatch(refused.stderr, /Secret9/);
    }
  });

  it('an admin password alone leaves the other operations open', async () => {
    const server = await startInProcess({ env: { HTTPSQS_ADMIN_AUTH: 'adm' } });
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
