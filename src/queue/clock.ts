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

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const timer = setTimeout(fn, ms);
    return { cancel: () => clearTimeout(timer) };
  },
};
