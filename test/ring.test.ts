/** The ring-buffer rules of docs/PROTOCOL.md section 4, with the queue state set directly. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  canSetMaxqueue,
  DEFAULT_MAXQUEUE,
  emptyQueue,
  isUnread,
  MAX_POSITION,
  nextGetPos,
  nextPutPos,
  putLap,
  unread,
  type QueueState,
} from '../src/queue/ring.js';

const q = (putpos: number, getpos: number, maxqueue = DEFAULT_MAXQUEUE): QueueState => ({ putpos, getpos, maxqueue });

/** Applies puts and gets the way a store does, for sequences. */
function put(s: QueueState): number {
  const p = nextPutPos(s);
  if (p) s.putpos = p;
  return p;
}
function get(s: QueueState): number {
  const g = nextGetPos(s);
  if (g) s.getpos = g;
  return g;
}

describe('ring rules', () => {
  it('a new queue starts empty with the default maxqueue', () => {
    assert.deepEqual(emptyQueue(), q(0, 0, 1_000_000));
    assert.equal(nextGetPos(emptyQueue()), 0);
    assert.equal(nextPutPos(emptyQueue()), 1);
    assert.equal(unread(emptyQueue()), 0);
  });

  it('put: full when the next position is the read position', () => {
    assert.equal(nextPutPos(q(4, 5, 10)), 0);
    assert.equal(nextPutPos(q(3, 5, 10)), 4);
  });

  it('put: full at the end of the ring while nothing (or only position 1) was read', () => {
    assert.equal(nextPutPos(q(10, 0, 10)), 0);
    assert.equal(nextPutPos(q(10, 1, 10)), 0);
  });

  it('put: wraps to 1 at the end of the ring once position 2 or later was read', () => {
    assert.equal(nextPutPos(q(10, 2, 10)), 1);
    assert.equal(nextPutPos(q(10, 9, 10)), 1);
  });

  it('get: first read of a written queue is position 1', () => {
    assert.equal(nextGetPos(q(3, 0)), 1);
  });

  it('get: follows the writer, wraps after maxqueue, stops when all is read', () => {
    assert.equal(nextGetPos(q(3, 1)), 2);
    assert.equal(nextGetPos(q(3, 3)), 0);
    assert.equal(nextGetPos(q(2, 7, 10)), 8);
    assert.equal(nextGetPos(q(2, 10, 10)), 1);
  });

  it('unread and laps', () => {
    assert.equal(unread(q(7, 3, 10)), 4);
    assert.equal(putLap(q(7, 3, 10)), 1);
    assert.equal(unread(q(2, 8, 10)), 4); // 10 - 8 + 2
    assert.equal(putLap(q(2, 8, 10)), 2);
    assert.equal(unread(q(5, 5, 10)), 0);
  });

  it('isUnread: exactly the positions the next gets read, as many as unread() counts', () => {
    // Every state a ring of 7 reaches by puts and gets (wrapped ones too); positions 8 and 9 stand
    // for what a larger ring left past maxqueue, never unread.
    for (let puts = 0; puts <= 20; puts++) {
      for (let gets = 0; gets <= 20; gets++) {
        const s = q(0, 0, 7);
        for (let i = 0; i < Math.max(puts, gets); i++) {
          if (i < puts) put(s);
          if (i < gets) get(s);
        }
        const ahead: number[] = [];
        for (let t = { ...s }, g = get(t); g; g = get(t)) ahead.push(g);
        const marked = Array.from({ length: 9 }, (_, i) => i + 1).filter((pos) => isUnread(s, pos));
        assert.deepEqual(
          marked,
          [...ahead].sort((a, b) => a - b),
          JSON.stringify(s),
        );
        assert.equal(marked.length, unread(s));
      }
    }
    assert.equal(isUnread(q(3, 3, 5), 8), false); // left from a larger ring
  });

  it('maxqueue: only when no stored position is cut off and the writer is not a lap ahead', () => {
    assert.equal(canSetMaxqueue(q(15, 0, 100), 15), true);
    assert.equal(canSetMaxqueue(q(15, 0, 100), 14), false);
    assert.equal(canSetMaxqueue(q(15, 15, 100), 15), true);
    assert.equal(canSetMaxqueue(q(2, 8, 10), 1000), false);
  });

  it('ten puts fill a ring of ten; one get is not enough, two are', () => {
    const s = q(0, 0, 10);
    for (let i = 1; i <= 10; i++) assert.equal(put(s), i);
    assert.equal(put(s), 0);
    assert.equal(get(s), 1);
    assert.equal(put(s), 0);
    assert.equal(get(s), 2);
    assert.equal(put(s), 1);
    assert.equal(putLap(s), 2);
    assert.equal(unread(s), 9);
  });

  it('maxqueue = 1,000,000,000: the last position is usable and the ring wraps at it', () => {
    const s = q(MAX_POSITION - 1, MAX_POSITION - 3, MAX_POSITION);
    assert.equal(put(s), MAX_POSITION);
    assert.equal(unread(s), 3);
    assert.equal(put(s), 1); // wraps: the reader is far past position 1
    assert.equal(putLap(s), 2);
    assert.equal(unread(s), 4); // 1e9 - (1e9 - 3) + 1
    assert.equal(get(s), MAX_POSITION - 2);
    assert.equal(get(s), MAX_POSITION - 1);
    assert.equal(get(s), MAX_POSITION);
    assert.equal(get(s), 1); // the reader wraps too
    assert.equal(get(s), 0);
    assert.equal(putLap(s), 1);
  });

  it('maxqueue = 1,000,000,000 full: a writer a lap ahead stops right behind the reader', () => {
    const s = q(MAX_POSITION - 1, 0, MAX_POSITION);
    assert.equal(put(s), MAX_POSITION);
    assert.equal(put(s), 0); // nothing read yet: full
    assert.equal(unread(s), MAX_POSITION);
    const t = q(5, 7, MAX_POSITION);
    assert.equal(put(t), 6);
    assert.equal(put(t), 0);
    assert.equal(unread(t), MAX_POSITION - 1);
  });
});
