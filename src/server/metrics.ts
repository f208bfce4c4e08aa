/**
 * `/metrics` in the Prometheus text format (prom-client). Per-queue counts are kept in a plain map
 * on the request path and handed to prom-client only when scraped; queue depths are read from
 * the store at scrape time. Under `--workers` each worker counts its own requests and the primary
 * adds them up (prom-client's AggregatorRegistry); depths come from the shared store, so they are
 * taken once, not summed.
 */
import { isUtf8 } from 'node:buffer';
import { setTimeout as sleep } from 'node:timers/promises';
import { AggregatorRegistry, collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type MetricValueWithName } from 'prom-client';
import { unread } from '../queue/ring.js';
import { everyQueue, isInitial, type QueueStatus, type Store } from '../store/store.js';
import type { ServerMetrics } from './endpoints.js';
import type { Buffered } from './http.js';

/** The opts a request label may name; anything else is counted as `other`. */
const OPTS = new Set([
  'put',
  'get',
  'status',
  'status_json',
  'view',
  'reset',
  'maxqueue',
  'synctime',
  'mput',
  'mget',
  'ack',
  'nack',
  'touch',
  'list',
  'maxdeliveries',
  'dead',
  'redrive',
  'discard',
  '/metrics',
  '/healthz',
  '/dashboard',
]);
/** Queues whose depth a scrape reports, and whose counts it keeps, at most (a label per queue;
 * more would swamp Prometheus, and any client can name new queues). */
const MAX_QUEUES = 10_000;
/** The most of the time that making /metrics texts may take, one after another. */
const RENDER_SHARE = 0.2;
/** The longest pause between two texts (a scrape waits no longer than that for its own). */
const RENDER_PAUSE_MS = 5000;

interface QueueCounts {
  put: number;
  taken: number;
  leased: number;
  acked: number;
  nacked: number;
}

/** A queue's labels: its name as text, or, not UTF-8 (another charset), its bytes in base64 as
 * `queue64` (the name64 of `opt=list`): as text, all such names would read the same, U+FFFD. */
function label(name: string): { queue: string } | { queue64: string } {
  const bytes = Buffer.from(name, 'latin1');
  return isUtf8(bytes) ? { queue: bytes.toString('utf8') } : { queue64: bytes.toString('base64') };
}
const QUEUE_LABELS = ['queue', 'queue64'];

export interface MetricsOptions {
  store: Store;
  /** Open connections of this process. */
  connections: () => number;
  /** Long polls waiting in this process. */
  waiting: () => number;
  /** The memory for large bodies and replies of this process (--max-buffered-bytes). */
  buffered?: (() => Buffered) | undefined;
  /** Text from every worker's registry, when the primary can collect it (`--workers`). */
  fromCluster?: (() => Promise<string>) | undefined;
}

/**
 * A histogram for the request path: an observation is a few array writes (prom-client's own
 * Histogram hashes its labels on every call, which costs a measurable share of a request here).
 * The registry reads it, in prom-client's format, when scraped; workers' copies are summed.
 */
class Timings {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly series = new Map<string, { counts: Float64Array; sum: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly label: string,
    private readonly bounds: number[],
    registry: Registry,
  ) {
    registry.registerMetric(this as never);
  }

  /** The observer of one label value. */
  of(value: string): (seconds: number) => void {
    let s = this.series.get(value);
    if (!s) this.series.set(value, (s = { counts: new Float64Array(this.bounds.length + 1), sum: 0 }));
    const series = s;
    const bounds = this.bounds;
    return (seconds) => {
      let i = 0;
      while (i < bounds.length && seconds > bounds[i]!) i++;
      series.counts[i]!++;
      series.sum += seconds;
    };
  }

  get() {
    const values: MetricValueWithName<string>[] = [];
    for (const [value, { counts, sum }] of this.series) {
      let total = 0;
      this.bounds.forEach((le, i) => {
        total += counts[i]!;
        values.push({ metricName: `${this.name}_bucket`, labels: { le, [this.label]: value }, value: total });
      });
      total += counts[this.bounds.length]!;
      values.push({ metricName: `${this.name}_bucket`, labels: { le: '+Inf', [this.label]: value }, value: total });
      values.push({ metricName: `${this.name}_sum`, labels: { [this.label]: value }, value: sum });
      values.push({ metricName: `${this.name}_count`, labels: { [this.label]: value }, value: total });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.series.clear();
  }
}

export interface Metrics extends ServerMetrics {
  registry: Registry;
  /** A store write took `seconds` (in durable mode, its flush included). */
  observeWrite(op: string, seconds: number): void;
}

export function createMetrics(opts: MetricsOptions): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'httpsqs_' });
  const queues = new Map<string, QueueCounts>();
  const none = (): QueueCounts => ({ put: 0, taken: 0, leased: 0, acked: 0, nacked: 0 });
  /** The counts of the queues past the first MAX_QUEUES counted, together. */
  const others = none();
  const of = (name: string) => {
    let c = queues.get(name);
    if (!c) {
      if (queues.size >= MAX_QUEUES) return others;
      queues.set(name, (c = none()));
    }
    return c;
  };

  const perQueue = (name: string, help: string, field: keyof QueueCounts) =>
    new Counter({
      name,
      help,
      labelNames: [...QUEUE_LABELS, 'others'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [q, c] of queues) if (c[field]) this.inc(label(q), c[field]);
        if (others[field]) this.inc({ others: 'true' }, others[field]);
      },
    });
  perQueue('httpsqs_messages_put_total', 'Messages stored, by queue.', 'put');
  perQueue('httpsqs_messages_taken_total', 'Messages handed out by get and mget (leased or not), by queue.', 'taken');
  perQueue('httpsqs_messages_leased_total', 'Messages handed out under a lease, by queue.', 'leased');
  perQueue('httpsqs_leases_acked_total', 'Leases acked, by queue.', 'acked');
  perQueue('httpsqs_leases_nacked_total', 'Leases given back (nack), by queue.', 'nacked');

  // Read once per scrape by the first gauge, for all of them.
  type Depth = { name: string; unread: number; leased: number; delayed: number; dead: number };
  let depths: Promise<Depth[]> | undefined;
  const depth = (name: string, s: QueueStatus): Depth => ({ name, unread: unread(s), leased: s.leased, delayed: s.delayed, dead: s.dead });
  const readDepths = async () => {
    const out: Depth[] = [];
    for await (const q of everyQueue(opts.store)) {
      out.push(depth(q.name, q.status));
      if (out.length >= MAX_QUEUES) break;
    }
    if (out.length < MAX_QUEUES) return out;
    // More queues than are reported, in name order: the queues counted since the start (the
    // counters' series) go first, so that names any client makes to sort first cannot push the
    // queues in use out of the gauges.
    const listed = new Set(out.map((d) => d.name));
    const first: Depth[] = [];
    for (const name of queues.keys()) {
      if (listed.has(name)) continue;
      const s = await opts.store.status(name);
      if (!isInitial(s)) first.push(depth(name, s));
    }
    if (!first.length) return out;
    const counted = out.filter((d) => queues.has(d.name));
    return [...counted, ...first, ...out.filter((d) => !queues.has(d.name))].slice(0, MAX_QUEUES);
  };
  new Gauge({
    name: 'httpsqs_queue_unread',
    help: 'Unread messages, by queue.',
    labelNames: QUEUE_LABELS,
    registers: [registry],
    aggregator: 'first',
    async collect() {
      depths = readDepths();
      this.reset();
      for (const q of await depths) this.set(label(q.name), q.unread);
    },
  });
  const held = (name: string, help: string, key: 'leased' | 'delayed' | 'dead') =>
    new Gauge({
      name,
      help,
      labelNames: QUEUE_LABELS,
      registers: [registry],
      aggregator: 'first',
      async collect() {
        this.reset();
        for (const q of await (depths ?? readDepths())) if (q[key]) this.set(label(q.name), q[key]);
      },
    });
  held('httpsqs_queue_leased', 'Messages handed out under a lease and not settled (held, or nacked or expired and due again), by queue.', 'leased');
  held('httpsqs_queue_delayed', 'Delayed messages not yet handed out (and dead letters moved back), by queue.', 'delayed');
  held('httpsqs_queue_dead', 'Dead letters, by queue.', 'dead');
  new Gauge({
    name: 'httpsqs_connections',
    help: 'Open client connections.',
    registers: [registry],
    collect() {
      this.set(opts.connections());
    },
  });
  const buffered = (key: keyof Buffered) => opts.buffered?.()[key] ?? 0;
  new Gauge({
    name: 'httpsqs_buffered_bytes',
    help: 'Bytes that request bodies and replies over 64 KiB hold now (limit: --max-buffered-bytes).',
    registers: [registry],
    collect() {
      this.set(buffered('bytes'));
    },
  });
  new Gauge({
    name: 'httpsqs_buffered_waiting',
    help: 'Gets, views, mgets and deads waiting for room in --max-buffered-bytes before they take anything.',
    registers: [registry],
    collect() {
      this.set(buffered('waiting'));
    },
  });
  new Counter({
    name: 'httpsqs_buffered_refused_total',
    help: 'Request bodies refused with 503 because --max-buffered-bytes was used up.',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(buffered('refused'));
    },
  });
  new Gauge({
    name: 'httpsqs_long_polls_waiting',
    help: 'Long polls (get with wait=) waiting for a message.',
    registers: [registry],
    collect() {
      this.set(opts.waiting());
    },
  });

  const requests = new Timings(
    'httpsqs_request_duration_seconds',
    'Time from a complete request to its reply, by opt (long polls included).',
    'opt',
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 15, 60],
    registry,
  );
  const byOpt = new Map<string, (seconds: number) => void>();
  const waits = new Histogram({
    name: 'httpsqs_long_poll_wait_seconds',
    help: 'How long long polls waited, by whether they got a message.',
    labelNames: ['outcome'],
    registers: [registry],
    buckets: [0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60],
  });
  const writes = new Timings(
    'httpsqs_store_write_seconds',
    'Time from a store write to its acknowledgement (the commit, and in durable mode the flush), by operation.',
    'op',
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1],
    registry,
  );

  // Scrapes that come while one is collected share its text, one Buffer: each reads every queue's
  // depth (fifty at once took the event loop from every other request for a minute), and the text
  // of 10,000 queues is megabytes, which each copy would hold again.
  // And a text is made at most a fifth of the time (RENDER_SHARE): one of 10,000 queues holds the
  // event loop for over 100 ms, and a few clients asking again as soon as each answer came kept it
  // making texts back to back, every other request waiting behind them (a put took a second).
  // A scrape that comes sooner waits for the next text; Prometheus, scraping every few seconds,
  // never does.
  // (The process's CPU time is what counts, not the time the text took: one read from Redis, or
  // gathered from the workers, mostly waits. The pause is at most RENDER_PAUSE_MS.)
  let rendering: Promise<Buffer> | undefined;
  let nextAt = 0;
  const render = async () => {
    const wait = nextAt - performance.now();
    if (wait > 0) await sleep(wait);
    const cpu = process.cpuUsage();
    try {
      return Buffer.from(await (opts.fromCluster ? opts.fromCluster() : registry.metrics()));
    } finally {
      const used = process.cpuUsage(cpu);
      const ms = (used.user + used.system) / 1000;
      nextAt = performance.now() + Math.min(RENDER_PAUSE_MS, ms * (1 / RENDER_SHARE - 1));
    }
  };

  return {
    registry,
    observeWrite: (op, seconds) => writes.of(op)(seconds),
    // A reset queue starts its counters again (Prometheus reads a drop as a counter reset), and a
    // server with many short-lived queues does not keep a series for each one it ever saw.
    onReset: (name) => void queues.delete(name),
    onRequest(opt, seconds) {
      const key = OPTS.has(opt) ? opt : 'other';
      let observe = byOpt.get(key);
      if (!observe) byOpt.set(key, (observe = requests.of(key)));
      observe(seconds);
    },
    onPut: (name, count) => void (of(name).put += count),
    onTaken(name, count, leased) {
      const c = of(name);
      c.taken += count;
      if (leased) c.leased += count;
    },
    onSettled: (name, outcome) => void (outcome === 'ack' ? of(name).acked++ : of(name).nacked++),
    onWaited: (seconds, found) => waits.observe({ outcome: found ? 'message' : 'timeout' }, seconds),
    render: () => (rendering ??= render().finally(() => (rendering = undefined))),
  };
}

/** One worker's metrics, as it sends them to the primary (`--workers`). */
export type WorkerMetrics = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

/** Values of ended workers kept in the sums at most (a bound on the primary's memory: a label set
 * past it is not kept, and its sum goes down as before). */
const MAX_CARRIED = 20 * MAX_QUEUES;

/**
 * In the primary: the workers' metrics (by worker), added up, each metric as its `aggregator` says.
 * A worker that has ended leaves its counters and histograms in the sums, as it last reported them:
 * otherwise a sum would go down when a worker is replaced, which Prometheus reads as a reset of the
 * counter, and `rate()` would count the other workers' whole totals again. (What the worker counted
 * after the last scrape it answered is not in them.)
 */
export function clusterMetrics(): (workers: Array<[number, WorkerMetrics]>) => Promise<string> {
  let last = new Map<number, WorkerMetrics>();
  const carried = new Map<string, { metric: WorkerMetrics[number]; values: Map<string, MetricValueWithName<string>> }>();
  let kept = 0;
  const carry = (metrics: WorkerMetrics) => {
    for (const m of metrics) {
      // As sent: the type's name (prom-client's typings say a number).
      const type = m.type as unknown as string;
      if (type !== 'counter' && type !== 'histogram') continue;
      let c = carried.get(m.name);
      if (!c) carried.set(m.name, (c = { metric: m, values: new Map() }));
      for (const v of m.values as MetricValueWithName<string>[]) {
        const key = `${v.metricName ?? ''} ${JSON.stringify(v.labels)}`;
        const had = c.values.get(key);
        if (had) had.value += v.value;
        else if (kept < MAX_CARRIED) {
          c.values.set(key, { ...v });
          kept++;
        }
      }
    }
  };
  return (workers) => {
    const now = new Map(workers);
    for (const [id, metrics] of last) if (!now.has(id)) carry(metrics);
    last = now;
    const ended = [...carried.values()].map(({ metric, values }) => ({ ...metric, values: [...values.values()] }));
    return AggregatorRegistry.aggregate([...now.values(), ended]).metrics();
  };
}
