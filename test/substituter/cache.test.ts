import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uploadAuthHeader } from '../../src/http/builderAuth.js';
import { encodeStrings, NAR_MAGIC } from '../../src/nix/nar/index.js';
import { narHashFromDigest, sha256 } from '../../src/nix/hash.js';
import { generateSecretKey, type SecretKey } from '../../src/nix/keys.js';
import { hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { tempDir } from '../helpers/nix.js';
import { runCli } from '../helpers/server.js';
import { addBuilder } from '../../src/app/builders.js';
import { postAttestations } from '../../bench/common.js';

/**
 * The substituter keeps rendered narinfos of advertised paths in memory (the default configuration).
 * Every change that withdraws a path must reach that cache: changes this process makes at once,
 * changes other processes make to the same database (the admin CLI on --data) within the poll.
 */
describe('the narinfo cache', () => {
  const alice = generateSecretKey('alice-1');
  const bob = generateSecretKey('bob-1');
  const carol = generateSecretKey('carol-1');
  let dir: string;
  let server: RunningServer;

  beforeAll(async () => {
    dir = tempDir('narinfo-cache');
    server = await startServer(testConfig(dir));
    for (const key of [alice, bob, carol]) addBuilder(server.service, key.publicKey);
  });
  afterAll(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A path attested by `keys` with a stored NAR; returns its narinfo URL once it is served (and so cached). */
  async function advertised(keys: SecretKey[]): Promise<string> {
    const nar = encodeStrings(NAR_MAGIC, '(', 'type', 'regular', 'contents', `${Math.random()}\n`, ')');
    const narHash = narHashFromDigest(sha256(nar));
    const put = await fetch(`${server.url}/api/v1/nars/${narHash}`, { method: 'PUT', body: new Uint8Array(nar), headers: { authorization: uploadAuthHeader(alice, narHash, nar.length) } });
    expect(put.status).toBe(201);
    const outPath = randomStorePath('cached');
    for (const key of keys) {
      const res = await postAttestations(server.url, key, signedAttestation(key, { outPath, narHash, narSize: nar.length }));
      expect(res.status).toBe(201);
    }
    const url = `${server.url}/${hashPartOf(outPath as StorePath)}.narinfo`;
    const first = await (await fetch(url)).text();
    expect(first).toContain(`StorePath: ${outPath}`);
    // The second answer comes from the cache: the same bytes.
    expect(await (await fetch(url)).text()).toBe(first);
    return url;
  }

  const setThreshold = (threshold: number) =>
    fetch(`${server.url}/api/v1/policies/default`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${server.service.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ threshold, builders: null }),
    });

  it('drops a path at once when this process raises the threshold above its agreement', async () => {
    const url = await advertised([alice, bob]);
    expect((await setThreshold(3)).status).toBe(200);
    expect((await fetch(url)).status).toBe(404);
    expect((await setThreshold(2)).status).toBe(200);
    expect((await fetch(url)).status).toBe(200);
  });

  it('drops a path when another process revokes a key it needed (the admin CLI on the data directory)', async () => {
    const url = await advertised([alice, carol]);
    const revoked = await runCli(['builder', 'revoke', carol.name, '--data', dir]);
    expect(revoked.code, revoked.stderr).toBe(0);
    let status = 200;
    for (let i = 0; i < 200 && status === 200; i++) {
      await new Promise((r) => setTimeout(r, 25));
      status = (await fetch(url)).status;
    }
    expect(status).toBe(404);
  });
});
