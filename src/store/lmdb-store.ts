/**
 * The LMDB store with what the extensions, export and import need on top of the core in
 * `lmdb.ts`: lease settling, ranges and lists of queues, and the raw records for export and
 * import. Every change still goes through the core's `run`, so the same rules, order and
 * durability apply.
 */
import { leaseToken, type Lease } from '../queue/leases.js';
import type { QueueState } from '../queue/ring.js';
import { decodeMeta, EMPTY_NAME_KEY, encodeLease, encodeMeta, keyBytes, keyRange, LAST_POS, LmdbCore, metaKey, msgKey, quiet } from './lmdb.js';
import { isInitial, type QueueStatus, type Store } from './store.js';

export class LmdbStore extends LmdbCore implements Store {
  settle(name: string, pos: number, outcome: 'ack' | 'nack', token?: string): Promise<boolean> {
    return this.run(name, (d) => {
      const held = d.q.leases.get(pos);
      if (!held || (token !== undefined && token !== leaseToken(held))) return false;
      d.lease(pos, outcome === 'ack' ? undefined : { deadline: 0, deliveries: held.deliveries });
      return true;
    }, this.room.need(2, keyBytes(name)));
  }

  touch(name: string, pos: number, leaseMs: number, token?: string): Promise<string | null> {
    return this.run(name, (d) => {
      const held = d.q.leases.get(pos);
      const now = Date.now();
      if (!held || held.deadline <= now || (token !== undefined && token !== leaseToken(held))) return null;
      const lease = { deadline: now + leaseMs, deliveries: held.deliveries };
      d.lease(pos, lease);
      return leaseToken(lease);
    }, this.room.need(2, keyBytes(name)));
  }

  async nextExpiry(name: string): Promise<number | undefined> {
    await this.waiting;
    return this.current(name).leases.nextDeadline();
  }

  async range(name: string, pos: number, num: number, maxBytes = Infinity): Promise<Array<{ pos: number; message: Buffer }>> {
    await this.waiting;
    const out: Array<{ pos: number; message: Buffer }> = [];
    let bytes = 0;
    this.env.resetReadTxn();
    for (let p = pos; p < pos + num && p <= LAST_POS; p++) {
      const message = this.uncommitted.get(`${p}:${name}`) ?? this.msg.get(msgKey(name, p));
      if (!message) continue;
      if (out.length > 0 && bytes + message.length > maxBytes) break;
      bytes += message.length;
      out.push({ pos: p, message });
    }
    return out;
  }

  async list(prefix: string, after: string | undefined, limit: number): Promise<Array<{ name: string; status: QueueStatus }>> {
    await this.waiting;
    const wanted = (name: string) => name.startsWith(prefix) && (after === undefined || name > after);
    const found = new Map<string, QueueStatus>();
    this.env.resetReadTxn();
    const start = Buffer.from(after !== undefined && after >= prefix ? after : prefix, 'latin1');
    // Queues in memory: their state is newer than the committed one (a reset one may still have its
    // record), and a new one may not be committed yet, so it is added after the scan.
    const newer = (name: string): QueueStatus | undefined => {
      const q = this.cache?.get(name);
      return q && { ...q.s, leased: q.leases.size };
    };
    const add = (name: string, value: Buffer | undefined) => {
      const { s, leased } = decodeMeta(value);
      const status = newer(name) ?? { ...s, leased };
      if (!isInitial(status)) found.set(name, status);
    };
    // The empty name comes first, though its key sorts elsewhere (see `metaKey`).
    if (wanted('')) add('', this.meta.get(EMPTY_NAME_KEY));
    for (const { key, value } of this.meta.getRange({ start })) {
      if (found.size >= limit) break;
      if (key.equals(EMPTY_NAME_KEY)) continue;
      const name = key.toString('latin1');
      if (!name.startsWith(prefix) && name > prefix) break;
      if (wanted(name)) add(name, value);
    }
    for (const name of this.cache?.keys() ?? []) if (wanted(name) && !found.has(name)) found.set(name, newer(name)!);
    return [...found]
      .filter(([, s]) => !isInitial(s))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .slice(0, limit)
      .map(([name, status]) => ({ name, status }));
  }

  async *dump(name: string): AsyncIterable<{ pos: number; message: Buffer }> {
    await this.waiting;
    this.env.resetReadTxn();
    for (const { key, value } of this.msg.getRange(keyRange(name))) yield { pos: key.readUInt32BE(key.length - 4), message: value };
  }

  async leases(name: string): Promise<Array<{ pos: number; lease: Lease }>> {
    await this.waiting;
    return [...this.current(name).leases.entries()].map(([pos, lease]) => ({ pos, lease }));
  }

  async restore(name: string, r: { messages?: Array<{ pos: number; message: Buffer }>; state?: QueueState; leases?: Array<{ pos: number; lease: Lease }> }): Promise<void> {
    const messages = r.messages ?? [];
    const need = this.room.need(1 + (r.leases?.length ?? 0), keyBytes(name), messages.map((m) => m.message));
    await this.transact(need, false, () => {
      for (const m of messages) quiet(this.msg.put(msgKey(name, m.pos), m.message));
      for (const l of r.leases ?? []) quiet(this.lease.put(msgKey(name, l.pos), encodeLease(l.lease)));
      if (r.state) {
        const held = r.leases?.length ?? this.load(name).leases.size;
        quiet(this.meta.put(metaKey(name), encodeMeta(r.state, held)));
      }
    });
    this.cache?.delete(name);
  }
}
