/**
 * Messages whose writes are queued and not yet committed, by queue and position: until their
 * commit, a get, view or range of those positions finds them here.
 */
export class Pending {
  private readonly queues = new Map<string, Map<number, Buffer>>();

  get(name: string, pos: number): Buffer | undefined {
    return this.queues.get(name)?.get(pos);
  }

  set(name: string, pos: number, message: Buffer): void {
    let q = this.queues.get(name);
    if (!q) this.queues.set(name, (q = new Map()));
    q.set(pos, message);
  }

  /** The write of `message` at `pos` committed: forget it, unless a later put replaced it. */
  committed(name: string, pos: number, message: Buffer): void {
    const q = this.queues.get(name);
    if (q?.get(pos) !== message) return;
    q.delete(pos);
    if (q.size === 0) this.queues.delete(name);
  }

  /** Forgets a queue's messages (it is reset); returns their positions. */
  drop(name: string): number[] {
    const q = this.queues.get(name);
    this.queues.delete(name);
    return q ? [...q.keys()] : [];
  }

  clear(): void {
    this.queues.clear();
  }
}
