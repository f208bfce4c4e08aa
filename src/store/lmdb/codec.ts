/**
 * How the LMDB store lays its records out. Database `meta` maps a queue name to 16 bytes
 * (putpos, getpos, maxqueue and the number of leases, as big-endian uint32; records written before
 * leases existed have 12); database `msg` maps [u16 name length][name][u32 position] to the raw
 * message bytes; database `lease` maps the same keys to a lease (f64 deadline in ms, u32
 * deliveries). A queue without a meta record is in its initial state.
 */
import type { Lease } from '../../queue/leases.js';
import { emptyQueue, type QueueState } from '../../queue/ring.js';

export const LAST_POS = 0xffffffff;

export function decodeMeta(v: Buffer | undefined): { s: QueueState; leased: number } {
  if (!v || v.length < 12) return { s: emptyQueue(), leased: 0 };
  return { s: { putpos: v.readUInt32BE(0), getpos: v.readUInt32BE(4), maxqueue: v.readUInt32BE(8) }, leased: v.length >= 16 ? v.readUInt32BE(12) : 0 };
}

export function encodeMeta(s: QueueState, leased: number): Buffer {
  const b = Buffer.allocUnsafe(16);
  b.writeUInt32BE(s.putpos, 0);
  b.writeUInt32BE(s.getpos, 4);
  b.writeUInt32BE(s.maxqueue, 8);
  b.writeUInt32BE(leased, 12);
  return b;
}

export function encodeLease(l: Lease): Buffer {
  const b = Buffer.allocUnsafe(12);
  b.writeDoubleBE(l.deadline, 0);
  b.writeUInt32BE(l.deliveries, 8);
  return b;
}

export const decodeLease = (v: Buffer): Lease => ({ deadline: v.readDoubleBE(0), deliveries: v.readUInt32BE(8) });

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
