/** Query parsing, the two decodings and C atoi (docs/PROTOCOL.md sections 1 and 6). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { atoi, decodeBytes, decodeComponent, parseQuery } from '../src/protocol/query.js';

describe('query parsing', () => {
  it('matches names case-insensitively, first occurrence wins, ignores the path and #fragment', () => {
    const p = parseQuery('/a/b?NAME=q&name=other&Opt=put&data=x#opt=get');
    assert.equal(p.name, 'q');
    assert.equal(p.opt, 'put');
    assert.equal(p.data, 'x');
  });

  it('a ? inside the #fragment starts no query', () => {
    assert.deepEqual(parseQuery('/#x?name=q&opt=put&data=frag'), {});
    assert.deepEqual(parseQuery('/#?name=q&opt=status_json'), {});
    assert.equal(parseQuery('/?name=q#x?opt=get').name, 'q');
    assert.equal(parseQuery('/?name=q#x?opt=get').opt, undefined);
  });

  it('keeps an empty value and skips pieces without =', () => {
    const p = parseQuery('/?junk&name=&&opt=get&');
    assert.equal(p.name, '');
    assert.equal(p.opt, 'get');
  });

  it('reads a query of many pieces without `=` once: one search for `=`, not one a piece', () => {
    // 1 MiB of `&` took 5 s, holding the event loop (a server with a raised --max-header-bytes).
    const target = `/?${'&'.repeat(2 ** 20)}name=q&opt=get&${'x&'.repeat(2 ** 18)}`;
    const indexOf = String.prototype.indexOf;
    let searches = 0;
    String.prototype.indexOf = function (this: string, search: string, from?: number) {
      if (search === '=' && this === target) searches++;
      return indexOf.call(this, search, from);
    };
    let p: ReturnType<typeof parseQuery>;
    try {
      p = parseQuery(target);
    } finally {
      String.prototype.indexOf = indexOf;
    }
    assert.deepEqual(p, { name: 'q', opt: 'get' });
    assert.ok(searches <= 3, `${searches} searches for '='`);
  });

  it('finds the same parameters as splitting the query on & and =', () => {
    const piece = fc.stringMatching(/^[a-z=&#?]{0,6}$/);
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 12 }), (pieces) => {
        const target = `/?${pieces.join('&')}`;
        const query = target.slice(2).split('#')[0]!;
        const expected = new Map<string, string>();
        for (const kv of query.split('&')) {
          const eq = kv.indexOf('=');
          if (eq >= 0 && !expected.has(kv.slice(0, eq))) expected.set(kv.slice(0, eq), kv.slice(eq + 1));
        }
        const p = parseQuery(target);
        const got = new Map<string, string>(p.extra);
        for (const k of ['name', 'opt', 'data', 'pos', 'num', 'auth', 'charset'] as const) if (p[k] !== undefined) got.set(k, p[k]!);
        assert.deepEqual(got, expected);
      }),
    );
  });

  it('returns nothing for a target without a query', () => {
    assert.deepEqual(parseQuery('/'), {});
  });

  it('collects unknown parameters for extensions', () => {
    assert.equal(parseQuery('/?name=q&opt=get&wait=5').extra?.get('wait'), '5');
  });

  it('decodes percent escapes and + and leaves malformed % alone', () => {
    assert.equal(decodeComponent('a+b%20c%2Bd%'), 'a b c+d%');
    assert.equal(decodeComponent('%zz%4'), '%zz%4');
    assert.equal(decodeComponent('%E4%B8%AD'), '\xe4\xb8\xad');
    assert.equal(decodeComponent('plain'), 'plain');
  });

  it('decodes bodies as bytes, keeping NUL and high bytes', () => {
    assert.deepEqual(decodeBytes(Buffer.from('a%00b%FF+%')), Buffer.from([0x61, 0, 0x62, 0xff, 0x20, 0x25]));
    const raw = Buffer.from([0, 1, 2, 255]);
    assert.equal(decodeBytes(raw), raw); // nothing to decode: no copy
  });

  it('decodes bodies as bytes exactly as it decodes byte strings, wherever the first % or + is', () => {
    const piece = fc.constantFrom('%', '+', '%2B', '%zz', '%4', 'a', '\x00', '\xff', '%e4', '%B8');
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 12 }), (pieces) => {
        const s = pieces.join('');
        assert.deepEqual(decodeBytes(Buffer.from(s, 'latin1')), Buffer.from(decodeComponent(s), 'latin1'));
      }),
      { numRuns: 2000 },
    );
  });

  it('reads numbers like C atoi', () => {
    assert.equal(atoi('25xyz'), 25);
    assert.equal(atoi('abc'), 0);
    assert.equal(atoi('1e3'), 1);
    assert.equal(atoi('  -7'), -7);
    assert.equal(atoi('+8'), 8);
    assert.equal(atoi(undefined), 0);
    assert.ok(atoi('99999999999999999999999') > 1e9); // saturates, never wraps into range
  });
});
