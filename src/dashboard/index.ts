/** `/dashboard` (the page) and `/dashboard/info` (server facts as JSON) for the HTTP server. */
import { createHash } from 'node:crypto';
import type { HttpReply } from '../server/http.js';
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

/** The reply for a dashboard path, or undefined for any other path. `authorized`: the request
 * carried the password (or none is set). */
export function dashboard(path: string, authorized: boolean, facts: () => ServerFacts): HttpReply | undefined {
  if (path === '/dashboard' || path === '/dashboard/') return { status: 200, head: HEAD, body: PAGE };
  if (path !== '/dashboard/info') return undefined;
  if (!authorized) return { status: 401, head: 'Content-Type: text/plain\r\n', body: 'auth= is required\n' };
  return { status: 200, head: 'Content-Type: application/json\r\nCache-Control: no-cache\r\n', body: `${JSON.stringify(facts())}\n` };
}
