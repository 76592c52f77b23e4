import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { QuorumError } from '../errors.js';

/**
 * Reads a request body of at most `limit` bytes, as sent: a declared Content-Length over the limit
 * is refused before a byte is read, a body that grows past it is cut off where it does, and a
 * compressed body is refused outright (inflating it would be work done for whoever sent it).
 */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const encoding = req.headers['content-encoding'];
  if (encoding !== undefined && encoding.toLowerCase() !== 'identity') {
    throw new QuorumError('unsupported-encoding', `Content-Encoding ${JSON.stringify(encoding.slice(0, 40))} is not accepted: send the body uncompressed`, { field: 'Content-Encoding' });
  }
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) throw tooLarge(limit);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (error?: Error) => {
      req.off('data', data).off('end', end).off('error', done);
      if (error) {
        // Stop reading; the answer goes out and the connection is closed after it (jsonErrors).
        req.pause();
        reject(error);
      } else resolve(Buffer.concat(chunks, size));
    };
    const data = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) done(tooLarge(limit));
      else chunks.push(chunk);
    };
    const end = () => done();
    req.on('data', data).once('end', end).once('error', done);
  });
}

function tooLarge(limit: number): QuorumError {
  return new QuorumError('too-large', `the request body is larger than the limit of ${limit} bytes: send fewer attestations per request`, { field: 'body' });
}

/** How long a refused client gets to read the answer before its connection is dropped. */
const LINGER_MS = 2000;

/**
 * At most this many refused connections linger at once. Each holds what its client sent and we did
 * not read, up to its receive buffer (MiBs): a flood of refused uploads, 800 a second lingering 2 s,
 * held about 1 GB of kernel memory here and pushed TCP towards memory pressure for every connection,
 * honest or not. Past the bound the oldest is dropped first, so under a flood each lingers for less.
 */
const MAX_LINGERING = 64;

/** The refused connections waiting out their linger, oldest first (a Set keeps insertion order). */
const lingering = new Set<Socket>();

/**
 * For an answer sent before the request's body was read (a refusal): the connection closes after
 * it, instead of the server reading whatever the client goes on sending (a 1 GB upload, say). The
 * rest of the body is not read; the client gets a FIN after the answer and up to LINGER_MS to read
 * it before the connection is dropped. (Closing at once, as `Connection: close` does, would reset the
 * connection while unread bytes wait, and a client still sending could lose the answer.)
 */
export function closeAfterAnswer(req: IncomingMessage, res: ServerResponse): void {
  // A request already read has nothing left to discard; one whose reading failed (a store that
  // refused the upload tore its stream down) has lost its socket to the response.
  const socket = req.socket as Socket | null;
  if (req.complete || socket === null) return;
  // The client must not send another request on this connection...
  res.setHeader('connection', 'close');
  // ...but Node's way of closing it after such an answer (destroySoon) resets it at once.
  socket.destroySoon = () => {
    // Node resumes an unread request when its answer finishes, to discard the rest: stop that.
    req.pause();
    socket.pause();
    socket.end();
    linger(socket);
  };
}

function linger(socket: Socket): void {
  // A client that reset the connection first has nothing left to linger for.
  if (socket.destroyed) return;
  lingering.add(socket);
  const timer = setTimeout(() => socket.destroy(), LINGER_MS).unref();
  // An evicted socket must not stay reachable (with its request's buffered body) for the rest of its linger.
  socket.once('close', () => {
    clearTimeout(timer);
    lingering.delete(socket);
  });
  for (const oldest of lingering) {
    if (lingering.size <= MAX_LINGERING) break;
    lingering.delete(oldest);
    oldest.destroy();
  }
}
