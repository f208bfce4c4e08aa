/**
 * Moving data: from the C HTTPSQS (a real Tokyo Cabinet file made with tcbmgr, dumped with
 * `tcbmgr list -pv -px`), and between stores with `httpsqs export` / `httpsqs import`.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { Importer } from '../src/cli/import.js';
import { JournalStore } from '../src/store/journal/store.js';
import { LmdbStore } from '../src/store/lmdb/store.js';
import { RedisStore } from '../src/store/redis.js';
import type { Store } from '../src/store/store.js';
import { assertExportIgnoresNack, cleanup, CLI, needsTool, request, startServer, tempDir } from './helpers.js';
import { noRedis, startRedis } from './redis-servers.js';

const httpsqs = (args: string[], input?: string) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', input, timeout: 60_000 });
const hex = (b: Buffer) => [...b].map((x) => x.toString(16).padStart(2, '0')).join(' ');
const body = async (port: number, target: string) => (await request(port, 'GET', target)).body;

/** A Tokyo Cabinet B+ tree file `httpsqs.db` in `dir` holding `records` (text keys and values), as the C server keeps its queues. */
function tcDatabase(dir: string, records: Array<[string, string]>): string {
  const db = join(dir, 'httpsqs.db');
  execFileSync('tcbmgr', ['create', db]);
  for (const [k, v] of records) execFileSync('tcbmgr', ['put', db, k, v]);
  return db;
}

/** `store`, with every `restore` call's records noted in `calls`, in order. */
function restoresOf(store: Store): { observed: Store; calls: Array<Parameters<Store['restore']>[1]> } {
  const calls: Array<Parameters<Store['restore']>[1]> = [];
  const observed = new Proxy(store, {
    get: (target, key) =>
      key === 'restore' ? (name: string, r: Parameters<Store['restore']>[1]) => (calls.push(r), target.restore(name, r)) : Reflect.get(target, key),
  });
  return { observed, calls };
}
/** A line of `tcbmgr list -pv -px`. */
const tcLine = (key: string, value: Buffer | string) => `${hex(Buffer.from(key))}\t${hex(Buffer.from(value))}\n`;

/** A server on `data` gets `expected` from queue `name` first. */
async function getsFirst(data: string, name: string, expected: Buffer): Promise<void> {
  const server = await startServer({ dir: data });
  try {
    assert.deepEqual(await body(server.port, `/?name=${name}&opt=get`), expected);
  } finally {
    await server.stop();
  }
}

/** `httpsqs import` reading standard input from a stream of chunks (too big to hold as one string). */
function importFrom(args: string[], chunks: Iterable<Buffer | string>) {
  const proc = spawn(process.execPath, [CLI, 'import', ...args, '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
  proc.stdin.on('error', () => {}); // EPIPE once the import stopped reading
  Readable.from(chunks).pipe(proc.stdin);
  let stderr = '';
  proc.stderr.on('data', (d) => (stderr += d));
  return new Promise<{ status: number | null; stderr: string }>((res) => proc.once('close', (status) => res({ status, stderr })));
}

describe('import --from-tcbmgr', { skip: needsTool('tcbmgr', 'tokyocabinet-bin') }, () => {
  it('recreates every queue of a Tokyo Cabinet file: positions, maxqueue, every stored message byte for byte', async () => {
    const dir = tempDir('httpsqs-tc-');
    const db = join(dir, 'httpsqs.db');
    const put = (key: string | Buffer, value: string | Buffer) =>
      execFileSync('tcbmgr', ['put', '-sx', db, hex(Buffer.from(key as string, 'latin1')), hex(Buffer.isBuffer(value) ? value : Buffer.from(value, 'utf8'))]);
    execFileSync('tcbmgr', ['create', db]);
    // 1.7 layout, a queue that has wrapped: maxqueue 10, the writer at 3 on its second lap, the
    // reader at 8; positions 4-8 were read but are still stored.
    put('jobs:maxqueue', '10');
    put('jobs:putpos', '3');
    put('jobs:getpos', '8');
    for (let i = 1; i <= 10; i++) put(`jobs:${i}`, `job ${i}`);
    // Bytes that a text dump would mangle, in a queue whose name holds a colon.
    const raw = Buffer.from([0, 9, 10, 13, 0xff, 0x41]);
    put('a:b:putpos', '1');
    put('a:b:1', raw);
    // The single-key layout: getpos,putpos,maxqueue.
    put('legacy', '1,2,1000');
    put('legacy:1', 'l1');
    put('legacy:2', 'l2');
    const dump = join(dir, 'dump.txt');
    writeFileSync(dump, execFileSync('tcbmgr', ['list', '-pv', '-px', db]));

    const data = join(dir, 'data');
    const r = httpsqs(['import', '-x', data, '--from-tcbmgr', dump]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /imported 3 queues, 13 messages/);
    const server = await startServer({ dir: data });
    try {
      assert.equal(
        (await body(server.port, '/?name=jobs&opt=status_json')).toString(),
        '{"name":"jobs","maxqueue":10,"putpos":3,"putlap":2,"getpos":8,"getlap":1,"unread":5}\n',
      );
      assert.equal((await body(server.port, '/?name=jobs&opt=view&pos=5')).toString(), 'job 5');
      const order: string[] = [];
      for (let i = 0; i < 6; i++) order.push((await body(server.port, '/?name=jobs&opt=get')).toString());
      assert.deepEqual(order, ['job 9', 'job 10', 'job 1', 'job 2', 'job 3', 'HTTPSQS_GET_END']);
      assert.equal((await body(server.port, '/?name=jobs&opt=put&data=next')).toString(), 'HTTPSQS_PUT_OK'); // continues at 4
      assert.equal((await body(server.port, '/?name=jobs&opt=view&pos=4')).toString(), 'next');
      assert.deepEqual(await body(server.port, '/?name=a%3Ab&opt=get'), raw);
      assert.match((await body(server.port, '/?name=legacy&opt=status_json')).toString(), /"maxqueue":1000,"putpos":2,"putlap":1,"getpos":1,/);
      assert.equal((await body(server.port, '/?name=legacy&opt=get')).toString(), 'l2');
    } finally {
      await server.stop();
    }

    // Plain -pv output is read too, its bytes as they are (a GBK message, not UTF-8).
    put('gbk:putpos', '1');
    put('gbk:1', Buffer.from([0xc4, 0xe3, 0xba, 0xc3]));
    const text = join(dir, 'text.txt');
    const lines = execFileSync('tcbmgr', ['list', '-pv', db])
      .toString('latin1')
      .split('\n')
      .filter((l) => l.startsWith('legacy') || l.startsWith('gbk'));
    writeFileSync(text, Buffer.from(`${lines.join('\n')}\n`, 'latin1'));
    const plain = httpsqs(['import', '-x', join(dir, 'data2'), '--from-tcbmgr', text]);
    assert.equal(plain.status, 0, plain.stderr);
    assert.match(plain.stderr, /imported 2 queues, 3 messages/);
    const server2 = await startServer({ dir: join(dir, 'data2') });
    try {
      assert.deepEqual(await body(server2.port, '/?name=gbk&opt=get'), Buffer.from([0xc4, 0xe3, 0xba, 0xc3]));
    } finally {
      await server2.stop();
    }
    cleanup(dir);
  });
  it('a queue that already holds state and has only positions in the dump stops the import before any queue is written', async () => {
    const dir = tempDir('httpsqs-tc-');
    // In key order: a and b with messages, c with its maxqueue only, d with a message.
    const db = tcDatabase(dir, [
      ['a:1', 'a1'],
      ['a:putpos', '1'],
      ['b:1', 'b1'],
      ['b:putpos', '1'],
      ['c:maxqueue', '100'],
      ['d:1', 'd1'],
      ['d:putpos', '1'],
    ]);
    const dump = join(dir, 'dump.txt');
    writeFileSync(dump, execFileSync('tcbmgr', ['list', '-pv', '-px', db]));
    const data = join(dir, 'data');
    let store = await LmdbStore.open({ path: data });
    await store.restore('c', { state: { putpos: 2, getpos: 1, maxqueue: 50 } });
    await store.close();
    const r = httpsqs(['import', '-x', data, '--from-tcbmgr', dump]);
    assert.equal(r.status, 1, r.stderr);
    assert.equal(
      r.stderr,
      'httpsqs: import: queue "c" already holds state here, so the import stopped (reset it first, or use --replace); nothing was imported (the 3 queue(s) it had begun writing were emptied again)\n',
    );
    store = await LmdbStore.open({ path: data });
    try {
      assert.deepEqual(
        (await store.list('', undefined, 10)).map((q) => q.name),
        ['c'],
      );
      for (const q of ['a', 'b', 'd']) assert.equal(await store.view(q, 1), null, q);
      assert.deepEqual(await store.status('c'), { putpos: 2, getpos: 1, maxqueue: 50, leased: 0, delayed: 0, dead: 0 });
    } finally {
      await store.close();
    }
    // With --replace, every queue is written.
    const replaced = httpsqs(['import', '-x', data, '--replace', '--from-tcbmgr', dump]);
    assert.equal(replaced.status, 0, replaced.stderr);
    assert.match(replaced.stderr, /imported 4 queues, 3 messages/);
    cleanup(dir);
  });

  it('refuses a hex dump with a damaged or odd-length byte on any line, or whose last line has no newline', () => {
    const dir = tempDir('httpsqs-tc-');
    const db = tcDatabase(dir, [
      ['z:1', 'first message'],
      ['z:2', 'second message'],
      ['z:putpos', '2'],
    ]);
    const lines = execFileSync('tcbmgr', ['list', '-pv', '-px', db]).toString('latin1').split('\n').slice(0, -1);
    assert.equal(lines.length, 3);
    assert.ok(lines[1]!.startsWith('7A 3A 32\t'), lines[1]);
    let runs = 0;
    const run = (input: string) => httpsqs(['import', '-x', join(dir, `d${runs++}`), '--from-tcbmgr', '-'], input);
    const whole = run(`${lines.join('\n')}\n`);
    assert.equal(whole.status, 0, whole.stderr);
    assert.match(whole.stderr, /imported 1 queues, 2 messages/);
    const swap = (i: number, line: string) => `${lines.map((l, j) => (j === i ? line : l)).join('\n')}\n`;
    const cases: Array<[string, string, RegExp]> = [
      [
        'cut inside the second line',
        `${lines[0]}\n${lines[1]!.slice(0, -4)}`,
        /^httpsqs: import: line 2: the input ends inside it, before its newline: it was cut off; nothing was imported \(the 1 queue\(s\) it had begun writing were emptied again\)\n$/,
      ],
      ['an odd digit on the second line', swap(1, lines[1]!.slice(0, -1)), /^httpsqs: import: line 2: not hex bytes like the lines before it/],
      ['a bad byte on the second line', swap(1, lines[1]!.replace('\t73', '\tZZ')), /^httpsqs: import: line 2: not hex bytes like the lines before it/],
      [
        'a bad byte on the first line',
        swap(0, lines[0]!.replace('\t66', '\tZZ')),
        /^httpsqs: import: line 1: its key is hex bytes \(tcbmgr list -pv -px\) but its value is not: damaged or cut off\?\n$/,
      ],
    ];
    for (const [what, input, refusal] of cases) {
      const r = run(input);
      assert.equal(r.status, 1, `${what}: ${r.stderr}`);
      assert.match(r.stderr, refusal, what);
      // The directory it made goes again, though it had begun writing: another try may choose the journal.
      assert.ok(!existsSync(join(dir, `d${runs - 1}`)), what);
    }
    const again = httpsqs(['import', '-x', join(dir, `d${runs - 1}`), '--engine', 'journal', '--from-tcbmgr', '-'], `${lines.join('\n')}\n`);
    assert.equal(again.status, 0, again.stderr);
    cleanup(dir);
  });

  it('imports a hex dump of a 12 MiB message (a regular expression ran out of stack from about 5 MB)', async () => {
    const dir = tempDir('httpsqs-tc-');
    const big = Buffer.alloc(12 * 2 ** 20, 0x41);
    big[big.length - 1] = 0x0d;
    const dump = join(dir, 'dump.txt');
    writeFileSync(dump, tcLine('a:1', 'hello') + tcLine('a:putpos', '1') + tcLine('big:1', big) + tcLine('big:putpos', '1'));
    const r = httpsqs(['import', '-x', join(dir, 'data'), '--engine', 'journal', '--from-tcbmgr', dump]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /imported 2 queues, 2 messages/);
    await getsFirst(join(dir, 'data'), 'big', big);
    cleanup(dir);
  });

  it("decodes a hex dump's 16 MiB message within a heap of 256 MB (removing its spaces with a regular expression ran out)", async () => {
    const dir = tempDir('httpsqs-tc-');
    const big = Buffer.alloc(16 * 2 ** 20, 0xa5);
    big[0] = 0;
    const dump = join(dir, 'dump.txt');
    writeFileSync(dump, tcLine('big:1', big) + tcLine('big:putpos', '1'));
    const r = spawnSync(process.execPath, ['--max-old-space-size=256', CLI, 'import', '-x', join(dir, 'data'), '--from-tcbmgr', dump], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(r.status, 0, r.stderr.slice(0, 2000));
    assert.match(r.stderr, /imported 1 queues, 1 messages/);
    await getsFirst(join(dir, 'data'), 'big', big);
    cleanup(dir);
  });

  it('a queue the C server had reset (messages, no positions) is not imported, and the summary says so', async () => {
    const dir = tempDir('httpsqs-tc-');
    const dump =
      tcLine('a:1', 'kept') + tcLine('a:putpos', '1') + tcLine('r:1', 'old1') + tcLine('r:2', 'old2') + tcLine('s:1', 's1') + tcLine('s:putpos', '1');
    const r = httpsqs(['import', '-x', join(dir, 'data'), '--from-tcbmgr', '-'], dump);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(
      r.stderr,
      'skipped 1 queue(s) with messages but no positions ("r": reset on the C server, which kept 2 message(s) for its view only)\nimported 2 queues, 2 messages\n',
    );
    const exported = httpsqs(['export', '-x', join(dir, 'data')]);
    assert.equal(exported.status, 0, exported.stderr);
    assert.match(exported.stderr, /exported 2 queues, 2 messages/);
    assert.doesNotMatch(exported.stdout, /"queue":"r"/);
    // With --replace, such a queue that holds state here is emptied, as the C server's is: said so.
    const store = await LmdbStore.open({ path: join(dir, 'data') });
    await store.restore('r', { messages: [{ pos: 1, message: Buffer.from('here') }], state: { putpos: 1, getpos: 0, maxqueue: 100 } });
    await store.close();
    const replaced = httpsqs(['import', '-x', join(dir, 'data'), '--replace', '--from-tcbmgr', '-'], dump);
    assert.equal(replaced.status, 0, replaced.stderr);
    assert.match(replaced.stderr, /for its view only\); 1 of them \("r"\) held state here, and are empty now \(--replace\)\n/);
    cleanup(dir);
  });

  it("a dump cut off (tcbmgr stops at a damaged page, after the records it read): before a queue's putpos it is refused, inside its messages it is said", () => {
    const dir = tempDir('httpsqs-tc-');
    const db = tcDatabase(dir, [
      ['a:1', 'a1'],
      ['a:putpos', '1'],
      ['b:1', 'b1'],
      ['b:2', 'b2'],
      ['b:getpos', '1'],
      ['b:putpos', '2'],
    ]);
    const lines = execFileSync('tcbmgr', ['list', '-pv', '-px', db]).toString('latin1').split('\n').slice(0, -1);
    const upTo = (key: string) => `${lines.slice(0, lines.findIndex((l) => l.toLowerCase().startsWith(`${hex(Buffer.from(key))}\t`)) + 1).join('\n')}\n`;
    // Read, never written: the get rules would go round that ring for ever.
    const positions = httpsqs(['import', '-x', join(dir, 'data'), '--from-tcbmgr', '-'], upTo('b:getpos'));
    assert.equal(positions.status, 1, positions.stderr);
    assert.match(
      positions.stderr,
      /^httpsqs: import: queue "b": getpos 1 with putpos 0, read but never written, .*cut off between its getpos and putpos keys.*nothing was imported/,
    );
    const messages = httpsqs(['import', '-x', join(dir, 'data'), '--from-tcbmgr', '-'], upTo('b:1'));
    assert.equal(messages.status, 0, messages.stderr);
    assert.match(messages.stderr, /\("b": reset on the C server, .*\); the dump ends inside the messages of "b": if tcbmgr failed .*the dump is incomplete/);
    // An export with such a state is refused too.
    const json = '{"format":"httpsqs-export","version":2}\n{"queue":"c","maxqueue":100,"putpos":0,"getpos":5}\n{"end":true,"queues":1,"messages":0}\n';
    const exported = httpsqs(['import', '-x', join(dir, 'data2'), '-'], json);
    assert.equal(exported.status, 1, exported.stderr);
    assert.equal(exported.stderr, 'httpsqs: import: queue "c": getpos 5 with putpos 0, read but never written, which no HTTPSQS leaves\n');
    cleanup(dir);
  });

  it("the text form: a message's CR is kept; a line that is no HTTPSQS key (a message's next line) is refused, and what was begun emptied; --replace says what it emptied", async () => {
    const dir = tempDir('httpsqs-tc-');
    const ok = httpsqs(['import', '-x', join(dir, 'ok'), '--from-tcbmgr', '-'], 'q:1\tline\r\nq:putpos\t1\n');
    assert.equal(ok.status, 0, ok.stderr);
    const server = await startServer({ dir: join(dir, 'ok') });
    try {
      assert.equal((await body(server.port, '/?name=q&opt=get')).toString(), 'line\r');
      await request(server.port, 'GET', '/?name=held&opt=put&data=before');
    } finally {
      await server.stop();
    }
    // A message "report 1\nbilling:putpos\t7" reads as two lines: the second is a key, and is
    // not told apart; a next line that is no key is refused rather than skipped.
    const torn = 'held:1\treport 1\nthe rest of it\tsum\nheld:putpos\t1\n';
    const bad = httpsqs(['import', '-x', join(dir, 'bad'), '--from-tcbmgr', '-'], torn);
    assert.equal(bad.status, 1, bad.stderr);
    assert.match(
      bad.stderr,
      /^httpsqs: import: line 2: "the rest of it" is no key HTTPSQS writes: in the text form \(tcbmgr list -pv\) it is a message's next line.*dump with tcbmgr list -pv -px; nothing was imported \(the 1 queue\(s\) it had begun writing were emptied again\)\n$/,
    );
    const replaced = httpsqs(['import', '-x', join(dir, 'ok'), '--replace', '--from-tcbmgr', '-'], torn);
    assert.equal(replaced.status, 1, replaced.stderr);
    assert.match(replaced.stderr, /emptied again, 1 of which held state here before \(--replace\): they are empty now\)\n$/);
    cleanup(dir);
  });
  it("the C server's database file itself, given for its dump, is named as such", () => {
    const dir = tempDir('httpsqs-tc-');
    const db = join(dir, 'httpsqs.db');
    execFileSync('tcbmgr', ['create', db]);
    execFileSync('tcbmgr', ['put', db, 'q:putpos', '1']);
    for (const args of [['--from-tcbmgr', db], [db]]) {
      const r = httpsqs(['import', '-x', join(dir, 'data'), ...args]);
      assert.equal(r.status, 1, r.stderr);
      assert.match(
        r.stderr,
        /^httpsqs: import: line 1: .*this is a Tokyo Cabinet database file \(httpsqs\.db\), not its dump: dump it with tcbmgr list -pv -px/,
      );
    }
    assert.equal(existsSync(join(dir, 'data')), false);
    cleanup(dir);
  });

  it('a hex dump with CRLF line ends is read from its first line on; a message that ends in CR keeps it', async () => {
    const dir = tempDir('httpsqs-tc-');
    const dump = (tcLine('q:1', 'one\r') + tcLine('q:2', '') + tcLine('q:putpos', '2')).replace(/\n/g, '\r\n');
    const r = httpsqs(['import', '-x', join(dir, 'data'), '--from-tcbmgr', '-'], dump);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /imported 1 queues, 2 messages/);
    const server = await startServer({ dir: join(dir, 'data') });
    try {
      assert.equal((await body(server.port, '/?name=q&opt=get')).toString(), 'one\r');
      assert.equal((await body(server.port, '/?name=q&opt=view&pos=2')).toString(), '');
    } finally {
      await server.stop();
    }
    cleanup(dir);
  });
});

describe('export and import', () => {
  it('round-trips queues, stored messages (binary too), leases, delayed messages and dead letters, LMDB to Redis and back', { skip: noRedis() }, async () => {
    const dir = tempDir('httpsqs-move-');
    const server = await startServer({ dir: join(dir, 'a') });
    const raw = Buffer.from([0, 1, 2, 255, 10]);
    try {
      for (let i = 1; i <= 5; i++) await request(server.port, 'GET', `/?name=text&opt=put&data=m${i}`);
      await request(server.port, 'GET', '/?name=text&opt=get');
      await request(server.port, 'GET', '/?name=text&opt=get&lease=600');
      await request(server.port, 'POST', '/?name=bin&opt=put', { body: raw, headers: [['Content-Type', 'application/octet-stream']] });
      await request(server.port, 'GET', '/?name=z%C3%BCrich&opt=maxqueue&num=50');
      // Delayed messages and dead letters wait at slots past the ring, with maxdeliveries.
      await request(server.port, 'GET', '/?name=held&opt=maxdeliveries&num=1');
      await request(server.port, 'GET', '/?name=held&opt=put&data=later&delay=3600');
      await request(server.port, 'GET', '/?name=held&opt=put&data=poison');
      await request(server.port, 'GET', '/?name=held&opt=get&lease=600');
      await request(server.port, 'GET', '/?name=held&opt=nack&pos=1');
      await request(server.port, 'GET', '/?name=only-setting&opt=maxdeliveries&num=7');
      // Export works while the server runs; import into its directory is refused.
      const live = httpsqs(['export', '-x', join(dir, 'a')]);
      assert.equal(live.status, 0, live.stderr);
      const refused = httpsqs(['import', '-x', join(dir, 'a'), '-'], live.stdout);
      assert.equal(refused.status, 1);
      assert.match(refused.stderr, /^httpsqs: import: -x .* is in use by a running server \(PID \d+\): stop it before importing/);
    } finally {
      await server.stop();
    }
    // A write that fails ends the export with a clear error, not a stack trace.
    for (const [out, why] of [
      ['/dev/full', /ENOSPC/],
      [join(dir, 'missing', 'a.jsonl'), /ENOENT/],
    ] as const) {
      const failed = httpsqs(['export', '-x', join(dir, 'a'), '-o', out]);
      assert.equal(failed.status, 1, failed.stderr);
      assert.match(failed.stderr, new RegExp(`^httpsqs: export: cannot write ${out.replace(/[/.]/g, '\\$&')}: .*${why.source}`));
      assert.doesNotMatch(failed.stderr, /\n\s+at /);
    }
    const first = httpsqs(['export', '-x', join(dir, 'a'), '-o', join(dir, 'a.jsonl')]);
    assert.equal(first.status, 0, first.stderr);
    const exported = readFileSync(join(dir, 'a.jsonl'), 'utf8');
    assert.match(exported, /^\{"format":"httpsqs-export","version":2\}\n/);
    assert.match(exported, /\n\{"end":true,"queues":5,"messages":9\}\n$/);
    assert.match(exported, /"queue":"text","pos":2,"deadline":\d+,"deliveries":1\}/);
    assert.match(exported, /\{"queue":"held","maxqueue":1000000,"putpos":1,"getpos":1,"maxdeliveries":1\}/);
    assert.match(exported, /"queue":"held","pos":1000000002,"data":"cG9pc29u"\}/);

    const redis = await startRedis();
    try {
      const store = `${redis.url}?prefix=moved:`;
      assert.equal(httpsqs(['import', '--store', store, join(dir, 'a.jsonl')]).status, 0);
      const again = httpsqs(['import', '--store', store, join(dir, 'a.jsonl')]);
      assert.equal(again.status, 1, 'an import never writes over queues that hold state');
      assert.match(
        again.stderr,
        /already holds state here, so the import stopped there: nothing of it, nor of what follows it in the input, was written; the 0 queue\(s\) before it were imported/,
      );
      assert.equal(httpsqs(['import', '--store', store, '--replace', join(dir, 'a.jsonl')]).status, 0);
      // While a server uses this Redis with this prefix, an import is refused; once it stops, not.
      // One on another prefix does not count.
      const frontend = await startServer({ args: ['--store', store] });
      const elsewhere = await startServer({ args: ['--store', `${redis.url}?prefix=elsewhere:`] });
      try {
        const busy = httpsqs(['import', '--store', store, '--replace', join(dir, 'a.jsonl')]);
        assert.equal(busy.status, 1);
        assert.match(busy.stderr, /1 httpsqs server\(s\) use this Redis now: stop them before importing/);
        await frontend.stop();
        assert.equal(httpsqs(['import', '--store', store, '--replace', join(dir, 'a.jsonl')]).status, 0);
      } finally {
        await Promise.all([frontend.stop(), elsewhere.stop()]);
        [frontend.dir, elsewhere.dir].forEach(cleanup);
      }
      const fromRedis = httpsqs(['export', '--store', store]);
      assert.equal(fromRedis.status, 0, fromRedis.stderr);
      assert.equal(httpsqs(['import', '-x', join(dir, 'b'), '-'], fromRedis.stdout).status, 0);
    } finally {
      await redis.stop();
    }
    const back = httpsqs(['export', '-x', join(dir, 'b')]).stdout;
    const sorted = (s: string) => s.split('\n').sort().join('\n');
    assert.equal(sorted(back), sorted(exported));
    const server2 = await startServer({ dir: join(dir, 'b') });
    try {
      assert.deepEqual(await body(server2.port, '/?name=bin&opt=get'), raw);
      assert.match((await body(server2.port, '/?name=text&opt=status_json')).toString(), /"putpos":5,.*"getpos":2,.*"leased":1\}/);
      assert.equal((await body(server2.port, '/?name=text&opt=nack&pos=2')).toString(), 'HTTPSQS_NACK_OK');
      assert.match((await body(server2.port, '/?name=held&opt=status_json')).toString(), /"unread":0,"delayed":1,"dead":1,"maxdeliveries":1\}/);
      assert.match((await body(server2.port, '/?name=held&opt=dead')).toString(), /^\[\{"pos":1000000002,"deliveries":1,"died":\d+,"data":"poison"\}\]/);
      assert.equal((await body(server2.port, '/?name=held&opt=get')).toString(), 'HTTPSQS_GET_END', 'the delayed one is not due');
      assert.match((await body(server2.port, '/?name=only-setting&opt=status_json')).toString(), /"maxdeliveries":7\}/);
    } finally {
      await server2.stop();
      cleanup(dir);
    }
  });

  it('export reads each LMDB queue from one snapshot while a server writes: a nack during it changes nothing of it', async () => {
    const dir = tempDir('httpsqs-snap-');
    const server = await LmdbStore.open({ path: dir });
    const reader = await LmdbStore.open({ path: dir, shared: true });
    try {
      await assertExportIgnoresNack(server, reader, 2);
    } finally {
      await reader.close();
      await server.close();
      cleanup(dir);
    }
  });

  it('export refuses a directory without a database, and leaves none there', () => {
    const dir = tempDir('httpsqs-bad-');
    const r = httpsqs(['export', '-x', join(dir, 'typo')]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /-x .*typo: no httpsqs data there \(no journal\/, no data\.mdb\), so nothing to export/);
    assert.equal(r.stdout, '');
    assert.equal(existsSync(join(dir, 'typo')), false);
    cleanup(dir);
  });

  it('imports a queue of 70,000 delayed messages into every store, its leases counted', { skip: noRedis() }, async () => {
    const dir = tempDir('httpsqs-many-');
    const N = 70_000;
    const due = Date.now() + 3_600_000;
    const lines = ['{"format":"httpsqs-export","version":1}', '{"queue":"q","maxqueue":1000000,"putpos":0,"getpos":0}'];
    for (let i = 1; i <= N; i++) lines.push(`{"queue":"q","pos":${1_000_000_000 + i},"data":"${Buffer.from(`m${i}`).toString('base64')}"}`);
    for (let i = 1; i <= N; i++) lines.push(`{"queue":"q","pos":${1_000_000_000 + i},"deadline":${due},"deliveries":0}`);
    writeFileSync(join(dir, 'in.jsonl'), `${lines.join('\n')}\n`);
    const redis = await startRedis();
    try {
      const into: Array<[string[], () => Promise<Store>]> = [
        [['-x', join(dir, 'lmdb')], () => LmdbStore.open({ path: join(dir, 'lmdb') })],
        [['-x', join(dir, 'journal'), '--engine', 'journal'], () => JournalStore.open({ path: join(dir, 'journal') })],
        [['--store', redis.url], async () => new RedisStore({ url: redis.url }).ready()],
      ];
      for (const [args, open] of into) {
        const r = httpsqs(['import', ...args, join(dir, 'in.jsonl')]);
        assert.equal(r.status, 0, r.stderr);
        const store = await open();
        try {
          assert.deepEqual(await store.status('q'), { putpos: 0, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: N, dead: 0 }, args.join(' '));
          assert.equal((await store.view('q', 1_000_000_000 + N))?.toString(), `m${N}`);
          assert.equal((await store.leases('q')).length, N);
        } finally {
          await store.close();
        }
      }
    } finally {
      await redis.stop();
      cleanup(dir);
    }
  });

  it("the importer writes a queue's leases a thousand at a time, its state last", async () => {
    const dir = tempDir('httpsqs-held-');
    const store = await LmdbStore.open({ path: dir });
    const { observed, calls: restores } = restoresOf(store);
    try {
      const imp = new Importer(observed, false);
      await imp.queue('q');
      imp.setState({ putpos: 0, getpos: 0, maxqueue: 1_000_000 });
      for (let i = 1; i <= 2500; i++) await imp.lease(1_000_000_000 + i, { deadline: Date.now() + 60_000, deliveries: 0 });
      await imp.flush(true);
      assert.deepEqual(
        restores.map((r) => ({ leases: r.leases?.length ?? 0, state: !!r.state })),
        [
          { leases: 1000, state: false },
          { leases: 1000, state: false },
          { leases: 500, state: true },
        ],
      );
      assert.equal((await store.status('q')).delayed, 2500);
    } finally {
      await store.close();
      cleanup(dir);
    }
  });

  it('the importer writes messages once they come to 8 MiB, however few', async () => {
    const dir = tempDir('httpsqs-bytes-');
    const store = await LmdbStore.open({ path: dir });
    const { observed, calls: restores } = restoresOf(store);
    try {
      const imp = new Importer(observed, false);
      await imp.queue('q');
      imp.setState({ putpos: 10, getpos: 0, maxqueue: 1_000_000 });
      for (let i = 1; i <= 10; i++) await imp.message(i, Buffer.alloc(3 * 2 ** 20, i));
      await imp.flush(true);
      assert.deepEqual(
        restores.map((r) => r.messages?.length ?? 0),
        [3, 3, 3, 1],
        'the last batch goes with the state',
      );
      assert.deepEqual(await store.view('q', 10), Buffer.alloc(3 * 2 ** 20, 10));
    } finally {
      await store.close();
      cleanup(dir);
    }
  });

  it('the importer writes a queue of a few messages in one operation with its state: one commit a small queue', async () => {
    const dir = tempDir('httpsqs-small-');
    const store = await LmdbStore.open({ path: dir });
    const { observed, calls: restores } = restoresOf(store);
    try {
      const imp = new Importer(observed, false);
      for (const name of ['a', 'b', 'c']) {
        await imp.queue(name);
        imp.setState({ putpos: 2, getpos: 0, maxqueue: 1_000_000 });
        for (const pos of [1, 2]) await imp.message(pos, Buffer.from(`${name}${pos}`));
      }
      await imp.flush(true);
      assert.deepEqual(
        restores.map((r) => ({ messages: r.messages?.length ?? 0, state: !!r.state })),
        Array(3).fill({ messages: 2, state: true }),
      );
      for (const name of ['a', 'b', 'c']) {
        assert.deepEqual(await store.status(name), { putpos: 2, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
        assert.deepEqual(await store.view(name, 2), Buffer.from(`${name}2`));
      }
    } finally {
      await store.close();
      cleanup(dir);
    }
  });

  it("an import re-run after one that died before a queue's state does not revive that attempt's leases (LMDB)", async () => {
    const dir = tempDir('httpsqs-rerun-');
    const data = join(dir, 'd');
    // 1,000 delayed messages due long ago: their leases are written before the state, which the cut line stops.
    const lines = ['{"format":"httpsqs-export","version":1}', '{"queue":"a","maxqueue":1000000,"putpos":0,"getpos":0}'];
    for (let i = 1; i <= 1000; i++) lines.push(`{"queue":"a","pos":${1_000_000_000 + i},"data":"${Buffer.from(`old${i}`).toString('base64')}"}`);
    for (let i = 1; i <= 1000; i++) lines.push(`{"queue":"a","pos":${1_000_000_000 + i},"deadline":1000,"deliveries":0}`);
    const first = httpsqs(['import', '-x', data, '-'], `${lines.join('\n')}\n{"queue":"a","pos`);
    assert.equal(first.status, 1, first.stderr);
    assert.match(first.stderr, /not JSON/);
    const second = httpsqs(
      ['import', '-x', data, '-'],
      '{"format":"httpsqs-export","version":1}\n{"queue":"a","maxqueue":1000000,"putpos":1,"getpos":0}\n{"queue":"a","pos":1,"data":"bmV3"}\n',
    );
    assert.equal(second.status, 0, second.stderr);
    const store = await LmdbStore.open({ path: data });
    try {
      assert.deepEqual(await store.status('a'), { putpos: 1, getpos: 0, maxqueue: 1_000_000, leased: 0, delayed: 0, dead: 0 });
      assert.deepEqual(await store.leases('a'), []);
      assert.equal(await store.view('a', 1_000_000_001), null);
    } finally {
      await store.close();
      cleanup(dir);
    }
  });

  it('an export cut short, one whose end line disagrees, and empty input are refused; a version 1 export is read with a warning', async () => {
    const dir = tempDir('httpsqs-whole-');
    const server = await startServer({ dir: join(dir, 'a') });
    try {
      for (const q of ['q1', 'q2', 'q3']) for (let i = 1; i <= 3; i++) await request(server.port, 'GET', `/?name=${q}&opt=put&data=${q}-${i}`);
    } finally {
      await server.stop();
    }
    const exported = httpsqs(['export', '-x', join(dir, 'a')]);
    assert.equal(exported.status, 0, exported.stderr);
    const lines = exported.stdout.split('\n').slice(0, -1);
    assert.equal(lines[0], '{"format":"httpsqs-export","version":2}');
    assert.equal(lines.at(-1), '{"end":true,"queues":3,"messages":9}');
    const whole = httpsqs(['import', '-x', join(dir, 'whole'), '-'], exported.stdout);
    assert.equal(whole.status, 0, whole.stderr);
    assert.equal(whole.stderr, 'imported 3 queues, 9 messages\n');
    // Cut in the middle of the second queue, as a killed export leaves it: refused, exit 1.
    const cut = httpsqs(['import', '-x', join(dir, 'cut'), '-'], `${lines.slice(0, 7).join('\n')}\n`);
    assert.equal(cut.status, 1, cut.stderr);
    assert.match(
      cut.stderr,
      /^httpsqs: import: the input ends at line 7, before the export's end line: it was cut off .*the last queue \("q2"\) may be incomplete/,
    );
    // The end line's counts must match what came before it, and nothing may follow it.
    const fewer = [...lines.slice(0, 5), ...lines.slice(9)].join('\n');
    const counted = httpsqs(['import', '-x', join(dir, 'counted'), '-'], `${fewer}\n`);
    assert.equal(counted.status, 1, counted.stderr);
    assert.match(
      counted.stderr,
      /line 10: the export's end line counts 3 queues and 9 messages, but 2 queues and 6 messages came before it: the input is not the export as it was written\. The import stopped there: the 1 queue\(s\) before it were written, and the last \("q3"\) may be incomplete/,
    );
    const more = httpsqs(['import', '-x', join(dir, 'more'), '-'], `${exported.stdout}{"queue":"q9","maxqueue":10,"putpos":0,"getpos":0}\n`);
    assert.equal(more.status, 1, more.stderr);
    assert.match(more.stderr, /line 15: more after the export's end line/);
    // Nothing at all (the export of a mistyped -x in a pipeline), for an export and a tcbmgr dump.
    for (const args of [['/dev/null'], ['-'], ['--from-tcbmgr', '/dev/null']]) {
      const empty = httpsqs(['import', '-x', join(dir, 'empty'), ...args], '');
      assert.equal(empty.status, 1, `${args}: ${empty.stderr}`);
      assert.match(empty.stderr, /^httpsqs: import: the input is empty: nothing to import/);
      assert.ok(!existsSync(join(dir, 'empty')));
    }
    // Version 1 (no end line) is still read, with a warning that it could not be checked.
    const v1 = [lines[0]!.replace('"version":2', '"version":1'), ...lines.slice(1, -1)].join('\n');
    const old = httpsqs(['import', '-x', join(dir, 'v1'), '-'], `${v1}\n`);
    assert.equal(old.status, 0, old.stderr);
    assert.equal(old.stderr, 'imported 3 queues, 9 messages\nwarning: a version 1 export has no end line, so whether it was complete could not be checked\n');
    cleanup(dir);
  });

  it('a lease whose deliveries or deadline no store can hold is refused as a data error naming its line, on LMDB and the journal', () => {
    const dir = tempDir('httpsqs-lease-');
    const head = '{"format":"httpsqs-export","version":1}\n{"queue":"q","maxqueue":10,"putpos":1,"getpos":0}\n{"queue":"q","pos":1,"data":"AA=="}\n';
    const cases: Array<[string, RegExp]> = [
      ['"deadline":1000,"deliveries":1e10', /^httpsqs: import: line 4: deliveries: expected a whole number from 0 to 4294967295, got 10000000000\n$/],
      ['"deadline":1000,"deliveries":4294967296', /^httpsqs: import: line 4: deliveries: expected a whole number from 0 to 4294967295, got 4294967296\n$/],
      ['"deadline":1e300,"deliveries":1', /^httpsqs: import: line 4: deadline: expected a whole number from 0 to 9007199254740991, got 1e\+300\n$/],
      [
        '"deadline":9007199254740992,"deliveries":1',
        /^httpsqs: import: line 4: deadline: expected a whole number from 0 to 9007199254740991, got 9007199254740992\n$/,
      ],
    ];
    for (const [i, [fields, refusal]] of cases.entries()) {
      for (const engine of ['lmdb', 'journal']) {
        const r = httpsqs(['import', '-x', join(dir, `${engine}${i}`), '--engine', engine, '-'], `${head}{"queue":"q","pos":1,${fields}}\n`);
        assert.equal(r.status, 1, `${engine} ${fields}: ${r.stderr}`);
        assert.match(r.stderr, refusal, `${engine} ${fields}`);
      }
    }
    // The largest of each is taken.
    for (const engine of ['lmdb', 'journal']) {
      const r = httpsqs(
        ['import', '-x', join(dir, `${engine}-max`), '--engine', engine, '-'],
        `${head}{"queue":"q","pos":1,"deadline":9007199254740991,"deliveries":4294967295}\n`,
      );
      assert.equal(r.status, 0, `${engine}: ${r.stderr}`);
    }
    cleanup(dir);
  });

  it("a dead letter's lease without its message is refused, naming the queue and position; with it, it imports", () => {
    const dir = tempDir('httpsqs-dead-');
    const head = '{"format":"httpsqs-export","version":1}\n{"queue":"q","maxqueue":10,"putpos":1,"getpos":1,"maxdeliveries":1}\n';
    const dead = `{"queue":"q","pos":1000000001,"deadline":${2 ** 50 + 1_700_000_000_000},"deliveries":1}\n`;
    for (const engine of ['lmdb', 'journal']) {
      const missing = httpsqs(['import', '-x', join(dir, `${engine}-missing`), '--engine', engine, '-'], `${head}${dead}`);
      assert.equal(missing.status, 1, `${engine}: ${missing.stderr}`);
      assert.match(missing.stderr, /queue "q": the dead letter at position 1000000001 has no message there/, engine);
      const whole = httpsqs(
        ['import', '-x', join(dir, `${engine}-whole`), '--engine', engine, '-'],
        `${head}{"queue":"q","pos":1000000001,"data":"cG9pc29u"}\n${dead}`,
      );
      assert.equal(whole.status, 0, `${engine}: ${whole.stderr}`);
    }
    cleanup(dir);
  });

  it('export --prefix takes a prefix that is not ASCII', () => {
    const dir = tempDir('httpsqs-prefix-');
    const input = [
      '{"format":"httpsqs-export","version":1}',
      ...['café-orders', 'cafe', 'cafés'].map((q) => `{"queue":"${q}","maxqueue":10,"putpos":1,"getpos":0}`),
    ].join('\n');
    assert.equal(httpsqs(['import', '-x', join(dir, 'd'), '-'], input).status, 0);
    const r = httpsqs(['export', '-x', join(dir, 'd'), '--prefix', 'café']);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(
      r.stdout
        .trim()
        .split('\n')
        .slice(1, -1)
        .map((l) => JSON.parse(l).queue),
      ['café-orders', 'cafés'],
    );
    cleanup(dir);
  });

  it('imports a message of several MiB', async () => {
    const dir = tempDir('httpsqs-big-');
    const big = Buffer.alloc(8 * 2 ** 20, 0xcd);
    const input = `{"format":"httpsqs-export","version":1}\n{"queue":"q","maxqueue":10,"putpos":1,"getpos":0}\n{"queue":"q","pos":1,"data":"${big.toString('base64')}"}\n`;
    const r = httpsqs(['import', '-x', join(dir, 'd'), '-'], input);
    assert.equal(r.status, 0, r.stderr);
    try {
      await getsFirst(join(dir, 'd'), 'q', big);
    } finally {
      cleanup(dir);
    }
  });

  it('a line longer than the limit is refused with its number before it is read whole, for an export and a tcbmgr dump', async () => {
    const dir = tempDir('httpsqs-bad-');
    // The default, 64 MiB: the line of a 48 MiB message (more than the server takes by default).
    const mib = Buffer.alloc(2 ** 20, 'A');
    function* huge() {
      yield '{"format":"httpsqs-export","version":1}\n{"queue":"q","maxqueue":10,"putpos":1,"getpos":0}\n{"queue":"q","pos":1,"data":"';
      for (let i = 0; i < 65; i++) yield mib;
      yield '"}\n';
    }
    const started = Date.now();
    const big = await importFrom(['-x', join(dir, 'd')], huge());
    assert.equal(big.status, 1, big.stderr);
    assert.equal(big.stderr, 'httpsqs: import: line 3: longer than 67108864 bytes (--max-line-bytes)\n');
    assert.ok(Date.now() - started < 20_000);
    // --max-line-bytes sets it, and a tcbmgr dump goes through the same reader.
    const lines = '{"format":"httpsqs-export","version":1}\n{"queue":"q","maxqueue":10,"putpos":0,"getpos":0}\n';
    const small = httpsqs(['import', '-x', join(dir, 'd'), '--max-line-bytes', '1024', '-'], `${lines}{"queue":"q","pos":1,"data":"${'A'.repeat(1020)}"}\n`);
    assert.equal(small.status, 1, small.stderr);
    assert.match(small.stderr, /^httpsqs: import: line 3: longer than 1024 bytes \(--max-line-bytes\)\n$/);
    const tc = httpsqs(
      ['import', '-x', join(dir, 'd'), '--max-line-bytes', '1024', '--from-tcbmgr', '-'],
      `71 3a 70 75 74 70 6f 73\t31\n71 3a 31\t${'41 '.repeat(400)}41\n`,
    );
    assert.equal(tc.status, 1, tc.stderr);
    assert.match(tc.stderr, /^httpsqs: import: line 2: longer than 1024 bytes \(--max-line-bytes\)\n$/);
    cleanup(dir);
  });

  it('a long line that is not shaped like a message line is refused before it is parsed', () => {
    const dir = tempDir('httpsqs-bad-');
    const head = '{"format":"httpsqs-export","version":1}\n{"queue":"q","maxqueue":10,"putpos":1,"getpos":0}\n';
    const refusal = /^httpsqs: import: line 3: a line of \d+ characters that is not a message's: only a message's data may make a line longer than 8192\n$/;
    for (const line of [
      `[${'{},'.repeat(2 ** 20)}{}]`,
      `{"queue":"q","pos":1,"data":"AA==","pad":"${'x'.repeat(20_000)}"}`,
      `{"queue":"q","pos":1,"pad":"${'x'.repeat(20_000)}","data":"AA=="}`,
    ]) {
      const r = httpsqs(['import', '-x', join(dir, 'd'), '-'], `${head}${line}\n`);
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, refusal, line.slice(0, 40));
    }
    // A long message line is read.
    const ok = httpsqs(['import', '-x', join(dir, 'd'), '-'], `${head}{"queue" : "q", "pos":1, "data": "${'QUFB'.repeat(10_000)}"}\n`);
    assert.equal(ok.status, 0, ok.stderr);
    cleanup(dir);
  });

  it('the first line must be the export header; a blank one too is refused', () => {
    const dir = tempDir('httpsqs-bad-');
    const r = httpsqs(['import', '-x', join(dir, 'd'), '-'], '\n{"queue":"q","maxqueue":10,"putpos":0,"getpos":0}\n');
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /^httpsqs: import: line 1: not an httpsqs export \(version 1 or 2\)/);
    // The directory it would have made is not left behind, empty; one that was there stays.
    assert.ok(!existsSync(join(dir, 'd')));
    mkdirSync(join(dir, 'kept'));
    assert.equal(httpsqs(['import', '-x', join(dir, 'kept'), '-'], 'hello\n').status, 1);
    assert.ok(existsSync(join(dir, 'kept')));
    cleanup(dir);
  });

  it('refuses input that is not an export, with the line it stopped at', () => {
    const dir = tempDir('httpsqs-bad-');
    const r = httpsqs(['import', '-x', join(dir, 'd'), '-'], '{"format":"httpsqs-export","version":1}\n{"queue":"q","pos":"x","data":"AA=="}\n');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /line 2: pos: expected a whole number/);
    assert.equal(httpsqs(['import', '-x', join(dir, 'd'), '-'], 'hello\n').status, 1);
    // A name the server could never be asked for is refused, not stored out of reach.
    const long = httpsqs(
      ['import', '-x', join(dir, 'd'), '-'],
      `{"format":"httpsqs-export","version":1}\n{"queue":"${'n'.repeat(257)}","maxqueue":10,"putpos":0,"getpos":0}\n`,
    );
    assert.equal(long.status, 1);
    assert.match(long.stderr, /a queue name of 257 bytes: the server takes at most 256/);
    // A queue64 that is not base64 is refused, as data that is not is.
    for (const q64 of ['@@@', 'YQ', 'Y Q==', 'YQ==YQ==']) {
      const r = httpsqs(
        ['import', '-x', join(dir, 'q64'), '-'],
        `{"format":"httpsqs-export","version":1}\n{"queue64":"${q64}","maxqueue":10,"putpos":0,"getpos":0}\n`,
      );
      assert.deepEqual([r.status, r.stderr], [1, 'httpsqs: import: line 2: queue64 must be base64 text\n'], q64);
    }
    const q64 = httpsqs(
      ['import', '-x', join(dir, 'q64'), '-'],
      '{"format":"httpsqs-export","version":1}\n{"queue64":"/w==","maxqueue":10,"putpos":0,"getpos":0}\n',
    );
    assert.equal(q64.status, 0, q64.stderr);
    // JSON that is no object, and a file that cannot be read: one line each, no stack trace.
    for (const [i, v] of ['null', '[]', '5', '"q"'].entries()) {
      const r = httpsqs(['import', '-x', join(dir, `v${i}`), '-'], `{"format":"httpsqs-export","version":1}\n${v}\n`);
      assert.deepEqual([r.status, r.stderr], [1, 'httpsqs: import: line 2: not a JSON object\n'], v);
    }
    const folder = httpsqs(['import', '-x', join(dir, 'e'), dir]);
    assert.equal(folder.status, 1);
    assert.match(folder.stderr, /^httpsqs: import: cannot read .*: EISDIR[^\n]*\n$/);
    cleanup(dir);
  });
});
