/** Errors of the client. Catch `HttpsqsError` for all of them. */

/** A queue name for a message: text quoted, bytes (a name in another charset) in hex. */
const shown = (queue: string | Uint8Array) => (typeof queue === 'string' ? JSON.stringify(queue) : `0x${Buffer.from(queue).toString('hex')}`);

export class HttpsqsError extends Error {
  override name = 'HttpsqsError';
}

/** The queue is full (`HTTPSQS_PUT_END`): nothing was stored. Retry later, or raise maxqueue. */
export class QueueFullError extends HttpsqsError {
  override name = 'QueueFullError';
  constructor(readonly queue: string | Uint8Array) {
    super(`queue ${shown(queue)} is full`);
  }
}

/** The server wants another password (`HTTPSQS_AUTH_FAILED`, or HTTP 401). */
export class AuthError extends HttpsqsError {
  override name = 'AuthError';
}

/** The server refused the request (`HTTPSQS_ERROR`, `HTTPSQS_PUT_ERROR`, an HTTP error) or gave
 * an answer this client does not understand. `reply` is what it said. */
export class ProtocolError extends HttpsqsError {
  override name = 'ProtocolError';
  constructor(
    message: string,
    readonly reply: string,
    readonly status = 200,
  ) {
    super(message);
  }
}

/** The request did not get an answer: connection refused or lost, timeout. `cause` says which. */
export class NetworkError extends HttpsqsError {
  override name = 'NetworkError';
}

/** consume(): a message's lease ended before it was settled (it ran out between extensions, or
 * the message was given back or the queue reset meanwhile). The message may be, or have been,
 * delivered to another consumer: its work can happen twice. Passed to `onError`. */
export class LeaseLostError extends HttpsqsError {
  override name = 'LeaseLostError';
  constructor(
    readonly queue: string | Uint8Array,
    readonly pos: number,
  ) {
    super(`the lease of message ${pos} of queue ${shown(queue)} ended before it was settled: it may be delivered again`);
  }
}
