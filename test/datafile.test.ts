/**
 * A damaged data.mdb is refused at start, with a message naming the file and what to do, and is
 * left exactly as it was: cut short, empty, or with a damaged meta page. An intact one, and one
 * whose last pages were never written (LMDB allows that for free pages), still start.
 */
import assert from 'node:assert/strict';
import { cpSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI, cleanup, freePort, request, runCli, startServer, tempDir } from './helpers.js';

/** Offsets in a meta page (lmdb-js 3's LMDB on 64-bit: a 24-byte page header, then MDB_meta). */
const MAGIC = 24;
const PAGE_SIZE = 48;
const LAST_PAGE = 144;
const TXNID = 152;

const metas = (file: string) => {
  const b = readFileSync(file);
  const ps = b.readUInt32LE(PAGE_SIZE);
  return [0, ps].map((off) => ({ off, txnid: b.readBigUInt64LE(off + TXNID) }));
};

/** The end of LMDB's last page (in the newest meta page). The server's file goes on past it: room
 * it took ahead of LMDB, zeros (room.ts). */
const lmdbEnd = (file: string) => {
  const b = readFileSync(file);
  const newest = metas(file).sort((x, y) => (x.txnid > y.txnid ? -1 : 1))[0]!;
  return (Number(b.readBigUInt64LE(newest.off + LAST_PAGE)) + 1) * b.readUInt32LE(PAGE_SIZE);
};

describe('the data file is checked before it is opened', () => {
  let root: string;
  let intact: string;
  let exported: string;
  before(async () => {
    root = tempDir('httpsqs-datafile-');
    intact = join(root, 'intact');
    const server = await startServer({ dir: intact, args: ['--engine', 'lmdb'] });
    for (let i = 1; i <= 300; i++) await request(server.port, 'GET', `/?name=q${i % 3}&opt=put&data=message-${i}-${'x'.repeat(i % 50 === 0 ? 9000 : 200)}`);
    await request(server.port, 'GET', '/?name=q1&opt=get');
    assert.equal(await server.stop(), 0);
    rmSync(join(intact, 'httpsqs.pid'), { force: true });
    const out = await runCli(['export', '-x', intact]);
    assert.equal(out.code, 0, out.stderr);
    exported = out.stdout;
  });
  after(() => cleanup(root));

  /** A copy of the intact directory, damaged by `damage`. */
  const copy = (name: string, damage: (file: string) => void) => {
    const dir = join(root, name);
    cpSync(intact, dir, { recursive: true });
    damage(join(dir, 'data.mdb'));
    return dir;
  };
  const start = async (dir: string) => runCli(['-l', '127.0.0.1', '-p', String(await freePort()), '-x', dir, '-i', join(dir, 'pid')]);

  const cases: Array<[string, (file: string) => void, RegExp]> = [
    ['cut to half of its pages', (f) => truncateSync(f, Math.floor(lmdbEnd(f) / 2)), /is damaged \(cut short: .*\)/],
    ['of 0 bytes', (f) => truncateSync(f, 0), /is empty \(0 bytes\)/],
    ['with a damaged magic in its first meta page', (f) => damageMagic(f, 0), /is damaged \(meta page 0 is not an LMDB meta page: .*magic.*\)/],
    ['with a damaged magic in its second meta page', (f) => damageMagic(f, 1), /is damaged \(meta page 1 is not an LMDB meta page: .*magic.*\)/],
  ];
  for (const [what, damage, why] of cases) {
    it(`a data.mdb ${what} is refused with exit code 1 and left unchanged`, async () => {
      const dir = copy(what.replace(/\W+/g, '-'), damage);
      const file = join(dir, 'data.mdb');
      const before = readFileSync(file);
      const { code, stderr } = await start(dir);
      assert.equal(code, 1, stderr);
      assert.equal(stderr.trim().split('\n').length, 1, stderr);
      assert.ok(stderr.includes(`httpsqs: -x: data file ${file} `), stderr);
      assert.match(stderr, why);
      // It says how to go on: restore a backup, or move the file away.
      assert.match(stderr, /httpsqs import -x .* FILE/);
      assert.match(stderr, /Move it away \(mv .*data\.mdb .*\) to start with an empty database/);
      assert.deepEqual(readFileSync(file), before, 'the file is left as it was');
      // An import is refused the same way; an export reads what it safely can, or says why not.
      const imp = await runCli(['import', '-x', dir, '-']);
      assert.equal(imp.code, 1, imp.stderr);
      assert.ok(imp.stderr.includes(`httpsqs: import: -x: data file ${file} `), imp.stderr);
      await runCli(['export', '-x', dir]);
      assert.deepEqual(readFileSync(file), before, 'export left it as it was too');
    });
  }

  it('export of a file whose older meta page is damaged saves everything, from a repaired copy', async () => {
    const dir = copy('older-meta', (f) => {
      const [m0, m1] = metas(f);
      damageMagic(f, m0!.txnid < m1!.txnid ? 0 : 1);
    });
    const out = await runCli(['export', '-x', dir]);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stderr, /data\.mdb is damaged .*: exporting its last intact transaction/);
    assert.equal(out.stdout, exported);
  });

  it('an intact data.mdb starts and keeps its data; so does one whose last pages were never written', async () => {
    // LMDB counts pages it allocated and freed again within a transaction without writing them,
    // so the file may end before its meta page's last page: raise that by three to get such a file.
    const short = copy('unwritten-tail', (f) => {
      truncateSync(f, lmdbEnd(f));
      const b = readFileSync(f);
      const newest = metas(f).sort((a, b) => (a.txnid > b.txnid ? -1 : 1))[0]!;
      b.writeBigUInt64LE(b.readBigUInt64LE(newest.off + LAST_PAGE) + 3n, newest.off + LAST_PAGE);
      writeFileSync(f, b);
    });
    for (const dir of [intact, short]) {
      const server = await startServer({ dir });
      try {
        const status = JSON.parse((await request(server.port, 'GET', '/?name=q1&opt=status_json')).body.toString());
        assert.deepEqual([status.putpos, status.getpos], [100, 1]);
        assert.match((await request(server.port, 'GET', '/?name=q1&opt=get')).body.toString(), /^message-4-x+$/);
        const big = (await request(server.port, 'GET', '/?name=q2&opt=view&pos=67')).body.toString();
        assert.ok(big === `message-200-${'x'.repeat(9000)}`, 'a message on overflow pages comes back whole');
      } finally {
        assert.equal(await server.stop(), 0);
      }
    }
  });

  it('a worker killed by a signal during start-up: the master names the signal', async () => {
    const dir = tempDir();
    const port = await freePort();
    const { spawnSync } = await import('node:child_process');
    const kill = 'import c from "node:cluster"; if (c.isWorker) process.kill(process.pid, "SIGBUS")';
    const run = spawnSync(
      process.execPath,
      ['--import', `data:text/javascript,${encodeURIComponent(kill)}`, CLI, '-l', '127.0.0.1', '-p', String(port), '-x', dir, '-i', join(dir, 'pid')],
      { encoding: 'utf8', timeout: 10_000 },
    );
    assert.equal(run.status, 1, run.stderr);
    assert.equal(run.stderr, 'httpsqs: worker killed by SIGBUS during start-up\n');
    cleanup(dir);
  });
});

/** Overwrites the magic number of meta page `slot` (0 or 1). */
function damageMagic(file: string, slot: number): void {
  const b = readFileSync(file);
  const off = slot * b.readUInt32LE(PAGE_SIZE);
  b.writeUInt32LE(0x0badf00d, off + MAGIC);
  writeFileSync(file, b);
}
