#!/usr/bin/env node
/**
 * `httpsqs-cli`: everyday work with a queue server from a shell (the commands: commands.ts).
 */
import { runCli } from './commands.js';

process.stdout.on('error', () => {}); // a reader that went away: the write that meets it reports it
process.exitCode = await runCli(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  stdin: process.stdin,
  env: process.env,
  signals: process,
});
