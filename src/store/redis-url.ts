/**
 * Redis URLs (`--store`), without loading the Redis client: the command line checks and prints
 * them, and a server on an embedded engine never loads ioredis.
 */
import type { RedisOptions } from 'ioredis';

/** A Redis URL fit to print: without its password (everything before its last `@`, which may have
 * been typed with a `/` or `@` in it). */
export const redactUrl = (url: string): string => url.replace(/^([a-z-]+:\/\/).*@/, '$1***@');

/** Parses `--store`: the connection, the key prefix (`?prefix=`), and whether read messages are
 * deleted (`?read=delete`) or kept until a put writes over them (`?read=keep`, the default). */
export function parseRedisUrl(url: string): {
  cluster: boolean;
  nodes: Array<{ host: string; port: number }>;
  options: RedisOptions;
  prefix: string;
  deleteRead: boolean;
} {
  const m = /^(redis|rediss|redis-cluster):\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^/?]+)(?:\/(\d+))?\/?(?:\?(.*))?$/.exec(url);
  if (!m) throw new Error(`expected redis://host:port[/db], rediss://… or redis-cluster://host:port,host:port, got "${redactUrl(url)}"`);
  const [, scheme, user, password, hosts, db, query] = m;
  // A second `@` is a password's (or user's) own, typed as it is: the host part would hold the rest
  // of the password, and errors that name the host would print it.
  if (hosts!.includes('@')) throw new Error(`"${redactUrl(url)}": percent-encode an @ (%40) or / (%2F) in the user name or password`);
  const nodes = hosts!.split(',').map((h) => {
    const [host, port] = h.split(':');
    if (!host || (port !== undefined && !/^\d+$/.test(port))) throw new Error(`bad host:port "${h}" in "${redactUrl(url)}"`);
    return { host, port: Number(port ?? 6379) };
  });
  const params = new URLSearchParams(query ?? '');
  const prefix = params.get('prefix') ?? '';
  if (/[{}]/.test(prefix)) throw new Error('the key prefix may not contain { or }');
  const read = params.get('read') ?? 'keep';
  if (read !== 'keep' && read !== 'delete') throw new Error(`?read= takes keep or delete, got "${read}"`);
  const options: RedisOptions = {
    ...(user ? { username: decodeURIComponent(user) } : {}),
    password: password !== undefined ? decodeURIComponent(password) : process.env.HTTPSQS_REDIS_PASSWORD || undefined,
    ...(db ? { db: Number(db) } : {}),
    ...(scheme === 'rediss' ? { tls: {} } : {}),
  };
  return { cluster: scheme === 'redis-cluster', nodes, options, prefix, deleteRead: read === 'delete' };
}
