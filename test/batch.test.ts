/** The JSON of batch replies, built at once or streamed in pieces: the same bytes either way. */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import fc from 'fast-check';
import { batchBody, batchShaped, PIECE, SMALL, type BatchItem, type Encoding } from '../src/server/batch.js';

/** The whole body, whichever way it was built. */
function bytesOf(body: ReturnType<typeof batchBody>): Buffer {
  if (Buffer.isBuffer(body)) return body;
  const all = Buffer.concat([...body.pieces()]);
  assert.equal(all.length, body.length, 'the announced length is what is sent');
  return all;
}

/** What one JSON.stringify of the whole reply would give. */
const expected = (items: BatchItem[], enc: Encoding) =>
  Buffer.from(
    `[${items.map((i) => `{${i.fields},"data":${enc === 'base64' ? `"${i.message.toString('base64')}"` : JSON.stringify(i.message.toString('utf8'))}}`).join(',')}]\n`,
  );

// Bytes that make UTF-8 and JSON hard: multi-byte characters, broken ones, controls, quotes.
const tricky = fc
  .uint8Array({ maxLength: 24 })
  .chain((random) =>
    fc
      .shuffledSubarray([0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80, 0xc3, 0xa9, 0x80, 0xff, 0x00, 0x22, 0x5c, 0x0a, 0xed, 0xa0, 0x80])
      .map((t) => Buffer.from([...random, ...t])),
  );

it('a large reply streamed in pieces is byte for byte the one JSON.stringify gives, whatever falls on a piece boundary', () => {
  fc.assert(
    fc.property(
      tricky,
      fc.integer({ min: 0, max: 8 }),
      fc.integer({ min: 1, max: 3 }),
      fc.constantFrom<Encoding>('utf8', 'base64'),
      (bytes, back, laps, enc) => {
        // The tricky bytes straddle a boundary between two pieces.
        const message = Buffer.concat([Buffer.alloc(PIECE * (Math.ceil(SMALL / PIECE) + laps) - back, 'a'), bytes, Buffer.alloc(7, 'z')]);
        const items = [
          { fields: '"pos":1', message },
          { fields: '"pos":2,"deliveries":3', message: bytes },
        ];
        const body = batchBody(items, enc);
        assert.ok(!Buffer.isBuffer(body), 'large replies are streamed');
        assert.ok(bytesOf(body).equals(expected(items, enc)));
      },
    ),
    { numRuns: 150 },
  );
});

it('a small reply is built at once, with the same bytes', () => {
  fc.assert(
    fc.property(fc.array(tricky, { maxLength: 5 }), fc.constantFrom<Encoding>('utf8', 'base64'), (messages, enc) => {
      const items = messages.map((message, i) => ({ fields: `"pos":${i + 1}`, message }));
      const body = batchBody(items, enc);
      assert.ok(Buffer.isBuffer(body));
      assert.ok(body.equals(expected(items, enc)));
    }),
  );
});

it('32 MiB of NUL bytes (192 MiB of JSON) stream in pieces of bounded size', () => {
  const body = batchBody([{ fields: '"pos":1', message: Buffer.alloc(32 * 2 ** 20) }], 'utf8');
  assert.ok(!Buffer.isBuffer(body));
  assert.equal(body.length, 32 * 2 ** 20 * 6 + '[{"pos":1,"data":""}]\n'.length);
  let largest = 0;
  for (const piece of body.pieces()) largest = Math.max(largest, piece.length);
  assert.ok(largest <= 6 * PIECE, `largest piece ${largest} bytes`);
});

it('an mput body is looked at before it is parsed: more than the batch, objects or nested arrays are refused unparsed', () => {
  const strings = (n: number) => JSON.stringify(Array.from({ length: n }, (_, i) => `m${i},{[\\"${i}`));
  assert.equal(batchShaped(Buffer.from(strings(1000)), 1000), true);
  assert.equal(batchShaped(Buffer.from(strings(1001)), 1000), false);
  assert.equal(batchShaped(Buffer.from('["a" , "b\\\\", "c\\"]{,"]'), 1000), true);
  assert.equal(batchShaped(Buffer.from('[]'), 1000), true);
  for (const bad of ['[{}]', '[[]]', '[["a"]]', `[${'{},'.repeat(10)}{}]`, `[${'1,'.repeat(1000)}1]`])
    assert.equal(batchShaped(Buffer.from(bad), 1000), false, bad);
  // Whatever it lets through, JSON.parse takes or refuses as before: it only refuses early.
  fc.assert(
    fc.property(fc.array(fc.string({ unit: 'binary' }), { maxLength: 20 }), (items) => {
      assert.equal(batchShaped(Buffer.from(JSON.stringify(items)), 1000), true);
    }),
  );
});
