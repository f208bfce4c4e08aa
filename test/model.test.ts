/**
 * Model check: random sequences of put/get/view/status/reset/maxqueue against a real server,
 * compared answer by answer with a plain in-memory model of docs/PROTOCOL.md section 4. The model is
 * written here from the document, independently of src/queue/ring.ts.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { describe, it } from 'node:test';
import { cleanup, keepAliveClient, startInProcess, startServer } from './helpers.js';

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
