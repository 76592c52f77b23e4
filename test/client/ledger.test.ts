import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ledger } from '../../src/client/ledger.js';
import { QuorumError } from '../../src/errors.js';

/** A hostile ledger's transport tricks, before anything reaches verification. */
describe('the client asking a hostile ledger', () => {
  let server: Server;
  let url: string;
  let sent = 0;

  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url?.startsWith('/endless')) {
        // An answer that never ends: the client must stop reading at its bound.
        res.writeHead(200, { 'content-type': 'text/plain' });
        const chunk = Buffer.alloc(64 * 1024, 0x61);
        const more = () => {
          while (!res.destroyed && res.write(chunk)) sent += chunk.length;
        };
        res.on('drain', more);
        more();
        return;
      }
      if (req.url?.startsWith('/api/v1/paths/')) return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"attestations": "no"}');
      res.writeHead(500).end('broken');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('refuses an answer larger than its bound without reading the rest', async () => {
    const ledger = new Ledger(`${url}endless/`, 1 << 20);
    const error = await ledger.checkpoint(0).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QuorumError);
    expect((error as QuorumError).code).toBe('bad-response');
    expect((error as QuorumError).message).toMatch(/larger than 1048576 bytes/);
    expect(sent).toBeLessThan(64 << 20);
    ledger.close();
  });

  it('names the field of a malformed answer, and calls a 5xx unavailable', async () => {
    const ledger = new Ledger(url);
    const malformed = await ledger.proofs('0'.repeat(32) as never, 0).catch((e: unknown) => e);
    expect((malformed as QuorumError).code).toBe('bad-response');
    expect((malformed as QuorumError).message).toMatch(/attestations/);
    const down = await ledger.checkpoint(0).catch((e: unknown) => e);
    expect((down as QuorumError).code).toBe('unavailable');
    expect((down as QuorumError).message).toMatch(/answered 500 broken/);
    ledger.close();
  });
});
