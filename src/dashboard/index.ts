/**
 * `/dashboard` (the page), `/dashboard/info` (server facts as JSON) and `/dashboard/history`
 * (recent puts and gets, see history.ts) for the HTTP server.
 */
import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import type { HttpReply } from '../server/http.js';
import type { HistorySnapshot } from './history.js';
import { DASHBOARD_HTML } from './page.js';

/** What the dashboard shows about the server. */
export interface ServerFacts {
  version: string;
  /** When the server started, in ms since the epoch. */
  started: number;
  /** `lmdb`, or the Redis URL without its password. */
  store: string;
  /** How acknowledgements relate to the disk, in a few words. */
  durability: string;
  workers: number;
  connections: number;
}

const PAGE = Buffer.from(DASHBOARD_HTML);
// The page loads nothing from elsewhere and runs only its own inline script, named by its hash:
// should markup ever be injected, no other script would run. Nobody may frame it.
const SCRIPT = /<script>([\s\S]*?)<\/script>/.exec(DASHBOARD_HTML)![1]!;
const SCRIPT_HASH = createHash('sha256').update(SCRIPT).digest('base64');
const HEAD =
  'Content-Type: text/html; charset=utf-8\r\nCache-Control: no-cache\r\n' +
  `Content-Security-Policy: default-src 'none'; script-src 'sha256-${SCRIPT_HASH}'; style-src 'unsafe-inline'; connect-src 'self'; ` +
  "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n" +
  'X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\n';

export interface DashboardSources {
  facts: () => ServerFacts;
  /** Recent puts and gets: this process's, or under `--workers` every worker's added up. */
  history: () => Promise<HistorySnapshot>;
}

const JSON_HEAD = 'Content-Type: application/json\r\nCache-Control: no-store\r\n';

/** The reply for a dashboard path, or undefined for any other path. `authorized`: the request
 * carried the password (or none is set). */
export async function dashboard(path: string, authorized: boolean, from: DashboardSources): Promise<HttpReply | undefined> {
  if (path === '/dashboard' || path === '/dashboard/') return { status: 200, head: HEAD, body: PAGE };
  if (path !== '/dashboard/info' && path !== '/dashboard/history') return undefined;
  if (!authorized) return { status: 401, head: 'Content-Type: text/plain\r\nCache-Control: no-cache\r\n', body: 'auth= is required\n' };
  const body = path === '/dashboard/info' ? from.facts() : historyForPage(await from.history());
  // UTF-8 bytes: queue names and paths in it are text, not byte strings.
  return { status: 200, head: JSON_HEAD, body: Buffer.from(`${JSON.stringify(body)}\n`) };
}

/** Queue names as opt=list gives them: read as UTF-8, with `name64` (the bytes) when that loses some. */
function historyForPage(h: HistorySnapshot) {
  return {
    ...h,
    queues: h.queues.map(({ name, ...series }) => {
      const bytes = Buffer.from(name, 'latin1');
      return isUtf8(bytes) ? { name: bytes.toString('utf8'), ...series } : { name: bytes.toString('utf8'), name64: bytes.toString('base64'), ...series };
    }),
  };
}
