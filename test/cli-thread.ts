/**
 * A thread that runs httpsqs-cli command lines (`runCli`) for `cliClient` in helpers.ts, one at a
 * time, as the process would: its own standard input, output and environment for each. The test
 * blocks until the answer is posted (as it did on a process of its own), while this thread runs.
 */
import { Readable, Writable } from 'node:stream';
import { EventEmitter } from 'node:events';
import { type MessagePort, parentPort, workerData } from 'node:worker_threads';
import { runCli } from '../src/client/commands.js';

export interface CliJob {
  args: string[];
  input: string;
  env: Record<string, string | undefined>;
}
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A stream that keeps what is written to it, not a terminal. */
function collector(): { stream: Writable; text: () => string } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      chunks.push(chunk);
      done();
    },
  });
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}

const { port, flag } = workerData as { port: MessagePort; flag: Int32Array };
parentPort!.on('message', async (job: CliJob) => {
  const stdout = collector();
  const stderr = collector();
  let result: CliResult;
  try {
    const code = await runCli(job.args, {
      stdout: stdout.stream,
      stderr: stderr.stream,
      stdin: Readable.from([Buffer.from(job.input)]),
      env: job.env,
      signals: new EventEmitter(),
    });
    result = { code, stdout: stdout.text(), stderr: stderr.text() };
  } catch (err) {
    // A bug: the command would print the stack and exit with 1.
    result = { code: 1, stdout: stdout.text(), stderr: `${stderr.text()}${(err as Error).stack ?? err}\n` };
  }
  port.postMessage(result);
  Atomics.store(flag, 0, 1);
  Atomics.notify(flag, 0);
});
