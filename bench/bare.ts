/**
 * The ceiling: a bare node:http server answering a constant string with the same headers as
 * httpsqs. No Node server on this machine can be faster than this one.
 */
import http from 'node:http';

const port = Number(process.argv[2]);
const body = 'HTTPSQS_PUT_OK';
http
  .createServer((_req, res) => {
    res.writeHead(200, ['Content-Type', 'text/plain', 'Content-Length', String(body.length), 'Connection', 'keep-alive', 'Cache-Control', 'no-cache']);
    res.end(body);
  })
  .listen(port, '127.0.0.1');
process.on('SIGTERM', () => process.exit());
