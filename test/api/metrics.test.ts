import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSecretKey } from '../../src/nix/keys.js';
import { hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { tempDir } from '../helpers/nix.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { addBuilder } from '../../src/app/builders.js';
import { postAttestations } from '../../bench/common.js';

describe('/metrics and /healthz', () => {
  let dir: string;
  let server: RunningServer;

  beforeAll(async () => {
    dir = tempDir('metrics');
    server = await startServer(testConfig(dir));
  });
  afterAll(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('counts attestations, decisions, commits, narinfo hits and misses with latency, and the tree size', async () => {
    const keys = [generateSecretKey('m1-1'), generateSecretKey('m2-1')];
    for (const k of keys) addBuilder(server.service, k.publicKey);
    const outPath = randomStorePath('metered');
    const narHash = randomNarHash();
    for (const k of keys) {
      const res = await postAttestations(server.url, k, signedAttestation(k, { outPath, narHash }));
      expect(res.status).toBe(201);
    }
    // Quorum without a NAR: not advertised, a miss; an unknown path: a miss; a malformed name: bad.
    expect((await fetch(`${server.url}/${hashPartOf(outPath as StorePath)}.narinfo`)).status).toBe(404);
    expect((await fetch(`${server.url}/${hashPartOf(randomStorePath() as StorePath)}.narinfo`)).status).toBe(404);
    expect((await fetch(`${server.url}/not-a-hash.narinfo`)).status).toBe(400);

    const text = await (await fetch(`${server.url}/metrics`)).text();
    expect(text).toMatch(/^nixquorum_attestations_total\{status="accepted"\} 2$/m);
    expect(text).toMatch(/^nixquorum_decisions_total\{policy="default",status="quorum"\} 1$/m);
    expect(text).toMatch(/^nixquorum_decisions_total\{policy="default",status="pending"\} 1$/m);
    expect(text).toMatch(/^nixquorum_ingest_commits_total [12]$/m);
    expect(text).toMatch(/^nixquorum_narinfo_requests_total\{policy="default",result="miss"\} 2$/m);
    expect(text).toMatch(/^nixquorum_narinfo_requests_total\{policy="default",result="bad"\} 1$/m);
    expect(text).toMatch(/^nixquorum_narinfo_seconds_count\{result="miss"\} 2$/m);
    // The default policy's leaf, the two registry leaves, the two attestations.
    expect(text).toMatch(/^nixquorum_log_tree_size 5$/m);
    expect(await (await fetch(`${server.url}/healthz`)).text()).toBe('ok\n');
  });
});
