import { createServer } from 'node:http';
import { once } from 'node:events';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QuorumError } from '../../src/errors.js';
import { closeAfterAnswer } from '../../src/http/body.js';
import { sendError } from '../../src/http/errors.js';

/** A client that promises a 64 MiB body, sends the first 256 KiB and never closes its side. */
interface Refused {
  socket: Socket;
  answer: string;
  /** The server's FIN arrived (the answer is complete). */
  ended: boolean;
  /** The connection is gone (the server reset it): seen on the client's next write. */
  reset: boolean;
}

describe('closeAfterAnswer', () => {
  // As builderGate does: every request is refused after its header, its body unread.
  const server = createServer((req, res) => {
    closeAfterAnswer(req, res);
    sendError(res, new QuorumError('forbidden', 'not a builder', { field: 'Authorization' }));
  });
  let port: number;
  beforeAll(async () => {
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  async function refusedUpload(): Promise<Refused> {
    // Half-open: the client goes on trying to send after the server's FIN, as an uploader would.
    const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const refused: Refused = { socket, answer: '', ended: false, reset: false };
    socket.on('data', (d) => (refused.answer += d));
    socket.on('end', () => (refused.ended = true));
    socket.on('error', () => {});
    socket.on('close', () => (refused.reset = true));
    socket.write(`POST /api/v1/attestations HTTP/1.1\r\nHost: x\r\nContent-Length: ${64 * 1024 * 1024}\r\n\r\n`);
    socket.write(Buffer.alloc(256 * 1024, 7));
    while (!refused.ended && !refused.reset) await new Promise((r) => setTimeout(r, 5));
    return refused;
  }

  it('gives a refused client its whole answer and a FIN, then keeps the connection for it to read (no reset at once)', async () => {
    const client = await refusedUpload();
    expect(client.answer).toMatch(/^HTTP\/1\.1 403 /);
    expect(client.answer).toMatch(/\r\nconnection: close\r\n/i);
    expect(JSON.parse(client.answer.split('\r\n\r\n')[1]!)).toMatchObject({ code: 'forbidden', field: 'Authorization' });
    expect(client.ended).toBe(true);
    // The linger is 2 s; a reset in the first half second would mean it was not kept.
    await new Promise((r) => setTimeout(r, 500));
    client.socket.write('more');
    await new Promise((r) => setTimeout(r, 50));
    expect(client.reset).toBe(false);
    client.socket.destroy();
  });

  it('lets at most 64 refused connections linger: past that the oldest are dropped first, each after its answer', async () => {
    const clients: Refused[] = [];
    for (let i = 0; i < 100; i++) clients.push(await refusedUpload());
    for (const c of clients) expect(c.answer).toMatch(/^HTTP\/1\.1 403 /);
    // The server reset the 36 oldest as the newer ones arrived: what each held stays unread in the
    // kernel until then, so a flood would otherwise hold receive buffers for the whole linger.
    for (const c of clients) c.socket.write('more');
    const deadline = Date.now() + 1000;
    while (clients.filter((c) => c.reset).length < 36 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(clients.map((c) => c.reset)).toEqual([...Array(36).fill(true), ...Array(64).fill(false)]);
    for (const c of clients) c.socket.destroy();
  });
});
