/**
 * How the LMDB store lays its records out. Database `meta` maps a queue name to 40 bytes
 * (putpos, getpos, maxqueue, the number of leases, how many of them are delayed messages and dead
 * letters, maxdeliveries, and the last slot taken past the ring, as big-endian uint32; then the
 * version of its leases, a u64 made anew each time a worker sharing the directory (`--workers`)
 * changes them (a count and random bits: lease-log.ts, which also has database `leaselog`), 0 as
 * one process writes it; records written before leases existed have 12, before delays and dead
 * letters 16, before the last slot taken was kept 28, before lease versions 32); database `msg`
 * maps [u16 name length][name][u32 position] to the raw message bytes; database `lease` maps the
 * same keys to a lease (f64 deadline in ms, u32 deliveries). A queue without a meta record is in
 * its initial state.
 */
import type { Lease, LeaseTable } from '../../queue/leases.js';
import { emptyQueue, type QueueState } from '../../queue/ring.js';
import type { QueueStatus } from '../store.js';

export const LAST_POS = 0xffffffff;

/** A queue's meta record: its state, and its status (`leased` there counts leases held by
 * consumers; `held` counts every lease record). */
export function decodeMeta(v: Buffer | undefined): { s: QueueState; held: number; status: QueueStatus; slotCursor: number; version: bigint } {
  const s = emptyQueue();
  let held = 0;
  let slotCursor = 0;
  let version = 0n;
  let delayed = 0;
  let dead = 0;
  if (v && v.length >= 12) {
    s.putpos = v.readUInt32BE(0);
    s.getpos = v.readUInt32BE(4);
    s.maxqueue = v.readUInt32BE(8);
    if (v.length >= 16) held = v.readUInt32BE(12);
    if (v.length >= 28) {
      delayed = v.readUInt32BE(16);
      dead = v.readUInt32BE(20);
      const md = v.readUInt32BE(24);
      if (md) s.maxdeliveries = md;
    }
    if (v.length >= 32) slotCursor = v.readUInt32BE(28);
    if (v.length >= 40) version = v.readBigUInt64BE(32);
  }
  const status: QueueStatus = { putpos: s.putpos, getpos: s.getpos, maxqueue: s.maxqueue, leased: held - delayed - dead, delayed, dead };
  if (s.maxdeliveries) status.maxdeliveries = s.maxdeliveries;
  return { s, held, status, slotCursor, version };
}

export function encodeMeta(s: QueueState, leases: LeaseTable, version = 0n): Buffer {
  const b = Buffer.allocUnsafe(40);
  b.writeUInt32BE(s.putpos, 0);
  b.writeUInt32BE(s.getpos, 4);
  b.writeUInt32BE(s.maxqueue, 8);
  b.writeUInt32BE(leases.size, 12);
  b.writeUInt32BE(leases.delayed, 16);
  b.writeUInt32BE(leases.dead, 20);
  b.writeUInt32BE(s.maxdeliveries ?? 0, 24);
  b.writeUInt32BE(leases.slotCursor, 28);
  b.writeBigUInt64BE(version, 32);
  return b;
}

/** A lease record: [f64 deadline][u32 deliveries], and [f64 granted] once a touch moved it. */
export function encodeLease(l: Lease): Buffer {
  const b = Buffer.allocUnsafe(l.granted === undefined ? 12 : 20);
  b.writeDoubleBE(l.deadline, 0);
  b.writeUInt32BE(l.deliveries, 8);
  if (l.granted !== undefined) b.writeDoubleBE(l.granted, 12);
  return b;
}

export function decodeLease(v: Buffer): Lease {
  const l: Lease = { deadline: v.readDoubleBE(0), deliveries: v.readUInt32BE(8) };
  if (v.length >= 20) l.granted = v.readDoubleBE(12);
  return l;
}

export function msgKey(name: string, pos: number): Buffer {
  const n = name.length; // a byte string: one char a byte
  const k = Buffer.allocUnsafe(n + 6);
  k.writeUInt16BE(n, 0);
  k.write(name, 2, 'latin1');
  k.writeUInt32BE(pos, n + 2);
  return k;
}

/** The position of a message or lease key. */
export const posOf = (key: Buffer): number => key.readUInt32BE(key.length - 4);

/** A queue's meta key: its name. LMDB takes no empty key, so the empty name (a valid one) has a
 * key of 257 zero bytes, longer than any name the server takes (256 bytes). */
export const EMPTY_NAME_KEY = Buffer.alloc(257);
export const metaKey = (name: string): Buffer => (name ? Buffer.from(name, 'latin1') : EMPTY_NAME_KEY);

export const keyRange = (name: string) => ({ start: msgKey(name, 0), end: msgKey(name, LAST_POS) });

/** The longest key an operation on queue `name` writes: its message key, or the empty name's meta key. */
export const keyBytes = (name: string): number => (name ? name.length + 6 : EMPTY_NAME_KEY.length);
