/**
 * Running it as an operator does: the version, a log file that survives logrotate (with -d and
 * --workers), log levels, readable logs on a terminal, the start line, the systemd unit, the
 * Dockerfile, and installing the commands onto PATH without install-script warnings.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, renameSync, rmdirSync, writeFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { describe, it } from 'node:test';
import { parseConfig } from '../src/cli/options.js';
import { cleanup, freePort, needsTool, request, ROOT, runCli, spawnCli, startServer, tempDir, waitFor, workerPids } from './helpers.js';
import { noRedis, startRedis } from './redis-servers.js';

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

/** The log file's lines, parsed. */
const lines = (file: string): Array<Record<string, unknown>> =>
  existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>)
    : [];

const alive = (pid: number) => existsSync(`/proc/${pid}`);

it('--version and -V print the version and exit 0', async () => {
  for (const flag of ['--version', '-V']) {
    const r = await runCli([flag]);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `httpsqs ${VERSION}\n`);
  }
  assert.doesNotMatch((await runCli(['--help'])).stdout, /BENCHMARKS/, '--help names no file the package does not ship');
});

it('--log-file with -d and --workers 2: every process appends to it, SIGHUP reopens it after a move, and the server goes on', async () => {
  const dir = tempDir();
  const log = join(dir, 'httpsqs.log');
  const pidfile = join(dir, 'httpsqs.pid');
  const port = await freePort();
  const started = await runCli(['-d', '-l', '127.0.0.1', '-p', String(port), '-x', join(dir, 'data'), '-i', pidfile, '--workers', '2', '--log-file', log]);
  assert.equal(started.code, 0, started.stderr);
  const master = Number(readFileSync(pidfile, 'utf8'));
  try {
    assert.equal((await request(port, 'GET', '/?name=q&opt=put&data=x')).body.toString(), 'HTTPSQS_PUT_OK');
    const start = lines(log).find((l) => l.event === 'start')!;
    assert.match(String(start.msg), /^listening on 127\.0\.0\.1:\d+, lmdb in .*, sync durable \(ack after flush\), 2 workers$/);
    assert.equal(start.version, VERSION);

    // logrotate: move the file away, then SIGHUP.
    renameSync(log, `${log}.1`);
    process.kill(master, 'SIGHUP');
    await waitFor(() => lines(log).some((l) => l.event === 'log-reopened'));
    const workers = workerPids(master);
    assert.equal(workers.length, 2);
    // Each worker writes to the new file, not to the one moved away.
    const opened = (pid: number) =>
      readdirSync(`/proc/${pid}/fd`).map((fd) => {
        try {
          return readlinkSync(`/proc/${pid}/fd/${fd}`);
        } catch {
          return '';
        }
      });
    await waitFor(() => workers.every((pid) => opened(pid).includes(log) && !opened(pid).includes(`${log}.1`)));
    assert.equal((await request(port, 'GET', '/?name=q&opt=get')).body.toString(), 'x', 'SIGHUP did not stop the server');

    // A reopen that fails (here a directory where the file was) leaves the log where it was, says
    // so there, and the server goes on; the next SIGHUP that can open the file does.
    renameSync(log, `${log}.2`);
    mkdirSync(log);
    process.kill(master, 'SIGHUP');
    await waitFor(() => lines(`${log}.2`).some((l) => l.event === 'log-reopen-failed'));
    assert.equal((await request(port, 'GET', '/?name=q&opt=put&data=y')).body.toString(), 'HTTPSQS_PUT_OK', 'a failed reopen stopped the server');
    assert.equal(readFileSync(pidfile, 'utf8').trim(), String(master));
    rmdirSync(log);
    process.kill(master, 'SIGHUP');
    await waitFor(() => lines(log).some((l) => l.event === 'log-reopened'));

    process.kill(workers[0]!, 'SIGKILL');
    await waitFor(() => lines(log).some((l) => l.event === 'restart'));
  } finally {
    process.kill(master, 'SIGTERM');
    await waitFor(() => !alive(master), 10_000);
  }
  assert.ok(lines(log).some((l) => l.event === 'stopped'));
  assert.ok(lines(`${log}.1`).some((l) => l.event === 'start'));
  cleanup(dir);
});

it('--log-level warn leaves out info lines; a log file that cannot be opened stops the start', async () => {
  const dir = tempDir();
  const log = join(dir, 'warn.log');
  const port = await freePort();
  const started = await runCli([
    '-d',
    '-l',
    '127.0.0.1',
    '-p',
    String(port),
    '-x',
    dir,
    '-i',
    join(dir, 'no', 'such', 'dir.pid'),
    '--log-level',
    'warn',
    '--log-file',
    log,
  ]);
  // -d wants a PID file it can write; without -d the warning is logged instead.
  assert.equal(started.code, 1);
  // A port of its own: the one above may not be free again yet, or another test may have it now.
  const again = await freePort();
  // Stopped once it answers, not after a fixed wait: on a loaded machine that could come before
  // it had started.
  const {
    proc: server,
    stderr,
    exited,
  } = spawnCli(['-l', '127.0.0.1', '-p', String(again), '-x', dir, '-i', join(dir, 'no', 'dir.pid'), '--log-level', 'warn', '--log-file', log]);
  try {
    await waitFor(
      () =>
        request(again, 'GET', '/?name=q&opt=status').then(
          () => true,
          () => false,
        ),
      30_000,
    );
    server.kill('SIGTERM');
    assert.equal(await exited, 0, stderr());
  } finally {
    server.kill('SIGKILL');
  }
  const events = lines(log).map((l) => l.event);
  assert.ok(events.includes('pidfile'), `warnings are kept: ${events.join(', ')}`);
  assert.ok(!events.includes('start') && !events.includes('stopped'), `info lines are left out: ${events.join(', ')}`);
  const bad = await runCli(['-x', dir, '--log-file', join(dir, 'missing', 'x.log')]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^httpsqs: --log-file: cannot open .*missing\/x\.log: ENOENT/);
  cleanup(dir);
});

it('on a terminal the log is readable text; piped it is JSON', { skip: needsTool('script', 'bsdutils') }, async () => {
  const dir = tempDir();
  const port = await freePort();
  const pidFile = join(dir, 'pid');
  // `timeout` is only a backstop: the server is stopped by its pid once it is listening (a fixed
  // wait stopped it before it had started on a loaded machine).
  const cmd = `timeout -s TERM 60 ${process.execPath} ${join(ROOT, 'dist/src/cli/main.js')} -l 127.0.0.1 -p ${port} -x ${dir} -i ${pidFile}`;
  const child = spawn('script', ['-qec', cmd, '/dev/null'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<number | null>((done) => child.on('close', done));
  try {
    await waitFor(() => / listening on /.test(out) && existsSync(pidFile) && Number(readFileSync(pidFile, 'utf8')) > 0, 30_000);
    process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGTERM');
    assert.equal(await exited, 0);
  } finally {
    child.kill('SIGKILL');
  }
  assert.match(out, /^\d{4}-\d\d-\d\dT[\d:.]+Z INFO {2}listening on 127\.0\.0\.1:\d+, lmdb in /m);
  assert.match(out, /Z INFO {2}stopped\r?\n/);
  assert.doesNotMatch(out, /"msg":/);
  cleanup(dir);
});

it('with --store redis://… the start line names the store, no data directory and no LMDB sync mode', { skip: noRedis() }, async () => {
  const redis = await startRedis();
  const server = await startServer({ args: ['--store', `${redis.url}?prefix=start:`] });
  try {
    const start = server
      .stderr()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.event === 'start')!;
    assert.match(String(start.msg), /^listening on 127\.0\.0\.1:\d+, store redis:\/\/.*, 1 worker$/);
    assert.equal(start.datadir, undefined);
    assert.equal(start.sync, undefined);
    assert.match(String(start.store), /^redis:\/\//);
  } finally {
    await server.stop();
    cleanup(server.dir);
    await redis.stop();
  }
});

describe('packaging', () => {
  it('contrib/httpsqs.service passes systemd-analyze verify, and its command line is one the server takes', {
    skip: needsTool('systemd-analyze', 'systemd'),
  }, () => {
    const unit = readFileSync(join(ROOT, 'contrib/httpsqs.service'), 'utf8');
    for (const line of [/^User=httpsqs$/m, /^Restart=always$/m, /^KillMode=mixed$/m, /^NoNewPrivileges=yes$/m, /^ProtectSystem=strict$/m])
      assert.match(unit, line);
    assert.ok(Number(/^LimitNOFILE=(\d+)$/m.exec(unit)![1]) >= 10_000 + 100, 'enough descriptors for 10,000 connections');
    assert.doesNotMatch(unit, /^StandardOutput=|^StandardError=/m, 'the log goes to the journal');
    const exec = /^ExecStart=(\S+) (\S+) (.*)$/m.exec(unit)!;
    assert.equal(exec[2], '/opt/httpsqs/dist/src/cli/main.js');
    const config = parseConfig(exec[3]!.split(' '));
    assert.equal(config.datadir, '/var/lib/httpsqs');
    // Verified where node really is on this machine; any complaint fails the test.
    const dir = tempDir();
    const copy = join(dir, 'httpsqs.service');
    writeFileSync(copy, unit.replace(`ExecStart=${exec[1]}`, `ExecStart=${process.execPath}`));
    const r = spawnSync('systemd-analyze', ['verify', copy], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr.trim(), '', 'no warnings');
    cleanup(dir);
  });

  it("contrib/httpsqs.service's system call filter lets the server start, serve with workers and stop", {
    skip: needsTool('systemd-analyze', 'systemd') || needsTool('python3', 'python3'),
  }, async () => {
    // What systemd would load: the unit's groups, expanded, every other call killing the process
    // (stricter than the unit, which answers others with an error).
    const unit = readFileSync(join(ROOT, 'contrib/httpsqs.service'), 'utf8');
    const wanted = [...unit.matchAll(/^SystemCallFilter=(.*)$/gm)].flatMap((m) => m[1]!.trim().split(/\s+/));
    assert.ok(wanted.includes('@system-service'));
    const groups = new Map<string, string[]>();
    let group: string[] = [];
    for (const line of execFileSync('systemd-analyze', ['syscall-filter'], { encoding: 'utf8' }).split('\n')) {
      if (line.startsWith('@')) groups.set(line.trim(), (group = []));
      else if (line.trim() && !line.trim().startsWith('#')) group.push(line.trim());
    }
    const allowed = new Set<string>();
    const add = (name: string): void => {
      if (!name.startsWith('@')) return void allowed.add(name);
      assert.ok(groups.has(name), `systemd knows ${name}`);
      for (const member of groups.get(name)!) add(member);
    };
    for (const name of wanted) add(name);
    const dir = tempDir();
    writeFileSync(join(dir, 'allowed'), [...allowed].join('\n'));
    const launch = [
      'import ctypes, os, sys',
      "lib = ctypes.CDLL('libseccomp.so.2')",
      'lib.seccomp_init.restype = ctypes.c_void_p',
      'lib.seccomp_init.argtypes = [ctypes.c_uint32]',
      'lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]',
      'lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]',
      'lib.seccomp_load.argtypes = [ctypes.c_void_p]',
      'ctx = lib.seccomp_init(0x80000000)', // SCMP_ACT_KILL_PROCESS
      'for name in open(sys.argv[1]).read().split():',
      '    nr = lib.seccomp_syscall_resolve_name(name.encode())',
      '    if nr >= 0: lib.seccomp_rule_add(ctx, 0x7fff0000, nr, 0)', // SCMP_ACT_ALLOW
      'assert lib.seccomp_load(ctx) == 0',
      'os.execv(sys.argv[2], sys.argv[2:])',
    ].join('\n');
    const port = await freePort();
    const args = ['-l', '127.0.0.1', '-p', String(port), '-x', join(dir, 'data'), '-i', join(dir, 'pid'), '--workers', '2'];
    const proc = spawn('python3', ['-c', launch, join(dir, 'allowed'), process.execPath, join(ROOT, 'dist/src/cli/main.js'), ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    proc.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    let ended = false;
    const exited = new Promise<[number | null, string | null]>((r) => proc.once('exit', (code, signal) => ((ended = true), r([code, signal]))));
    try {
      await waitFor(
        async () => ended || (await request(port, 'GET', '/?name=sc&opt=put&data=filtered').catch(() => undefined))?.body.toString() === 'HTTPSQS_PUT_OK',
        10_000,
      ).catch(() => {});
      if (ended) assert.fail(`not serving under the filter: exit ${JSON.stringify(await exited)}, ${stderr}`);
      const got = await request(port, 'GET', '/?name=sc&opt=get').catch((err: Error) => assert.fail(`${err.message}; the server said: ${stderr}`));
      assert.equal(got.body.toString(), 'filtered', stderr);
      proc.kill('SIGTERM');
      assert.deepEqual(await exited, [0, null], stderr);
    } finally {
      proc.kill('SIGKILL');
      cleanup(dir);
    }
  });

  it('the Dockerfile runs the server with a command line it takes, as a user, with /data and a health check that works', async () => {
    const docker = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
    const json = (instr: string) => JSON.parse(new RegExp(`^${instr} (\\[.*\\])$`, 'm').exec(docker.replace(/\\\n\s*/g, ''))![1]!) as string[];
    const [, main] = json('ENTRYPOINT');
    assert.equal(main, 'dist/src/cli/main.js');
    const config = parseConfig(json('CMD'));
    assert.equal(config.listen, '0.0.0.0');
    assert.equal(config.datadir, '/data');
    assert.match(docker, /^FROM node:22-\S*slim$/m);
    assert.match(docker, /^USER httpsqs$/m);
    assert.match(docker, /^VOLUME \/data$/m);
    // The messages in /data are the server user's alone, as in a directory the server makes.
    assert.match(docker, /mkdir -m 0700 \/data && chown httpsqs:httpsqs \/data/);
    assert.ok(existsSync(join(ROOT, '.dockerignore')));
    // The HEALTHCHECK's own command, against a real server on the port it checks, then without one.
    const check = json('HEALTHCHECK .*CMD');
    const port = await freePort();
    const script = check[2]!.replace('127.0.0.1:1218', `127.0.0.1:${port}`);
    assert.notEqual(script, check[2], 'the health check asks the server port');
    assert.equal(spawnSync(process.execPath, ['-e', script]).status, 1, 'unhealthy without a server');
    const server = await startServer({ port });
    try {
      assert.equal(spawnSync(process.execPath, ['-e', script]).status, 0, 'healthy with one');
    } finally {
      await server.stop();
      cleanup(server.dir);
    }
  });

  it('npm link puts httpsqs and httpsqs-cli on PATH, with no install-script warning', () => {
    const prefix = tempDir('httpsqs-prefix-');
    const env = { ...process.env, NPM_CONFIG_PREFIX: prefix };
    const r = spawnSync('npm', ['link', '--no-audit', '--no-fund'], { cwd: ROOT, env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stdout + r.stderr, /warn/i);
    assert.equal(execFileSync(join(prefix, 'bin', 'httpsqs'), ['--version'], { encoding: 'utf8' }), `httpsqs ${VERSION}\n`);
    assert.ok(execFileSync(join(prefix, 'bin', 'httpsqs-cli'), ['--version'], { encoding: 'utf8' }).includes(VERSION));
    cleanup(prefix);
  });

  it('the package holds what its maps, bins and exports name, and no tests, benchmarks or examples', () => {
    const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const files = new Set((JSON.parse(r.stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path));
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
      bin: Record<string, string>;
      exports: Record<string, string | Record<string, string>>;
    };
    const named = [...Object.values(pkg.bin), ...Object.values(pkg.exports).flatMap((e) => (typeof e === 'string' ? [e] : Object.values(e)))];
    for (const f of named) assert.ok(files.has(f.replace(/^\.\//, '')), `${f} is in the package`);
    for (const f of files) {
      assert.doesNotMatch(f, /^(test|bench|scripts|examples|dist\/(test|bench|scripts|examples))\//, `${f} is not for the package`);
      if (!f.endsWith('.map')) continue;
      // A map whose sources are missing makes bundlers and debuggers warn about every file.
      const { sources } = JSON.parse(readFileSync(join(ROOT, f), 'utf8')) as { sources: string[] };
      for (const s of sources) assert.ok(files.has(posix.join(posix.dirname(f), s)), `${s}, the source of ${f}, is in the package`);
    }
  });

  it("every relative link of the package's documents reaches a file the package holds", () => {
    const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const files = new Set((JSON.parse(r.stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path));
    for (const doc of [...files].filter((f) => f.endsWith('.md'))) {
      for (const [, target] of readFileSync(join(ROOT, doc), 'utf8').matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)) {
        if (/^[a-z]+:/i.test(target!)) continue;
        assert.ok(files.has(posix.join(posix.dirname(doc), target!)), `${doc} links to ${target}, which the package lacks`);
      }
    }
  });

  it("package.json's engines asks for no older Node.js than a dependency the package installs does", () => {
    const version = (v: string) => (v.match(/\d+/g) ?? []).map(Number).concat(0, 0, 0).slice(0, 3);
    const atLeast = (a: number[], b: number[]) => a[0]! - b[0]! || a[1]! - b[1]! || a[2]! - b[2]! || 0;
    const ours = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string } }).engines.node;
    assert.match(ours, /^>=\s*\d+(\.\d+){0,2}$/);
    const min = version(ours);
    // Our oldest version satisfies one of each range's alternatives (">=20.18.1", "^18 || >=20").
    const takes = (range: string) =>
      range.split('||').some((alt) => {
        const a = alt.trim();
        if (a.startsWith('^')) return version(a)[0] === min[0] && atLeast(min, version(a)) >= 0;
        return a.startsWith('>=') && atLeast(min, version(a)) >= 0;
      });
    const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { dev?: boolean; engines?: { node?: string } }>;
    };
    for (const [path, p] of Object.entries(lock.packages)) {
      if (!path || p.dev || !p.engines?.node) continue;
      assert.ok(takes(p.engines.node), `${path} needs Node.js ${p.engines.node}, older than the package's engines (${ours}) says`);
    }
  });

  it('a global install of the packed package, as the README says, prints no install-script warning', () => {
    const dir = tempDir('httpsqs-pack-');
    // Without prepack's build, which would rewrite dist/ under the tests running beside this one.
    const packed = spawnSync('npm', ['pack', '--ignore-scripts', '--pack-destination', dir, '--silent'], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(packed.status, 0, packed.stderr);
    const tarball = join(dir, packed.stdout.trim().split('\n').at(-1)!);
    const env = { ...process.env, NPM_CONFIG_PREFIX: join(dir, 'global') };
    const r = spawnSync('npm', ['install', '-g', '--allow-scripts=lmdb,msgpackr-extract', '--no-audit', '--no-fund', tarball], { env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stdout + r.stderr, /warn/i);
    assert.equal(execFileSync(join(dir, 'global', 'bin', 'httpsqs'), ['-V'], { encoding: 'utf8' }), `httpsqs ${VERSION}\n`);
    // What the README sends an installer to: the systemd unit and the documents.
    const installed = join(dir, 'global', 'lib', 'node_modules', 'httpsqs');
    for (const f of ['contrib/httpsqs.service', 'README.md', 'docs/PROTOCOL.md', 'docs/EXTENSIONS.md', 'LICENSE'])
      assert.ok(existsSync(join(installed, f)), `${f} is in the package`);
    cleanup(dir);
  });
});
