import express from 'express';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonErrors } from '../../src/http/errors.js';
import { perClientLimit, TRUSTED_PROXIES } from '../../src/http/perClientLimit.js';
import { createLogger } from '../../src/log.js';

describe('perClientLimit', () => {
  let url: string;
  let release!: () => void;
  let held = new Promise<void>((r) => (release = r));
  const server = express()
    .set('trust proxy', TRUSTED_PROXIES)
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

  it('counts the clients of a proxy on this machine apart, by the address the proxy appended to X-Forwarded-For', async () => {
    held = new Promise<void>((r) => (release = r));
    // As nginx's $proxy_add_x_forwarded_for: whatever the client claimed, then its real address.
    const via = (client: string) => ({ headers: { 'x-forwarded-for': `10.9.9.9, ${client}` } });
    const a = [0, 1, 2].map(() => fetch(`${url}/slow`, via('192.0.2.1')));
    await new Promise((r) => setTimeout(r, 100));
    expect((await fetch(`${url}/slow`, via('192.0.2.1'))).status).toBe(429);
    // The same claim from another client is that client's budget, not the first one's: it is let
    // in (and waits with the others) instead of being answered 429 at once.
    let answered = false;
    const b = fetch(`${url}/slow`, via('192.0.2.2')).finally(() => (answered = true));
    await new Promise((r) => setTimeout(r, 100));
    expect(answered).toBe(false);
    release();
    expect((await Promise.all([...a, b])).map((r) => r.status)).toEqual([200, 200, 200, 200]);
    held = Promise.resolve();
  });
});
