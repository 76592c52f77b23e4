import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSecretKey } from '../../src/nix/keys.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { tempDir } from '../helpers/nix.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { addBuilder } from '../../src/app/builders.js';
import { postAttestations } from '../../bench/common.js';

describe('POST /api/v1/attestations', () => {
  let dir: string;
  let server: RunningServer;
  const alice = generateSecretKey('alice-1');
  const bob = generateSecretKey('bob-1');

  beforeAll(async () => {
    dir = tempDir('api');
    server = await startServer(testConfig(dir, { ledger: { maxAttestationsPerRequest: 50, maxRequestBytes: 512 * 1024 } }));
    addBuilder(server.service, alice.publicKey);
    addBuilder(server.service, bob.publicKey);
  });
  afterAll(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const post = (body: string) => postAttestations(server.url, alice, body);
  const count = () => (server.service.db.prepare('SELECT COUNT(*) AS n FROM attestations').get() as { n: number }).n;
  const valid = () => signedAttestation(alice, { outPath: randomStorePath('ok'), narHash: randomNarHash() });

  it('accepts one attestation (201) and an array (200, per-item results)', async () => {
    const res = await post(JSON.stringify(valid()));
    expect(res.status).toBe(201);
    expect(await res.json()).toMatchObject({ status: 'accepted' });
    const one = valid();
    const many = await post(JSON.stringify([one, one, valid()]));
    expect(many.status).toBe(200);
    const { results } = (await many.json()) as { results: Array<{ status: string }> };
    expect(results.map((r) => r.status)).toEqual(['accepted', 'duplicate', 'accepted']);
  });

  const cases: Array<[string, () => string, number, RegExp]> = [
    ['malformed JSON', () => '{"drvPath": ', 400, /not valid JSON/],
    ['a wrong type', () => JSON.stringify({ ...valid(), narSize: '12' }), 400, /narSize/],
    ['a missing field', () => JSON.stringify({ ...valid(), narHash: undefined }), 400, /narHash/],
    ['an unknown field', () => JSON.stringify({ ...valid(), extra: 1 }), 400, /extra/],
    ['an invalid store path', () => JSON.stringify({ ...valid(), outPath: '/nix/store/eeee-bad' }), 400, /outPath/],
    ['an invalid reference', () => JSON.stringify({ ...valid(), references: ['/tmp/x'] }), 400, /references/],
    ['an invalid hash', () => JSON.stringify({ ...valid(), narHash: 'md5:abc' }), 400, /narHash/],
    ['a bad signature', () => JSON.stringify({ ...valid(), signature: Buffer.alloc(64, 1).toString('base64') }), 400, /signature/],
    ['a signature by another key', () => JSON.stringify({ ...signedAttestation(bob, { outPath: randomStorePath(), narHash: randomNarHash() }), builder: 'alice-1' }), 400, /signature.*alice-1/],
    ['an unknown key', () => JSON.stringify(signedAttestation(generateSecretKey('mallory-1'), { outPath: randomStorePath(), narHash: randomNarHash() })), 403, /mallory-1/],
    ['too many items', () => JSON.stringify(Array.from({ length: 51 }, valid)), 413, /at most 50/],
    ['an oversize body', () => JSON.stringify([{ ...valid(), drvPath: 'x'.repeat(1024 * 1024) }]), 413, /larger than the limit of 524288 bytes/],
    ['one bad item in an array', () => JSON.stringify([valid(), { ...valid(), narSize: -1 }]), 400, /\[1\]\.narSize/],
    ['an empty array', () => '[]', 400, /no attestations/],
  ];
  for (const [what, body, status, message] of cases) {
    it(`answers ${status} naming the problem for ${what}, and writes nothing`, async () => {
      const before = count();
      const size = server.service.log.size();
      const res = await post(body());
      expect(res.status).toBe(status);
      const json = (await res.json()) as { error?: string; reason?: string };
      expect(json.error ?? json.reason).toMatch(message);
      expect(count()).toBe(before);
      expect(server.service.log.size()).toBe(size);
    });
  }
});
