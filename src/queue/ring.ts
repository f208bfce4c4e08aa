/**
 * The ring-buffer rules of HTTPSQS 1.7 (docs/PROTOCOL.md section 4) as pure functions. Every store
 * applies exactly these inside one atomic operation; the store contract (test/store.test.ts) runs
 * the same cases on every store to hold each to them.
 */

export interface QueueState {
  /** Last position written, 0 when never written. */
  putpos: number;
  /** Last position read, 0 when never read. */
  getpos: number;
  /** Size of the ring: positions run 1..maxqueue. */
  maxqueue: number;
  /** An extension (`opt=maxdeliveries`): a message whose lease ended this many times becomes a
   * dead letter instead of coming back; 0 or absent: never. */
  maxdeliveries?: number;
}

export const DEFAULT_MAXQUEUE = 1_000_000;
export const MAX_POSITION = 1_000_000_000;
export const MIN_MAXQUEUE = 10;
/** The most positions without a message that one get passes over (docs/PROTOCOL.md section 4.3):
 * an imported ring with a long run of them would otherwise hold the engine for the whole run, up to
 * a billion positions. A get that meets that many answers with what it took (HTTPSQS_GET_END when
 * nothing), the reader past them; the next goes on from there. */
export const MAX_PASSED_OVER = 10_000;

/** `s` with new positions (and size), built field by field: on a hot path, a spread that overrides
 * fields (`{ ...s, putpos }`) costs V8 many times more. */
export function moved(s: QueueState, putpos: number, getpos: number, maxqueue = s.maxqueue): QueueState {
  return s.maxdeliveries ? { putpos, getpos, maxqueue, maxdeliveries: s.maxdeliveries } : { putpos, getpos, maxqueue };
}

export function emptyQueue(): QueueState {
  return { putpos: 0, getpos: 0, maxqueue: DEFAULT_MAXQUEUE };
}

/** The position the next put writes, or 0 when the queue is full. */
export function nextPutPos({ putpos, getpos, maxqueue }: QueueState): number {
  const p = putpos + 1;
  if (p === getpos) return 0;
  if (p > maxqueue) return getpos <= 1 ? 0 : 1;
  return p;
}

/** The position the next get reads, or 0 when everything has been read. */
export function nextGetPos({ putpos, getpos, maxqueue }: QueueState): number {
  if (getpos === 0 && putpos > 0) return 1;
  if (getpos < putpos) return getpos + 1;
  if (getpos > putpos) return getpos < maxqueue ? getpos + 1 : 1;
  return 0;
}

/** Whether position `pos` holds a message not yet read. Positions past maxqueue (left from a larger
 * ring, or the slots past every ring that leases.ts keeps messages at) never do. */
export function isUnread({ putpos, getpos, maxqueue }: QueueState, pos: number): boolean {
  return putpos >= getpos ? pos > getpos && pos <= putpos : (pos > getpos && pos <= maxqueue) || pos <= putpos;
}

export function unread({ putpos, getpos, maxqueue }: QueueState): number {
  return putpos >= getpos ? putpos - getpos : maxqueue - getpos + putpos;
}

/** The put lap shown by status: 2 only while the writer has wrapped and the reader has not. */
export function putLap({ putpos, getpos }: QueueState): 1 | 2 {
  return putpos < getpos ? 2 : 1;
}

/**
 * Whether `num` (already range-checked) may become the new maxqueue. The reference refuses any
 * change while the writer is a lap ahead, and any size that would cut off a stored position.
 */
export function canSetMaxqueue({ putpos, getpos }: QueueState, num: number): boolean {
  return num >= putpos && num >= getpos && putpos >= getpos;
}
