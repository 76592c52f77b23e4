/**
 * A benchmark peer: the least a Node.js server can do for bench/abuse. It serves the narinfo files
 * of a directory from memory on bare node:http and refuses everything else as our server refuses
 * a request it will not read (closeAfterAnswer, then a JSON error), so what it costs under the
 * hostile load is Node's own share: accepting, parsing and closing connections on one thread.
 *
 *   node dist/bench/bareNode.js ROOT PORT
 */
import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { QuorumError } from '../src/errors.js';
import { closeAfterAnswer } from '../src/http/body.js';
import { sendError } from '../src/http/errors.js';

const [root, port] = process.argv.slice(2);
if (!root || !port) throw new Error('usage: bareNode.js ROOT PORT');
const files = new Map(readdirSync(root).map((name) => [`/${name}`, readFileSync(join(root, name))]));

createServer((req, res) => {
  const body = req.method === 'GET' ? files.get(req.url ?? '') : undefined;
  if (body) {
    res.writeHead(200, { 'content-type': 'text/x-nix-narinfo', 'content-length': body.length });
    res.end(body);
  } else if (req.url === '/healthz') {
    res.end('ok\n');
  } else {
    closeAfterAnswer(req, res);
    sendError(res, new QuorumError('not-found', 'no such file', { field: 'path' }));
  }
}).listen(Number(port), '127.0.0.1');
