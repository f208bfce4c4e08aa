/**
 * Bad input gets a clear answer, the server keeps running, and nothing stored is disturbed.
 * Every test ends by checking that the queue still holds exactly what it held.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { cleanup, parseResponse, rawExchange, request, startInProcess, type InProcessServer } from './helpers.js';

describe('bad input', () => {
  let server: InProcessServer;
  const LIMIT = 4096;
  const ask = (target: string, opts?: Parameters<typeof request>[3]) => request(server.port, 'GET', target, opts);
  const text = async (target: string) => (await ask(target)).body.toString('latin1');

  before(async () => {
    server = await startInProcess({ args: ['--max-message-bytes', String(LIMIT)] });
    assert.equal(await text('/?name=keep&opt=put&data=precious'), 'HTTPSQS_PUT_OK');
  });
  after(async () => {
    // Whatever came before, the stored message is intact and the server still answers.
    assert.equal(await text('/?name=keep&opt=view&pos=1'), 'precious');
    await server.stop(); // cleanly: it would throw otherwise
    cleanup(server.dir);
  });

  it('malformed percent-encoding is kept literally, as the reference does', async () => {
    assert.equal(await text('/?name=%zz&opt=put&data=%%41%4'), 'HTTPSQS_PUT_OK');
    assert.equal(await text('/?name=%zz&opt=get'), '%A%4');
    const post = await request(server.port, 'POST', '/?name=pct&opt=put', { body: '%G0%' });
    assert.equal(post.body.toString(), 'HTTPSQS_PUT_OK');
    assert.equal(await text('/?name=pct&opt=get'), '%G0%');
    assert.equal(await text('/?name=%&opt=status_json'), '{"name":"%","maxqueue":1000000,"putpos":0,"putlap":1,"getpos":0,"getlap":1,"unread":0}\n');
  });

  it('names over 256 bytes (after decoding) are an error; 256 are fine', async () => {
    assert.equal(await text(`/?name=${'%41'.repeat(257)}&opt=put&data=x`), 'HTTPSQS_ERROR');
    assert.equal(await text(`/?name=${'%41'.repeat(256)}&opt=put&data=x`), 'HTTPSQS_PUT_OK');
  });

  it('an mput body of anything but strings, or of more than a batch, is refused before it is parsed', async () => {
    const parse = JSON.parse;
    let parsed = 0;
    JSON.parse = (...args: Parameters<typeof JSON.parse>) => (parsed++, parse(...args));
    try {
      for (const body of [`[${'{},'.repeat(1000)}{}]`, `[${'"x",'.repeat(1000)}"x"]`, '[["x"]]']) {
        const r = await request(server.port, 'POST', '/?name=bomb&opt=mput', { body });
        assert.equal(r.body.toString(), 'HTTPSQS_PUT_ERROR');
      }
      assert.equal(parsed, 0);
      assert.match((await request(server.port, 'POST', '/?name=bomb&opt=mput', { body: '["x"]' })).body.toString(), /"count":1/);
      assert.equal(parsed, 1);
    } finally {
      JSON.parse = parse;
    }
  });

  it('unknown or mis-cased opts are an error', async () => {
    for (const opt of ['nope', 'GET', 'put ', '', 'status_json2']) {
      assert.equal(await text(`/?name=q&opt=${encodeURIComponent(opt)}`), 'HTTPSQS_ERROR', opt);
    }
  });

  it('non-numeric and absurd pos/num are an error and change nothing', async () => {
    for (const pos of ['abc', '', '-1', '0', '1000000001', '99999999999999999999999', '4294967297', 'NaN', '%00']) {
      assert.equal(await text(`/?name=keep&opt=view&pos=${pos}`), 'HTTPSQS_ERROR', `pos=${pos}`);
    }
    for (const num of ['abc', '9', '-10', '1000000001', '99999999999999999999999', '4294967306']) {
      assert.equal(await text(`/?name=keep&opt=maxqueue&num=${num}`), 'HTTPSQS_ERROR', `maxqueue num=${num}`);
      assert.equal(await text(`/?name=keep&opt=synctime&num=${num === '9' ? '0' : num}`), 'HTTPSQS_ERROR', `synctime num=${num}`);
    }
    const status = JSON.parse(await text('/?name=keep&opt=status_json')) as { maxqueue: number };
    assert.equal(status.maxqueue, 1_000_000);
  });

  it('a body over --max-message-bytes gets HTTP 413 with a one-line reason, and the server goes on', async () => {
    const declared = await rawExchange(server.port, `POST /?name=big&opt=put HTTP/1.1\r\nHost: x\r\nContent-Length: ${LIMIT + 1}\r\n\r\n`);
    const res = parseResponse(declared)!.res;
    assert.equal(res.status, 413);
    const reason = res.body.toString();
    assert.match(reason, /^[^\n]*max-message-bytes[^\n]*\n$/);

    // Chunked bodies have no length up front: the limit is enforced while reading.
    const chunk = 'a'.repeat(1000);
    let chunked = 'POST /?name=big&opt=put HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n';
    for (let i = 0; i < 5; i++) chunked += `${chunk.length.toString(16)}\r\n${chunk}\r\n`;
    chunked += '0\r\n\r\n';
    assert.equal(parseResponse(await rawExchange(server.port, chunked))!.res.status, 413);

    // With `Expect: 100-continue` the refusal comes before the client sends the body.
    const expect = await rawExchange(
      server.port,
      `POST /?name=big&opt=put HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: ${LIMIT + 1}\r\n\r\n`,
    );
    assert.match(expect.toString('latin1'), /^HTTP\/1\.1 413 /);

    // Exactly at the limit is accepted.
    const ok = await request(server.port, 'POST', '/?name=big&opt=put', { body: 'b'.repeat(LIMIT) });
    assert.equal(ok.body.toString(), 'HTTPSQS_PUT_OK');
    assert.equal(await text('/?name=big&opt=status_json'), '{"name":"big","maxqueue":1000000,"putpos":1,"putlap":1,"getpos":0,"getlap":1,"unread":1}\n');
  });

  it('unparseable HTTP gets 400 and the connection is closed', async () => {
    for (const garbage of [
      'hello there\r\n\r\n',
      'GET / HTTP/9.9\r\n\r\n',
      'GET /?name=q&opt=get HTTP/1.1\r\nBad Header\r\n\r\n',
      '\x00\x01\x02\xff\r\n\r\n',
    ]) {
      const raw = await rawExchange(server.port, Buffer.from(garbage, 'latin1'));
      assert.match(raw.toString('latin1'), /^HTTP\/1\.1 400 /, JSON.stringify(garbage));
    }
  });

  it('oversized headers get 431, naming the flag; --max-header-bytes lets a big data= message in', async () => {
    const raw = await rawExchange(server.port, `GET /?name=q&opt=get HTTP/1.1\r\nX-Big: ${'x'.repeat(70_000)}\r\n\r\n`);
    assert.match(raw.toString('latin1'), /^HTTP\/1\.1 431 [\s\S]*\r\n\r\nRequest line and headers over the limit of 16384 bytes \(--max-header-bytes\)\n$/);
    const big = 'm'.repeat(40_000);
    assert.match(
      (await rawExchange(server.port, `GET /?name=big&opt=put&data=${big} HTTP/1.1\r\nConnection: close\r\n\r\n`)).toString('latin1'),
      /^HTTP\/1\.1 431 /,
    );
    const roomy = await startInProcess({ args: ['--max-header-bytes', '65536'] });
    try {
      assert.equal((await request(roomy.port, 'GET', `/?name=big&opt=put&data=${big}`)).body.toString(), 'HTTPSQS_PUT_OK');
      assert.equal((await request(roomy.port, 'GET', '/?name=big&opt=get')).body.toString(), big);
    } finally {
      await roomy.stop();
      cleanup(roomy.dir);
    }
  });

  it('methods other than GET, POST, PUT and DELETE get 405 and take nothing', async () => {
    for (const method of ['HEAD', 'OPTIONS', 'PATCH']) {
      const res = await request(server.port, method, '/?name=keep&opt=get');
      assert.equal(res.status, 405, method);
      assert.equal(res.headers.allow, 'GET, POST, PUT, DELETE');
    }
    assert.equal(await text('/?name=keep&opt=status_json'), '{"name":"keep","maxqueue":1000000,"putpos":1,"putlap":1,"getpos":0,"getlap":1,"unread":1}\n');
  });

  it('a reply to HEAD carries headers only, so the next reply on the connection reads right', async () => {
    const raw = await rawExchange(
      server.port,
      'HEAD /?name=keep&opt=view&pos=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /?name=keep&opt=view&pos=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    );
    const first = parseResponse(raw, true)!;
    assert.equal(first.res.status, 405);
    assert.equal(first.res.headers.connection, 'keep-alive');
    assert.ok(Number(first.res.headers['content-length']) > 0);
    const second = parseResponse(first.rest)!;
    assert.equal(second.res.status, 200);
    assert.equal(second.res.body.toString(), 'precious');
    assert.equal(second.rest.length, 0);
  });

  it('an empty name= is a queue like any other, as in the reference', async () => {
    const put = await ask('/?name=&opt=put&data=nameless');
    assert.deepEqual([put.body.toString(), put.headers.pos], ['HTTPSQS_PUT_OK', '1']);
    assert.equal(await text('/?name=&opt=status_json'), '{"name":"","maxqueue":1000000,"putpos":1,"putlap":1,"getpos":0,"getlap":1,"unread":1}\n');
    assert.equal(await text('/?name=&opt=view&pos=1'), 'nameless');
    assert.equal(await text('/?name=&opt=maxqueue&num=10'), 'HTTPSQS_MAXQUEUE_OK');
    assert.equal((JSON.parse(await text('/?opt=list')) as Array<{ name: string }>)[0]?.name, '');
    assert.match(await text('/metrics'), /^httpsqs_queue_unread\{queue=""\} 1$/m);
    assert.equal(await text('/?name=&opt=get'), 'nameless');
    assert.equal(await text('/?name=&opt=reset'), 'HTTPSQS_RESET_OK');
    assert.equal(await text('/?name=&opt=get'), 'HTTPSQS_GET_END');
  });

  it('status_json gives a name in another charset as its bytes, as the reference does; only " \\ and control bytes are escaped', async () => {
    const gbk = await ask('/?name=%C4%E3%BA%C3&opt=status_json'); // 你好 in GBK: not UTF-8
    assert.deepEqual(gbk.body.subarray(0, 13), Buffer.from([...Buffer.from('{"name":"'), 0xc4, 0xe3, 0xba, 0xc3]));
    assert.equal(gbk.body.subarray(13).toString(), '","maxqueue":1000000,"putpos":0,"putlap":1,"getpos":0,"getlap":1,"unread":0}\n');
    assert.equal(
      await text('/?name=a%22b%5Cc%01%E4%BD%A0&opt=status_json'),
      Buffer.from('{"name":"a\\"b\\\\c\\u0001你","maxqueue":1000000,"putpos":0,"putlap":1,"getpos":0,"getlap":1,"unread":0}\n').toString('latin1'),
    );
  });

  it('charset= goes into Content-Type as given, even empty; one with a character no charset name has (a control byte, a comma, a slash) is dropped', async () => {
    const type = async (charset: string) => (await ask(`/?name=keep&opt=status_json&charset=${charset}`)).headers['content-type'];
    assert.equal(await type(''), 'text/plain; charset=');
    assert.equal(await type('ISO_8859-1'), 'text/plain; charset=ISO_8859-1');
    // Registered names with a dot (US-ASCII's own), and the other characters of an HTTP token.
    assert.equal(await type('ANSI_X3.4-1968'), 'text/plain; charset=ANSI_X3.4-1968');
    assert.equal(await type('a*b|c'), 'text/plain; charset=a*b|c');
    assert.equal(await type("x-!%23$%25%26'%2B^_`{}~"), "text/plain; charset=x-!#$%&'+^_`{}~");
    const split = await ask('/?name=keep&opt=status_json&charset=utf-8%0d%0aSet-Cookie:%20a=b');
    assert.equal(split.headers['content-type'], 'text/plain');
    assert.equal(split.headers['set-cookie'], undefined);
    // A second media type, which a browser would take: a stored message would run as a page.
    for (const charset of ['a,text/html', 'a%2Ctext%2Fhtml', 'utf-8;%20x=y', 'x%20y', 'a"b']) assert.equal(await type(charset), 'text/plain', charset);
  });

  it('a client that disconnects mid-body does not disturb the server', async () => {
    const raw = rawExchange(server.port, 'POST /?name=cut&opt=put HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-part', 300).catch(() => null);
    await raw; // our side gives up and closes after 300 ms
    assert.equal(await text('/?name=cut&opt=status_json'), '{"name":"cut","maxqueue":1000000,"putpos":0,"putlap":1,"getpos":0,"getlap":1,"unread":0}\n');
  });
});
