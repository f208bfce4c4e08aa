/**
 * The store on Redis, Redis Cluster or Valkey (`--store redis://…`, `redis-cluster://…`), for
 * several frontends sharing one set of queues. Every queue operation is one Lua script (sent
 * once, then run by its SHA), so each is atomic on the server, applying the same rules as
 * `queue/ring.ts` and `queue/leases.ts` (and the same lease tokens as the LMDB store).
 *
 * A queue's keys share the hash tag `{q<name>}`, so that a queue lives on one shard of a cluster
 * while different queues spread over the shards: `…:s` (hash: putpos p, getpos g, maxqueue m,
 * maxdeliveries u, and counters: x the highest slot used, k leases at slots, y delayed leases),
 * `…:m` (hash: position -> message bytes, slots past the ring too), `…:l` (hash: position ->
 * "deadline:deliveries", delayed messages and dead letters too), `…:d` (sorted set of the leases
 * that can come due, by deadline, zero-padded so that equal deadlines go in position order, as on
 * LMDB), `…:x` (sorted set of the dead letters by when they died) and `…:z` (the dead letters
 * by position, for paging through them); redis-scripts.ts has the details. The `q` keeps the tag
 * non-empty for the queue named ''. Names are bytes, as everywhere. A sorted set `httpsqs:queues`
 * names the queues for `list`; it lives on one shard, so it is kept outside the scripts (see
 * `list`).
 *
 * Long polls across frontends: a script that makes messages available publishes on the queue's
 * channel; a frontend subscribes to the channels of the queues it has waiters on, so only those
 * frontends are woken.
 */
import { randomBytes } from 'node:crypto';
import calculateSlot from 'cluster-key-slot';
import { Cluster, type Command, Redis, type RedisOptions } from 'ioredis';
import type { Lease } from '../queue/leases.js';
import type { QueueState } from '../queue/ring.js';
import {
  DEAD_PAGE,
  DISCARD,
  INDEXED,
  EXPIRY,
  EXPORT_PAGE,
  FRONTENDS,
  GET,
  leaseValueOf,
  MAXDELIVERIES,
  MAXQUEUE,
  parseLeaseValue,
  PUT,
  RANGE,
  REDRIVE,
  RESTORE,
  SETTLE,
  SNAPSHOT,
  STATUS,
  TOUCH,
} from './redis-scripts.js';
import {
  isInitial,
  type QueueRecord,
  StoreError,
  timed,
  type Delivery,
  type QueueStatus,
  type Store,
  type StoreDescription,
  type StoreHooks,
  type SyncMode,
} from './store.js';
import { errorMessage } from '../errors.js';
import { parseRedisUrl, redactUrl } from './redis-url.js';

export interface RedisStoreOptions extends StoreHooks {
  /** `redis://[:password@]host:port[/db][?prefix=p]`, `rediss://…` (TLS), or
   * `redis-cluster://host1:port,host2:port[?prefix=p]`. A password may also come from
   * HTTPSQS_REDIS_PASSWORD. */
  url: string;
  /** Replicas that must have each change before it is acknowledged (WAIT); 0 for none. */
  wait?: number;
  /** How long to wait for them, in ms. */
  waitMs?: number;
  /** A server's store: it says so in Redis while it runs, so that an import can tell. */
  announce?: boolean;
  /** Where the store reports a problem no request hears of. */
  warn?: (message: string) => void;
  /** An export's store: once Redis answers, every queue that holds state but is missing from the
   * list index is added to it (see `reindex`), so that the export has it. */
  reindex?: boolean;
}

/** A frontend renews its entry this often, and counts as gone this long after the last one. */
const ANNOUNCE_MS = 5_000;
const GONE_MS = 15_000;
/** Longest wait for any Redis command, and for the ping of a health check. */
const COMMAND_MS = 10_000;
const CHECK_MS = 2_000;
/** The most records (messages and leases) one restore script writes. */
const RESTORE_CHUNK = 1000;
/** What a command whose connection closed before its answer fails with: it may have run. */
const CLOSED = 'the connection closed before the answer (the command may have taken effect)';
/** An export reads a queue this many records at a time, or this many bytes (and a few records
 * more), and reads it again when it changed meanwhile, this many times before it copies it
 * instead; the copy lives this long after each page read (an export that dies leaves it to
 * expire). */
const EXPORT_PAGE_SIZE = 1000;
const EXPORT_PAGE_BYTES = 4 * 2 ** 20;
const EXPORT_TRIES = 3;
/** The most of a queue an export holds while it reads it: a larger one is copied at once. */
const EXPORT_HOLD_BYTES = 64 * 2 ** 20;
const EXPORT_COPY_MS = 600_000;

/** A queue's status as the export scripts give it. */
function exportedStatus(r: number[]): QueueStatus {
  const [putpos, getpos, maxqueue, leased, delayed, dead, maxdeliveries] = r as [number, number, number, number, number, number, number];
  const out: QueueStatus = { putpos, getpos, maxqueue, leased, delayed, dead };
  if (maxdeliveries) out.maxdeliveries = maxdeliveries;
  return out;
}

/**
 * A command that waits for a connection (ioredis's offline queue) is failed by commandTimeout, but
 * ioredis keeps it and sends it once connected: the request that failed then ran (after a restart,
 * while Redis loaded its data, a get that answered with an error took a message). Here a command
 * that failed is never sent after. (`client` is one Redis, a cluster, or a cluster's node: each
 * has its own queue.)
 */
function sendNothingFailed(client: Redis | Cluster): void {
  const c = client as unknown as { sendCommand(command: Command, ...rest: unknown[]): unknown };
  const send = c.sendCommand.bind(c);
  c.sendCommand = (command, ...rest) => {
    const failed = command as Command & { failed?: boolean };
    if (failed.failed) return failed.promise;
    const out = send(command, ...rest);
    failed.promise.catch(() => void (failed.failed = true));
    return out;
  };
}

/** A message or a lease read for export, as a record. */
const exported = (message: boolean, pos: number, value: Buffer): QueueRecord =>
  message ? { pos, message: value } : { pos, lease: parseLeaseValue(value.toString()) };

/** `p`, or a rejection once `ms` have passed without its answer. */
function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** The write of its own that a round of WAIT makes first (see `confirmed`). */
const MARK = "redis.call('SET', KEYS[1], '', 'PX', 60000)";
type Script = (...args: Array<Buffer | string | number>) => Promise<unknown>;

export class RedisStore implements Store {
  readonly syncMode: SyncMode = 'durable';
  private readonly redis: Redis | Cluster;
  private readonly sub: Redis | Cluster;
  private readonly prefix: Buffer;
  private readonly index: Buffer;
  /** Tells this frontend's own publications apart from the others'. */
  private readonly origin = randomBytes(6).toString('hex');
  private readonly scripts: Record<
    | 'put'
    | 'get'
    | 'settle'
    | 'touch'
    | 'expiry'
    | 'maxqueue'
    | 'maxdeliveries'
    | 'redrive'
    | 'indexed'
    | 'discard'
    | 'restore'
    | 'status'
    | 'range'
    | 'deadPage'
    | 'exportPage'
    | 'snapshot'
    | 'frontends',
    Script
  >;
  private waker: ((name: string, count: number) => void) | undefined;
  private closing: Promise<void> | undefined;
  /** Servers running on this Redis (and key prefix) now: a sorted set of ids by expiry time. */
  private readonly frontends: Buffer;
  private announcer: NodeJS.Timeout | undefined;
  /** Queues whose index entry could not be written yet (see `indexed`). */
  private readonly unindexed = new Set<string>();
  /** For --redis-wait, a primary's connection for WAIT, the WAIT in flight, and the one that follows it. */
  private readonly confirmers = new Map<string, { conn: Redis; current?: Promise<number>; next?: Promise<number> | undefined }>();
  /** The last WAIT found too few replicas (logged once until one finds enough). */
  private shortOfReplicas = false;
  private lastError: Error | undefined;
  /** '1' when read messages are deleted (`?read=delete`), for the scripts that take and end leases. */
  private readonly deleteRead: '1' | '';
  /** Redis has no script flags (before 7.0): see `withoutFlags`. */
  private unflagged = false;

  /** The time the scripts go by: a test's clock, or '' for Redis's own (TIME), which every
   * frontend shares whatever its own clock says. */
  private readonly now: () => number | '';

  constructor(private readonly opts: RedisStoreOptions) {
    this.now = opts.now ?? (() => '');
    const { cluster, nodes, options, prefix, deleteRead } = parseRedisUrl(opts.url);
    this.deleteRead = deleteRead ? '1' : '';
    // A script sent but not answered (the connection dropped) may have run: sending it again could
    // store a message twice or skip one. It fails instead, and the client is told so.
    // A Redis that stops answering (frozen, overloaded) fails requests after COMMAND_MS (plus the
    // time WAIT may take) instead of holding them; what such a request changed is as uncertain as
    // after a dropped connection.
    const common: RedisOptions = {
      ...options,
      lazyConnect: false,
      maxRetriesPerRequest: 2,
      enableOfflineQueue: true,
      autoResendUnfulfilledCommands: false,
      commandTimeout: COMMAND_MS + (opts.waitMs ?? 0),
    };
    // A cluster sends a command again, on its own, when the connection it was sent on closed
    // before the answer (retryDelayOnFailover): that ran a put or a get twice. It fails instead,
    // as above. (What a node refused without running it, MOVED, ASK, TRYAGAIN, CLUSTERDOWN, is
    // still sent where it belongs.)
    this.redis = cluster
      ? new Cluster(nodes, { redisOptions: common, retryDelayOnFailover: 0 })
      : new Redis({ ...common, host: nodes[0]!.host, port: nodes[0]!.port });
    // On one Redis, ioredis keeps the commands a closing connection had sent, and with
    // autoResendUnfulfilledCommands off drops them once it is connected again, without an answer:
    // their requests waited out COMMAND_MS. They fail as the connection closes instead, as on a
    // cluster. (Commands sent while it reconnects wait for the new connection and go once, unless
    // they failed meanwhile: see sendNothingFailed.)
    sendNothingFailed(this.redis);
    if (this.redis instanceof Cluster) this.redis.on('+node', (node: Redis) => sendNothingFailed(node));
    if (this.redis instanceof Redis) {
      const redis = this.redis as Redis & { prevCommandQueue?: { shift(): { command: { reject(err: Error): void } } | undefined } | null };
      redis.on('close', () => {
        for (let item = redis.prevCommandQueue?.shift(); item; item = redis.prevCommandQueue?.shift()) item.command.reject(new Error('Connection is closed.'));
      });
    }
    this.sub = this.redis.duplicate({ autoResendUnfulfilledCommands: true } as never);
    // Reported through the commands that fail; the last one says why when they fail for want of a
    // connection (ioredis then only says it gave up retrying).
    this.redis.on('error', (err: Error) => void (this.lastError = err));
    this.redis.on('ready', () => void (this.lastError = undefined));
    this.sub.on('error', () => {});
    this.prefix = Buffer.from(prefix, 'latin1');
    this.index = Buffer.concat([this.prefix, Buffer.from('httpsqs:queues')]);
    this.frontends = Buffer.concat([this.prefix, Buffer.from('httpsqs:frontends')]);
    const plain = (name: string, keys: number, lua: string): Script => {
      this.redis.defineCommand(name, { numberOfKeys: keys, lua });
      return (this.redis as unknown as Record<string, Script>)[`${name}Buffer`]!.bind(this.redis);
    };
    const define = (name: string, keys: number, lua: string, flags?: 'allow-oom'): Script => {
      if (!flags) return plain(name, keys, lua);
      const flagged = plain(name, keys, `#!lua flags=${flags}\n${lua}`);
      const unflagged = plain(`${name}Unflagged`, keys, lua);
      return (...args) => (this.unflagged ? unflagged(...args) : flagged(...args).catch((err: Error) => this.withoutFlags(err, () => unflagged(...args))));
    };
    // Consumers go on when Redis's memory is full (maxmemory with noeviction): their scripts take
    // or end leases and delete messages, so they may run past maxmemory (by a lease's few bytes,
    // or a dead letter's copy) and free it. Puts, restores and the export's copies are refused.
    this.scripts = {
      put: define('httpsqsPut', 6, PUT),
      get: define('httpsqsGet', 6, GET, 'allow-oom'),
      settle: define('httpsqsSettle', 6, SETTLE, 'allow-oom'),
      touch: define('httpsqsTouch', 3, TOUCH, 'allow-oom'),
      expiry: define('httpsqsExpiry', 1, EXPIRY),
      maxqueue: define('httpsqsMaxqueue', 1, MAXQUEUE, 'allow-oom'),
      maxdeliveries: define('httpsqsMaxdeliveries', 6, MAXDELIVERIES, 'allow-oom'),
      redrive: define('httpsqsRedrive', 6, REDRIVE, 'allow-oom'),
      discard: define('httpsqsDiscard', 6, DISCARD, 'allow-oom'),
      indexed: define('httpsqsIndexed', 1, INDEXED, 'allow-oom'),
      restore: define('httpsqsRestore', 6, RESTORE),
      status: define('httpsqsStatus', 3, STATUS),
      range: define('httpsqsRange', 1, RANGE),
      deadPage: define('httpsqsDeadPage', 3, DEAD_PAGE),
      exportPage: define('httpsqsExportPage', 4, EXPORT_PAGE),
      snapshot: define('httpsqsSnapshot', 6, SNAPSHOT),
      frontends: define('httpsqsFrontends', 1, FRONTENDS),
    };
    if (opts.announce) {
      // Each renewal also removes the entries that expired (frontends killed outright, which never
      // removed theirs), and the set expires with the last entry when no frontend renews it.
      const announce = () => void this.scripts.frontends(this.frontends, this.origin, GONE_MS).catch(() => {});
      announce();
      this.announcer = setInterval(announce, ANNOUNCE_MS).unref();
    }
    this.sub.on('messageBuffer', (channel: Buffer, message: Buffer) => {
      const [origin, count] = message.toString('latin1').split(':');
      if (origin === this.origin || !this.waker) return;
      this.waker(Buffer.from(channel.subarray(this.channel('').length).toString('latin1'), 'hex').toString('latin1'), Number(count));
    });
  }

  /** Waits until the store answers (or fails with a StoreError saying why). */
  async ready(timeoutMs = 10_000): Promise<this> {
    await within(this.redis.ping(), timeoutMs).catch((err: Error) => {
      throw new StoreError(`Redis at ${redactUrl(this.opts.url)}: ${this.why(err)}`, { cause: err });
    });
    await this.checkEviction();
    if (this.opts.reindex)
      await this.reindex().catch((err: Error) => {
        // An export from a replica (to spare the primary) reads; the index cannot be mended there.
        if (!err.message.startsWith('READONLY')) this.failed(err);
        this.warn(
          `Redis at ${redactUrl(this.opts.url)} is a read-only replica: a queue missing from the list index (its entry lost with its frontend) cannot be added to it here, and is not exported; an export from the primary adds and exports it`,
        );
      });
    return this;
  }

  /**
   * Adds to the list index each queue that holds state but is not in it: one whose entry was lost
   * with its frontend, between the queue's first write and its indexing, and that has not been
   * written since (a write adds it, `indexed`). A SCAN of every primary's keys, so for an export only.
   */
  private async reindex(): Promise<void> {
    const glob = Buffer.from(this.prefix.toString('latin1').replace(/[*?[\]\\]/g, '\\$&'), 'latin1');
    const pattern = Buffer.concat([glob, Buffer.from('{q*}:s')]);
    let added = 0;
    for (const node of this.primaries()) {
      let cursor = '0';
      do {
        // The pattern as bytes (a prefix need not be UTF-8).
        const [next, keys] = (await node.callBuffer('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000)) as [Buffer, Buffer[]];
        cursor = next.toString();
        // A page's commands go together (one round trip); only the queues added are marked.
        const fresh = await Promise.all(keys.map((key) => this.redis.zadd(this.index, 'NX', 0, key.subarray(this.prefix.length + 2, key.length - 3))));
        const marked = keys.filter((_, i) => fresh[i]! > 0);
        await Promise.all(marked.map((key) => this.scripts.indexed(key)));
        added += marked.length;
      } while (cursor !== '0');
    }
    if (added) this.warn(`Redis: ${added} queue${added > 1 ? 's' : ''} holding messages but missing from the list index added to it`);
  }

  /** A Redis that evicts keys when its memory is full drops messages without a word: said once at
   * start, for each primary that would (INFO may be refused, as by a managed Redis: then nothing). */
  private async checkEviction(): Promise<void> {
    for (const node of this.primaries()) {
      const info = await node.info('memory').catch(() => '');
      const policy = /^maxmemory_policy:(\S+)/m.exec(info)?.[1];
      if (policy && policy !== 'noeviction')
        this.warn(
          `Redis at ${node.options.host}:${node.options.port} evicts keys when its memory is full (maxmemory-policy ${policy}): ` +
            'messages would be lost; set maxmemory-policy noeviction',
        );
    }
  }

  /** A flagged script (`#!lua flags=…`) failed. A Redis before 7.0 has no script flags and does
   * not compile one; nothing ran then, so `again` sends the script without them, and so do all
   * scripts from now on (said once). Any other error is the script's own. */
  private withoutFlags(err: Error, again: () => Promise<unknown>): Promise<unknown> {
    if (!/Error compiling script/.test(err.message)) throw err;
    if (!this.unflagged) this.warn('Redis before 7.0: no script flags, so gets, acks and nacks are refused while its memory is full');
    this.unflagged = true;
    return again();
  }

  /** Every primary: the one Redis, or a cluster's. */
  private primaries(): Redis[] {
    return this.redis instanceof Cluster ? this.redis.nodes('master') : [this.redis];
  }

  private key(name: string, kind: 's' | 'm' | 'l' | 'd' | 'x' | 'z' | 'w'): Buffer {
    return Buffer.concat([this.prefix, Buffer.from(`{q${name}}:${kind}`, 'latin1')]);
  }

  /** The six keys of the scripts that share redis-scripts.ts's prelude: state, messages, leases,
   * deadlines, dead letters by when they died and by position. */
  private keys(name: string): Buffer[] {
    return [this.key(name, 's'), this.key(name, 'm'), this.key(name, 'l'), this.key(name, 'd'), this.key(name, 'x'), this.key(name, 'z')];
  }

  /** The queue's wake-up channel. The name goes in as hex: ioredis keeps subscriptions as UTF-8
   * text to renew them after a reconnect, which would garble other bytes. */
  private channel(name: string): Buffer {
    return Buffer.concat([this.prefix, Buffer.from(`httpsqs:wake:${Buffer.from(name, 'latin1').toString('hex')}`, 'latin1')]);
  }

  private why(err: Error): string {
    // A command sent, whose connection closed before the answer (on one Redis, or a cluster's node).
    if (err.message === 'Connection is closed.') return CLOSED;
    const unreachable = err.name === 'MaxRetriesPerRequestError' || this.redis.status !== 'ready';
    return unreachable && this.lastError ? `cannot reach it (${this.lastError.message})` : err.message;
  }

  private failed(err: unknown): never {
    throw new StoreError(`Redis: ${this.why(err as Error)}`, { cause: err });
  }

  /** A change is acknowledged once `--redis-wait` replicas have it. Messages a get `took` are gone
   * from the primary whatever the replicas say: failing the get would lose them, so they are
   * handed out (logged), and a failover before the replicas have the change may hand them out again. */
  private async replicated<T>(result: T, name: string, took: boolean): Promise<T> {
    if (!this.opts.wait) return result;
    let acked: number | Error;
    try {
      acked = await this.confirmed(this.redis instanceof Cluster ? this.nodeOf(this.key(name, 's')) : this.redis, this.key(name, 'w'));
    } catch (err) {
      acked = err as Error;
    }
    const short = typeof acked !== 'number' || acked < this.opts.wait;
    const why =
      typeof acked === 'number'
        ? `only ${acked} of ${this.opts.wait} replicas confirmed it in time (--redis-wait)`
        : `the replicas could not be asked (--redis-wait: ${this.why(acked)})`;
    if (short && !took) throw new StoreError(`stored on the primary, but ${why}`);
    if (short && !this.shortOfReplicas) this.warn(`Redis: messages taken on the primary are handed out, though ${why}; a failover now may hand them out again`);
    this.shortOfReplicas = short;
    return result;
  }

  /**
   * How many replicas have every write this frontend finished on `node` before the call. WAIT holds
   * the connection it is sent on until it answers, so it goes on a connection of its own (one a
   * primary): on the shared one, requests queued behind each other's WAITs, the k-th answering
   * after k times --redis-wait-ms, and failing (a get's messages taken) once past the command time
   * limit. WAIT counts its own connection's writes, so a small write of its own (`key`, a key of
   * the node's) goes first: replication is one stream, so it comes after every write that asked.
   * One WAIT is in flight a primary, and the writes that ask meanwhile share the next.
   */
  private confirmed(node: Redis, key: Buffer): Promise<number> {
    // By address: a cluster makes new node objects as its topology changes.
    const address = `${node.options.host}:${node.options.port}`;
    // Its failures come back through the commands that fail (as `replicated` reports them).
    const confirmer = this.confirmers.get(address) ?? { conn: node.duplicate().on('error', () => {}) };
    this.confirmers.set(address, confirmer);
    if (confirmer.next) return confirmer.next;
    const start = (): Promise<number> => {
      // A script, so that it may run when Redis's memory is full, as the gets and acks it confirms do.
      const mark = () => confirmer.conn.eval(this.unflagged ? MARK : `#!lua flags=allow-oom\n${MARK}`, 1, key);
      const round: Promise<number> = mark()
        .catch((err: Error) => this.withoutFlags(err, mark))
        .then(() => confirmer.conn.wait(this.opts.wait!, this.opts.waitMs ?? 1000))
        .finally(() => void (confirmer.current === round && (confirmer.current = undefined)));
      confirmer.current = round;
      return round;
    };
    if (!confirmer.current) return start();
    confirmer.next = confirmer.current.then(
      () => ((confirmer.next = undefined), start()),
      () => ((confirmer.next = undefined), start()),
    );
    return confirmer.next;
  }

  private warn(message: string): void {
    (this.opts.warn ?? ((m) => process.stderr.write(`httpsqs: ${m}\n`)))(message);
  }

  /** The primary that holds `key` in a cluster: WAIT has no key, so it must be sent there. */
  private nodeOf(key: Buffer): Redis {
    const cluster = this.redis as Cluster & { slots: string[][] };
    const slot = calculateSlot(key);
    const owner = cluster.slots[slot]?.[0];
    const node = cluster.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === owner);
    if (!node) throw new StoreError(`no primary known for slot ${slot}`);
    return node;
  }

  /** Runs a write; `changed` tells whether it changed anything (no WAIT for one that did not),
   * `took` that it takes messages (a get: see `replicated`). */
  private run<T>(op: string, name: string, f: () => Promise<T>, changed: (r: T) => boolean = () => true, took = false): Promise<T> {
    return timed(this.opts.observe, op, this.write(name, f, changed, took));
  }

  private async write<T>(name: string, f: () => Promise<T>, changed: (r: T) => boolean, took: boolean): Promise<T> {
    let result: T;
    try {
      result = await f();
    } catch (err) {
      this.failed(err);
    }
    return changed(result) ? this.replicated(result, name, took) : result;
  }

  /**
   * A queue that now holds state goes into the index for `list` (outside the script: the index
   * may live on another shard). The change itself is done by then, so a failure here does not fail
   * the request (a client would repeat a put that worked): the name is kept and `list` tries again.
   * Once it is in, its state says so: until then every write of the queue reports it `unindexed`
   * (redis-scripts.ts), so that an entry lost with this process is made by the next write.
   */
  private async indexed(name: string, unindexed: boolean): Promise<void> {
    if (!unindexed && !this.unindexed.has(name)) return;
    try {
      await this.redis.zadd(this.index, 'NX', 0, Buffer.from(name, 'latin1'));
      this.unindexed.delete(name);
    } catch (err) {
      if (this.unindexed.size === 0) this.warn(`Redis: a queue could not be added to the list index (${errorMessage(err)}); list tries again`);
      this.unindexed.add(name);
      return;
    }
    await this.scripts.indexed(this.key(name, 's')).catch(() => {}); // the next write tries again
  }

  async put(name: string, message: Buffer, delayMs?: number): Promise<number> {
    return (await this.putMany(name, [message], delayMs))[0] ?? 0;
  }

  async putMany(name: string, messages: Buffer[], delayMs?: number): Promise<number[]> {
    const delay = delayMs && delayMs > 0 ? delayMs : '';
    const out = (await this.run(
      'put',
      name,
      () => this.scripts.put(...this.keys(name), this.channel(name), this.origin, this.now(), delay, ...messages),
      (r) => (r as number[]).length > 1,
    )) as number[];
    await this.indexed(name, out[0] === 1);
    return out.slice(1);
  }

  async get(name: string, leaseMs?: number, onTaken?: (bytes: number) => void): Promise<Delivery | null> {
    return (await this.getMany(name, 1, leaseMs, undefined, onTaken))[0] ?? null;
  }

  /** `onTaken` is told once the script has answered: the messages come over the network then. */
  async getMany(name: string, max: number, leaseMs?: number, maxBytes?: number, onTaken?: (bytes: number) => void): Promise<Delivery[]> {
    const budget = maxBytes ?? -1; // -1: no limit (Lua numbers are doubles; Infinity has no spelling)
    const flat = (await this.run(
      'get',
      name,
      () => this.scripts.get(...this.keys(name), this.channel(name), this.origin, this.now(), leaseMs ?? 0, max, budget, this.deleteRead),
      (r) => (r as unknown[]).length > 0,
      true,
    )) as Array<number | Buffer>;
    const out: Delivery[] = [];
    for (let i = 0; i < flat.length; i += 4) {
      const d: Delivery = { pos: flat[i] as number, message: flat[i + 1] as Buffer, deliveries: flat[i + 2] as number };
      const token = (flat[i + 3] as Buffer).toString('latin1');
      if (token) d.lease = token;
      out.push(d);
    }
    if (out.length) onTaken?.(out.reduce((n, d) => n + d.message.length, 0));
    return out;
  }

  async settle(name: string, pos: number, outcome: 'ack' | 'nack', token?: string): Promise<boolean> {
    const done = await this.run(
      'settle',
      name,
      () => this.scripts.settle(...this.keys(name), this.channel(name), this.origin, pos, outcome, token ?? '', this.now(), this.deleteRead),
      (r) => r === 1,
    );
    return done === 1;
  }

  async touch(name: string, pos: number, leaseMs: number, token?: string): Promise<string | null> {
    const args = [
      this.key(name, 's'),
      this.key(name, 'l'),
      this.key(name, 'd'),
      pos,
      token ?? '',
      this.now(),
      leaseMs,
      this.channel(name),
      this.origin,
    ] as const;
    const t = await this.run(
      'touch',
      name,
      () => this.scripts.touch(...args),
      (r) => r !== null,
    );
    return t === null ? null : (t as Buffer).toString('latin1');
  }

  /** When the first lease or delay on `name` ends, on this frontend's clock: Redis says how long
   * until then, by the clock the scripts go by. */
  async nextExpiry(name: string): Promise<number | undefined> {
    const now = this.now();
    const ms = await this.scripts.expiry(this.key(name, 'd'), now).catch((err) => this.failed(err));
    return ms === null ? undefined : (now === '' ? Date.now() : now) + Number(ms);
  }

  async maxqueue(name: string, num: number): Promise<boolean> {
    const r = (await this.run(
      'maxqueue',
      name,
      () => this.scripts.maxqueue(this.key(name, 's'), num),
      (r) => (r as number) > 0,
    )) as number;
    await this.indexed(name, r === 2);
    return r > 0;
  }

  async maxdeliveries(name: string, num: number): Promise<void> {
    const r = (await this.run(
      'maxdeliveries',
      name,
      () => this.scripts.maxdeliveries(...this.keys(name), num),
      // Confirmed even when unchanged: it may be a setting whose confirmation is still on its way
      // (a retry), and the answer must not come before the replicas have it.
      () => true,
    )) as number;
    await this.indexed(name, r === 2);
  }

  async redrive(name: string, max: number): Promise<number> {
    // Lua numbers are doubles, and ZRANGE takes a long: no more than that many at once anyway.
    const most = Math.max(0, Math.min(Math.floor(max), 2 ** 31));
    return (await this.run(
      'redrive',
      name,
      () => this.scripts.redrive(...this.keys(name), this.channel(name), this.origin, most),
      (r) => (r as number) > 0,
    )) as number;
  }

  async discard(name: string, pos: number): Promise<boolean> {
    return (
      (await this.run(
        'discard',
        name,
        () => this.scripts.discard(...this.keys(name), pos),
        (r) => r === 1,
      )) === 1
    );
  }

  async status(name: string): Promise<QueueStatus> {
    const [putpos, getpos, maxqueue, leased, delayed, dead, maxdeliveries] = (await this.scripts
      .status(this.key(name, 's'), this.key(name, 'l'), this.key(name, 'x'))
      .catch((err) => this.failed(err))) as number[];
    const s: QueueStatus = { putpos: putpos!, getpos: getpos!, maxqueue: maxqueue!, leased: leased!, delayed: delayed!, dead: dead! };
    if (maxdeliveries) s.maxdeliveries = maxdeliveries;
    return s;
  }

  async view(name: string, pos: number): Promise<Buffer | null> {
    return this.redis.hgetBuffer(this.key(name, 'm'), String(pos)).catch((err) => this.failed(err));
  }

  async range(name: string, pos: number, num: number, maxBytes?: number): Promise<Array<{ pos: number; message: Buffer }>> {
    const flat = (await this.scripts.range(this.key(name, 'm'), pos, num, maxBytes ?? -1).catch((err) => this.failed(err))) as Array<number | Buffer>;
    const out: Array<{ pos: number; message: Buffer }> = [];
    for (let i = 0; i < flat.length; i += 2) out.push({ pos: flat[i] as number, message: flat[i + 1] as Buffer });
    return out;
  }

  /**
   * Queues from the index, with their state. The index is written after the script that created
   * a queue and cleaned after a reset, not in the same atomic step: a queue can be missing from
   * a page for the moment between the two, and names of queues reset meanwhile are skipped.
   */
  async list(prefix: string, after: string | undefined, limit: number): Promise<Array<{ name: string; status: QueueStatus }>> {
    const start =
      after !== undefined && after >= prefix
        ? Buffer.concat([Buffer.from('('), Buffer.from(after, 'latin1')])
        : Buffer.concat([Buffer.from('['), Buffer.from(prefix, 'latin1')]);
    for (const name of [...this.unindexed]) await this.indexed(name, false);
    const out: Array<{ name: string; status: QueueStatus }> = [];
    let from = start;
    while (out.length < limit) {
      const names = await this.redis.zrangebylexBuffer(this.index, from, '+', 'LIMIT', 0, limit).catch((err) => this.failed(err));
      const wanted = names.map((n) => n.toString('latin1')).filter((n) => n.startsWith(prefix));
      const states = await Promise.all(wanted.map((n) => this.status(n)));
      wanted.forEach((name, i) => {
        const s = states[i]!;
        if (!isInitial(s) && out.length < limit) out.push({ name, status: s });
      });
      if (names.length < limit || wanted.length < names.length) break;
      from = Buffer.concat([Buffer.from('('), names.at(-1)!]);
    }
    return out;
  }

  async reset(name: string): Promise<void> {
    await this.run('reset', name, () => this.redis.unlink(...this.keys(name)));
    const member = Buffer.from(name, 'latin1');
    this.unindexed.delete(name);
    await this.redis.zrem(this.index, member).catch((err) => this.failed(err));
    // A put from another frontend between the DEL and the ZREM found the name still indexed and
    // left it there for the ZREM to take away: the queue holds state again, so it goes back.
    if (await this.redis.exists(this.key(name, 's')).catch((err) => this.failed(err))) await this.indexed(name, true);
  }

  async *dump(name: string): AsyncIterable<{ pos: number; message: Buffer }> {
    let cursor = '0';
    do {
      const [next, flat] = await this.redis.hscanBuffer(this.key(name, 'm'), cursor, 'COUNT', 1000).catch((err) => this.failed(err));
      cursor = next.toString();
      for (let i = 0; i < flat.length; i += 2) yield { pos: Number(flat[i]!.toString()), message: flat[i + 1]! };
    } while (cursor !== '0');
  }

  async leases(name: string): Promise<Array<{ pos: number; lease: Lease }>> {
    const all = await this.redis.hgetall(this.key(name, 'l')).catch((err) => this.failed(err));
    return Object.entries(all).map(([pos, v]) => ({ pos: Number(pos), lease: parseLeaseValue(v) }));
  }

  /**
   * For export: a queue as it was at one moment. It is read a page at a time (no script holds
   * Redis for longer than a page takes), each page with the queue's version (redis-scripts.ts):
   * when that changed between the first page and the last, the queue is read again, from the
   * start. What is read is held here until the last page shows it whole, up to EXPORT_HOLD_BYTES.
   * A queue larger than that, or one that changed during each of EXPORT_TRIES reads, is copied in
   * Redis instead, in one script (COPY: Redis is held for as long as copying it takes, and holds it
   * twice meanwhile), and the copy is read a page at a time, then deleted. A read-only replica
   * cannot make the copy: there the queue is read as it is, a page at a time, and the export fails
   * if it changes before the last page (`unheldRecords`).
   */
  async *exportRecords(name: string): AsyncGenerator<QueueRecord> {
    const [s, m, l, , x] = this.keys(name);
    tries: for (let tries = 0; tries < EXPORT_TRIES; tries++) {
      let version: string | undefined;
      let status: QueueStatus | undefined;
      let held = 0;
      // By position: a page may repeat a field HSCAN gave before.
      const messages = new Map<number, Buffer>();
      const leases = new Map<number, Lease>();
      read: for (const hash of [m!, l!]) {
        for await (const page of this.exportPages(name, hash)) {
          if (version !== undefined && page.version !== version) break read;
          version = page.version;
          status ??= page.status;
          for (const { pos, value } of page.records) {
            held += value.length + 64;
            if (hash === m) messages.set(pos, value);
            else leases.set(pos, parseLeaseValue(value.toString()));
          }
          if (held > EXPORT_HOLD_BYTES) break tries;
        }
        if (hash === l) {
          yield { status: status! };
          for (const pos of [...messages.keys()].sort((a, b) => a - b)) yield { pos, message: messages.get(pos)! };
          for (const pos of [...leases.keys()].sort((a, b) => a - b)) yield { pos, lease: leases.get(pos)! };
          return;
        }
      }
    }
    const id = randomBytes(6).toString('hex');
    const copies = [m!, l!].map((k) => Buffer.concat([k, Buffer.from(`:export:${id}`)]));
    let st: number[];
    try {
      st = (await this.scripts.snapshot(s!, m!, l!, x!, ...copies, EXPORT_COPY_MS)) as number[];
    } catch (err) {
      if (!(err instanceof Error && err.message.startsWith('READONLY'))) this.failed(err);
      return yield* this.unheldRecords(name);
    }
    try {
      yield { status: exportedStatus(st) };
      for (const copy of copies) {
        for await (const page of this.exportPages(name, copy)) {
          await this.redis.pexpire(copy, EXPORT_COPY_MS).catch((err) => this.failed(err));
          for (const { pos, value } of page.records) yield exported(copy === copies[0], pos, value);
        }
      }
    } finally {
      await this.redis.unlink(...copies).catch(() => {});
    }
  }

  /** A queue read page by page and handed on as it is read, on a read-only replica, where it can
   * change only by replication: a page whose version is not the first page's fails the export,
   * since what came before was handed on. Positions met again (HSCAN repeats some when Redis
   * resizes the hash meanwhile) are skipped. */
  private async *unheldRecords(name: string): AsyncGenerator<QueueRecord> {
    const [, m, l] = this.keys(name);
    let version: string | undefined;
    for (const hash of [m!, l!]) {
      const seen = new Set<number>();
      for await (const page of this.exportPages(name, hash)) {
        if (version === undefined) yield { status: page.status };
        else if (page.version !== version)
          throw new StoreError(
            `queue ${JSON.stringify(name)} changed while it was exported from a read-only replica (its primary wrote to it), and it holds too much to be read whole first (over ${EXPORT_HOLD_BYTES / 2 ** 20} MiB) or kept changing: export it from the primary, or again once it is not written to`,
          );
        version = page.version;
        for (const { pos, value } of page.records) {
          if (seen.has(pos)) continue;
          seen.add(pos);
          yield exported(hash === m, pos, value);
        }
      }
    }
  }

  /** The pages of `hash` (a queue's messages or leases, or a copy of them) for export, each with the
   * queue's version and status as they were when it was read. */
  private async *exportPages(
    name: string,
    hash: Buffer,
  ): AsyncGenerator<{ version: string; status: QueueStatus; records: Array<{ pos: number; value: Buffer }> }> {
    const [s, , l, , x] = this.keys(name);
    let cursor = '0';
    do {
      const [v, next, st, flat] = (await this.scripts
        .exportPage(s!, hash, l!, x!, cursor, EXPORT_PAGE_SIZE, EXPORT_PAGE_BYTES)
        .catch((err) => this.failed(err))) as [Buffer, Buffer, number[], Buffer[]];
      cursor = next.toString();
      const records: Array<{ pos: number; value: Buffer }> = [];
      for (let i = 0; i < flat.length; i += 2) records.push({ pos: Number(flat[i]!.toString()), value: flat[i + 1]! });
      yield { version: v.toString(), status: exportedStatus(st), records };
    } while (cursor !== '0');
  }

  async deadLetters(name: string, after: number, limit: number): Promise<Array<{ pos: number; lease: Lease }>> {
    if (limit <= 0) return [];
    const flat = (await this.scripts
      .deadPage(this.key(name, 'l'), this.key(name, 'x'), this.key(name, 'z'), after, limit)
      .catch((err) => this.failed(err))) as Buffer[];
    const out: Array<{ pos: number; lease: Lease }> = [];
    for (let i = 0; i < flat.length; i += 2) out.push({ pos: Number(flat[i]!.toString()), lease: parseLeaseValue(flat[i + 1]!.toString()) });
    return out;
  }

  /** An import killed after a batch of a queue's messages, before its leases and state, leaves
   * them without state: the importer resets such a queue before writing it again. */
  async leftovers(name: string): Promise<boolean> {
    return (await this.redis.exists(this.key(name, 'm'), this.key(name, 'l')).catch((err) => this.failed(err))) > 0;
  }

  async restore(
    name: string,
    r: { messages?: Array<{ pos: number; message: Buffer }>; state?: QueueState; leases?: Array<{ pos: number; lease: Lease }> },
  ): Promise<void> {
    // Scripts keep the counters and sets of the queue's state in step with what they write. A
    // script takes RESTORE_CHUNK records at most (the arguments of one call: those of 130,000
    // leases overflowed the stack), and the state goes with the last.
    const s = r.state;
    const messages = r.messages ?? [];
    const leases = r.leases ?? [];
    let created = false;
    for (let m = 0, l = 0; ; ) {
      const ms = messages.slice(m, m + RESTORE_CHUNK);
      const ls = leases.slice(l, l + RESTORE_CHUNK - ms.length);
      m += ms.length;
      l += ls.length;
      const last = m >= messages.length && l >= leases.length;
      const made = await this.run('restore', name, () =>
        this.scripts.restore(
          ...this.keys(name),
          last && s ? '1' : '',
          s?.putpos ?? 0,
          s?.getpos ?? 0,
          s?.maxqueue ?? 0,
          s?.maxdeliveries ?? 0,
          ms.length,
          ...ms.flatMap((x) => [String(x.pos), x.message]),
          ...ls.flatMap((x) => [String(x.pos), leaseValueOf(x.lease)]),
        ),
      );
      created ||= made === 1;
      if (last) break;
    }
    if (r.state || created) await this.indexed(name, true);
  }

  /** Long polls across frontends: puts elsewhere are told here through Redis itself. */
  readonly wakes = {
    watch: (name: string, on: boolean) => this.watch(name, on),
    onWake: (waker: (name: string, count: number) => void) => void (this.waker = waker),
  };

  describe(): StoreDescription {
    return { store: redactUrl(this.opts.url), durability: this.opts.wait ? `Redis, ${this.opts.wait} replicas confirm` : 'as Redis persists' };
  }

  /** Long polls: subscribe to (or leave) a queue's wake-up channel; resolves once subscribed. */
  private async watch(name: string, on: boolean): Promise<void> {
    if (on) {
      // A failure goes to the long polls, which subscribe again with the next one that waits.
      await this.sub.subscribe(this.channel(name) as unknown as string);
      return;
    }
    // A lost subscription only delays a long poll to its end; it never loses a message.
    await this.sub.unsubscribe(this.channel(name) as unknown as string).catch(() => {});
  }

  async check(): Promise<void> {
    if (this.closing) throw new StoreError('the store is closed');
    // Healthy again as soon as Redis answers: a failed write says nothing about the next one. A
    // health check gets its answer sooner than a request would.
    await within(this.redis.ping(), CHECK_MS).catch((err) => this.failed(err));
  }

  setSyncInterval(): void {
    // Redis decides when it writes to disk (appendfsync): see the README.
  }

  /** How many servers use this Redis (and key prefix) now. */
  async frontendsRunning(): Promise<number> {
    return (await this.scripts.frontends(this.frontends, '', GONE_MS).catch((err) => this.failed(err))) as number;
  }

  close(): Promise<void> {
    clearInterval(this.announcer);
    this.closing ??= (async () => {
      if (this.announcer) await this.redis.zrem(this.frontends, this.origin).catch(() => {});
      await Promise.all([this.redis, this.sub, ...[...this.confirmers.values()].map((c) => c.conn)].map((r) => r.quit().catch(() => {})));
    })();
    return this.closing;
  }
}
