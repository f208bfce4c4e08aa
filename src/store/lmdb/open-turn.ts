/**
 * Opening the environment while other processes write to it. The LMDB that lmdb-js bundles has a
 * bug that LMDB fixed in 0.9.29 (ITS#9496): a process opening an environment stores the id of the
 * newest transaction it read from the data file into the lock file's shared table, without
 * LMDB's writer lock. Should another process commit between that read and that store, the id
 * goes back by one: the next write transaction takes the id of the one just committed, starts
 * from the state before it, and its commit replaces it. A committed transaction, acknowledged, is
 * lost (seen with `--workers` as a message delivered twice, or a put gone, when a worker started
 * or was replaced under load, and with `httpsqs export` run next to a busy server).
 *
 * So no process opens the environment while another may commit. The process that holds the data
 * directory's lock (lock.ts: a server of one process, the primary of `--workers`, an import) gives
 * turns to open it, one at a time: it pauses every write (its own, or its workers'), lets the
 * opener open, and lets the writes go on once the opener says it has opened. Workers of
 * `--workers` ask their primary through the cluster channel (cli/ipc.ts); any other process (an
 * export) asks on an abstract socket named after the directory's lock: it sends `open` and the
 * word in the directory's `httpsqs.turn`, is told `go`, opens, sends `opened` and is told
 * `released`. With no process holding the directory, the opener holds its lock for the moment of
 * the open (answering `opening`, so that a server starting waits for it).
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DirectoryInUse, holderOf, lockDirectory, STOPPING_MS, socketName } from '../lock.js';

/** The longest turn: an open takes milliseconds, and every write waits while a turn lasts. */
export const TURN_MS = 10_000;
/** How long an opener waits for the turns of a directory whose lock is held: its holder may be
 * starting, its environment not open yet. */
const STARTING_MS = 5000;

/** Pauses every write to the environment; resolves, once none is in progress, to the function
 * that lets them go on. */
export type Pause = () => Promise<() => void>;
/** Waits for a turn to open the environment; resolves to the function that ends it. */
export type TakeTurn = () => Promise<() => void>;

/** Turns one at a time, each with every write paused. */
export function turns(pause: Pause): TakeTurn {
  let last = Promise.resolve();
  return () =>
    new Promise((granted) => {
      last = last.then(async () => {
        // The pauses here do not fail (a commit that failed leaves nothing in progress); should one,
        // the turns that follow must still come.
        const resume = await pause().catch(() => () => {});
        await new Promise<void>((ended) =>
          granted(() => {
            resume();
            ended();
          }),
        );
      });
    });
}

/** The file in the data directory with the word an opener must say to be given a turn: a turn
 * pauses every write, so only a process that can read the directory (as opening the database
 * needs) may ask for one, not any local user who can reach the abstract socket. */
export const TURN_FILE = 'httpsqs.turn';
/** The longest request line: `open ` and the word. */
const MAX_ASK = 64;

/** The holder's side for other processes: gives turns on the directory's socket until the
 * returned function is called. A turn ends after `limitMs` however far the opener got. */
export async function giveOpenTurns(dir: string, take: TakeTurn, limitMs = TURN_MS): Promise<() => void> {
  const word = randomBytes(16).toString('hex');
  const file = join(dir, TURN_FILE);
  rmSync(file, { force: true });
  writeFileSync(file, `${word}\n`, { mode: 0o600, flag: 'wx' });
  const server = net.createServer((sock) => {
    sock.on('error', () => {});
    sock.setEncoding('latin1');
    let text = '';
    let end: ((answer: string) => void) | undefined;
    let asked = false;
    // One that does not ask in time, or says too much, is let go.
    sock.setTimeout(limitMs, () => asked || sock.destroy());
    sock.on('data', (chunk: string) => {
      text += chunk;
      if (!asked) {
        const line = text.indexOf('\n');
        if (line < 0) return void (text.length > MAX_ASK && sock.destroy());
        if (!sameWord(text.slice(0, line), `open ${word}`)) return void sock.destroy();
        asked = true;
        text = text.slice(line + 1);
        void take().then((release) => {
          end = limited(release, limitMs, (answer) => sock.end(`${answer}\n`));
          if (sock.destroyed) end('gone');
          else sock.write('go\n');
        });
      }
      if (text.includes('opened\n')) end?.('released');
      else if (text.length > MAX_ASK) sock.destroy();
    });
    sock.on('close', () => end?.('gone'));
  });
  try {
    await new Promise<void>((listening, failed) => {
      server.once('error', failed);
      // `exclusive`: a cluster worker listens itself rather than through the primary.
      server.listen({ path: socketName(dir, 'open'), exclusive: true }, listening);
    });
  } catch (err) {
    rmSync(file, { force: true });
    throw err;
  }
  // The turns alone must not keep the process running.
  server.unref();
  return () => {
    server.close();
    try {
      if (readFileSync(file, 'utf8').trim() === word) rmSync(file);
    } catch {
      /* gone already */
    }
  };
}

/** A turn's end, called once whatever calls it (later calls do nothing), and at the latest after
 * `limitMs` (with 'timeout'): it releases the turn, then tells `ended` why. */
export function limited(release: () => void, limitMs: number, ended: (why: string) => void): (why: string) => void {
  let over = false;
  const end = (why: string) => {
    if (over) return;
    over = true;
    clearTimeout(timer);
    release();
    ended(why);
  };
  const timer = setTimeout(() => end('timeout'), limitMs);
  return end;
}

const sameWord = (said: string, expected: string) => said.length === expected.length && timingSafeEqual(Buffer.from(said), Buffer.from(expected));

/**
 * The opener's side: runs `open` in a turn, taken with `take` (a worker asks its primary) or else
 * on the socket of the process holding the directory lock; with no such process, holding that
 * lock itself for the moment of the open.
 */
export async function openInTurn<T extends { close(): unknown }>(dir: string, open: () => T, take?: TakeTurn): Promise<T> {
  if (take) {
    const end = await take();
    try {
      return open();
    } finally {
      end();
    }
  }
  const sock = await connect(dir);
  if (!sock) {
    // No process holds the directory: hold it for the moment of the open, so that no server starts
    // writing meanwhile (one that starts waits).
    let release: (() => void) | undefined;
    try {
      release = await lockDirectory(dir, process.pid, undefined, true);
    } catch (err) {
      // One came first: ask it for a turn. (Another error, as on a read-only directory, where no
      // server writes: open without the lock.)
      if (err instanceof DirectoryInUse) return openInTurn(dir, open);
    }
    try {
      return open();
    } finally {
      release?.();
    }
  }
  try {
    const lines = readLines(sock);
    sock.write(`open ${turnWord(dir)}\n`);
    const go = (await lines.next()).value;
    if (go !== 'go') throw new Error(`the process holding ${dir} gave no turn to open its database (${go ?? 'no answer'})`);
    const opened = open();
    sock.write('opened\n');
    const answer = (await lines.next()).value;
    if (answer !== 'released') {
      // The writes went on before the open was over: it cannot be trusted.
      await opened.close();
      throw new Error(`the process holding ${dir} ended the turn to open its database before it had opened (${answer ?? 'no answer'})`);
    }
    return opened;
  } finally {
    sock.destroy();
  }
}

/** The word of the turns of `dir`, which only the server's user can read. */
function turnWord(dir: string): string {
  const file = join(dir, TURN_FILE);
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new Error(`cannot read ${file} (${(err as NodeJS.ErrnoException).code}): run this as the user the server runs as`);
  }
}

/** A connection to the turns of `dir`; undefined when no process holds its lock. */
async function connect(dir: string): Promise<net.Socket | undefined> {
  const until = Date.now() + STARTING_MS;
  for (;;) {
    const sock = await new Promise<net.Socket | undefined>((resolve) => {
      const s = net.connect(socketName(dir, 'open'));
      s.once('connect', () => resolve(s));
      s.once('error', () => resolve(undefined));
    });
    if (sock) return sock;
    const holder = await holderOf(dir);
    if (!holder) return undefined;
    // One that is stopping, or only opening, lets go of the directory soon.
    if (Date.now() > until + (holder.state !== 'running' ? STOPPING_MS : 0)) {
      throw new Error(`the process holding ${dir} (PID ${holder.pid}) gives no turns to open its database (a server of an earlier httpsqs?): stop it first`);
    }
    await sleep(50);
  }
}

async function* readLines(sock: net.Socket): AsyncGenerator<string> {
  let text = '';
  sock.setEncoding('latin1');
  for await (const chunk of sock) {
    text += chunk as string;
    for (let i: number; (i = text.indexOf('\n')) >= 0; text = text.slice(i + 1)) yield text.slice(0, i);
  }
}
