/**
 * Long polling (`opt=get&wait=S`): requests that found their queue empty wait in line, first come
 * first served, and a put wakes as many of them as it stored messages. Nothing polls: a waiter
 * looks again only when woken, or when its time is up. A lease that ends makes a message
 * available without a put: each queue with waiters has one alarm, set for its earliest lease
 * deadline, that wakes one waiter then (so a leased get costs O(1), not a wake of every waiter).
 *
 * A woken waiter may find nothing (a plain get was quicker); it keeps its place in line. A waiter
 * woken while it was already looking looks once more; one that leaves with a wake it did not use
 * (it got a message anyway, timed out, or its client went away) passes the wake on.
 */

import { systemClock, type Clock } from '../queue/clock.js';

/** Other processes serving the same store (`--workers`). */
export interface Peers {
  /** From now on, tell this process of puts to `name` (resolves once that holds); or stop. */
  watch(name: string, on: boolean): Promise<void>;
  /** Tells the processes watching `name` that it got `count` messages. */
  notify(name: string, count: number): void;
}

interface Waiter {
  /** A wake arrived since the waiter last looked. */
  woken: boolean;
  /** Ends the waiter's sleep, if it sleeps. */
  wake: () => void;
}

export class Waiters {
  private readonly lines = new Map<string, Waiter[]>();
  /** A queue's alarm: when its earliest lease ends, wake one waiter. */
  private readonly alarms = new Map<string, { at: number; timer: { cancel(): void } }>();
  private readonly watching = new Map<string, Promise<void>>();
  private closed = false;

  constructor(
    private readonly peers?: Peers,
    private readonly clock: Clock = systemClock,
  ) {}

  /** Waiting requests now. */
  get size(): number {
    let n = 0;
    for (const line of this.lines.values()) n += line.length;
    return n;
  }

  /** `name` got `count` messages (or messages back): wake waiters here and in other processes. */
  notify(name: string, count: number): void {
    this.wake(name, count);
    this.peers?.notify(name, count);
  }

  /** Wakes up to `count` waiters of `name` that are not awake already, first in line first. */
  wake(name: string, count: number): void {
    for (const w of this.lines.get(name) ?? []) {
      if (count <= 0) break;
      if (w.woken) continue;
      w.woken = true;
      w.wake();
      count--;
    }
  }

  /**
   * Runs `attempt` until it finds something, `until` (ms since the epoch) passes, the client goes
   * away (`gone`) or the server closes. `nextExpiry` says when a lease on the queue ends, which
   * makes a message available without any put.
   */
  async wait<T>(
    name: string,
    until: number,
    gone: AbortSignal,
    attempt: () => Promise<T | undefined>,
    nextExpiry: () => Promise<number | undefined>,
  ): Promise<T | undefined> {
    let got = await attempt();
    if (got !== undefined || this.clock.now() >= until || this.closed) return got;
    const me: Waiter = { woken: false, wake: () => {} };
    await this.enter(name, me, until);
    try {
      for (;;) {
        if (gone.aborted || this.closed) return undefined;
        me.woken = false;
        got = await attempt();
        if (got !== undefined) {
          // Woken by an alarm, it took one of perhaps several messages that came due together
          // (delayed ones, leases that ended): the alarm is set again for the next waiter. Not
          // waited for: what was taken is answered whatever that look finds (should it fail, a
          // plain get's message would be lost with the error), and the others look again anyway
          // when their time is up.
          if (this.lines.get(name)!.length > 1) void this.alarm(name, nextExpiry);
          return got;
        }
        if (me.woken) continue; // something arrived while we looked
        if (this.clock.now() >= until) return undefined;
        // Leases may have been taken or given back since the alarm was set, and delayed messages
        // stored (here or by another process): the alarm is set for the earliest.
        await this.alarm(name, nextExpiry);
        if (!me.woken) await this.sleep(me, Math.max(0, until - this.clock.now()), gone);
      }
    } finally {
      this.leave(name, me);
    }
  }

  /** Sets the queue's alarm for when `nextExpiry` says. A store that cannot say now (Redis, its
   * connection lost) sets none: the waiters look again when woken, or when their time is up. */
  private alarm(name: string, nextExpiry: () => Promise<number | undefined>): Promise<void> {
    return nextExpiry().then(
      (expiry) => void (expiry !== undefined && this.leased(name, expiry)),
      () => {},
    );
  }

  /** A lease on `name` ends at `deadline`: the queue's alarm goes off then, if not earlier. */
  leased(name: string, deadline: number): void {
    if (!this.lines.has(name)) return; // nobody to wake; a waiter that comes asks the store
    const alarm = this.alarms.get(name);
    if (alarm && alarm.at <= deadline) return;
    alarm?.timer.cancel();
    const timer = this.clock.setTimeout(
      () => {
        this.alarms.delete(name);
        this.wake(name, 1);
      },
      Math.max(0, deadline - this.clock.now()),
    );
    this.alarms.set(name, { at: deadline, timer });
  }

  /** A lease on `name` was set to end at `deadline`, perhaps sooner than it did (a touch): the
   * alarm here goes off then, and a waiter in each other process looks again, which sets its own. */
  retimed(name: string, deadline: number): void {
    this.leased(name, deadline);
    this.peers?.notify(name, 1);
  }

  /** Answers every waiting request (with nothing) and takes no more waits. */
  close(): void {
    this.closed = true;
    for (const alarm of this.alarms.values()) alarm.timer.cancel();
    this.alarms.clear();
    // One still looking (its store call outlived the stop) goes round once more, and so leaves.
    for (const line of this.lines.values())
      for (const w of line) {
        w.woken = true;
        w.wake();
      }
  }

  private sleep(me: Waiter, ms: number, gone: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (gone.aborted) return resolve();
      const done = () => {
        timer.cancel();
        gone.removeEventListener('abort', done);
        me.wake = () => {};
        resolve();
      };
      const timer = this.clock.setTimeout(done, ms);
      gone.addEventListener('abort', done);
      me.wake = done;
    });
  }

  /** Puts `me` in line; with other processes, once they will tell of puts to `name`, or, should
   * they not answer (a primary stopped, say), at `until` at the latest. */
  private async enter(name: string, me: Waiter, until: number): Promise<void> {
    let line = this.lines.get(name);
    if (!line) this.lines.set(name, (line = []));
    line.push(me);
    if (!this.peers) return;
    let watch = this.watching.get(name);
    if (!watch) this.watching.set(name, (watch = this.peers.watch(name, true)));
    const asked = watch;
    const watched = watch.catch(() => {
      // Not told of puts elsewhere: this waiter looks again when its time is up, and the next one
      // to wait asks again (while the queue has waiters, nothing else would).
      if (this.watching.get(name) === asked) this.watching.delete(name);
    });
    let timer: { cancel(): void } | undefined;
    await Promise.race([watched, new Promise<void>((done) => (timer = this.clock.setTimeout(done, Math.max(0, until - this.clock.now()))))]);
    timer!.cancel();
  }

  private leave(name: string, me: Waiter): void {
    const line = this.lines.get(name);
    if (!line) return;
    line.splice(line.indexOf(me), 1);
    if (line.length === 0) {
      this.lines.delete(name);
      this.alarms.get(name)?.timer.cancel();
      this.alarms.delete(name);
      if (this.watching.delete(name)) void this.peers?.watch(name, false);
    }
    if (me.woken) this.wake(name, 1);
  }
}
