/**
 * Real Redis servers for the tests: a standalone one (optionally a replica of another) and a
 * three-primary cluster, each on free loopback ports with its own directory, stopped afterwards.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
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

export async function startRedis(extra: string[] = []): Promise<RedisServer> {
  const port = await freePort();
  const dir = tempDir('httpsqs-redis-');
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extra], {
    stdio: 'ignore',
  });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  for (let i = 0; cli(port, 'ping') !== 'PONG'; i++) {
    if (i > 100) throw new Error(`redis-server on port ${port} did not start`);
    await sleep(50);
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    proc,
    cli: (...args) => cli(port, ...args),
    async stop() {
      proc.kill('SIGKILL');
      await exited;
      cleanup(dir);
    },
  };
}

export interface RedisCluster {
  url: string;
  nodes: RedisServer[];
  stop(): Promise<void>;
}

/** Three primaries, no replicas, slots spread over them by redis-cli. */
export async function startRedisCluster(): Promise<RedisCluster> {
  const nodes = await Promise.all(
    [0, 1, 2].map(() => startRedis(['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000'])),
  );
  const hosts = nodes.map((n) => `127.0.0.1:${n.port}`);
  const made = spawnSync('redis-cli', ['--cluster', 'create', ...hosts, '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`redis-cli --cluster create failed: ${made.stdout}${made.stderr}`);
  for (let i = 0; !nodes.every((n) => n.cli('cluster', 'info').includes('cluster_state:ok')); i++) {
    if (i > 200) throw new Error('the cluster did not become ready');
    await sleep(50);
  }
  return {
    url: `redis-cluster://${hosts.join(',')}`,
    nodes,
    stop: async () => void (await Promise.all(nodes.map((n) => n.stop()))),
  };
}
