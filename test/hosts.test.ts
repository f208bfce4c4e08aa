/**
 * DNS rebinding: a web page whose host name resolves to 127.0.0.1 makes a local browser send
 * requests with that name in `Host`. The dashboard answers only IP literals, `localhost` and the
 * names given with --allowed-hosts; queue operations answer any Host, as old clients need (the
 * password is what protects them). The server runs in this process, on a real port.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createHttpsqsServer, type HttpsqsServer } from '../src/server/server.js';
import { LmdbStore } from '../src/store/lmdb/store.js';
import { cleanup, rawExchange, parseResponse, tempDir } from './helpers.js';

describe('the Host rule', () => {
  const dir = tempDir();
  let store: LmdbStore;
  let app: HttpsqsServer;
  let port: number;
  before(async () => {
    store = await LmdbStore.open({ path: dir });
    app = createHttpsqsServer(store, {
      keepAliveTimeout: 60,
      maxMessageBytes: 1024,
      allowedHosts: ['queues.internal'],
      facts: () => ({ version: '0', started: 0, store: 'LMDB', durability: 'durable', workers: 1 }),
    });
    await new Promise<void>((r) => app.server.listen(0, '127.0.0.1', r));
    port = (app.server.address() as AddressInfo).port;
  });
  after(async () => {
    await app.close();
    await store.close();
    cleanup(dir);
  });

  /** The status and body of a GET of `target` with this Host line (none when undefined). */
  const get = async (target: string, host: string | undefined) => {
    const raw = await rawExchange(port, `GET ${target} HTTP/1.1\r\n${host === undefined ? '' : `Host: ${host}\r\n`}Connection: close\r\n\r\n`);
    const { res } = parseResponse(raw)!;
    return { status: res.status, body: res.body.toString() };
  };

  it('the dashboard and its API refuse a host name that is not allowed', async () => {
    for (const host of ['evil.example', `evil.example:${port}`, 'localhost.evil.example', '127.0.0.1.nip.io', 'Evil.Example.']) {
      for (const path of ['/dashboard', '/dashboard/info', '/dashboard/history']) {
        const r = await get(path, host);
        assert.equal(r.status, 403, `${path} with Host ${host}`);
        assert.match(r.body, /--allowed-hosts/);
      }
    }
  });

  it('IP literals, localhost, no Host at all and the names given are served', async () => {
    for (const host of [
      `127.0.0.1:${port}`,
      '127.0.0.1',
      `localhost:${port}`,
      'LocalHost',
      `[::1]:${port}`,
      '[::1]',
      '10.1.2.3',
      'queues.internal',
      `QUEUES.internal:${port}`,
      undefined,
    ]) {
      assert.equal((await get('/dashboard', host)).status, 200, `Host ${host}`);
      assert.equal((await get('/dashboard/info', host)).status, 200, `Host ${host}`);
      assert.equal((await get('/dashboard/history', host)).status, 200, `Host ${host}`);
    }
  });

  it('queue operations answer whatever the Host', async () => {
    for (const host of ['evil.example', '', 'a b']) {
      assert.equal((await get('/?name=h&opt=put&data=x', host)).body, 'HTTPSQS_PUT_OK', `Host ${JSON.stringify(host)}`);
      assert.equal((await get('/?name=h&opt=get', host)).body, 'x');
    }
  });
});
