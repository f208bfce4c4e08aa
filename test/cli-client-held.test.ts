/**
 * `httpsqs-cli` with delayed messages and dead letters: put --delay, maxdeliveries, dead and
 * redrive, and how status and list show them. (The rest of httpsqs-cli: cli-client.test.ts; apart,
 * so that the two run side by side.)
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { cleanup, cliClient, cliSuite, startServer } from './helpers.js';

describe('httpsqs-cli: delayed messages and dead letters', () => {
  const suite = cliSuite();
  const cli: ReturnType<typeof cliClient> = (args, o) => suite.cli(args, o);

  it('put --delay prints the schedule id; status and list show delayed messages; the message comes when due', async () => {
    const r = cli(['put', 'k-delay', 'later', '--delay', '1']);
    assert.equal(r.code, 0, r.stderr);
    const id = Number(r.stdout);
    assert.ok(id > 1_000_000_000, r.stdout);
    assert.equal(cli(['get', 'k-delay']).code, 3);
    assert.match(cli(['status', 'k-delay']).stdout, /Number of unread queue: 0\nNumber of delayed messages: 1\n$/);
    assert.equal(JSON.parse(cli(['--json', 'status', 'k-delay']).stdout).delayed, 1);
    assert.match(cli(['list', '--prefix', 'k-delay']).stdout, /\nk-delay\s+0\s+0\s+1\s+0\s+0\s+0\s+1000000\n$/);
    const batch = JSON.parse(cli(['--json', 'put', 'k-delay', '--file', '-', '--delay', '1'], { input: 'a\nb\n' }).stdout);
    assert.equal(batch.count, 2);
    const json = JSON.parse(cli(['--json', 'put', 'k-delay', 'x', '-d', '1']).stdout);
    assert.deepEqual(json, { pos: id + 3, delay: 1 });
    assert.equal(JSON.parse(cli(['--json', 'status', 'k-delay']).stdout).delayed, 4);
    await sleep(1100);
    const got = JSON.parse(cli(['--json', 'get', 'k-delay', '--wait', '2']).stdout);
    assert.deepEqual(got, { pos: id, deliveries: 1, data: 'later' });
    // --delay 0 is a plain put; a delay that is not one is a usage error, as is one for the C server.
    assert.equal(cli(['put', 'k-delay-0', 'now', '--delay', '0']).stdout, '1\n');
    for (const [args, message] of [
      [['put', 'k-delay', 'x', '--delay', '1.5'], 'httpsqs-cli: --delay: expected a whole number, got "1.5"\n'],
      [['put', 'k-delay', 'x', '--delay', '2592001'], 'httpsqs-cli: --delay: expected 0..2592000, got 2592001\n'],
      [['--reference', 'put', 'k-delay', 'x', '--delay', '5'], 'httpsqs-cli: --delay: the C server (--reference) has no delayed messages\n'],
    ] as const) {
      assert.deepEqual(cli([...args]), { code: 2, stdout: '', stderr: message }, args.join(' '));
    }
    cli(['maxqueue', 'k-delay-full', '10']);
    cli(['put', 'k-delay-full', '--file', '-', '--delay', '60'], { input: 'm\n'.repeat(10) });
    const full = cli(['put', 'k-delay-full', 'one too many', '--delay', '60']);
    assert.deepEqual([full.code, full.stderr], [4, 'httpsqs-cli: queue k-delay-full already keeps maxqueue messages outside its ring (delayed, dead)\n']);
  });

  it('maxdeliveries, dead and redrive: a message nacked that often is a dead letter, listed and brought back', () => {
    assert.deepEqual(cli(['maxdeliveries', 'k-dlq', '2']), { code: 0, stdout: 'maxdeliveries of k-dlq set to 2\n', stderr: '' });
    assert.match(cli(['status', 'k-dlq']).stdout, /\nMaximum deliveries: 2\n$/);
    cli(['put', 'k-dlq', 'poison']);
    cli(['put', 'k-dlq', 'also poison']);
    for (let i = 0; i < 4; i++) {
      const got = cli(['get', 'k-dlq', '--lease', '30']);
      assert.equal(got.code, 0, got.stderr);
      const [, pos, token] = /Pos: (\d+)\nLease: (\S+)/.exec(got.stderr)!;
      assert.equal(cli(['nack', 'k-dlq', pos!, token!]).code, 0);
    }
    assert.equal(cli(['get', 'k-dlq']).code, 3, 'dead letters are not handed out');
    assert.match(cli(['status', 'k-dlq']).stdout, /Number of unread queue: 0\nNumber of dead letters: 2\nMaximum deliveries: 2\n$/);
    assert.match(cli(['list', '--prefix', 'k-dlq']).stdout, /\nk-dlq\s+0\s+0\s+0\s+2\s+2\s+2\s+1000000\n$/);

    const lines = cli(['dead', 'k-dlq'])
      .stdout.trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      lines.map((d) => [d.deliveries, d.data]),
      [
        [2, 'poison'],
        [2, 'also poison'],
      ],
    );
    assert.ok(
      lines.every((d) => d.pos > 1_000_000_000 && Math.abs(Date.parse(d.died) - Date.now()) < 60_000),
      JSON.stringify(lines),
    );
    const json = JSON.parse(cli(['dead', 'k-dlq', '--json']).stdout);
    assert.deepEqual(
      json.map((d: { pos: number; died: number }) => [d.pos, d.died]),
      lines.map((d) => [d.pos, Date.parse(d.died)]),
    );
    assert.deepEqual(
      JSON.parse(cli(['--json', 'dead', 'k-dlq', '--num', '1']).stdout).map((d: { data: string }) => d.data),
      ['poison'],
    );
    assert.deepEqual(
      JSON.parse(cli(['--json', 'dead', 'k-dlq', '--after', String(lines[0].pos)]).stdout).map((d: { data: string }) => d.data),
      ['also poison'],
    );
    assert.deepEqual(cli(['dead', 'k-none']), { code: 0, stdout: '', stderr: '' });
    assert.equal(cli(['--json', 'dead', 'k-none']).stdout, '[]\n');

    assert.deepEqual(cli(['redrive', 'k-dlq', '--num', '1']), { code: 0, stdout: '1 dead letter of k-dlq deliverable again, 1 left\n', stderr: '' });
    assert.deepEqual(JSON.parse(cli(['--json', 'get', 'k-dlq']).stdout), { pos: lines[0].pos, deliveries: 1, data: 'poison' });
    assert.deepEqual(JSON.parse(cli(['--json', 'redrive', 'k-dlq']).stdout), { count: 1, dead: 0 });
    assert.equal(cli(['redrive', 'k-dlq']).stdout, '0 dead letters of k-dlq deliverable again, 0 left\n');

    cli(['maxdeliveries', 'k-discard', '1']);
    cli(['put', 'k-discard', 'junk']);
    const [, pos, token] = /Pos: (\d+)\nLease: (\S+)/.exec(cli(['get', 'k-discard', '--lease', '30']).stderr)!;
    cli(['nack', 'k-discard', pos!, token!]);
    const [junk] = JSON.parse(cli(['--json', 'dead', 'k-discard']).stdout) as Array<{ pos: number }>;
    assert.deepEqual(cli(['discard', 'k-discard', String(junk!.pos)]), { code: 0, stdout: `dead letter ${junk!.pos} of k-discard discarded\n`, stderr: '' });
    assert.deepEqual(cli(['discard', 'k-discard', String(junk!.pos)]), {
      code: 5,
      stdout: '',
      stderr: `httpsqs-cli: no dead letter at position ${junk!.pos} of k-discard\n`,
    });
    assert.equal(cli(['--json', 'dead', 'k-discard']).stdout, '[]\n');
    assert.equal(cli(['get', 'k-dlq']).stdout, 'also poison');

    assert.deepEqual(cli(['--json', 'maxdeliveries', 'k-dlq', '0']), { code: 0, stdout: '{"maxdeliveries":0}\n', stderr: '' });
    assert.doesNotMatch(cli(['status', 'k-dlq']).stdout, /Maximum deliveries/);
    for (const [args, message] of [
      [['maxdeliveries', 'k-dlq', '1001'], 'httpsqs-cli: <num>: expected 0..1000, got 1001\n'],
      [['maxdeliveries', 'k-dlq', 'many'], 'httpsqs-cli: <num>: expected a whole number, got "many"\n'],
      [['redrive', 'k-dlq', '--num', '0'], 'httpsqs-cli: --num: expected 1..1000, got 0\n'],
      [['dead', 'k-dlq', '--num', '1001'], 'httpsqs-cli: --num: expected 1..1000, got 1001\n'],
      [['dead', 'k-dlq', '--after', '-1'], 'httpsqs-cli: --after: expected a whole number, got "-1"\n'],
    ] as const) {
      assert.deepEqual(cli([...args]), { code: 2, stdout: '', stderr: message }, args.join(' '));
    }
  });

  it('maxdeliveries and redrive need the admin password of a server that has one (exit code 6)', async () => {
    const locked = await startServer({ args: ['-a', 'user-pass', '--admin-auth', 'admin-pass'] });
    try {
      const as = (auth: string) => cliClient(locked.port)(['maxdeliveries', 'k-admin', '3'], { env: { HTTPSQS_AUTH: auth } });
      assert.equal(as('user-pass').code, 6);
      assert.equal(as('admin-pass').code, 0);
      assert.equal(cliClient(locked.port)(['redrive', 'k-admin'], { env: { HTTPSQS_AUTH: 'user-pass' } }).code, 6);
      assert.equal(cliClient(locked.port)(['--json', 'dead', 'k-admin'], { env: { HTTPSQS_AUTH: 'user-pass' } }).stdout, '[]\n');
    } finally {
      await locked.stop();
      cleanup(locked.dir);
    }
  });
});
