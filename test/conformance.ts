/**
 * Replays every transcript recorded from the reference HTTPSQS 1.7 server against our server on
 * a real port with a fresh data directory per scenario: in this process, or as processes of its
 * own with --workers. Compares the status,
 * the body bytes and the four recorded headers, and checks the exact spelling of header names.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { cleanup, request, ROOT, startInProcess, startServer } from './helpers.js';

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

/** Runs every scenario against servers started with `extraArgs` (or the arguments it gives for a
 * scenario, e.g. a store of its own); shared with the --workers and Redis suites. */
export function replayConformance(title: string, extraArgs: string[] | ((scenario: string) => string[]) = [], opts: { skip?: string | false } = {}): void {
  describe(title, { skip: opts.skip ?? false }, () => {
    it('has all 23 recorded scenarios', () => assert.equal(scenarios.length, 23));
    for (const sc of scenarios) {
      it(`${sc.scenario}: ${sc.about}`, async () => {
        const extra = typeof extraArgs === 'function' ? extraArgs(sc.scenario) : extraArgs;
        const args = [...sc.server_args, ...extra];
        const server = await (args.includes('--workers') ? startServer : startInProcess)({ args });
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
          await server.stop();
          cleanup(server.dir);
        }
      });
    }
  });
}
