/** `httpsqs import`: an export, or a `tcbmgr list` dump of the C server's database, into a store. */
import { constants, isUtf8 } from 'node:buffer';
import { createReadStream, existsSync, rmSync, statSync } from 'node:fs';
import { isBase64, MAX_NAME_BYTES } from '../protocol/query.js';
import { isDead, LAST_SLOT, MAX_DELIVERIES, type Lease } from '../queue/leases.js';
import { DEFAULT_MAXQUEUE, MAX_POSITION, MIN_MAXQUEUE, type QueueState } from '../queue/ring.js';
import { isInitial, type Store } from '../store/store.js';
import { DataError, MAX_LINE, openStore, parseDataArgs, progress, USAGE } from './data.js';
import { errorMessage } from '../errors.js';

const BATCH = 1000;
/** Messages are written once they come to this many bytes, however few: memory stays flat
 * whatever their size (1000 messages of 1 MiB took 2.5 GB in one batch). */
const BATCH_BYTES = 8 * 2 ** 20;

/** A refusal whose message already says what was written before it. */
class StoppedThere extends DataError {}

/** Writes one queue after another: messages in batches as they come, then its leases, a batch at a
 * time, and its state last (with the leases of the last batch). */
export class Importer {
  private name: string | undefined;
  private state: QueueState | undefined;
  private batch: Array<{ pos: number; message: Buffer }> = [];
  private batchBytes = 0;
  private held: Array<{ pos: number; lease: Lease }> = [];
  /** Leases of the current queue already written, without its state: the state must follow. */
  private leasesWritten = false;
  private readonly seen = new Set<string>();
  queues = 0;
  messages = 0;
  /** The queues that held state here and were reset to be written again (--replace). */
  private readonly replacedNames = new Set<string>();
  /** Whether anything was written to the store yet. */
  wrote = false;
  /** Messages written, by queue. */
  private readonly counts = new Map<string, number>();

  /** The queue being written. */
  get queueName(): string | undefined {
    return this.name;
  }

  /**
   * `allOrNothing`: no queue is whole until the input ends (a tcbmgr dump, whose states are set
   * last), so a refusal speaks of no queue imported before it, and `undo` empties those begun.
   */
  constructor(
    private readonly store: Store,
    private readonly replace: boolean,
    private readonly allOrNothing = false,
  ) {}

  /** Starts (or goes back to) a queue; the first time, checks that writing it harms nothing. */
  async queue(name: string): Promise<void> {
    if (name === this.name) return;
    if (name.length > MAX_NAME_BYTES) throw new DataError(`a queue name of ${name.length} bytes: the server takes at most ${MAX_NAME_BYTES}`);
    await this.flush(true);
    this.name = name;
    if (this.seen.has(name)) return;
    const s = await this.store.status(name);
    if (!isInitial(s)) {
      if (!this.replace)
        throw new StoppedThere(
          this.allOrNothing
            ? `queue ${JSON.stringify(name)} already holds state here, so the import stopped (reset it first, or use --replace)`
            : `queue ${JSON.stringify(name)} already holds state here, so the import stopped there: nothing of it, nor of what follows it in the input, was written; the ${this.queues} queue(s) before it were imported (reset it first, or use --replace)`,
        );
      this.seen.add(name);
      this.queues++;
      this.replacedNames.add(name);
      await this.store.reset(name);
    } else if (await this.store.leftovers?.(name)) {
      // An earlier import stopped before this queue's state: its records would be counted with
      // ours (its leases revived). The queue holds no state, so clearing it loses nothing.
      await this.store.reset(name);
    }
    if (!this.seen.has(name)) {
      this.seen.add(name);
      this.queues++;
    }
  }

  /** Queues begun, in the order they came. */
  begun(): string[] {
    return [...this.seen];
  }

  /** How many queues held state here and were reset to be written again (--replace). */
  get replaced(): number {
    return this.replacedNames.size;
  }

  /** Whether `name` held state here and was reset to be written again (--replace). */
  wasReplaced(name: string): boolean {
    return this.replacedNames.has(name);
  }

  /** Takes a queue begun out of the import again (emptied); resolves to its messages' count. */
  async drop(name: string): Promise<number> {
    await this.flush(true);
    if (this.name === name) this.name = undefined;
    await this.store.reset(name);
    const n = this.counts.get(name) ?? 0;
    this.counts.delete(name);
    this.seen.delete(name);
    this.queues--;
    this.messages -= n;
    return n;
  }

  /** Empties every queue this import began (what it wrote is taken away); says how many. */
  async undo(): Promise<number> {
    this.batch = [];
    this.held = [];
    this.state = undefined;
    this.name = undefined;
    for (const name of this.seen) await this.store.reset(name);
    const begun = this.seen.size;
    // Nothing of this import is left: a directory it made can go again (runImport).
    this.seen.clear();
    this.counts.clear();
    this.queues = 0;
    this.messages = 0;
    return begun;
  }

  setState(s: QueueState): void {
    const what = `queue ${JSON.stringify(this.name)}`;
    if (s.maxqueue < MIN_MAXQUEUE || s.maxqueue > MAX_POSITION)
      throw new DataError(`${what}: maxqueue ${s.maxqueue} is outside ${MIN_MAXQUEUE}..${MAX_POSITION}`);
    if (s.putpos > s.maxqueue || s.getpos > s.maxqueue) throw new DataError(`${what}: positions ${s.putpos}/${s.getpos} are beyond maxqueue ${s.maxqueue}`);
    // HTTPSQS never leaves it (a put sets putpos 1 or more, a reset both to 0), and the get rules
    // would read such a ring round and round, for ever when it holds no message.
    if (s.putpos === 0 && s.getpos > 0)
      throw new DataError(
        `${what}: getpos ${s.getpos} with putpos 0, read but never written, which no HTTPSQS leaves${this.allOrNothing ? ': the dump is cut off between its getpos and putpos keys (did tcbmgr fail on a damaged file?), or the file is damaged' : ''}`,
      );
    if ((s.maxdeliveries ?? 0) > MAX_DELIVERIES) throw new DataError(`${what}: maxdeliveries ${s.maxdeliveries} is over ${MAX_DELIVERIES}`);
    this.state = s;
  }

  async message(pos: number, message: Buffer): Promise<void> {
    // Ring positions, and slots past the ring (delayed messages, dead letters).
    if (!(pos >= 1 && pos <= LAST_SLOT)) throw new DataError(`position ${pos} of queue ${JSON.stringify(this.name)} is out of range`);
    this.batch.push({ pos, message });
    this.batchBytes += message.length;
    this.messages++;
    this.counts.set(this.name!, (this.counts.get(this.name!) ?? 0) + 1);
    if (this.batch.length >= BATCH || this.batchBytes >= BATCH_BYTES) await this.flush(false);
  }

  async lease(pos: number, lease: Lease): Promise<void> {
    if (!(pos >= 1 && pos <= LAST_SLOT)) throw new DataError(`a lease at position ${pos} of queue ${JSON.stringify(this.name)} is out of range`);
    // A dead letter is its message, kept aside: without it, status would count one that `opt=dead`
    // cannot list nor redrive. (An export writes a queue's messages before its leases; dead
    // letters are few, so each is looked up.)
    if (isDead(lease)) {
      await this.flush(false);
      if ((await this.store.view(this.name!, pos)) === null)
        throw new DataError(`queue ${JSON.stringify(this.name)}: the dead letter at position ${pos} has no message there (its message line is missing)`);
    }
    this.held.push({ pos, lease });
    // Memory stays flat however many leases a queue has (delayed messages and dead letters too).
    if (this.held.length >= BATCH) {
      await this.flush(false);
      await this.write({ leases: this.held });
      this.held = [];
      this.leasesWritten = true;
    }
  }

  /** Writes records of the queue being written. */
  private write(records: Parameters<Store['restore']>[1]): Promise<void> {
    this.wrote = true;
    return this.store.restore(this.name!, records);
  }

  async flush(end: boolean): Promise<void> {
    if (this.name === undefined) return;
    const last = end && (this.state !== undefined || this.held.length > 0 || this.leasesWritten);
    // The last batch goes with the state, in one operation: a queue of a few messages is one
    // commit, not two (an import of many small queues waited for each commit in turn).
    const messages = this.batch;
    if (messages.length && !last) await this.write({ messages });
    this.batch = [];
    this.batchBytes = 0;
    if (last) {
      await this.write({ messages, state: this.state ?? (await this.store.status(this.name)), leases: this.held });
      this.state = undefined;
      this.held = [];
      this.leasesWritten = false;
    }
  }
}

const number = (v: unknown, what: string, max = Number.MAX_SAFE_INTEGER): number => {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max)
    throw new DataError(`${what}: expected a whole number from 0 to ${max}, got ${JSON.stringify(v)}`);
  return v;
};

/**
 * The input's lines (split at LF; with `crlf`, a CR before it dropped), each decoded on its own. A line longer
 * than `max` bytes stops the import once that much of it has come, so it is never held as one
 * string (V8 makes none over about 512 MiB: "Invalid string length"). With `lastEnds`, a last line
 * without its newline is refused (a dump cut short), not read.
 */
async function* boundedLines(
  input: AsyncIterable<Buffer>,
  encoding: BufferEncoding,
  max: number,
  onChunk: (bytes: number) => void,
  lastEnds: boolean,
  crlf: boolean,
): AsyncGenerator<string> {
  let held: Buffer[] = [];
  let size = 0;
  let n = 0;
  const tooLong = () => new DataError(`line ${n + 1}: longer than ${max} bytes (--max-line-bytes)`);
  const line = (end: Buffer) => {
    let bytes = held.length ? Buffer.concat([...held, end]) : end;
    if (crlf && bytes.at(-1) === 0x0d) bytes = bytes.subarray(0, -1);
    held = [];
    size = 0;
    n++;
    return bytes.toString(encoding);
  };
  for await (const chunk of input) {
    onChunk(chunk.length);
    let start = 0;
    for (let lf = chunk.indexOf(0x0a); lf >= 0; start = lf + 1, lf = chunk.indexOf(0x0a, start)) {
      if (size + lf - start > max) throw tooLong();
      yield line(chunk.subarray(start, lf));
    }
    size += chunk.length - start;
    if (size > max) throw tooLong();
    if (start < chunk.length) held.push(chunk.subarray(start));
  }
  if (size && lastEnds) throw new DataError(`line ${n + 1}: the input ends inside it, before its newline: it was cut off`);
  if (size) yield line(Buffer.alloc(0));
}

/** Longer lines must be message lines: only their data may be long. */
const SHORT_LINE = 8 * 1024;

/** Whether a long line is shaped like a message line: without its data string, a short one.
 * Parsing a long line of anything else can take many times its size (`[{},{},…]`: 35 times). */
function messageShaped(line: string): boolean {
  const data = /"data"\s*:\s*"/.exec(line);
  if (!data) return false;
  const start = data.index + data[0].length;
  const end = line.indexOf('"', start);
  return end >= 0 && line.length - (end - start) <= SHORT_LINE;
}

/** The export format versions an import reads: 1 (no end line), and 2, which ends with one. */
function exportVersion(line: string): 1 | 2 | undefined {
  try {
    const h = JSON.parse(line) as { format?: unknown; version?: unknown } | null;
    return h?.format === 'httpsqs-export' && (h.version === 1 || h.version === 2) ? h.version : undefined;
  } catch {
    return undefined;
  }
}

/** Reads an export; says whether it could tell that the input was whole (version 2 only). */
async function importJsonLines(imp: Importer, lines: AsyncIterable<string>): Promise<{ checked: boolean }> {
  try {
    return await readJsonLines(imp, lines);
  } catch (err) {
    // Queues are written as they come: one refused on the way leaves those before it written.
    if (!(err instanceof DataError) || err instanceof StoppedThere || !imp.wrote) throw err;
    const before = imp.queues - 1;
    throw new DataError(
      `${err.message}. The import stopped there: ${before ? `the ${before} queue(s) before it were written, and ` : ''}the last (${JSON.stringify(imp.queueName)}) may be incomplete and holds no state from this input. Import the whole export again with --replace`,
    );
  }
}

async function readJsonLines(imp: Importer, lines: AsyncIterable<string>): Promise<{ checked: boolean }> {
  let n = 0;
  let version: 1 | 2 | undefined;
  let ended = false;
  for await (const line of lines) {
    n++;
    // The header comes first, not after a blank line: without it, the input may be anything.
    if (n === 1) {
      version = exportVersion(line);
      if (!version) throw new DataError(`line 1: not an httpsqs export (version 1 or 2)${line.startsWith(TC_MAGIC) ? `; ${TC_FILE}` : ''}`);
      continue;
    }
    if (!line.trim()) continue;
    if (ended) throw new DataError(`line ${n}: more after the export's end line`);
    if (line.length > SHORT_LINE && !messageShaped(line))
      throw new DataError(
        `line ${n}: a line of ${line.length} characters that is not a message's: only a message's data may make a line longer than ${SHORT_LINE}`,
      );
    let r: Record<string, unknown>;
    try {
      r = JSON.parse(line) as Record<string, unknown>;
    } catch {
      throw new DataError(`line ${n}: not JSON`);
    }
    if (typeof r !== 'object' || r === null || Array.isArray(r)) throw new DataError(`line ${n}: not a JSON object`);
    const name =
      typeof r.queue === 'string'
        ? Buffer.from(r.queue, 'utf8').toString('latin1')
        : typeof r.queue64 === 'string'
          ? Buffer.from(r.queue64, 'base64').toString('latin1')
          : undefined;
    if (version === 2 && r.end === true && !('queue' in r) && !('queue64' in r)) {
      const queues = number(r.queues, `line ${n}: queues`);
      const messages = number(r.messages, `line ${n}: messages`);
      if (queues !== imp.queues || messages !== imp.messages)
        throw new DataError(
          `line ${n}: the export's end line counts ${queues} queues and ${messages} messages, but ${imp.queues} queues and ${imp.messages} messages came before it: the input is not the export as it was written`,
        );
      ended = true;
      continue;
    }
    if (name === undefined) throw new DataError(`line ${n}: no queue`);
    if (typeof r.queue !== 'string' && !isBase64(r.queue64 as string)) throw new DataError(`line ${n}: queue64 must be base64 text`);
    await imp.queue(name);
    if ('maxqueue' in r) {
      const s: QueueState = {
        maxqueue: number(r.maxqueue, `line ${n}: maxqueue`),
        putpos: number(r.putpos, `line ${n}: putpos`),
        getpos: number(r.getpos, `line ${n}: getpos`),
      };
      if ('maxdeliveries' in r) s.maxdeliveries = number(r.maxdeliveries, `line ${n}: maxdeliveries`);
      imp.setState(s);
    } else if ('data' in r) {
      if (typeof r.data !== 'string' || !isBase64(r.data)) throw new DataError(`line ${n}: data must be base64 text`);
      await imp.message(number(r.pos, `line ${n}: pos`), Buffer.from(r.data, 'base64'));
    } else if ('deadline' in r) {
      const lease: Lease = {
        // What every store can hold: a count of 32 bits, a time in ms that is an exact number.
        deadline: number(r.deadline, `line ${n}: deadline`),
        deliveries: number(r.deliveries, `line ${n}: deliveries`, 2 ** 32 - 1),
      };
      // A lease a touch moved: the deadline it was granted with, which its token names.
      if ('granted' in r) lease.granted = number(r.granted, `line ${n}: granted`);
      await imp.lease(number(r.pos, `line ${n}: pos`), lease);
    } else throw new DataError(`line ${n}: neither a queue, a message nor a lease`);
  }
  if (n === 0) throw new DataError('the input is empty: nothing to import (did the export fail?)');
  if (version === 2 && !ended) {
    throw new StoppedThere(
      `the input ends at line ${n}, before the export's end line: it was cut off (did the export fail or get stopped?). What came before was written; the last queue ${imp.queueName === undefined ? '' : `(${JSON.stringify(imp.queueName)}) `}may be incomplete and holds no state from this input. Import the whole export again with --replace`,
    );
  }
  return { checked: version === 2 };
}

/**
 * Tokyo Cabinet's `tcbmgr list -pv -px` (keys and values as hex bytes; or `-pv`, raw, for text).
 * Keys of HTTPSQS 1.7: `Q:putpos`, `Q:getpos`, `Q:maxqueue` and `Q:N` (the message at N); older
 * servers kept one key `Q` holding "getpos,putpos,maxqueue". A name may itself hold `:`.
 */
async function importTcbmgr(imp: Importer, lines: AsyncIterable<string>): Promise<void> {
  try {
    await readTcbmgr(imp, lines);
  } catch (err) {
    // The states come last: every queue begun so far holds messages without one. Take them away
    // (whatever stopped it: a store that failed may take the resets again).
    const replaced = imp.replaced;
    const begun = await imp.undo().catch(() => 0);
    if (!begun) throw err;
    const emptied = `the ${begun} queue(s) it had begun writing were emptied again${replaced ? `, ${replaced} of which held state here before (--replace): they are empty now` : ''}`;
    if (err instanceof DataError) throw new DataError(`${err.message}; nothing was imported (${emptied})`);
    throw new Error(`${errorMessage(err)}; ${emptied}`, { cause: err });
  }
}

/** How a Tokyo Cabinet file (the C server's httpsqs.db itself) begins. */
const TC_MAGIC = 'ToKyO CaBiNeT';
const TC_FILE =
  'this is a Tokyo Cabinet database file (httpsqs.db), not its dump: dump it with tcbmgr list -pv -px httpsqs.db > httpsqs.dump, and import that with --from-tcbmgr';

/** The value of a hex digit's char code, or -1. */
const nibble = (c: number): number => (c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : c >= 0x41 && c <= 0x46 ? c - 0x37 : -1);

/** `tcbmgr -px`'s bytes (`6a 6f 62`), or undefined when `s` is not exactly that. Decoded a pair at
 * a time into the buffer: a regular expression ran out of stack on a line of a few MB, and
 * `s.replace(/ /g, '')` took 10 s and 2 GB for a message of 30 MiB (a heap of 256 MB ran out at 16). */
function hexBytes(s: string): Buffer | undefined {
  if (s === '') return Buffer.alloc(0);
  if ((s.length + 1) % 3 !== 0) return undefined;
  const bytes = Buffer.allocUnsafe((s.length + 1) / 3);
  for (let i = 0, j = 0; i < s.length; i += 3, j++) {
    const hi = nibble(s.charCodeAt(i));
    const lo = nibble(s.charCodeAt(i + 1));
    if (hi < 0 || lo < 0 || (i + 2 < s.length && s.charCodeAt(i + 2) !== 0x20)) return undefined;
    bytes[j] = hi * 16 + lo;
  }
  return bytes;
}

/** Whether `line` is KEY<tab>VALUE in hex bytes. */
function hexLine(line: string): boolean {
  const tab = line.indexOf('\t');
  return tab >= 0 && hexBytes(line.slice(0, tab)) !== undefined && hexBytes(line.slice(tab + 1)) !== undefined;
}

async function readTcbmgr(imp: Importer, lines: AsyncIterable<string>): Promise<void> {
  const states = new Map<string, Partial<QueueState>>();
  let n = 0;
  let hexMode: boolean | undefined;
  /** The queue of the dump's last line, when that line is a message. */
  let lastMessageOf: string | undefined;
  for await (const text of lines) {
    n++;
    // A hex dump that went through a tool writing CRLF (the first line too, which decides the form).
    // In the text form a CR is a message's own byte.
    const line = text.endsWith('\r') && (hexMode ?? hexLine(text.slice(0, -1))) ? text.slice(0, -1) : text;
    if (!line) continue;
    if (n === 1 && line.startsWith(TC_MAGIC)) throw new DataError(`line 1: ${TC_FILE}`);
    const tab = line.indexOf('\t');
    if (tab < 0) throw new DataError(`line ${n}: expected KEY<tab>VALUE (the output of tcbmgr list -pv -px)`);
    const hexKey = hexBytes(line.slice(0, tab));
    const hexValue = hexKey && hexBytes(line.slice(tab + 1));
    // A key that is hex bytes of one with a colon (as 1.7 writes them), with a value that is not:
    // a damaged line of a hex dump. (The older layout's keys have no colon, and may look like hex.)
    if (!hexMode && hexKey?.includes(0x3a) && !hexValue)
      throw new DataError(`line ${n}: its key is hex bytes (tcbmgr list -pv -px) but its value is not: damaged or cut off?`);
    hexMode ??= !!hexValue;
    if (hexMode && !hexValue) throw new DataError(`line ${n}: not hex bytes like the lines before it (the output of tcbmgr list -pv -px): damaged or cut off?`);
    // A text line HTTPSQS writes is never all hex (its key has a colon, or its value commas).
    if (!hexMode && n > 1 && hexValue) throw new DataError(`line ${n}: hex bytes (tcbmgr list -pv -px), but the first line is not: it is damaged`);
    // Lines are read as latin1, one char a byte: the text form's bytes come through as they are.
    const key = hexKey && hexValue ? hexKey.toString('latin1') : line.slice(0, tab);
    const value = hexValue ?? Buffer.from(line.slice(tab + 1), 'latin1');
    const colon = key.lastIndexOf(':');
    const field = colon >= 0 ? key.slice(colon + 1) : '';
    const name = colon >= 0 ? key.slice(0, colon) : key;
    const state = () => states.get(name) ?? (states.set(name, {}), states.get(name)!);
    const int = () => {
      const t = value.toString('latin1');
      if (!/^\d+$/.test(t)) throw new DataError(`line ${n}: ${key} should hold a number, holds ${JSON.stringify(t.slice(0, 40))}`);
      return Number(t);
    };
    lastMessageOf = undefined;
    if (colon >= 0 && /^\d+$/.test(field)) {
      await imp.queue(name);
      await imp.message(Number(field), value);
      lastMessageOf = name;
    } else if (field === 'putpos') state().putpos = int();
    else if (field === 'getpos') state().getpos = int();
    else if (field === 'maxqueue') state().maxqueue = int();
    else if (/^\d+,\d+,\d+$/.test(value.toString('latin1'))) {
      const [getpos, putpos, maxqueue] = value.toString('latin1').split(',').map(Number);
      states.set(key, { getpos, putpos, maxqueue });
    } else if (!hexMode)
      // In the text form a message's newline starts a line of its own: the rest of that message.
      throw new DataError(
        `line ${n}: ${JSON.stringify(key.slice(0, 40))} is no key HTTPSQS writes: in the text form (tcbmgr list -pv) it is a message's next line, after a newline of its own, which that form cannot tell apart; dump with tcbmgr list -pv -px`,
      );
    else process.stderr.write(`line ${n}: skipped the key ${JSON.stringify(key)}: not one HTTPSQS writes\n`);
  }
  if (n === 0) throw new DataError('the input is empty: nothing to import (did tcbmgr fail?)');
  // Every queue is checked (and with --replace, reset) before any state is set: one that holds
  // state here, known only from its positions, stops the import before any queue is whole.
  for (const name of states.keys()) await imp.queue(name);
  // Positions come after the messages in the file's key order; set them last, queue by queue.
  for (const [name, s] of states) {
    await imp.queue(name);
    imp.setState({ putpos: s.putpos ?? 0, getpos: s.getpos ?? 0, maxqueue: s.maxqueue ?? DEFAULT_MAXQUEUE });
  }
  // Messages without positions: a queue the C server reset (its reset deletes the positions and
  // leaves the messages, which only its view still shows). Not imported: the queue is empty.
  const dropped: string[] = [];
  const emptied: string[] = [];
  let stale = 0;
  for (const name of imp.begun()) {
    if (states.has(name)) continue;
    if (imp.wasReplaced(name)) emptied.push(name);
    stale += await imp.drop(name);
    dropped.push(name);
  }
  if (dropped.length) {
    const names = dropped.slice(0, 10).map(quoted).join(', ') + (dropped.length > 10 ? ', …' : '');
    // A queue's positions come after its messages: a dump cut off there looks like a reset queue.
    const cut =
      lastMessageOf !== undefined && !states.has(lastMessageOf)
        ? `; the dump ends inside the messages of ${quoted(lastMessageOf)}: if tcbmgr failed (a damaged file: "read error", "invalid meta data"), the dump is incomplete, and what followed it is missing`
        : '';
    // With --replace such a queue that held state here was reset when its messages came: it is empty now, as on the C server.
    const reset = emptied.length
      ? `; ${emptied.length} of them (${emptied.slice(0, 10).map(quoted).join(', ')}${emptied.length > 10 ? ', …' : ''}) held state here, and are empty now (--replace)`
      : '';
    process.stderr.write(
      `skipped ${dropped.length} queue(s) with messages but no positions (${names}: reset on the C server, which kept ${stale} message(s) for its view only)${reset}${cut}\n`,
    );
  }
}

/** A queue name (bytes, one char a byte) for a message: as UTF-8 when it is. */
const quoted = (name: string): string => {
  const bytes = Buffer.from(name, 'latin1');
  return JSON.stringify(isUtf8(bytes) ? bytes.toString('utf8') : name);
};

/** The chunks of `input`; an error reading it (a directory, a device that fails) is a DataError. */
async function* readFrom(input: AsyncIterable<Buffer>, source: string): AsyncGenerator<Buffer> {
  try {
    for await (const chunk of input) yield chunk;
  } catch (err) {
    throw new DataError(`cannot read ${source === '-' ? 'standard input' : source}: ${errorMessage(err)}`);
  }
}

/** `httpsqs import …`: an export, or the C server's data through tcbmgr, into a store. */
export async function runImport(argv: string[]): Promise<void> {
  const { values, positionals } = parseDataArgs(argv);
  if (values.help) return void process.stdout.write(USAGE);
  const source = values['from-tcbmgr'] ?? positionals[0];
  if (!source || positionals.length > (values['from-tcbmgr'] ? 0 : 1)) throw new DataError(`give one file (or - for standard input)\n${USAGE}`);
  const tcbmgr = values['from-tcbmgr'] !== undefined;
  let maxLine = tcbmgr ? MAX_LINE.tcbmgr : MAX_LINE.export;
  if (values['max-line-bytes'] !== undefined) {
    maxLine = Number(values['max-line-bytes']);
    if (!/^\d+$/.test(values['max-line-bytes']) || maxLine < 1024 || maxLine > constants.MAX_STRING_LENGTH) {
      throw new DataError(`--max-line-bytes: expected a whole number from 1024 to ${constants.MAX_STRING_LENGTH}, got "${values['max-line-bytes']}"`);
    }
  }
  let size = 0;
  if (source !== '-') {
    try {
      size = statSync(source).size;
    } catch (err) {
      throw new DataError(`cannot read ${source}: ${errorMessage(err)}`);
    }
  }
  // A new directory an import makes is taken away again if the import fails before it stores anything.
  const dir = values.store && values.store !== 'lmdb' ? undefined : (values.datadir ?? './data');
  const made = dir !== undefined && !existsSync(dir);
  const store = await openStore(values, true);
  // Ready before the input flows: lines read while we wait would be lost.
  // A store several servers share must have none now (a directory's lock keeps them out).
  const running = await store
    .ready()
    .then(() => store.frontendsRunning?.() ?? 0)
    .catch(async (err: Error) => (await store.close(), Promise.reject(err)));
  if (running > 0) {
    await store.close();
    throw new DataError(`${running} httpsqs server(s) use this Redis now: stop them before importing (export works while they run)`);
  }
  const imp = new Importer(store, values.replace ?? false, tcbmgr);
  const bar = progress(size, 'messages');
  const input = source === '-' ? process.stdin : createReadStream(source);
  let read = 0;
  // JSON lines are UTF-8; a tcbmgr dump is bytes (hex, or raw in its text form).
  // tcbmgr ends every line: a dump whose last line has no newline was cut short.
  const lines = boundedLines(
    readFrom(input, source),
    tcbmgr ? 'latin1' : 'utf8',
    maxLine,
    (bytes) => {
      read += bytes;
      bar?.update(read, { count: imp.messages });
    },
    tcbmgr,
    // A tcbmgr text dump's CR is a message's own byte (hex dumps have none).
    !tcbmgr,
  );
  let stored = false;
  let checked = true;
  try {
    if (tcbmgr) await importTcbmgr(imp, lines);
    else ({ checked } = await importJsonLines(imp, lines));
    await imp.flush(true);
    stored = true;
  } finally {
    bar?.stop();
    await store.close();
    if (!stored && made && imp.queues === 0 && imp.messages === 0) rmSync(dir, { recursive: true, force: true });
  }
  process.stderr.write(`imported ${imp.queues} queues, ${imp.messages} messages\n`);
  if (!checked) process.stderr.write('warning: a version 1 export has no end line, so whether it was complete could not be checked\n');
}
