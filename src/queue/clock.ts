/**
 * Time, for what depends on it: lease deadlines, long-poll timeouts and the alarms that wake long
 * polls when a lease ends. The server and stores take one, so that tests can move time on
 * instead of sleeping (test/clock.ts).
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Calls `fn` once `ms` have passed on this clock; `cancel` stops that. */
  setTimeout(fn: () => void, ms: number): { cancel(): void };
}

/** The longest wait one Node.js timer takes: a longer one fires after 1 ms (with a warning). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    // A delayed message may be due in 30 days: longer waits go in steps of the longest timer.
    let timer: NodeJS.Timeout;
    const wait = (left: number) => {
      timer = left > MAX_TIMER_MS ? setTimeout(() => wait(left - MAX_TIMER_MS), MAX_TIMER_MS) : setTimeout(fn, left);
    };
    wait(ms);
    return { cancel: () => clearTimeout(timer) };
  },
};
