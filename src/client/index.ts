/** The TypeScript client: `import { HttpsqsClient } from 'httpsqs/client'`. */
export {
  HttpsqsClient,
  Message,
  type ClientOptions,
  type ConsumeOptions,
  type DeadLetter,
  type GetOptions,
  type PutOptions,
  type QueueName,
  type QueueStatus,
} from './client.js';
export { AuthError, HttpsqsError, LeaseLostError, NetworkError, ProtocolError, QueueFullError } from './errors.js';
