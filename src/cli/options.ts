/**
 * Every command-line option, in one table: `--help` and the README's flag table are generated
 * from it (`npm run docs:flags`), and a test checks that the README matches.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parseRedisUrl } from '../store/redis-url.js';
import { LEVELS } from './log.js';
import { DEFAULTS } from '../protocol/reply.js';
import { errorMessage } from '../errors.js';

interface OptionDef {
  short?: string;
  type: 'string' | 'boolean';
  /** Placeholder shown in help, e.g. `<second>`. */
  arg?: string;
  default?: string;
  help: string;
}

export const OPTIONS = {
  listen: { short: 'l', type: 'string', arg: '<ip_addr>', default: '0.0.0.0', help: 'interface to listen on' },
  port: { short: 'p', type: 'string', arg: '<num>', default: '1218', help: 'TCP port' },
  datadir: { short: 'x', type: 'string', arg: '<path>', default: './data', help: "data directory (created when missing, for the server's user alone: 0700)" },
  timeout: { short: 't', type: 'string', arg: '<second>', default: String(DEFAULTS.keepAliveTimeout), help: 'keep-alive timeout of an idle HTTP connection' },
  synctime: {
    short: 's',
    type: 'string',
    arg: '<second>',
    default: '5',
    help: 'seconds between flushes in `--sync interval` mode (also `opt=synctime`)',
  },
  sync: {
    type: 'string',
    arg: '<mode>',
    default: 'durable',
    help: '`durable`: ack after the change is on disk; `interval`: ack at once, flush every `-s` seconds (like the reference)',
  },
  store: {
    type: 'string',
    arg: '<url>',
    default: 'lmdb',
    help: '`lmdb` (in the `-x` directory), or `redis://[:password@]host:port[/db]`, `rediss://…`, `redis-cluster://host:port,host:port` (add `?prefix=p` to share one Redis, `?read=delete` to delete messages once read; password also from `HTTPSQS_REDIS_PASSWORD`)',
  },
  engine: {
    type: 'string',
    arg: '<name>',
    help: 'the embedded store in `-x` for a new directory: `lmdb` (the default) or `journal`; a directory keeps the engine it was made with (one holding `journal/` opens with the journal, one holding `data.mdb` with LMDB); `--workers` above 1 needs LMDB',
  },
  repair: {
    type: 'boolean',
    help: 'with the journal: start even though a segment is damaged where intact records follow, dropping the damaged records and the rest of that segment (the refusal to start says how much); a damaged message found later, when it is read, is dropped too (logged) instead of failing its gets',
  },
  'redis-wait': { type: 'string', arg: '<num>', default: '0', help: 'with Redis: acknowledge a change only once this many replicas have it (WAIT)' },
  'redis-wait-ms': {
    type: 'string',
    arg: '<ms>',
    default: '1000',
    help: 'with `--redis-wait`: how long to wait for the replicas before answering with an error (a get hands out what it took, and logs it)',
  },
  'cache-nodes': {
    short: 'c',
    type: 'string',
    arg: '<num>',
    default: '1024',
    help: 'accepted for compatibility, no effect (LMDB caches through the OS page cache)',
  },
  'cache-mb': {
    short: 'm',
    type: 'string',
    arg: '<size>',
    default: '100',
    help: 'accepted for compatibility, no effect (LMDB caches through the OS page cache)',
  },
  pidfile: {
    short: 'i',
    type: 'string',
    arg: '<file>',
    default: '/tmp/httpsqs.pid',
    help: 'PID file, removed on exit; while it names a running httpsqs, the start is refused (one that is stopping is waited for)',
  },
  auth: { short: 'a', type: 'string', arg: '<auth>', help: 'password clients must send as `auth=` (also `HTTPSQS_AUTH`, or `--auth-file`)' },
  'auth-file': { type: 'string', arg: '<file>', help: 'read the `-a` password from this file (keeps it out of `ps`)' },
  'admin-auth': {
    type: 'string',
    arg: '<auth>',
    help: 'when set, the only password accepted for reset, maxqueue, synctime, maxdeliveries, redrive and discard (also `HTTPSQS_ADMIN_AUTH`, or `--admin-auth-file`)',
  },
  'admin-auth-file': { type: 'string', arg: '<file>', help: 'read the admin password from this file' },
  'max-connections': {
    type: 'string',
    arg: '<num>',
    default: '16384',
    help: 'open connections per process; more are closed at once (keeps idle or slow clients from exhausting sockets)',
  },
  'max-message-bytes': { type: 'string', arg: '<bytes>', default: String(DEFAULTS.maxMessageBytes), help: 'largest request body; larger ones get HTTP 413' },
  'max-header-bytes': {
    type: 'string',
    arg: '<bytes>',
    default: String(DEFAULTS.maxHeaderBytes),
    help: 'largest request line plus headers, so also the largest `data=` message; larger ones get HTTP 431 (the reference had no limit: raise it for clients that put big messages in the URL)',
  },
  'max-reply-bytes': {
    type: 'string',
    arg: '<bytes>',
    default: String(DEFAULTS.maxReplyBytes),
    help: 'most message bytes in one batch reply (`mget`, `view` with `num`): a batch takes only the messages that fit, and always at least one; the reply is streamed',
  },
  'max-buffered-bytes': {
    type: 'string',
    arg: '<bytes>',
    help: 'memory for request bodies and replies over 64 KiB, all connections of a process together (default: 8 times the larger of --max-message-bytes and --max-reply-bytes, so 256 MiB); a body that would not fit gets HTTP 503, and a get, view, mget, dead or a /metrics over 64 KiB waits for room before it takes or reads anything',
  },
  'disk-reserve': {
    type: 'string',
    arg: '<MiB>',
    default: '64',
    help: "refuse puts (`HTTPSQS_PUT_ERROR`) while less than this is free for the data directory (on its disk, or unused inside the store's files: LMDB pages a reset freed, the journal's segments made ahead); gets go on; 0 turns it off",
  },
  'allowed-hosts': {
    type: 'string',
    arg: '<names>',
    help: 'host names (comma-separated) the dashboard answers to, besides IP addresses and `localhost`: a page elsewhere cannot reach it through DNS rebinding',
  },
  'max-wait': {
    type: 'string',
    arg: '<second>',
    default: String(DEFAULTS.maxWait),
    help: 'longest long poll a client may ask for with `opt=get&wait=` (see docs/EXTENSIONS.md)',
  },
  workers: {
    type: 'string',
    arg: '<num>',
    default: '1',
    help: 'serving processes sharing the port and the database (more than one helps only with cores to spare: see the README)',
  },
  'log-file': {
    type: 'string',
    arg: '<path>',
    help: 'append the log (JSON lines) to this file instead of stderr; SIGHUP reopens it (for logrotate) instead of stopping the server',
  },
  'log-level': { type: 'string', arg: '<level>', default: 'info', help: '`fatal`, `error`, `warn`, `info` or `debug`: the least severe events logged' },
  daemon: { short: 'd', type: 'boolean', help: 'run in the background and return once it is listening (the PID file must be writable)' },
  version: { short: 'V', type: 'boolean', help: 'print the version and exit' },
  help: { short: 'h', type: 'boolean', help: 'print this help and exit' },
} satisfies Record<string, OptionDef>;

export type OptionName = keyof typeof OPTIONS;

function flags(name: string, def: OptionDef): string {
  const long = `--${name}${def.arg ? ` ${def.arg}` : ''}`;
  return def.short ? `-${def.short}, ${long}` : long;
}

export function helpText(): string {
  const rows = Object.entries(OPTIONS as Record<string, OptionDef>).map(([name, def]) => {
    const dflt = def.default !== undefined ? ` (default ${def.default})` : '';
    return [flags(name, def), `${def.help.replaceAll('`', '')}${dflt}`] as const;
  });
  const width = Math.max(...rows.map(([f]) => f.length)) + 2;
  return (
    'httpsqs: HTTP Simple Queue Service, a drop-in HTTPSQS 1.7 server on LMDB (or its own journal)\n\n' +
    'Usage: httpsqs [options]\n' +
    '       httpsqs export|import ...   backup, restore, move between stores, migrate (httpsqs import -h)\n\n' +
    rows.map(([f, h]) => `  ${f.padEnd(width)}${h}`).join('\n') +
    '\n'
  );
}

/** The README's flag table, in Markdown. */
export function flagTable(): string {
  const lines = ['| flag | default | meaning |', '|---|---|---|'];
  for (const [name, def] of Object.entries(OPTIONS as Record<string, OptionDef>)) {
    lines.push(`| \`${flags(name, def)}\` | ${def.default !== undefined ? `\`${def.default}\`` : ''} | ${def.help} |`);
  }
  return lines.join('\n');
}

/** Options after parsing and validation, with their defaults filled in. */
export interface Config {
  listen: string;
  port: number;
  datadir: string;
  timeout: number;
  synctime: number;
  sync: 'durable' | 'interval';
  /** 'lmdb', or a Redis URL. */
  store: string;
  /** The embedded engine asked for; undefined: the one the directory holds, else LMDB. */
  engine: 'journal' | 'lmdb' | undefined;
  repair: boolean;
  redisWait: number;
  redisWaitMs: number;
  pidfile: string;
  /** The passwords' bytes: UTF-8 from a flag or the environment, as they are from a file. */
  auth: Buffer | undefined;
  adminAuth: Buffer | undefined;
  maxMessageBytes: number;
  maxHeaderBytes: number;
  maxReplyBytes: number;
  maxBufferedBytes: number;
  maxConnections: number;
  maxWait: number;
  /** Lower-cased. */
  allowedHosts: string[];
  /** MiB. */
  diskReserve: number;
  workers: number;
  logFile: string | undefined;
  logLevel: (typeof LEVELS)[number];
  daemon: boolean;
  version: boolean;
  help: boolean;
}

/** A start-up problem the user can fix; the CLI prints its message and exits with 1. */
export class StartError extends Error {}

/** The data directory is another server's (its lock is held). */
export class DirectoryTaken extends StartError {}

/** A flag or its value is wrong. */
export class UsageError extends StartError {}

function int(name: OptionName, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || n < min || n > max) {
    const short = (OPTIONS[name] as OptionDef).short;
    throw new UsageError(`${short ? `-${short}/` : ''}--${name}: expected a whole number from ${min} to ${max}, got "${value}"`);
  }
  return n;
}

function oneOf<T extends string>(name: OptionName, value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) {
    const quoted = allowed.map((a) => `"${a}"`);
    throw new UsageError(`--${name}: expected ${quoted.slice(0, -1).join(', ')} or ${quoted.at(-1)}, got "${value}"`);
  }
  return value as T;
}

/**
 * A password from its flag, else its file (first line), else its environment variable. An empty
 * one is refused: `auth=` (or no auth at all) would match it, so the server would be open.
 */
function secret(
  flagName: string,
  flag: string | undefined,
  fileOption: OptionName,
  file: string | undefined,
  env: string,
  environment: Record<string, string | undefined>,
): Buffer | undefined {
  if (flag !== undefined) {
    if (!flag) throw new UsageError(`${flagName}: the password is empty: give one, or leave the flag out for no password`);
    return Buffer.from(flag, 'utf8');
  }
  if (file !== undefined) {
    let bytes: Buffer;
    try {
      bytes = readFileSync(file);
    } catch (err) {
      throw new UsageError(`--${fileOption}: cannot read ${file}: ${errorMessage(err)}`);
    }
    // Bytes, not text: a password in another charset is compared as the client sends it.
    const end = bytes.indexOf(0x0a);
    let first = end < 0 ? bytes : bytes.subarray(0, end);
    if (first.at(-1) === 0x0d) first = first.subarray(0, -1);
    if (!first.length) throw new UsageError(`--${fileOption}: the first line of ${file} is empty: put the password there`);
    return first;
  }
  const value = environment[env];
  if (value === '') throw new UsageError(`${env} is set but empty: set the password there, or unset it for no password`);
  return value === undefined ? undefined : Buffer.from(value, 'utf8');
}

/** `argv` read as C's getopt reads it: the word after a flag that takes a value is its value, even
 * one that begins with `-` (`-a -s3cr3t`, `-c -1`), which parseArgs alone refuses as ambiguous; so
 * too after a group of short flags that ends with one that takes a value (`-da -s3cr3t`). */
export function asGetopt(argv: string[]): string[] {
  const takes = new Map<string, string>();
  const switches = new Set<string>();
  for (const [name, o] of Object.entries(OPTIONS) as Array<[string, OptionDef]>) {
    if (o.type !== 'string') {
      if (o.short) switches.add(o.short);
      continue;
    }
    takes.set(`--${name}`, name);
    if (o.short) takes.set(`-${o.short}`, name);
  }
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    // `-da`: switches, then the flag whose value is the next word.
    const last = /^-[A-Za-z]{2,}$/.test(word) ? takes.get(`-${word.at(-1)}`) : undefined;
    const group = last !== undefined && [...word.slice(1, -1)].every((c) => switches.has(c));
    const name = group ? last : takes.get(word);
    if (name === undefined || !argv[i + 1]?.startsWith('-')) out.push(word);
    else {
      if (group) out.push(word.slice(0, -1));
      out.push(`--${name}=${argv[++i]}`);
    }
  }
  return out;
}

/** The configuration `argv` gives; `env` holds HTTPSQS_AUTH and HTTPSQS_ADMIN_AUTH. */
export function parseConfig(argv: string[], env: Record<string, string | undefined> = process.env): Config {
  const parse = () => {
    try {
      return parseArgs({ args: asGetopt(argv), options: OPTIONS, strict: true, allowPositionals: false }).values;
    } catch (err) {
      throw new UsageError(`${errorMessage(err).replace(/\.$/, '')}. Try --help.`);
    }
  };
  const values = parse();
  const v = (name: OptionName): string => (values[name] as string | undefined) ?? (OPTIONS[name] as OptionDef).default!;
  const sync = v('sync');
  if (sync !== 'durable' && sync !== 'interval') {
    throw new UsageError(`--sync: expected "durable" or "interval", got "${sync}"`);
  }
  const store = v('store');
  if (store !== 'lmdb') {
    try {
      parseRedisUrl(store);
    } catch (err) {
      throw new UsageError(`--store: ${errorMessage(err)}`);
    }
  }
  if (!v('datadir')) throw new UsageError('-x/--datadir: the directory is empty: give one, or leave the flag out for ./data');
  // -c and -m have no effect: any value is accepted, as the reference's atoi reads any (`-c -1`,
  // `-m 2G`), so that a start script that runs the reference runs this too.
  const maxMessageBytes = int('max-message-bytes', v('max-message-bytes'), 1, 1024 ** 3);
  const maxReplyBytes = int('max-reply-bytes', v('max-reply-bytes'), 1, 1024 ** 3);
  // At least one body or reply of the largest size must fit.
  const largest = Math.max(maxMessageBytes, maxReplyBytes);
  const buffered = values['max-buffered-bytes'] as string | undefined;
  return {
    listen: v('listen'),
    port: int('port', v('port'), 1, 65535),
    datadir: v('datadir'),
    timeout: int('timeout', v('timeout'), 1, 86_400),
    synctime: int('synctime', v('synctime'), 1, 1_000_000_000),
    sync,
    store,
    engine: values.engine === undefined ? undefined : oneOf('engine', values.engine as string, ['journal', 'lmdb'] as const),
    repair: Boolean(values.repair),
    redisWait: int('redis-wait', v('redis-wait'), 0, 100),
    redisWaitMs: int('redis-wait-ms', v('redis-wait-ms'), 1, 600_000),
    pidfile: v('pidfile'),
    auth: secret('-a/--auth', values.auth as string | undefined, 'auth-file', values['auth-file'] as string | undefined, 'HTTPSQS_AUTH', env),
    adminAuth: secret(
      '--admin-auth',
      values['admin-auth'] as string | undefined,
      'admin-auth-file',
      values['admin-auth-file'] as string | undefined,
      'HTTPSQS_ADMIN_AUTH',
      env,
    ),
    maxMessageBytes,
    maxHeaderBytes: int('max-header-bytes', v('max-header-bytes'), 1024, 1024 ** 3),
    maxReplyBytes,
    maxBufferedBytes: buffered === undefined ? 8 * largest : int('max-buffered-bytes', buffered, largest, 2 ** 50),
    maxConnections: int('max-connections', v('max-connections'), 1, 1_000_000),
    maxWait: int('max-wait', v('max-wait'), 1, 3600),
    allowedHosts: ((values['allowed-hosts'] as string | undefined) ?? '')
      .split(',')
      .map((h) => h.trim().toLowerCase())
      .filter(Boolean),
    diskReserve: int('disk-reserve', v('disk-reserve'), 0, 2 ** 30),
    workers: int('workers', v('workers'), 1, 64),
    logFile: values['log-file'] as string | undefined,
    logLevel: oneOf('log-level', v('log-level'), LEVELS),
    daemon: Boolean(values.daemon),
    version: Boolean(values.version),
    help: Boolean(values.help),
  };
}
