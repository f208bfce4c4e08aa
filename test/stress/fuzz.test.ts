/**
 * Hostile input: 100,000 fuzzed requests against a running server (random bytes in the query,
 * broken percent-encoding, huge and many headers, unknown methods, garbage instead of HTTP,
 * truncated bodies, clients that vanish mid-request). The server never crashes, answers well-formed
 * requests correctly afterwards, and its private memory comes back down.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { it } from 'node:test';
import { cleanup, request, startServer } from '../helpers.js';

const TOTAL = 100_000;
const PARALLEL = 32;

/** A small deterministic generator, so a failing run can be replayed with its seed. */
function rng(seed: number) {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => int(256)));
  const pick = <T>(xs: T[]) => xs[int(xs.length)]!;
  return { next, int, bytes, pick };
}

const rssAnon = (pid: number) => Number(/RssAnon:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

type Fuzz = { data: Buffer; vanish?: boolean };

function makeCase(r: ReturnType<typeof rng>): Fuzz {
  const opts = ['put', 'get', 'status', 'status_json', 'view', 'reset', 'maxqueue', 'synctime', 'PUT', 'x', ''];
  const q = () => `name=f${r.int(20)}&opt=${r.pick(opts)}&pos=${r.int(30) - 5}&num=${r.pick(['10', '1e9', '-1', 'abc', '99999999999999999999'])}`;
  switch (r.int(9)) {
    case 0: // random bytes in the query (may break the request line: then 400 is right)
      return { data: Buffer.concat([Buffer.from(`GET /?${q()}&data=`), r.bytes(r.int(200)), Buffer.from(' HTTP/1.1\r\nHost: x\r\n\r\n')]) };
    case 1: // broken percent-encoding everywhere
      return {
        data: Buffer.from(
          `GET /?na%me=%&name=%${r.pick(['', 'z', 'zz', 'F', 'FFF', '00'])}&opt=put&data=%${r.pick(['', 'G1', '4', '%%', '25%2'])}x HTTP/1.1\r\n\r\n`,
        ),
      };
    case 2: // huge headers
      return { data: Buffer.from(`GET /?${q()} HTTP/1.1\r\nX-Big: ${'h'.repeat(r.int(40_000))}\r\n\r\n`) };
    case 3: // many headers
      return { data: Buffer.from(`GET /?${q()} HTTP/1.1\r\n${Array.from({ length: r.int(3000) }, (_, i) => `X-${i}: v\r\n`).join('')}\r\n`) };
    case 4: // unknown methods
      return { data: Buffer.from(`${r.pick(['HEAD', 'OPTIONS', 'PATCH', 'TRACE', 'CONNECT', 'BREW', 'G E T'])} /?${q()} HTTP/1.1\r\n\r\n`) };
    case 5: // garbage instead of HTTP
      return { data: r.bytes(1 + r.int(500)) };
    case 6: // truncated body: the client vanishes before sending what it announced
      return { data: Buffer.from(`POST /?name=f${r.int(20)}&opt=put HTTP/1.1\r\nContent-Length: ${1000 + r.int(100_000)}\r\n\r\npartial`), vanish: true };
    case 7: // vanishes in the middle of the headers
      return { data: Buffer.from(`GET /?${q()} HTTP/1.1\r\nHost: x\r\nX-Cut: `), vanish: true };
    default: // broken chunked framing, pipelined with a valid request
      return {
        data: Buffer.from(
          `POST /?name=f1&opt=put HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n${r.pick(['zz', '5', '-1', 'ffffffffff', '3;x'])}\r\nabc\r\n0\r\n\r\nGET /?name=f1&opt=get HTTP/1.1\r\n\r\n`,
        ),
      };
  }
}

/** Sends one case on its own connection; resolves when the server has answered or closed. */
function send(port: number, c: Fuzz): Promise<void> {
  return new Promise((done) => {
    const s = net.connect(port, '127.0.0.1');
    const end = () => (s.destroy(), done());
    s.on('error', end);
    s.on('close', end);
    s.on('data', () => {});
    s.setTimeout(3000, end);
    s.write(c.data, () => {
      if (c.vanish) setTimeout(end, 5);
      else s.end();
    });
  });
}

it(`${TOTAL} hostile requests: no crash, correct answers afterwards, memory comes back`, async (t) => {
  const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 1e9);
  t.diagnostic(`seed ${seed} (FUZZ_SEED=${seed} replays this run)`);
  const r = rng(seed);
  const server = await startServer({ args: ['--max-message-bytes', '65536'] });
  const pid = server.proc.pid!;
  try {
    assert.equal((await request(server.port, 'GET', '/?name=keep&opt=put&data=safe')).body.toString(), 'HTTPSQS_PUT_OK');
    // Warm up so that the baseline includes a working heap.
    for (let i = 0; i < 2000; i += PARALLEL) await Promise.all(Array.from({ length: PARALLEL }, () => send(server.port, makeCase(r))));
    await sleep(500);
    const before = rssAnon(pid);

    let sent = 0;
    await Promise.all(
      Array.from({ length: PARALLEL }, async () => {
        while (sent < TOTAL) {
          sent++;
          await send(server.port, makeCase(r));
        }
      }),
    );
    assert.equal(server.proc.exitCode, null, 'the server is still running');
    assert.equal(server.proc.signalCode, null);

    // Well-formed requests get correct answers.
    assert.equal((await request(server.port, 'GET', '/?name=keep&opt=view&pos=1')).body.toString(), 'safe');
    assert.equal((await request(server.port, 'GET', '/?name=after&opt=put&data=ok')).body.toString(), 'HTTPSQS_PUT_OK');
    const got = await request(server.port, 'GET', '/?name=after&opt=get');
    assert.equal(got.body.toString(), 'ok');
    assert.equal(got.headers.pos, '1');

    // Memory comes back down once the storm is over (V8 returns freed heap lazily: allow slack).
    let after = rssAnon(pid);
    for (let i = 0; i < 20 && after > before + 32 * 2 ** 20; i++) {
      await sleep(500);
      await request(server.port, 'GET', '/?name=after&opt=status');
      after = rssAnon(pid);
    }
    t.diagnostic(`private memory ${(before / 2 ** 20).toFixed(1)} MiB before, ${(after / 2 ** 20).toFixed(1)} MiB after`);
    assert.ok(after <= before + 32 * 2 ** 20, `private memory grew from ${before} to ${after} bytes`);
  } finally {
    await server.stop();
    cleanup(server.dir);
  }
});
