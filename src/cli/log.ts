/**
 * The server's log (pino): start, stop, restarts and errors; never message contents or passwords.
 * One JSON line per event, or a readable line when it goes to a terminal. It goes to stderr, or
 * with `--log-file` to a file that is appended to (by every process of the server) and reopened on
 * SIGHUP, after logrotate moved it. Lines are written synchronously, so that a line is out before
 * the process exits. Plain-text lines on stderr are kept for start-up errors (`fail`).
 */
import cluster from 'node:cluster';
import { pino, type DestinationStream, type Level, type Logger } from 'pino';
import { errorMessage } from '../errors.js';

export const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug'] as const satisfies readonly Level[];

/** Control characters other than newline and tab (C0, DEL, C1), shown escaped on a terminal. */
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g;
const shown = (text: string) => text.replace(CONTROL, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);

/** A line of the log as a person reads it: time, level and message (which says what the fields
 * say), and an error's stack. A message may carry what a client sent (a queue name in an error):
 * its control characters are shown escaped, not sent to the terminal to act on. */
export function readable(json: string): string {
  const { time, level, msg, err } = JSON.parse(json) as { time: string; level: number; msg: string; err?: { stack?: string } };
  const name = (pino.levels.labels[level] ?? String(level)).toUpperCase();
  return `${time} ${name.padEnd(5)} ${shown(msg)}${err?.stack ? `\n${shown(err.stack)}` : ''}\n`;
}

const toTerminal: DestinationStream = { write: (line: string) => void process.stderr.write(readable(line)) };

function create(level: Level, dest: DestinationStream): Logger {
  return pino({ level, base: { pid: process.pid, role: cluster.isWorker ? 'worker' : 'master' }, timestamp: pino.stdTimeFunctions.isoTime }, dest);
}

let file: ReturnType<typeof pino.destination> | undefined;

/** The log; replaced by `configureLog` (importers see the new one: ES modules bind live). */
export let log: Logger = create('info', process.stderr.isTTY ? toTerminal : pino.destination({ fd: 2, sync: true }));

/** Sends the log to `path` (appended; readable text only on a terminal), at `level` and above.
 * Throws when the file cannot be opened. */
export function configureLog(o: { file?: string | undefined; level?: Level }): void {
  const level = o.level ?? 'info';
  if (o.file) {
    // Opened now, so that a path that cannot be written is a start-up error, not a silent log.
    file = pino.destination({ dest: o.file, append: true, sync: true, mkdir: false });
    // A reopen that fails also comes as an event, which with no listener would end the process:
    // `reopenLog` says what failed, and the log goes on to the file it has.
    file.on('error', () => {});
    log = create(level, file);
  } else log = create(level, process.stderr.isTTY ? toTerminal : pino.destination({ fd: 2, sync: true }));
}

/** Whether the log goes to a file (SIGHUP then reopens it instead of stopping the server). */
export const logsToFile = (): boolean => file !== undefined;

/** Opens the log file again under its name (logrotate moved the old one away). When that fails
 * (a file made that this user cannot write, the directory gone), the log goes on where it was,
 * and says so there: whether it was reopened. */
export function reopenLog(): boolean {
  try {
    file?.reopen();
    return true;
  } catch (err) {
    log.error({ event: 'log-reopen-failed', err }, `SIGHUP: the log file cannot be opened again (${errorMessage(err)}); logging on to the file as it was`);
    return false;
  }
}

/** Lines `repeats` counts at most at once; past that, each is said as it comes. */
const MAX_REPEATED = 1000;

/**
 * For events that can come in floods (every request failing alike while a store is down,
 * connections refused over a limit): `say` is called for the first of a kind (`count` 1, `first`),
 * then, once `everyMs` is up, with how many more of it came meanwhile, each period while they go
 * on, and at `stop`; a kind that stopped coming is forgotten, and its next one is a first again.
 */
export function repeats(say: (kind: string, count: number, first: boolean) => void, everyMs = 60_000): { add: (kind: string) => void; stop: () => void } {
  const counts = new Map<string, number>();
  let timer: NodeJS.Timeout | undefined;
  const tick = (again = true) => {
    timer = undefined;
    for (const [kind, n] of counts) {
      if (n === 0) counts.delete(kind);
      else {
        say(kind, n, false);
        counts.set(kind, 0);
      }
    }
    if (counts.size && again) timer = setTimeout(tick, everyMs).unref();
  };
  return {
    add(kind) {
      const n = counts.get(kind);
      if (n !== undefined) return void counts.set(kind, n + 1);
      if (counts.size < MAX_REPEATED) counts.set(kind, 0);
      say(kind, 1, true);
      timer ??= setTimeout(tick, everyMs).unref();
    },
    // What was counted since the last count is said as the process stops.
    stop() {
      clearTimeout(timer);
      tick(false);
      counts.clear();
    },
  };
}
