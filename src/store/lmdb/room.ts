/**
 * Room for LMDB's writes, taken from the disk ahead of LMDB, so that no commit meets a full disk.
 *
 * Why: in lmdb-js 3.5.6, a page write of a commit that fails (the write returns -1: ENOSPC,
 * EDQUOT, or EIO from a failing device) corrupts the heap. `mdb_page_flush` in its bundled LMDB
 * (dependencies/lmdb/libraries/liblmdb/mdb.c, lines 4741-4743) prints "Write error: ..." to
 * stderr, then does `last_error = malloc(100); sprintf(last_error, "Attempting to write page at
 * position %u, size %u, blocks %u, buffer sizes %i %i %i", wpos, wsize, n, iov[0].iov_len,
 * iov[1].iov_len, iov[2].iov_len)`. `iov[1]` and `iov[2]` are not set when fewer than three
 * buffers were written and print what the stack held ("... buffer sizes 12288 4096 -2072266928"),
 * so the text runs to 125 characters; past 103 (glibc gives malloc(100) 104 usable bytes) it
 * overwrites the size of the next chunk, and a later malloc or free aborts the process
 * ("malloc(): corrupted top size", "malloc(): invalid next size"). LMDB aborts the transaction
 * and carries on; lmdb-js logs and rejects the commit ("No space left on device: Attempting to
 * write page at position ...").
 *
 * How: LMDB writes a page at `pgno * pageSize`: below its last page (a page it reuses) or past it
 * (a new one); without MDB_WRITEMAP (lmdb-js's default) it never sets the file's size. Past LMDB's
 * last page, the data file is extended here with zeros, real blocks rather than a hole, so that
 * new pages overwrite blocks the file already has, which needs no space on tmpfs, ext4 or xfs (a
 * copy-on-write file system, btrfs or zfs, allocates anew on every write: not covered). A write is
 * queued only while the room left covers the worst case of everything queued and not yet
 * committed; else the file grows first, and when the disk cannot give that, the write is refused
 * before LMDB sees it. The zeros are written only inside a write transaction (LMDB's writer lock
 * held, its write thread waiting for JavaScript), and only from the end of the file, where no
 * page LMDB wrote can be. An EIO is not prevented.
 */
import { closeSync, fstatSync, ftruncateSync, openSync, statfsSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Database, RootDatabase } from 'lmdb';

type Stats = { treeDepth: number; treeBranchPageCount: number; treeLeafPageCount: number; overflowPages: number };

/**
 * What an operation may write, at worst: `paths` separate places in the trees (a run of
 * consecutive keys, as a put's messages, is one), `pages` of values stored on pages of their own
 * (LMDB's overflow pages), `nodeBytes` of nodes added to leaves, and the free list's records of
 * `freed` pages.
 */
export interface Need {
  paths: number;
  pages: number;
  nodeBytes: number;
  freed: number;
}

// From mdb.c, on 64-bit: PAGEHDRSZ, NODESIZE, sizeof(MDB_ovpage) (what a leaf holds of a value
// on overflow pages) and sizeof(indx_t) (a node's slot in its page); a node takes an even number
// of bytes (EVEN).
const PAGE_HEADER = 24;
const NODE_HEADER = 8;
const OVERFLOW_NODE = 24;
const SLOT = 2;
const ZEROS = Buffer.alloc(1 << 20);

function add(to: Need, n: Need, sign: number): void {
  to.paths += sign * n.paths;
  to.pages += sign * n.pages;
  to.nodeBytes += sign * n.nodeBytes;
  to.freed += sign * n.freed;
}

export class Room {
  readonly pageSize: number;
  /** Bytes of the data file: LMDB may write below without new space on the disk. */
  end: number;
  private readonly file: string;
  private fd: number | undefined;
  /** What is queued and not settled, as of the last read of LMDB's last page. */
  private readonly queued: Need = { paths: 0, pages: 0, nodeBytes: 0, freed: 0 };
  /** What settled since: it stays counted until LMDB's last page is read again (its pages are in
   * it then), which is once per burst of settled writes rather than once per write. */
  private settled: Need = { paths: 0, pages: 0, nodeBytes: 0, freed: 0 };
  /** LMDB's last page, as last read; read again once a write settles or the file grows (one
   * process), or every time (others commit too). */
  private usedBytes = 0;
  private stale = true;
  private depth = 1;
  private treePages = 0;
  /** Pages of the trees and of their values. */
  private allPages = 0;
  /** The commit the tree statistics were read after. */
  private statTxn = -1;

  constructor(
    private readonly dir: string,
    private readonly env: RootDatabase,
    private readonly dbs: Database[],
    private readonly shared: boolean,
  ) {
    this.file = join(dir, 'data.mdb');
    this.end = statSync(this.file).size;
    this.pageSize = (env.getStats() as { pageSize: number }).pageSize;
  }

  /**
   * What writing `records` small records (meta or lease records, 40 bytes at most) at separate
   * places may write, with a run under consecutive keys (one place) of `values` and `small` more
   * small records; `key`: the longest key, in bytes.
   */
  need(records: number, key: number, values: ReadonlyArray<{ length: number }> = [], small = 0): Need {
    const n = this.place(records, key, values, small);
    if (!this.shared) return n;
    // Shared: a change of leases also puts an entry in the lease log, listing at most every record
    // written, and removes an old one (store.ts).
    const log = this.place(1, key, [{ length: 16 + 4 * (records + small + values.length) }]);
    return { paths: n.paths + log.paths, pages: n.pages + log.pages, nodeBytes: n.nodeBytes + log.nodeBytes, freed: 0 };
  }

  private place(records: number, key: number, values: ReadonlyArray<{ length: number }> = [], small = 0): Need {
    // mdb.c's me_nodemax: a larger node has its value on overflow pages (OVPAGES of them).
    const nodeMax = (((this.pageSize - PAGE_HEADER) / 2) & ~1) - SLOT;
    let pages = 0;
    let nodeBytes = (records + small) * (NODE_HEADER + key + 40 + SLOT + 1);
    for (const { length } of values) {
      if (NODE_HEADER + key + length > nodeMax) {
        pages += Math.floor((PAGE_HEADER - 1 + length) / this.pageSize) + 1;
        nodeBytes += NODE_HEADER + key + OVERFLOW_NODE + SLOT;
      } else nodeBytes += NODE_HEADER + key + length + SLOT + 1;
    }
    return { paths: records + (values.length || small ? 1 : 0), pages, nodeBytes, freed: 0 };
  }

  /** What a reset may write: the meta record and three ranges of keys removed (a range's leaves are
   * emptied one after the other), and the free list's records of every page it frees, which may
   * be all of them. */
  resetNeed(): Need {
    this.used();
    return { paths: 4, pages: 0, nodeBytes: 0, freed: this.allPages };
  }

  /** LMDB's high-water mark: the end of its last page, in the last commit. */
  used(): number {
    if (this.stale || this.shared) {
      // lmdb-js's mdb_env_info (not in its typings): the last commit's, whichever process made it.
      const info = (this.env as unknown as { env: { info(): { lastPageNumber: number; lastTxnId: number } } }).env.info();
      this.usedBytes = (info.lastPageNumber + 1) * this.pageSize;
      this.stale = false;
      add(this.queued, this.settled, -1);
      this.settled = { paths: 0, pages: 0, nodeBytes: 0, freed: 0 };
      if (info.lastTxnId !== this.statTxn) this.readTrees(info.lastTxnId);
    }
    return this.usedBytes;
  }

  /** Bytes in the file past LMDB's last page: free for LMDB, and taken from the disk already. */
  tail(): number {
    this.stale = true;
    return Math.max(0, this.end - this.used());
  }

  /** The trees' depth and pages, once per commit. Outside a write transaction the read snapshot
   * is renewed first, to see that commit. */
  private readTrees(txn: number): void {
    if (!(this.env as unknown as { writeTxn?: unknown }).writeTxn) this.env.resetReadTxn();
    const root = this.env.getStats() as Stats & { free: Stats };
    // lmdb-js's mdb_stat (not in its typings), in the transaction getStats() made current: what
    // getStats() returns first, without its three calls for the environment.
    const stat = (db: Database) => (db as unknown as { db: { stat(): Stats } }).db.stat();
    let depth = 1;
    let pages = 0;
    let values = 0;
    for (const s of [root, root.free, ...this.dbs.map(stat)]) {
      depth = Math.max(depth, s.treeDepth);
      pages += s.treeBranchPageCount + s.treeLeafPageCount;
      values += s.overflowPages;
    }
    this.depth = depth + 1; // a split may add a level
    this.treePages = pages;
    this.allPages = pages + values;
    this.statTxn = txn;
  }

  /** New pages the commits of what is queued and `n` may take past LMDB's last page, at worst:
   * the values' overflow pages; a copy of each page on each path, and a page that a split adds
   * there (depth + 1; a page is copied once per commit, and two commits may be in flight: at most
   * twice the trees); leaves for the added nodes (a split leaves both pages at least half full),
   * twice, and their parents; the paths in the main database and the free list; the free list's
   * records (8 bytes a page, twice) of the pages freed (at most all of them, in each of two
   * commits) and of those replaced. */
  private worst(n: Need): number {
    const q = this.queued;
    const paths = Math.min((q.paths + n.paths) * this.depth, 2 * (this.treePages + 16));
    const leaves = 2 * Math.ceil((2 * (q.nodeBytes + n.nodeBytes)) / this.pageSize) + this.depth;
    const freed = Math.ceil((16 * Math.min(q.freed + n.freed, 2 * this.allPages)) / this.pageSize);
    const pages = q.pages + n.pages + paths + leaves + 4 * this.depth + freed;
    return pages + Math.ceil(pages / 128) + 32;
  }

  /** Bytes the file must reach for `n` to be queued with what is, and `keep` more left for others. */
  needed(n: Need, keep = 0): number {
    return this.used() + this.worst(n) * this.pageSize + keep;
  }

  fits(n: Need, keep = 0): boolean {
    return this.needed(n, keep) <= this.end;
  }

  /** Counts `n` as queued. */
  take(n: Need): void {
    add(this.queued, n, 1);
  }

  /** Uncounts `n`, taken before, once its writes have settled. */
  release(n: Need): void {
    add(this.settled, n, 1);
    this.stale = true;
  }

  /** Whether the disk has `bytes` free now (a cheap look before asking for a transaction). */
  diskHas(bytes: number): boolean {
    try {
      const st = statfsSync(this.dir);
      return st.bavail * st.bsize >= bytes;
    } catch {
      return false;
    }
  }

  /**
   * Extends the file with zeros to `target` bytes (whole pages), or as far as the disk allows;
   * returns whether it got there. MUST run inside a write transaction (an lmdb-js transaction
   * callback): LMDB writes nothing meanwhile, and every page it wrote is below the end of the file.
   */
  grow(target: number): boolean {
    this.fd ??= openSync(this.file, 'r+');
    let end = fstatSync(this.fd).size; // another process (--workers) may have grown it
    const start = end;
    target = Math.ceil(target / this.pageSize) * this.pageSize;
    let error: unknown;
    try {
      while (end < target) {
        const n = writeSync(this.fd, ZEROS, 0, Math.min(ZEROS.length, target - end), end);
        if (n === 0) break;
        end += n;
      }
    } catch (err) {
      if (!['ENOSPC', 'EDQUOT', 'EFBIG'].includes((err as NodeJS.ErrnoException).code ?? '')) error = err;
    }
    // A page written in part would make LMDB's write of that page need space.
    const whole = Math.max(start, end - (end % this.pageSize));
    if (whole !== end) ftruncateSync(this.fd, whole);
    this.end = whole;
    this.stale = true;
    if (error) throw error;
    return whole >= target;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
