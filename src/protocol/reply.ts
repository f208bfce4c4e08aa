/** Reply bodies of the reference protocol (docs/PROTOCOL.md sections 2 and 5). */
import { putLap, unread, type QueueState } from '../queue/ring.js';

export const PUT_OK = 'HTTPSQS_PUT_OK';
export const PUT_END = 'HTTPSQS_PUT_END';
export const PUT_ERROR = 'HTTPSQS_PUT_ERROR';
export const GET_END = 'HTTPSQS_GET_END';
export const RESET_OK = 'HTTPSQS_RESET_OK';
export const MAXQUEUE_OK = 'HTTPSQS_MAXQUEUE_OK';
export const MAXQUEUE_CANCEL = 'HTTPSQS_MAXQUEUE_CANCEL';
export const SYNCTIME_OK = 'HTTPSQS_SYNCTIME_OK';
export const AUTH_FAILED = 'HTTPSQS_AUTH_FAILED';
export const ERROR = 'HTTPSQS_ERROR';
// Extensions (docs/EXTENSIONS.md).
export const ACK_OK = 'HTTPSQS_ACK_OK';
export const NACK_OK = 'HTTPSQS_NACK_OK';
export const TOUCH_OK = 'HTTPSQS_TOUCH_OK';
export const LEASE_NOT_FOUND = 'HTTPSQS_LEASE_NOT_FOUND';
export const MAXDELIVERIES_OK = 'HTTPSQS_MAXDELIVERIES_OK';
export const DISCARD_OK = 'HTTPSQS_DISCARD_OK';
export const DEAD_NOT_FOUND = 'HTTPSQS_DEAD_NOT_FOUND';

export const VERSION_LINE = 'HTTP Simple Queue Service v1.7';

/** Most messages in one mput, mget or view range, and queues in one page of list (extensions). */
export const MAX_BATCH = 1000;
/** The limits' defaults, here once: the flags (cli/options.ts) and the server take them. */
export const DEFAULTS = {
  /** Largest request body (`--max-message-bytes`). */
  maxMessageBytes: 32 * 1024 * 1024,
  /** Largest request line and headers (`--max-header-bytes`). */
  maxHeaderBytes: 16 * 1024,
  /** Most message bytes in one batch reply (`--max-reply-bytes`). */
  maxReplyBytes: 32 * 1024 * 1024,
  /** Longest long poll, in seconds (`--max-wait`). */
  maxWait: 60,
  /** Idle keep-alive connections are closed after this many seconds (`-t`). */
  keepAliveTimeout: 60,
} as const;

/** `status` text, as a byte string: `name` is one (latin1), so its bytes come back as sent. */
export function statusText(name: string, s: QueueState): string {
  const lap = putLap(s) === 2 ? '2nd lap' : '1st lap';
  return (
    `${VERSION_LINE}\n------------------------------\nQueue Name: ${name}\n` +
    `Maximum number of queues: ${s.maxqueue}\n` +
    `Put position of queue (${lap}): ${s.putpos}\n` +
    `Get position of queue (1st lap): ${s.getpos}\n` +
    `Number of unread queue: ${unread(s)}\n`
  );
}

/** What a queue holds besides its ring (extensions): leases, delayed messages, dead letters. */
export interface Held {
  leased: number;
  delayed: number;
  dead: number;
}

/**
 * `status_json`. Unlike the reference, `"`, `\` and control bytes of the name are escaped as JSON;
 * every other byte comes back as sent, as the reference sends it (UTF-8, GBK or any charset), so
 * for ordinary names the output is byte-identical. (A 0x5C byte is escaped even where it is the
 * second byte of a GBK, Big5 or Shift_JIS character.) The extensions' fields (`leased`, `delayed`,
 * `dead`, `maxdeliveries`) are added only when non-zero, so that queues used the reference way
 * answer exactly as it does.
 */
export function statusJson(name: string, s: QueueState & Partial<Held>): Buffer {
  return Buffer.from(`${fields(JSON.stringify(name), s, false)}\n`, 'latin1');
}

/** The JSON object of a queue's status with every extension field, as valid UTF-8 (as `opt=list` gives it). */
export function statusObject(name: string, s: QueueState & Held): string {
  return fields(JSON.stringify(Buffer.from(name, 'latin1').toString('utf8')), s, true);
}

function fields(jsonName: string, s: QueueState & Partial<Held>, all: boolean): string {
  const more = (['leased', 'delayed', 'dead', 'maxdeliveries'] as const)
    .filter((k) => all || s[k])
    .map((k) => `,"${k}":${s[k] ?? 0}`)
    .join('');
  return (
    `{"name":${jsonName},"maxqueue":${s.maxqueue},"putpos":${s.putpos},"putlap":${putLap(s)},` + `"getpos":${s.getpos},"getlap":1,"unread":${unread(s)}${more}}`
  );
}
