/**
 * The paths beside the queue protocol: `/healthz`, `/metrics` and `/dashboard` (with its
 * `/dashboard/info` and `/dashboard/history`). Every other path is the queue protocol, as in
 * the reference.
 */
import { isIP } from 'node:net';
import { dashboard, type DashboardSources } from '../dashboard/index.js';
import type { Store } from '../store/store.js';
import { PIECE, type HttpReply } from './http.js';
import type { ServerEvents } from './ops.js';
import { errorMessage } from '../errors.js';

/** What the server reports to a metrics registry (see metrics.ts). */
export interface ServerMetrics extends ServerEvents {
  /** A request with this opt (or path) took `seconds`. */
  onRequest(opt: string, seconds: number): void;
  /** The text exposition of every metric (shared by the scrapes that come while it is made). */
  render(): Promise<Buffer>;
}

export interface EndpointContext {
  store: Store;
  /** /metrics answers 404 without it. */
  metrics?: ServerMetrics | undefined;
  /** No dashboard without them. */
  dashboard?: DashboardSources | undefined;
  /** Whether `auth=` is the password (always true when the server has none). */
  authorized(auth: string | undefined): boolean;
  /** Host names the dashboard answers to besides IP literals and `localhost` (`--allowed-hosts`). */
  allowedHosts?: readonly string[] | undefined;
}

const TEXT = 'Content-Type: text/plain\r\nCache-Control: no-cache\r\n';

export const isEndpoint = (path: string): boolean => path === '/healthz' || path === '/metrics' || path.startsWith('/dashboard');

/**
 * Whether the dashboard answers a request with this `Host` header. A web page can make a browser
 * on the server's machine send requests with its own host name that DNS points at 127.0.0.1 (DNS
 * rebinding); the dashboard answers only names that no outside page can claim, and those listed.
 * No Host (HTTP/1.0) comes from no browser.
 */
export function hostAllowed(host: string | undefined, allowed: readonly string[] = []): boolean {
  if (!host) return true;
  const name = (host.startsWith('[') ? host.slice(1, host.indexOf(']')) : host.replace(/:\d*$/, '')).toLowerCase();
  return isIP(name) !== 0 || name === 'localhost' || allowed.includes(name);
}

/** Answers one of those paths, or undefined to let the queue protocol answer (as it does for any
 * path the server does not serve here). */
export function createEndpoints(
  ctx: EndpointContext,
): (path: string, auth: string | undefined, host: string | undefined, room?: () => Promise<boolean> | undefined) => Promise<HttpReply | undefined> {
  let lastBytes = 0;
  return async (path, auth, host, room) => {
    if (path === '/healthz') {
      try {
        await ctx.store.check();
        return { status: 200, head: TEXT, body: 'OK\n' };
      } catch (err) {
        return { status: 503, head: TEXT, body: Buffer.from(`${errorMessage(err)}\n`) }; // as UTF-8: it may name a path
      }
    }
    if (path.startsWith('/dashboard') && ctx.dashboard) {
      if (!hostAllowed(host, ctx.allowedHosts)) {
        return { status: 403, head: TEXT, body: `Host ${host} is not served the dashboard: use an IP address or localhost, or name it with --allowed-hosts\n` };
      }
      return dashboard(path, ctx.authorized(auth), ctx.dashboard);
    }
    if (path !== '/metrics' || !ctx.metrics) return undefined;
    if (!ctx.authorized(auth)) return { status: 401, head: TEXT, body: 'This server needs auth= for /metrics too\n' };
    // Megabytes with many queues (10,000 named with 256 bytes: 5.8 MB), and any client with the
    // queue password may ask and never read: when the last text was large enough to count in the
    // memory for large replies (over a PIECE), one is made only while that has room (`req.room()`),
    // as for a get. A smaller one (a few queues) never waits: the gauges stay readable.
    if (lastBytes > PIECE) {
      const turn = room?.();
      if (turn && !(await turn)) return { status: 503, head: TEXT, body: 'Gone\n' };
    }
    let body: Buffer;
    try {
      body = await ctx.metrics.render();
    } catch (err) {
      // Not a scrape of nothing (a 200 with no samples), which Prometheus would take as one.
      return { status: 503, head: TEXT, body: Buffer.from(`${errorMessage(err)}; try again\n`) }; // as UTF-8, as above
    }
    lastBytes = body.length;
    return { status: 200, head: 'Content-Type: text/plain; version=0.0.4; charset=utf-8\r\nCache-Control: no-store\r\n', body };
  };
}
