/**
 * The JSON replies of batches (`mget`, `view&num`): an array of objects, each ending with the
 * message as `"data"`, in UTF-8 or base64. A small reply is built at once; a large one is streamed
 * in pieces as the client reads it, so that neither a string nor a buffer of the whole reply is
 * ever made (a reply of 32 MiB of NUL bytes is 192 MiB of `\u0000`, more than a JS string holds,
 * and a client that does not read must not hold it in memory).
 */
import { StringDecoder } from 'node:string_decoder';
import type { Streamed } from './http.js';

export type Encoding = 'utf8' | 'base64';

export interface BatchItem {
  /** The object's fields before `"data"`, e.g. `"pos":1,"deliveries":1`. */
  fields: string;
  message: Buffer;
}

/** Replies with fewer message bytes than this are built in one piece. */
export const SMALL = 256 * 1024;
/** Message bytes encoded per piece: a multiple of 3, so that base64 pieces join up, and small
 * enough that a piece's string dies young (V8's new space) rather than in the large-object space. */
export const PIECE = 3 * 16 * 1024;

/** A message as a JSON string (with its quotes), piece by piece. A piece ends on a whole UTF-8
 * character (StringDecoder keeps a split one for the next), so the pieces join into exactly what
 * `JSON.stringify(message.toString('utf8'))` gives. */
function* encoded(message: Buffer, enc: Encoding): Generator<string> {
  yield '"';
  const decoder = enc === 'utf8' ? new StringDecoder('utf8') : undefined;
  for (let at = 0; at < message.length; at += PIECE) {
    const part = message.subarray(at, at + PIECE);
    yield decoder ? JSON.stringify(decoder.write(part)).slice(1, -1) : part.toString('base64');
  }
  if (decoder) yield JSON.stringify(decoder.end()).slice(1, -1);
  yield '"';
}

function* pieces(items: BatchItem[], enc: Encoding): Generator<string> {
  yield '[';
  for (const [i, item] of items.entries()) {
    yield `${i ? ',' : ''}{${item.fields},"data":`;
    yield* encoded(item.message, enc);
    yield '}';
  }
  yield ']\n';
}

/** The length of a message as a JSON string. Base64 has a formula; UTF-8 is encoded once more to
 * count it (for large replies only, so that they have a Content-Length). */
function encodedLength(message: Buffer, enc: Encoding): number {
  if (enc === 'base64') return 2 + 4 * Math.ceil(message.length / 3);
  let n = 0;
  for (const piece of encoded(message, enc)) n += Buffer.byteLength(piece);
  return n;
}

/** The reply body: a Buffer when small, else a stream of pieces with their length counted first. */
export function batchBody(items: BatchItem[], enc: Encoding): Buffer | Streamed {
  const bytes = items.reduce((n, item) => n + item.message.length, 0);
  if (bytes < SMALL) return Buffer.from([...pieces(items, enc)].join(''));
  let length = '[]\n'.length + Math.max(0, items.length - 1); // and the commas between the objects
  for (const item of items) length += Buffer.byteLength(`{${item.fields},"data":}`) + encodedLength(item.message, enc);
  return {
    length,
    held: bytes,
    *pieces() {
      for (const piece of pieces(items, enc)) yield Buffer.from(piece);
    },
  };
}

/**
 * Whether an `mput` body can be what it must: a JSON array of at most `max` strings. Looked at
 * before `JSON.parse`, which would first build every value of a body of anything else (32 MiB of
 * `[{},{},…]` is eleven million objects: seconds of the event loop, gigabytes of heap).
 */
export function batchShaped(body: Buffer, max: number): boolean {
  let commas = 0;
  let arrays = 0;
  for (let i = 0; i < body.length; i++) {
    const c = body[i];
    if (c === 0x22) {
      // a string: to its closing quote, past escapes
      for (i++; i < body.length && body[i] !== 0x22; i++) if (body[i] === 0x5c) i++;
    } else if (c === 0x2c) {
      if (++commas >= max) return false;
    } else if (c === 0x7b || (c === 0x5b && ++arrays > 1)) return false;
  }
  return true;
}
