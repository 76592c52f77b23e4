import express from 'express';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonErrors } from '../../src/http/errors.js';
import { perClientLimit } from '../../src/http/perClientLimit.js';
import { createLogger } from '../../src/log.js';

describe('perClientLimit', () => {
  let url: string;
  let release!: () => void;
  let held = new Promise<void>((r) => (release = r));
  const server = express()
    .use(perClientLimit(3))
    .get('/slow', async (_req, res) => {
      await held;
      res.json({ ok: true });
    })
    .use(jsonErrors(createLogger('error', () => {})))
    .listen(0, '127.0.0.1');
  beforeAll(async () => {
    if (!server.listening) await once(server, 'listening');
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('answers 429 with Retry-After past the limit of unauthenticated requests in flight, and serves again once they finish; authenticated ones pass', async () => {
    const inFlight = [0, 1, 2].map(() => fetch(`${url}/slow`));
    await new Promise((r) => setTimeout(r, 100));
    const refused = await fetch(`${url}/slow`);
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(await refused.json()).toMatchObject({ code: 'too-many-requests' });
    const authenticated = fetch(`${url}/slow`, { headers: { authorization: 'Bearer x' } });
    release();
    expect((await Promise.all([...inFlight, authenticated])).map((r) => r.status)).toEqual([200, 200, 200, 200]);
    held = Promise.resolve();
    expect((await fetch(`${url}/slow`)).status).toBe(200);
  });
});
