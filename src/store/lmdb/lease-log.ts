/**
 * Shared mode (`--workers`): the lease log. Each process keeps the lease tables it read, by queue,
 * with the version of the queue's meta record they match. A change of a queue's leases gives it a
 * new version and puts an entry in database `leaselog` under [u16 name length][name][u32 count]:
 * the version before and the version made (u64 each), then the positions whose leases changed
 * (u32 each). A process whose table is a few versions behind reads those entries and the leases at
 * their positions, instead of every lease of the queue again (100,000 delayed messages, two workers
 * taking turns: 8 lease operations a second read whole, 1,357 brought up to date this way).
 *
 * A version is a count in its high half and random bits in its low half: the count finds the
 * entries, the random bits tell a version from another with the same count (a reset starts a
 * queue's meta record, and its count, again; a commit that failed left a version nobody wrote).
 * Every entry on the way is checked to lead from the version kept to the current one.
 */
import type { Database } from 'lmdb';
import type { LeaseTable } from '../../queue/leases.js';
import { decodeLease, msgKey } from './codec.js';

/** The entries kept for each queue: a table further behind is read whole again. */
export const LEASE_LOG = 64;

export interface KeptLeases {
  version: bigint;
  leases: LeaseTable;
}

/** The version after `version`: its count plus one (1 after 0xffffffff), random low bits. */
export function nextVersion(version: bigint, random: number): bigint {
  return (BigInt((Number(version >> 32n) % 0xffffffff) + 1) << 32n) | BigInt(random >>> 0);
}

const countOf = (version: bigint): number => Number(version >> 32n);

/** Queues the log entry of a change from `prev` to `version` of the leases at `positions`, and
 * the removal of the entry that falls out of the log. */
export function logChange(log: Database<Buffer, Buffer>, name: string, prev: bigint, version: bigint, positions: ReadonlySet<number>): Array<Promise<boolean>> {
  const b = Buffer.allocUnsafe(16 + 4 * positions.size);
  b.writeBigUInt64BE(prev, 0);
  b.writeBigUInt64BE(version, 8);
  let at = 16;
  for (const pos of positions) at = b.writeUInt32BE(pos, at);
  const n = countOf(version);
  const queued = [log.put(msgKey(name, n), b)];
  if (n > LEASE_LOG) queued.push(log.remove(msgKey(name, n - LEASE_LOG)));
  return queued;
}

/** Brings `kept` up to `version` (whose meta record counts `held` leases), reading the log and
 * the leases it names from `lease`; false where the log does not lead there (the table is then
 * left part way: read it whole). */
export function catchUp(
  log: Database<Buffer, Buffer>,
  lease: Database<Buffer, Buffer>,
  name: string,
  kept: KeptLeases,
  version: bigint,
  held: number,
): boolean {
  const from = countOf(kept.version);
  if (countOf(version) <= from || countOf(version) - from > LEASE_LOG) return false;
  const changed = new Set<number>();
  let want = version;
  for (let n = countOf(version); n > from; n--) {
    const v = log.get(msgKey(name, n));
    if (!v || v.length < 16 || v.readBigUInt64BE(8) !== want) return false;
    for (let at = 16; at + 4 <= v.length; at += 4) changed.add(v.readUInt32BE(at));
    want = v.readBigUInt64BE(0);
  }
  if (want !== kept.version) return false;
  for (const pos of changed) {
    const v = lease.get(msgKey(name, pos));
    if (v) kept.leases.set(pos, decodeLease(v));
    else kept.leases.delete(pos);
  }
  return kept.leases.size === held;
}
