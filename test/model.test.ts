/**
 * Model check: random sequences of put/get/view/status/reset/maxqueue against a real server,
 * compared answer by answer with a plain in-memory model of docs/PROTOCOL.md section 4. The model is
 * written here from the document, independently of src/queue/ring.ts.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { createHttpsqsServer } from '../src/server/server.js';
import { JournalStore } from '../src/store/journal/store.js';
import { LmdbStore } from '../src/store/lmdb/store.js';
import { TestClock } from './clock.js';
import { cleanup, keepAliveClient, request, startInProcess, startServer, tempDir } from './helpers.js';

type Op = { op: 'put'; data: string } | { op: 'get' } | { op: 'view'; pos: number } | { op: 'status' } | { op: 'reset' } | { op: 'maxqueue'; num: number };

class ModelQueue {
  putpos = 0;
  getpos = 0;
  maxqueue = 1_000_000;
  slots = new Map<number, string>();

  apply(o: Op): { body: string; pos?: number } {
    switch (o.op) {
      case 'put': {
        const p = this.putpos + 1;
        if (p === this.getpos) return { body: 'HTTPSQS_PUT_END' };
        if (this.getpos <= 1 && p > this.maxqueue) return { body: 'HTTPSQS_PUT_END' };
        this.putpos = p > this.maxqueue ? 1 : p;
        this.slots.set(this.putpos, o.data);
        return { body: 'HTTPSQS_PUT_OK', pos: this.putpos };
      }
      case 'get': {
        if (this.getpos === 0 && this.putpos > 0) this.getpos = 1;
        else if (this.getpos < this.putpos) this.getpos += 1;
        else if (this.getpos > this.putpos && this.getpos < this.maxqueue) this.getpos += 1;
        else if (this.getpos > this.putpos && this.getpos === this.maxqueue) this.getpos = 1;
        else return { body: 'HTTPSQS_GET_END' };
        return { body: this.slots.get(this.getpos) ?? '', pos: this.getpos };
      }
      case 'view':
        if (o.pos < 1 || o.pos > 1_000_000_000) return { body: 'HTTPSQS_ERROR' };
        return { body: this.slots.get(o.pos) ?? '' };
      case 'status': {
        const unread = this.putpos >= this.getpos ? this.putpos - this.getpos : this.maxqueue - this.getpos + this.putpos;
        const putlap = this.putpos < this.getpos ? 2 : 1;
        return { body: JSON.stringify({ name: '', maxqueue: this.maxqueue, putpos: this.putpos, putlap, getpos: this.getpos, getlap: 1, unread }) };
      }
      case 'reset':
        Object.assign(this, { putpos: 0, getpos: 0, maxqueue: 1_000_000, slots: new Map() });
        return { body: 'HTTPSQS_RESET_OK' };
      case 'maxqueue':
        if (o.num < 10 || o.num > 1_000_000_000) return { body: 'HTTPSQS_ERROR' };
        if (o.num >= this.putpos && o.num >= this.getpos && this.putpos >= this.getpos) {
          this.maxqueue = o.num;
          return { body: 'HTTPSQS_MAXQUEUE_OK' };
        }
        return { body: 'HTTPSQS_MAXQUEUE_CANCEL' };
    }
  }
}

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.string({ maxLength: 12 }).map((data) => ({ op: 'put' as const, data })) },
  { weight: 5, arbitrary: fc.constant({ op: 'get' as const }) },
  { weight: 2, arbitrary: fc.integer({ min: -2, max: 25 }).map((pos) => ({ op: 'view' as const, pos })) },
  { weight: 2, arbitrary: fc.constant({ op: 'status' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'reset' as const }) },
  { weight: 2, arbitrary: fc.integer({ min: 8, max: 20 }).map((num) => ({ op: 'maxqueue' as const, num })) },
);

/** Runs of puts and of gets, so that sequences reach a full ring, a wrap, an empty queue. */
const seqArb: fc.Arbitrary<Op[]> = fc
  .array(
    fc.oneof(
      opArb.map((o) => [o]),
      fc
        .tuple(fc.string({ maxLength: 4 }), fc.integer({ min: 1, max: 12 }))
        .map(([d, n]) => Array.from({ length: n }, (_, i): Op => ({ op: 'put', data: `${d}${i}` }))),
      fc.integer({ min: 1, max: 12 }).map((n) => Array.from({ length: n }, (): Op => ({ op: 'get' }))),
    ),
    { minLength: 1, maxLength: 25 },
  )
  .map((runs) => runs.flat());

function target(name: string, o: Op): string {
  const q = `/?name=${name}`;
  switch (o.op) {
    case 'put':
      // Sent twice-encoded through data=, so the stored message is exactly `data`.
      return `${q}&opt=put&data=${encodeURIComponent(encodeURIComponent(o.data))}`;
    case 'view':
      return `${q}&opt=view&pos=${o.pos}`;
    case 'status':
      return `${q}&opt=status_json`;
    case 'maxqueue':
      return `${q}&opt=maxqueue&num=${o.num}`;
    default:
      return `${q}&opt=${o.op}`;
  }
}

function modelCheck(title: string, args: string[], runs: number): void {
  it(title, async () => {
    const server = await (args.includes('--workers') ? startServer : startInProcess)({ args });
    const client = keepAliveClient(server.port, 4);
    let run = 0;
    try {
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 10, max: 12 }), seqArb, async (size, rest) => {
          // Start from a small ring so that sequences reach full queues and wrap-arounds.
          const ops: Op[] = [{ op: 'maxqueue', num: size }, ...rest];
          const name = `m${run++}`;
          const model = new ModelQueue();
          for (const [i, o] of ops.entries()) {
            const want = model.apply(o);
            const got = await client.send(target(name, o));
            let body = Buffer.from(got.body, 'latin1').toString('utf8');
            if (o.op === 'status') body = JSON.stringify({ ...JSON.parse(body), name: '' });
            assert.equal(body, want.body, `step ${i} ${JSON.stringify(o)}`);
            assert.equal(got.pos, want.pos === undefined ? undefined : String(want.pos), `Pos at step ${i} ${JSON.stringify(o)}`);
          }
        }),
        { numRuns: runs },
      );
    } finally {
      client.close();
      await server.stop();
      cleanup(server.dir);
    }
  });
}

describe('model check of the ring against docs/PROTOCOL.md section 4', () => {
  modelCheck('one process, journal', ['--engine', 'journal'], 150);
  modelCheck('one process, LMDB', ['--engine', 'lmdb'], 150);
  modelCheck('two workers (requests spread over both)', ['--workers', '2'], 60);
});

/**
 * The extensions that hold messages back, against a model of docs/EXTENSIONS.md written here:
 * leases (get&lease, ack, nack, expiry), delayed puts, maxdeliveries, dead letters and redrive, on
 * a server whose store takes its time from a test clock (`tick` moves it on).
 */
type HeldOp =
  | { op: 'put'; data: string; delay?: number }
  | { op: 'get'; lease?: number }
  | { op: 'ack' | 'nack' | 'discard'; nth: number }
  | { op: 'tick'; ms: number }
  | { op: 'maxdeliveries'; num: number }
  | { op: 'redrive'; num: number }
  | { op: 'status' }
  | { op: 'dead' };

interface Entry {
  deadline: number;
  deliveries: number;
  /** When it became a dead letter. */
  died?: number;
}

class HeldModel {
  now = 1_800_000_000_000;
  putpos = 0;
  getpos = 0;
  readonly maxqueue = 10;
  maxdeliveries = 0;
  messages = new Map<number, string>();
  /** Leases, delayed messages and dead letters, by position (slots are past 1,000,000,000). */
  held = new Map<number, Entry>();
  lastSlot = 1_000_000_000;
  /** Positions handed out under a lease, for ack and nack to pick from. */
  handed: number[] = [];

  private slots(): number {
    return [...this.held.keys()].filter((p) => p > 1_000_000_000).length;
  }

  private slot(): number {
    return this.slots() < this.maxqueue ? ++this.lastSlot : 0;
  }

  /** Sets a message aside; false when there is no slot for it. */
  private bury(pos: number, deliveries: number): boolean {
    const dead = { deadline: Number.POSITIVE_INFINITY, deliveries, died: this.now };
    if (pos > 1_000_000_000) return (this.held.set(pos, dead), true);
    const slot = this.slot();
    if (!slot) return false;
    this.messages.set(slot, this.messages.get(pos)!);
    this.held.set(slot, dead);
    this.held.delete(pos);
    return true;
  }

  /** What a discard names: a dead letter, or else a slot, or else a ring position (none is dead). */
  discardTarget(nth: number): number {
    const dead = [...this.held].filter(([, e]) => e.died !== undefined).map(([pos]) => pos);
    const slots = [...this.held.keys()].filter((pos) => pos > 1_000_000_000);
    const from = dead.length ? dead : slots.length ? slots : [1];
    return from[nth % from.length]!;
  }

  apply(o: HeldOp): { body: string; pos?: number; head?: Record<string, string | undefined> } {
    switch (o.op) {
      case 'put': {
        if (o.delay) {
          const slot = this.slot();
          if (!slot) return { body: 'HTTPSQS_PUT_END' };
          this.messages.set(slot, o.data);
          this.held.set(slot, { deadline: this.now + o.delay * 1000, deliveries: 0 });
          return { body: 'HTTPSQS_PUT_OK', head: { scheduled: String(slot) } };
        }
        let p = this.putpos + 1;
        if (p === this.getpos) return { body: 'HTTPSQS_PUT_END' };
        if (p > this.maxqueue) {
          if (this.getpos <= 1) return { body: 'HTTPSQS_PUT_END' };
          p = 1;
        }
        if (this.held.has(p)) return { body: 'HTTPSQS_PUT_END' };
        this.putpos = p;
        this.messages.set(p, o.data);
        return { body: 'HTTPSQS_PUT_OK', pos: p };
      }
      case 'get': {
        for (;;) {
          const due = [...this.held]
            .filter(([, e]) => e.died === undefined && e.deadline <= this.now)
            .sort((a, b) => a[1].deadline - b[1].deadline || a[0] - b[0])[0];
          let pos: number;
          let deliveries: number;
          if (due) {
            [pos, { deliveries }] = due;
            if (this.maxdeliveries && deliveries >= this.maxdeliveries && this.bury(pos, deliveries)) continue;
            deliveries++;
          } else {
            if (this.getpos === this.putpos) return { body: 'HTTPSQS_GET_END' };
            pos = this.getpos = this.getpos === this.maxqueue ? 1 : this.getpos + 1;
            deliveries = 1;
          }
          const body = this.messages.get(pos)!;
          if (o.lease) {
            this.held.set(pos, { deadline: this.now + o.lease * 1000, deliveries });
            this.handed.push(pos);
          } else {
            this.held.delete(pos);
            if (pos > 1_000_000_000) this.messages.delete(pos);
          }
          // A plain get says how often only for a message that went out before.
          return { body, pos, head: { deliveries: o.lease || deliveries > 1 ? String(deliveries) : undefined } };
        }
      }
      case 'ack':
      case 'nack': {
        const pos = this.handed[o.nth % Math.max(1, this.handed.length)];
        const e = pos === undefined ? undefined : this.held.get(pos);
        // Held: not delayed, not dead, not given back by a nack (deadline 0).
        if (pos === undefined || !e || e.deliveries === 0 || e.deadline === 0 || e.died !== undefined) return { body: 'HTTPSQS_LEASE_NOT_FOUND' };
        if (o.op === 'ack') {
          this.held.delete(pos);
          if (pos > 1_000_000_000) this.messages.delete(pos);
          return { body: 'HTTPSQS_ACK_OK' };
        }
        if (!(this.maxdeliveries && e.deliveries >= this.maxdeliveries && this.bury(pos, e.deliveries)))
          this.held.set(pos, { deadline: 0, deliveries: e.deliveries });
        return { body: 'HTTPSQS_NACK_OK' };
      }
      case 'discard': {
        const pos = this.discardTarget(o.nth);
        const e = this.held.get(pos);
        if (!e || e.died === undefined) return { body: 'HTTPSQS_DEAD_NOT_FOUND' };
        this.held.delete(pos);
        this.messages.delete(pos);
        return { body: 'HTTPSQS_DISCARD_OK' };
      }
      case 'tick':
        this.now += o.ms;
        return { body: '' };
      case 'maxdeliveries':
        this.maxdeliveries = o.num;
        return { body: 'HTTPSQS_MAXDELIVERIES_OK' };
      case 'redrive': {
        const dead = [...this.held].filter(([, e]) => e.died !== undefined).sort((a, b) => a[1].died! - b[1].died! || a[0] - b[0]);
        const moved = dead.slice(0, o.num);
        for (const [pos] of moved) this.held.set(pos, { deadline: 0, deliveries: 0 });
        return { body: `{"count":${moved.length},"dead":${dead.length - moved.length}}\n` };
      }
      case 'status': {
        const all = [...this.held.values()];
        const delayed = all.filter((e) => e.deliveries === 0 && e.died === undefined).length;
        const dead = all.filter((e) => e.died !== undefined).length;
        const leased = all.length - delayed - dead;
        const unread = this.putpos >= this.getpos ? this.putpos - this.getpos : this.maxqueue - this.getpos + this.putpos;
        const more = Object.entries({ leased, delayed, dead, maxdeliveries: this.maxdeliveries }).filter(([, v]) => v);
        return {
          body: JSON.stringify({
            name: '',
            maxqueue: this.maxqueue,
            putpos: this.putpos,
            putlap: this.putpos < this.getpos ? 2 : 1,
            getpos: this.getpos,
            getlap: 1,
            unread,
            ...Object.fromEntries(more),
          }),
        };
      }
      case 'dead': {
        const dead = [...this.held].filter(([, e]) => e.died !== undefined).sort((a, b) => a[0] - b[0]);
        return { body: JSON.stringify(dead.map(([pos, e]) => ({ pos, deliveries: e.deliveries, died: e.died, data: this.messages.get(pos) }))) };
      }
    }
  }
}

const heldOpArb: fc.Arbitrary<HeldOp> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc
      .tuple(fc.string({ maxLength: 6 }), fc.option(fc.integer({ min: 1, max: 3 }), { nil: undefined }))
      .map(([data, delay]) => ({ op: 'put' as const, data, delay })),
  },
  { weight: 6, arbitrary: fc.option(fc.integer({ min: 1, max: 3 }), { nil: undefined }).map((lease) => ({ op: 'get' as const, lease })) },
  { weight: 3, arbitrary: fc.nat(20).map((nth) => ({ op: 'ack' as const, nth })) },
  { weight: 3, arbitrary: fc.nat(20).map((nth) => ({ op: 'nack' as const, nth })) },
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 2500 }).map((ms) => ({ op: 'tick' as const, ms })) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 3 }).map((num) => ({ op: 'maxdeliveries' as const, num })) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 3 }).map((num) => ({ op: 'redrive' as const, num })) },
  { weight: 2, arbitrary: fc.constant({ op: 'status' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'dead' as const }) },
  { weight: 1, arbitrary: fc.nat(20).map((nth) => ({ op: 'discard' as const, nth })) },
);

function heldTarget(name: string, o: HeldOp): string {
  const q = `/?name=${name}`;
  switch (o.op) {
    case 'put':
      return `${q}&opt=put&data=${encodeURIComponent(encodeURIComponent(o.data))}${o.delay ? `&delay=${o.delay}` : ''}`;
    case 'get':
      return `${q}&opt=get${o.lease ? `&lease=${o.lease}` : ''}`;
    case 'status':
      return `${q}&opt=status_json`;
    case 'dead':
      return `${q}&opt=dead`;
    case 'maxdeliveries':
    case 'redrive':
      return `${q}&opt=${o.op}&num=${o.num}`;
    default:
      return q;
  }
}

/** `lmdb, two workers`: two shared stores on one directory, each behind a server of its own, as
 * two workers have it; the steps go to one and the other in turns (one at a time, or two, or
 * three), so that each acts on leases the other changed (lease-log.ts). */
function heldModelCheck(engine: 'journal' | 'lmdb' | 'lmdb, two workers', runs: number): void {
  it(engine === 'lmdb, two workers' ? engine : `one process, ${engine}`, async () => {
    const model0 = new HeldModel();
    const clock = new TestClock(model0.now);
    const dir = tempDir();
    const open = () =>
      engine === 'journal' ? JournalStore.open({ path: dir, now: clock.now }) : LmdbStore.open({ path: dir, now: clock.now, shared: engine !== 'lmdb' });
    const stores = engine === 'lmdb, two workers' ? [await open(), await open()] : [await open()];
    const apps = stores.map((store) => createHttpsqsServer(store, { keepAliveTimeout: 60, maxMessageBytes: 2 ** 20, maxWait: 5, clock }));
    for (const app of apps) await new Promise<void>((r) => app.server.listen(0, '127.0.0.1', r));
    const ports = apps.map((app) => (app.server.address() as AddressInfo).port);
    let run = 0;
    try {
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 0, max: 3 }), fc.array(heldOpArb, { minLength: 20, maxLength: 60 }), async (md, rest) => {
          const ops: HeldOp[] = [{ op: 'maxdeliveries', num: md }, ...rest];
          const name = `h${run++}`;
          const turn = 1 + (run % 3);
          const model = new HeldModel();
          model.now = clock.now();
          await request(ports[0]!, 'GET', `/?name=${name}&opt=maxqueue&num=10`);
          for (const [i, o] of ops.entries()) {
            const port = ports[Math.floor(i / turn) % ports.length]!;
            // Named before the model applies it (a discard changes what it would name).
            const discarded = o.op === 'discard' ? model.discardTarget(o.nth) : 0;
            const want = model.apply(o);
            const step = `step ${i} ${JSON.stringify(o)}`;
            if (o.op === 'tick') {
              clock.advance(o.ms);
              continue;
            }
            let path = heldTarget(name, o);
            if (o.op === 'discard') path = `/?name=${name}&opt=discard&pos=${discarded}`;
            if (o.op === 'ack' || o.op === 'nack') {
              const pos = model.handed.length ? model.handed[o.nth % model.handed.length] : 1;
              path = `/?name=${name}&opt=${o.op}&pos=${pos}`;
            }
            const got = await request(port, 'GET', path);
            let body = got.body.toString('utf8');
            if (o.op === 'status') body = JSON.stringify({ ...JSON.parse(body), name: '' });
            if (o.op === 'dead') body = JSON.stringify(JSON.parse(body));
            assert.equal(body, want.body, step);
            assert.equal(got.headers.pos, want.pos === undefined ? undefined : String(want.pos), `Pos at ${step}`);
            for (const [k, v] of Object.entries(want.head ?? {})) assert.equal(got.headers[k], v, `${k} at ${step}`);
          }
        }),
        { numRuns: runs },
      );
    } finally {
      for (const app of apps) await app.close();
      for (const store of stores) await store.close();
      cleanup(dir);
    }
  });
}

describe('model check of leases, delayed messages and dead letters against docs/EXTENSIONS.md', () => {
  heldModelCheck('journal', 100);
  heldModelCheck('lmdb', 100);
  heldModelCheck('lmdb, two workers', 100);
});
