/**
 * The server's log: one JSON line per event on stderr (pino), written synchronously so that a
 * line is out before the process exits. Start, stop, restarts and errors; never message contents
 * or passwords. Plain-text lines on stderr are kept for start-up errors (`fail`).
 */
import cluster from 'node:cluster';
import { pino } from 'pino';

export const log = pino(
  {
    base: { pid: process.pid, role: cluster.isWorker ? 'worker' : 'master' },
    timestamp: pino.stdTimeFunctions.isoTime,
  },
  pino.destination({ fd: 2, sync: true }),
);
