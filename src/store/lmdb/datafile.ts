/**
 * The data file is checked before lmdb-js opens it. LMDB maps the file and trusts it: a page past
 * the end of a file cut short kills the process with SIGBUS (and the next worker, and the next), a
 * damaged first meta page crashes it, and an empty file quietly becomes a new, empty database.
 *
 * The layout, from the LMDB that lmdb-js 3 bundles (mdb.c), on 64-bit: a page starts with a 24-byte
 * header (page number u64, txnid u64, pad u16, flags u16, then the lower and upper bounds of its
 * free space, u16 each). Pages 0 and 1 are meta pages: after the header, MDB_meta holds the magic
 * 0xBEEFC0DE, the version (2), the page size (in the free DB's md_pad), the free DB and the main DB
 * with their root pages, the last page used and the id of the transaction that wrote it. LMDB uses
 * the meta page with the higher txnid.
 */
import { closeSync, constants, copyFileSync, fstatSync, mkdtempSync, openSync, readSync, writeSync } from 'node:fs';
import { endianness, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

const HEADER = 24;
/** MDB_meta ends here, from the start of its page. */
const META_END = HEADER + 144;
const P_BRANCH = 0x01;
const P_LEAF = 0x02;
const P_META = 0x08;
const P_LEAF2 = 0x20;
const F_BIGDATA = 0x01;
const F_SUBDATA = 0x02;
/** P_INVALID: the root of an empty tree. */
const NO_PAGE = 0xffffffffffffffffn;

/** A meta page that reads as one. */
export interface Meta {
  slot: number;
  pageSize: number;
  lastPage: number;
  txnid: bigint;
  /** The root pages of the free DB and the main DB. */
  roots: bigint[];
}

/** The meta page at `off` of `b`, or what is wrong with it. */
function readMeta(b: Buffer, slot: number, off: number): Meta | string {
  if (b.length < off + META_END) return 'the file ends inside it';
  if (!(b.readUInt16LE(off + 18) & P_META)) return 'its page flags do not say meta page';
  const magic = b.readUInt32LE(off + HEADER);
  if (magic !== 0xbeefc0de) return `its magic number is 0x${magic.toString(16).padStart(8, '0')}, not 0xbeefc0de`;
  const version = b.readUInt32LE(off + HEADER + 4) & 0xffff;
  if (version !== 2) return `its data version is ${version}, not 2`;
  const pageSize = b.readUInt32LE(off + 48);
  if (pageSize < 256 || pageSize > 0x10000 || pageSize & (pageSize - 1)) return `its page size ${pageSize} is not one LMDB uses`;
  if (slot === 1 && off !== pageSize) return `its page size ${pageSize} does not match the first meta page's ${off}`;
  const lastPage = b.readBigUInt64LE(off + 144);
  if (lastPage < 1n || lastPage > BigInt(Number.MAX_SAFE_INTEGER)) return `its last page number ${lastPage} is impossible`;
  return {
    slot,
    pageSize,
    lastPage: Number(lastPage),
    txnid: b.readBigUInt64LE(off + 152),
    roots: [b.readBigUInt64LE(off + 88), b.readBigUInt64LE(off + 136)],
  };
}

/**
 * Why the pages `m` needs are not all in a file of `size` bytes, or undefined when they are. The
 * file may end before `m.lastPage`: pages allocated and freed again within a transaction count as
 * used but are never written. So a shorter file is walked, tree by tree, to see whether a page
 * that is read lies past its end.
 */
function missingPages(fd: number, size: number, m: Meta): string | undefined {
  const ps = m.pageSize;
  const pages = Math.floor(size / ps);
  if (m.lastPage < pages) return undefined;
  const past = (pgno: number) => `cut short: ${size} bytes, while page ${pgno} of its last transaction starts at byte ${pgno * ps}`;
  const broken = (pgno: number) => `page ${pgno} of its last transaction is not a B-tree page`;
  const page = Buffer.alloc(ps);
  const seen = new Set<number>();
  const todo = m.roots.filter((r) => r !== NO_PAGE).map(Number);
  while (todo.length) {
    const pgno = todo.pop()!;
    if (pgno >= pages) return past(pgno);
    if (seen.has(pgno)) return broken(pgno); // each page hangs in one tree at one place only
    seen.add(pgno);
    readSync(fd, page, 0, ps, pgno * ps);
    const flags = page.readUInt16LE(18);
    if (flags & P_LEAF2) continue; // keys only
    if (!(flags & (P_BRANCH | P_LEAF))) return broken(pgno);
    for (let i = 0, nodes = page.readUInt16LE(20) >> 1; i < nodes; i++) {
      const node = HEADER + page.readUInt16LE(HEADER + 2 * i);
      if (node + 8 > ps) return broken(pgno);
      const lo = page.readUInt16LE(node);
      const hi = page.readUInt16LE(node + 2);
      const nodeFlags = page.readUInt16LE(node + 4);
      if (flags & P_BRANCH) {
        todo.push(lo + hi * 0x10000 + nodeFlags * 0x100000000); // the child's page number, 48 bits
        continue;
      }
      const data = node + 8 + page.readUInt16LE(node + 6);
      if (nodeFlags & F_BIGDATA) {
        // A value on overflow pages: they need not be read, only to be in the file.
        if (data + 8 > ps) return broken(pgno);
        const last = Number(page.readBigUInt64LE(data)) + Math.floor((HEADER - 1 + lo + hi * 0x10000) / ps);
        if (last >= pages) return past(last);
      } else if (nodeFlags & F_SUBDATA) {
        if (data + 48 > ps) return broken(pgno);
        const root = page.readBigUInt64LE(data + 40); // a named database: its MDB_db's md_root
        if (root !== NO_PAGE) todo.push(Number(root));
      }
    }
  }
  return undefined;
}

export interface Inspection {
  /** What is wrong, as in "data.mdb <problem>". */
  problem: string;
  /** The newest meta page whose pages are all there: what an export can still read. */
  intact: Meta | undefined;
  /** The newest meta page that reads as one. */
  newest: Meta | undefined;
}

/** What is wrong with the data file, or undefined when LMDB can open it (or it does not exist). */
export function inspectDataFile(file: string): Inspection | undefined {
  if (endianness() !== 'LE') return undefined; // LMDB writes its own byte order; this reads little-endian only
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined; // a new database
    throw err;
  }
  try {
    const head = Buffer.alloc(0x10000 + META_END);
    const b = head.subarray(0, readSync(fd, head, 0, head.length, 0));
    // The size after the meta pages: a writer writes its pages before the meta page naming them.
    const size = fstatSync(fd).size;
    if (size === 0) return { problem: 'is empty (0 bytes)', intact: undefined, newest: undefined };
    const m0 = readMeta(b, 0, 0);
    let m1: Meta | string = 'it is not where any page size would put it';
    if (typeof m0 !== 'string') m1 = readMeta(b, 1, m0.pageSize);
    else for (let ps = 256; ps <= 0x10000 && typeof m1 === 'string'; ps *= 2) if (typeof readMeta(b, 1, ps) !== 'string') m1 = readMeta(b, 1, ps);
    const problems: string[] = [];
    for (const [slot, m] of [m0, m1].entries()) if (typeof m === 'string') problems.push(`meta page ${slot} is not an LMDB meta page: ${m}`);
    const valid = [m0, m1].filter((m): m is Meta => typeof m !== 'string').sort((a, b) => (a.txnid > b.txnid ? -1 : 1));
    let intact: Meta | undefined;
    for (const m of valid) {
      const missing = missingPages(fd, size, m);
      if (!missing) {
        intact = m;
        break;
      }
      if (problems.length === 0) problems.push(missing);
    }
    if (problems.length === 0) return undefined;
    return { problem: `is damaged (${problems.join('; ')})`, intact, newest: valid[0] };
  } finally {
    closeSync(fd);
  }
}

export class DamagedDataFile extends Error {
  constructor(
    readonly file: string,
    readonly found: Inspection,
  ) {
    const dir = dirname(file);
    const why = found.intact
      ? `: it was not opened. Save what can be read first: httpsqs export -x ${dir} -o FILE.`
      : found.problem.startsWith('is empty')
        ? ': it was not opened, as LMDB would quietly make a new, empty database of it.'
        : ': it was not opened, and nothing in it can be read safely.';
    super(
      `data file ${file} ${found.problem}${why} Move it away (mv ${file} ${file}.damaged) to start with an empty database, then restore ${found.intact ? 'that FILE, or ' : ''}your last backup made with httpsqs export: httpsqs import -x ${dir} FILE`,
    );
  }
}

/**
 * Throws DamagedDataFile when the directory's data file cannot be opened safely. With `attempts`
 * above 1 (other processes may be committing meanwhile, and may reuse a page being walked), it
 * looks again before saying so.
 */
export function checkDataFile(dir: string, attempts = 1): void {
  const file = join(dir, 'data.mdb');
  for (let attempt = 1; ; attempt++) {
    const found = inspectDataFile(file);
    if (!found) return;
    if (attempt >= attempts) throw new DamagedDataFile(file, found);
  }
}

/**
 * For an export of a damaged file: a copy in a new temporary directory whose two meta pages are
 * both `meta`, so that LMDB reads that transaction. The damaged file is not touched.
 */
export function repairedCopy(file: string, meta: Meta): string {
  const dir = mkdtempSync(join(tmpdir(), 'httpsqs-repaired-'));
  const copy = join(dir, 'data.mdb');
  copyFileSync(file, copy, constants.COPYFILE_FICLONE);
  const fd = openSync(copy, 'r+');
  try {
    const page = Buffer.alloc(meta.pageSize);
    readSync(fd, page, 0, meta.pageSize, meta.slot * meta.pageSize);
    for (const slot of [0, 1]) {
      page.writeBigUInt64LE(BigInt(slot), 0);
      writeSync(fd, page, 0, meta.pageSize, slot * meta.pageSize);
    }
  } finally {
    closeSync(fd);
  }
  return dir;
}
