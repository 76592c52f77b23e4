import { type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postAttestations } from '../../bench/common.js';
import { rawRequest } from '../../bench/hostile.js';
import { addBuilder } from '../../src/app/builders.js';
import { ERROR_STATUS } from '../../src/errors.js';
import { attestAuthHeader } from '../../src/http/builderAuth.js';
import { createLogger } from '../../src/log.js';
import { generateSecretKey } from '../../src/nix/keys.js';
import { hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { openService } from '../../src/service.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { tempDir } from '../helpers/nix.js';
import { freePort, spawnServer, stopChild } from '../helpers/server.js';

/** How long the fuzzer sends. */
const SECONDS = 20;

/** A deterministic stream of choices, so a failing run can be replayed with its seed. */
function rng(seed: number) {
  let s = seed >>> 0;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0);
  return { int: (n: number) => next() % n, pick: <T>(xs: readonly T[]): T => xs[next() % xs.length]! };
}

describe('fuzzing every route', () => {
  let dir: string;
  let url: string;
  let child: ChildProcess;
  const alice = generateSecretKey('alice-1');
  const stranger = generateSecretKey('stranger-1');
  let outPath: string;

  /** What a rejected request must not change: the log, the registry, the policies, the decisions. */
  async function state(): Promise<string> {
    const parts = await Promise.all(
      ['/api/v1/log/checkpoint', '/api/v1/builders', '/api/v1/policies', '/api/v1/decisions?policy=default'].map(async (p) => {
        const text = await (await fetch(`${url}${p}`)).text();
        // The checkpoint's signature line is re-made on schedule; its size and root are what counts.
        return p.endsWith('checkpoint') ? text.split('\n').slice(0, 3).join('\n') : text;
      }),
    );
    return createHash('sha256').update(parts.join('\n')).digest('hex');
  }

  beforeAll(async () => {
    dir = tempDir('fuzz');
    const service = openService(testConfig(dir), createLogger('error'));
    addBuilder(service, alice.publicKey);
    service.close();
    ({ url, child } = await spawnServer(dir, await freePort()));
    outPath = randomStorePath('seed');
    expect((await postAttestations(url, alice, signedAttestation(alice, { outPath, narHash: randomNarHash() }))).status).toBe(201);
  });
  afterAll(async () => {
    await stopChild(child);
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers every refusal in one shape, {error, code, field?}, with the status of its code: API, substituter, 405s, express\'s own body parsing', async () => {
    const admin = { authorization: `Bearer ${readFileSync(join(dir, 'admin-token'), 'utf8').trim()}`, 'content-type': 'application/json' };
    const hashPart = hashPartOf(outPath as StorePath);
    const refusals: Array<[string, string, RequestInit?]> = [
      ['unknown API route', '/api/v1/no-such-route'],
      ['unknown method on an API route', '/api/v1/attestations', { method: 'DELETE' }],
      ['unknown page', `/${'x'.repeat(300)}`],
      ['submission without a builder signature', '/api/v1/attestations', { method: 'POST', body: '{}' }],
      ['upload without a builder signature', `/api/v1/nars/${randomNarHash()}`, { method: 'PUT', body: 'x' }],
      ['admin call without the token', '/api/v1/builders', { method: 'POST', body: '{}' }],
      ['admin body that is not JSON (express.json)', '/api/v1/builders', { method: 'POST', headers: admin, body: '{"name": ' }],
      ['admin body that is not an object', '/api/v1/policies/p', { method: 'PUT', headers: admin, body: '"x"' }],
      ['a hash part that is not one', '/api/v1/paths/not-a-hash-part'],
      ['a path segment that does not decode', '/api/v1/paths/%FF%FE'],
      ['a NUL in a path segment', '/api/v1/paths/%00'],
      ['log range that is no number', '/api/v1/log/entries?start=x&end=%00'],
      ['proof of nothing', '/api/v1/log/proof/inclusion?index=-1&size=%FF'],
      ['a NAR not stored', `/api/v1/nars/${randomNarHash()}`],
      ['narinfo name that is not one', '/not-a-hash.narinfo'],
      ['narinfo not advertised', `/${'0'.repeat(32)}.narinfo`],
      ['NAR file name that is not one', '/nar/zzz'],
      ['policy that does not exist', '/policy/nope/nix-cache-info'],
      ['nix copy --to (405)', `/${hashPart}.narinfo`, { method: 'PUT', body: 'StorePath: x' }],
      ['NAR upload through the cache path (405)', '/nar/x.nar', { method: 'POST', body: 'x' }],
    ];
    for (const [what, path, init] of refusals) {
      const res = await fetch(`${url}${path}`, init);
      const text = await res.text();
      expect(res.status, `${what}: ${text}`).toBeGreaterThanOrEqual(400);
      expect(res.status, what).toBeLessThan(500);
      expect(res.headers.get('content-type'), what).toMatch(/^application\/json/);
      const body = JSON.parse(text) as Record<string, unknown>;
      expect(Object.keys(body).filter((k) => !['error', 'code', 'field'].includes(k)), what).toEqual([]);
      expect(typeof body.error, what).toBe('string');
      expect(ERROR_STATUS[body.code as keyof typeof ERROR_STATUS], `${what}: ${text}`).toBe(res.status);
    }
    // Search takes any bytes (NUL, invalid UTF-8, a very long query): an answer saying the query finds nothing, never a 5xx.
    for (const q of ['%00', '%FF%FE', '%C3%28', 'a'.repeat(12_000), '%25%00%0A', '%00'.repeat(2000)]) {
      const api = await fetch(`${url}/api/v1/search?q=${q}`);
      expect(api.status, q.slice(0, 20)).toBe(200);
      expect(((await api.json()) as { results: unknown[] }).results).toEqual([]);
      expect((await fetch(`${url}/search?q=${q}`)).status, q.slice(0, 20)).toBe(200);
    }
    expect(child.exitCode).toBeNull();
  });

  it(`answers ${SECONDS} s of random and mutated requests without a 5xx but 503, without crashing, and changes nothing`, async () => {
    const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 1e9);
    const r = rng(seed);
    // The seed attestation's checkpoint is signed within ledger.checkpointIntervalMs (1 s).
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const before = await state();
    const hashPart = hashPartOf(outPath as StorePath);
    const junk = () => r.pick(['', 'x', '%00', '%', '%zz', '..', '../../etc/passwd', 'a'.repeat(300 + r.int(5000)), randomBytes(r.int(40)).toString('base64url'), '\u00e9', '%ff%fe', '-1', '1e309', '9'.repeat(30), hashPart]);
    const paths = () =>
      r.pick([
        `/${junk()}.narinfo`,
        `/${hashPart}.narinfo`,
        `/nar/${junk()}.nar`,
        `/nar/${junk()}`,
        `/policy/${junk()}/${hashPart}.narinfo`,
        `/policy/default/nar/${junk()}`,
        '/nix-cache-info',
        `/api/v1/paths/${junk()}?after=${junk()}&limit=${junk()}`,
        `/api/v1/paths/${hashPart}?after=${junk()}`,
        `/api/v1/log/entries?start=${junk()}&end=${junk()}`,
        `/api/v1/log/proof/inclusion?index=${junk()}&size=${junk()}`,
        `/api/v1/log/proof/consistency?first=${junk()}&second=${junk()}`,
        `/api/v1/decisions?policy=${junk()}&after=${junk()}&limit=${junk()}`,
        `/api/v1/conflicts?limit=${junk()}`,
        `/api/v1/builders/${junk()}/revoke`,
        `/api/v1/policies/${junk()}`,
        '/api/v1/builders',
        '/api/v1/attestations',
        `/api/v1/nars/${junk()}`,
        `/api/v1/nars/sha256:${'0'.repeat(52)}`,
        `/api/v1/nars/${randomNarHash()}`,
        `/api/v1/paths/${junk()}/diff`,
        `/api/v1/paths/${hashPart}/diff`,
        `/api/v1/leaves/${junk()}`,
        `/api/v1/logs/${junk()}/${junk()}`,
        `/api/v1/logs/${hashPart}-x.drv/alice-1`,
        `/log/${junk()}`,
        `/log/${hashPart}-x.drv?builder=${junk()}`,
        `/policy/${junk()}/log/${junk()}`,
        `/${junk()}.ls`,
        `/${hashPart}.ls`,
        `/leaves/${junk()}`,
        '/transparency-log',
        `/search?q=${junk()}&before=${junk()}`,
        `/api/v1/search?q=${junk()}`,
        `/paths/${junk()}?after=${junk()}`,
        `/paths/${hashPart}`,
        '/',
        '/builders',
        '/conflicts',
        `/assets/${junk()}`,
        `/${junk()}`,
      ]);
    const valid = signedAttestation(alice, { outPath: randomStorePath('fuzz'), narHash: randomNarHash() }) as Record<string, unknown>;
    const bodies = () => {
      const mutated: Record<string, unknown> = { ...valid };
      const field = r.pick(Object.keys(valid));
      mutated[field] = r.pick([null, 0, -1, 2 ** 60, '', junk(), [], {}, [junk()], true, '\u0000'.repeat(r.int(10))]);
      return r.pick([JSON.stringify(mutated), JSON.stringify([mutated, valid]), junk(), '{"a":', '[[[[[[[[', '{}', '[]', randomBytes(r.int(2000)).toString('latin1')]);
    };
    const auth = (body: Buffer) =>
      r.pick([
        undefined,
        'Bearer wrong',
        `Bearer ${junk()}`,
        attestAuthHeader(stranger, body),
        attestAuthHeader(alice, Buffer.from('another body')),
        `NixQuorum-Upload builder=alice-1,ts=${Math.floor(Date.now() / 1000)},sig=${Buffer.alloc(64).toString('base64')}`,
        `NixQuorum-Log builder=alice-1,ts=${Math.floor(Date.now() / 1000)},sig=${Buffer.alloc(64).toString('base64')}`,
        junk(),
      ]);
    const statuses = new Map<number, number>();
    const deadline = Date.now() + SECONDS * 1000;
    let sent = 0;
    const worker = async () => {
      while (Date.now() < deadline) {
        const body = Buffer.from(r.int(3) === 0 ? '' : bodies());
        const length = r.int(10) === 0 ? body.length + r.int(100) : body.length;
        const headers: Record<string, string> = { connection: 'close', 'content-type': r.pick(['application/json', 'text/plain', junk()]), 'content-length': String(length) };
        const a = auth(body);
        if (a !== undefined) headers.authorization = a;
        if (r.int(4) === 0) headers['content-digest'] = `sha-256=:${createHash('sha256').update(body).digest('base64')}:`;
        if (r.int(8) === 0) headers['content-encoding'] = r.pick(['gzip', 'br', junk()]);
        const method = r.pick(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']);
        const path = paths();
        const answer = await rawRequest(url, { method, path: path, headers, bodyBytes: length, fill: body.length ? body : Buffer.alloc(1, 'x') });
        statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
        sent++;
        if (answer.status >= 500 && answer.status !== 503) throw new Error(`seed ${seed}: ${method} ${path.slice(0, 200)} ${JSON.stringify(headers).slice(0, 300)} answered ${answer.status}`);
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    console.log(`fuzz (seed ${seed}): ${sent} requests in ${SECONDS} s; statuses ${JSON.stringify(Object.fromEntries([...statuses].sort((x, y) => x[0] - y[0])))}`);
    expect(sent).toBeGreaterThan(500);
    expect(child.exitCode).toBeNull();
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    expect(await state()).toBe(before);
  }, (SECONDS + 60) * 1000);
});
