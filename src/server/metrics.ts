/**
 * `/metrics` in the Prometheus text format (prom-client). Per-queue counts are kept in a plain map
 * on the request path and handed to prom-client only when scraped; queue depths are read from
 * the store at scrape time. Under `--workers` each worker counts its own requests and the primary
 * adds them up (prom-client's AggregatorRegistry); depths come from the shared store, so they are
 * taken once, not summed.
 */
import cluster from 'node:cluster';
import { AggregatorRegistry, collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Store } from '../store/store.js';
import type { ServerMetrics } from './server.js';

/** The opts a request label may name; anything else is counted as `other`. */
const OPTS = new Set([
  'put', 'get', 'status', 'status_json', 'view', 'reset', 'maxqueue', 'synctime',
  'mput', 'mget', 'ack', 'nack', 'list', '/metrics', '/healthz',
]);
/** Queues whose depth a scrape reports, at most (a label per queue; more would swamp Prometheus). */
const MAX_QUEUES = 10_000;

interface QueueCounts {
  put: number;
  taken: number;
  leased: number;
  acked: number;
  nacked: number;
}

const label = (name: string) => Buffer.from(name, 'latin1').toString('utf8');

export interface MetricsOptions {
  store: Store;
  /** Open connections of this process. */
  connections: () => number;
  /** Long polls waiting in this process. */
  waiting: () => number;
  /** Text from every worker's registry, when the primary can collect it (`--workers`). */
  fromCluster?: (() => Promise<string>) | undefined;
}

/** Store calls that write, timed by `instrument`. */
const WRITES = new Set<PropertyKey>(['put', 'putMany', 'get', 'getMany', 'settle', 'reset', 'maxqueue']);

export interface Metrics extends ServerMetrics {
  registry: Registry;
  /** The same store, its writes timed (in durable mode, a write's time includes its flush). */
  instrument(store: Store): Store;
}

export function createMetrics(opts: MetricsOptions): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'httpsqs_' });
  const queues = new Map<string, QueueCounts>();
  const of = (name: string) => {
    let c = queues.get(name);
    if (!c) queues.set(name, (c = { put: 0, taken: 0, leased: 0, acked: 0, nacked: 0 }));
    return c;
  };

  const perQueue = (name: string, help: string, field: keyof QueueCounts) =>
    new Counter({
      name, help, labelNames: ['queue'], registers: [registry],
      collect() {
        this.reset();
        for (const [q, c] of queues) if (c[field]) this.inc({ queue: label(q) }, c[field]);
      },
    });
  perQueue('httpsqs_messages_put_total', 'Messages stored, by queue.', 'put');
  perQueue('httpsqs_messages_taken_total', 'Messages handed out by get and mget (leased or not), by queue.', 'taken');
  perQueue('httpsqs_messages_leased_total', 'Messages handed out under a lease, by queue.', 'leased');
  perQueue('httpsqs_leases_acked_total', 'Leases acked, by queue.', 'acked');
  perQueue('httpsqs_leases_nacked_total', 'Leases given back (nack), by queue.', 'nacked');

  // Read once per scrape by the first gauge, for both.
  let depths: Promise<Array<{ name: string; unread: number; leased: number }>> | undefined;
  const readDepths = async () => {
    const out: Array<{ name: string; unread: number; leased: number }> = [];
    let after = '';
    while (out.length < MAX_QUEUES) {
      const page = await opts.store.list('', after, 1000);
      for (const q of page) {
        const { putpos, getpos, maxqueue } = q.status;
        out.push({ name: q.name, unread: putpos >= getpos ? putpos - getpos : maxqueue - getpos + putpos, leased: q.status.leased });
      }
      if (page.length < 1000) break;
      after = page.at(-1)!.name;
    }
    return out;
  };
  new Gauge({
    name: 'httpsqs_queue_unread', help: 'Unread messages, by queue.', labelNames: ['queue'], registers: [registry], aggregator: 'first',
    async collect() {
      depths = readDepths();
      this.reset();
      for (const q of await depths) this.set({ queue: label(q.name) }, q.unread);
    },
  });
  new Gauge({
    name: 'httpsqs_queue_leased', help: 'Messages under a lease, by queue.', labelNames: ['queue'], registers: [registry], aggregator: 'first',
    async collect() {
      this.reset();
      for (const q of await (depths ?? readDepths())) if (q.leased) this.set({ queue: label(q.name) }, q.leased);
    },
  });
  new Gauge({
    name: 'httpsqs_connections', help: 'Open client connections.', registers: [registry],
    collect() {
      this.set(opts.connections());
    },
  });
  new Gauge({
    name: 'httpsqs_long_polls_waiting', help: 'Long polls (get with wait=) waiting for a message.', registers: [registry],
    collect() {
      this.set(opts.waiting());
    },
  });

  const requests = new Histogram({
    name: 'httpsqs_request_duration_seconds', help: 'Time from a complete request to its reply, by opt (long polls included).',
    labelNames: ['opt'], registers: [registry],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 15, 60],
  });
  const waits = new Histogram({
    name: 'httpsqs_long_poll_wait_seconds', help: 'How long long polls waited, by whether they got a message.',
    labelNames: ['outcome'], registers: [registry], buckets: [0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60],
  });
  const byOpt = new Map<string, Histogram.Internal<'opt'>>();

  const writes = new Histogram({
    name: 'httpsqs_store_write_seconds', help: 'Time from a store write to its acknowledgement (the commit, and in durable mode the flush), by operation.',
    labelNames: ['op'], registers: [registry], buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1],
  });

  return {
    registry,
    instrument(store) {
      const bound = new Map<PropertyKey, unknown>();
      return new Proxy(store, {
        get(target, prop) {
          const v: unknown = Reflect.get(target, prop);
          if (typeof v !== 'function') return v;
          let f = bound.get(prop);
          if (!f) {
            const fn = (v as (...a: unknown[]) => unknown).bind(target);
            const timer = WRITES.has(prop) ? writes.labels(String(prop)) : undefined;
            f = timer
              ? (...a: unknown[]) => {
                  const end = timer.startTimer();
                  return (fn(...a) as Promise<unknown>).finally(end);
                }
              : fn;
            bound.set(prop, f);
          }
          return f;
        },
      });
    },
    onRequest(opt, seconds) {
      const key = OPTS.has(opt) ? opt : 'other';
      let h = byOpt.get(key);
      if (!h) byOpt.set(key, (h = requests.labels(key)));
      h.observe(seconds);
    },
    onPut: (name, count) => void (of(name).put += count),
    onTaken(name, count, leased) {
      const c = of(name);
      c.taken += count;
      if (leased) c.leased += count;
    },
    onSettled: (name, outcome) => void (outcome === 'ack' ? of(name).acked++ : of(name).nacked++),
    onWaited: (seconds, found) => waits.observe({ outcome: found ? 'message' : 'timeout' }, seconds),
    render: () => (opts.fromCluster ? opts.fromCluster() : registry.metrics()),
  };
}

/** In a worker under `--workers`: let the primary collect this registry. */
export function shareWithPrimary(registry: Registry): void {
  if (!cluster.isWorker) return;
  new AggregatorRegistry(); // sets up the worker's answer to the primary's requests
  AggregatorRegistry.setRegistries([registry]);
}

/** In the primary: every worker's metrics, added up. */
export function clusterMetrics(): () => Promise<string> {
  const aggregator = new AggregatorRegistry();
  return () => aggregator.clusterMetrics();
}
