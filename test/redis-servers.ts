/**
 * Real Redis servers for the tests: a standalone one (optionally a replica of another) and a
 * three-primary cluster, each on free loopback ports with its own directory, stopped afterwards.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { cleanup, freePort, needsTool, tempDir } from './helpers.js';

/** A skip reason when redis-server is missing here (mandatory in CI). */
export const noRedis = (): string | false => needsTool('redis-server', 'redis-server');

export interface RedisServer {
  port: number;
  url: string;
  proc: ChildProcess;
  /** Runs redis-cli against this server and returns its output. */
  cli(...args: string[]): string;
  stop(): Promise<void>;
}

const cli = (port: number, ...args: string[]) => spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).stdout.trim();

/** Whether nothing listens on, or holds, this loopback port just now. */
const portFree = (port: number) =>
  new Promise<boolean>((res) => {
    const s = net.createServer();
    s.once('error', () => res(false));
    s.listen(port, '127.0.0.1', () => s.close(() => res(true)));
  });

/**
 * Starts redis-server on a free port. Another process may take the port between the check and
 * redis-server's bind (and a cluster node also binds port + 10000 for its bus), so a server that
 * exits before it answers is started again on another port, a few times.
 */
export async function startRedis(extra: string[] = []): Promise<RedisServer> {
  const cluster = extra.includes('--cluster-enabled');
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    if (cluster && (port > 55535 || !(await portFree(port + 10000)))) continue;
    const dir = tempDir('httpsqs-redis-');
    const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extra], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let log = '';
    const keep = (b: Buffer) => void (log = (log + b.toString()).slice(-4000));
    proc.stdout.on('data', keep);
    proc.stderr.on('data', keep);
    let gone = false;
    const exited = new Promise<void>((r) =>
      proc.once('exit', () => {
        gone = true;
        r();
      }),
    );
    const stop = async () => {
      proc.kill('SIGKILL');
      await exited;
      cleanup(dir);
    };
    for (let i = 0; !gone && cli(port, 'ping') !== 'PONG'; i++) {
      if (i > 200) {
        await stop();
        throw new Error(`redis-server on port ${port} did not answer in 10 s:\n${log}`);
      }
      await sleep(50);
    }
    if (gone) {
      cleanup(dir);
      if (attempt < 5) continue;
      throw new Error(`redis-server exited before it answered, ${attempt} times; the last said:\n${log}`);
    }
    return { port, url: `redis://127.0.0.1:${port}/0`, proc, cli: (...args) => cli(port, ...args), stop };
  }
}

export interface RedisCluster {
  url: string;
  nodes: RedisServer[];
  stop(): Promise<void>;
}

/** Three primaries, no replicas, slots spread over them by redis-cli. */
export async function startRedisCluster(): Promise<RedisCluster> {
  const started = await Promise.allSettled(
    [0, 1, 2].map(() => startRedis(['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000'])),
  );
  const nodes = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const failed = started.find((s) => s.status === 'rejected');
  // Nodes left running would keep this test file alive until its time limit.
  if (failed) await Promise.all(nodes.map((n) => n.stop()));
  if (failed) throw failed.reason;
  const hosts = nodes.map((n) => `127.0.0.1:${n.port}`);
  try {
    const made = spawnSync('redis-cli', ['--cluster', 'create', ...hosts, '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' });
    if (made.status !== 0) throw new Error(`redis-cli --cluster create failed: ${made.stdout}${made.stderr}`);
    for (let i = 0; !nodes.every((n) => n.cli('cluster', 'info').includes('cluster_state:ok')); i++) {
      if (i > 200) throw new Error('the cluster did not become ready');
      await sleep(50);
    }
  } catch (e) {
    await Promise.all(nodes.map((n) => n.stop()));
    throw e;
  }
  return {
    url: `redis-cluster://${hosts.join(',')}`,
    nodes,
    stop: async () => void (await Promise.all(nodes.map((n) => n.stop()))),
  };
}
