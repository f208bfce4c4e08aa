/**
 * Replays every transcript recorded from the reference HTTPSQS 1.7 server against our server on
 * a real port with a fresh data directory per scenario, in this process; with --workers, as
 * processes of their own, one server for the scenarios of the same arguments, each scenario's
 * queues reset after it (a reset queue is a new one). Compares the status,
 * the body bytes and the four recorded headers, and checks the exact spelling of header names.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { MAX_NAME_BYTES, parseQuery } from '../src/protocol/query.js';
import { cleanup, request, ROOT, startInProcess, startServer, type RunningServer } from './helpers.js';

interface Step {
  request: { method: string; target: string; headers: [string, string][]; body?: string; body_b64?: string };
  response: { status: number; headers: Record<string, string>; body?: string; body_b64?: string };
}
interface Scenario {
  scenario: string;
  about: string;
  server_args: string[];
  steps: Step[];
}

const FIXTURE = join(ROOT, 'test', 'fixtures', 'httpsqs-1.7.jsonl');
const scenarios: Scenario[] = readFileSync(FIXTURE, 'utf8')
  .split('\n')
  .filter((l) => l.trim())
  .map((l) => JSON.parse(l) as Scenario);

const bytes = (m: { body?: string; body_b64?: string }) => (m.body_b64 !== undefined ? Buffer.from(m.body_b64, 'base64') : Buffer.from(m.body ?? '', 'utf8'));

const EXACT_NAMES = ['Content-Type', 'Content-Length', 'Connection', 'Cache-Control', 'Pos'];

/** A server of several processes per argument list, shared by the scenarios that use it: starting
 * one costs as much as replaying a few scenarios. */
const processes = new Map<string, Promise<RunningServer>>();

/** After a scenario on a shared server: every queue it named, reset, with its password if any
 * (names too long to be a queue are not one). */
async function resetQueues(port: number, sc: Scenario): Promise<void> {
  const auth = sc.server_args[sc.server_args.indexOf('-a') + 1];
  const names = new Set(sc.steps.map((s) => parseQuery(s.request.target).name).filter((n): n is string => n !== undefined && n.length <= MAX_NAME_BYTES));
  for (const name of names) {
    const encoded = [...Buffer.from(name, 'latin1')].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');
    const res = await request(port, 'GET', `/?name=${encoded}&opt=reset${sc.server_args.includes('-a') ? `&auth=${auth}` : ''}`);
    assert.equal(res.body.toString(), 'HTTPSQS_RESET_OK', `reset of ${JSON.stringify(name)} after ${sc.scenario}`);
  }
}

/** Runs every scenario against servers started with `extraArgs` (or the arguments it gives for a
 * scenario, e.g. a store of its own); shared with the --workers and Redis suites. */
export function replayConformance(title: string, extraArgs: string[] | ((scenario: string) => string[]) = [], opts: { skip?: string | false } = {}): void {
  describe(title, { skip: opts.skip ?? false }, () => {
    it('has all 23 recorded scenarios', () => assert.equal(scenarios.length, 23));
    after(async () => {
      for (const [key, server] of processes) {
        processes.delete(key);
        const s = await server;
        await s.stop();
        cleanup(s.dir);
      }
    });
    for (const sc of scenarios) {
      it(`${sc.scenario}: ${sc.about}`, async () => {
        const extra = typeof extraArgs === 'function' ? extraArgs(sc.scenario) : extraArgs;
        const args = [...sc.server_args, ...extra];
        const shared = args.includes('--workers');
        const key = JSON.stringify(args);
        if (shared && !processes.has(key)) processes.set(key, startServer({ args }));
        const server = shared ? await processes.get(key)! : await startInProcess({ args });
        try {
          for (const [i, step] of sc.steps.entries()) {
            const { method, target, headers } = step.request;
            const res = await request(server.port, method, target, { headers, body: bytes(step.request) });
            const where = `step ${i + 1}: ${method} ${target.slice(0, 80)}`;
            const want = step.response;
            assert.equal(res.status, want.status, `${where}: status`);
            assert.deepEqual(res.body, bytes(want), `${where}: body`);
            for (const h of ['pos', 'content-length', 'cache-control'] as const) {
              assert.equal(res.headers[h], want.headers[h], `${where}: header ${h}`);
            }
            const norm = (s?: string) => s?.replace(/\s+/g, '').toLowerCase();
            assert.equal(norm(res.headers['content-type']), norm(want.headers['content-type']), `${where}: content-type`);
            for (const [name] of res.rawHeaders) {
              const known = EXACT_NAMES.find((n) => n.toLowerCase() === name.toLowerCase());
              if (known) assert.equal(name, known, `${where}: header spelled ${name}`);
            }
            assert.ok(!res.headers['transfer-encoding'], `${where}: never chunked`);
          }
        } finally {
          if (shared) await resetQueues(server.port, sc);
          else {
            await server.stop();
            cleanup(server.dir);
          }
        }
      });
    }
  });
}
