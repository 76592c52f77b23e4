import { type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { postAttestations } from '../../bench/common.js';
import { addBuilder } from '../../src/app/builders.js';
import { createLogger } from '../../src/log.js';
import { formatSecretKey, generateSecretKey } from '../../src/nix/keys.js';
import { openService } from '../../src/service.js';
import { chrootBuild, closureOutputs, writeClosure } from '../helpers/closure.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { describeNix, nix, nixEnv, tempDir } from '../helpers/nix.js';
import { freePort, runAsync, runCli, spawnServer, stopChild } from '../helpers/server.js';

/** Lag bound stated for the test: from an attestation's 2xx at the primary to the mirror serving it. */
const LAG_BOUND_MS = 5000;

/**
 * A Nix client that lists the primary and a mirror as substituters (each trusted by its own cache
 * key) keeps substituting a closure after the primary is SIGKILLed; the mirror followed the primary
 * under load within a stated lag.
 */
describeNix('a mirror keeps a closure substitutable when the primary dies (real Nix)', () => {
  let dir: string;
  let primary: { url: string; child: ChildProcess };
  let mirror: { url: string; child: ChildProcess };
  let outputs: string[];
  const keys = [generateSecretKey('mirror-b1-1'), generateSecretKey('mirror-b2-1')];

  beforeAll(async () => {
    dir = tempDir('e2e-mirror');
    const closure = writeClosure(dir, { count: 8, salt: 'mirror-e2e' });
    for (const b of [0, 1]) expect(chrootBuild(join(dir, `b${b}`), closure.file).status).toBe(0);
    outputs = closureOutputs(join(dir, 'b0'), closure.file).outputs;
    const service = openService(testConfig(join(dir, 'primary')), createLogger('error'));
    for (const k of keys) addBuilder(service, k.publicKey);
    service.close();
    primary = await spawnServer(join(dir, 'primary'), await freePort());
    for (const [b, key] of keys.entries()) {
      const keyFile = join(dir, `key${b}`);
      writeFileSync(keyFile, formatSecretKey(key));
      const r = await runCli(['submit', '--upload', '--store', join(dir, `b${b}`), '--server', primary.url, '--key-file', keyFile, ...outputs], nixEnv);
      expect(r.code, r.stderr).toBe(0);
    }
    const logKey = readFileSync(join(dir, 'primary', 'log-key.vkey'), 'utf8').trim();
    mirror = await spawnServer(join(dir, 'mirror'), await freePort(), ['--follow', primary.url, '--log-key', logKey]);
  }, 600_000);

  afterAll(async () => {
    if (primary) await stopChild(primary.child);
    if (mirror) await stopChild(mirror.child);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const cacheKeyOf = (name: string) => readFileSync(join(dir, name, 'cache-key.public'), 'utf8').trim();
  const until = async (what: string, condition: () => Promise<boolean>, ms = 30_000) => {
    for (const start = Date.now(); Date.now() - start < ms; await new Promise((r) => setTimeout(r, 50))) if (await condition()) return;
    throw new Error(`gave up waiting until ${what}`);
  };

  it(`follows the primary under ingest load within ${LAG_BOUND_MS} ms`, async () => {
    const lags: number[] = [];
    for (let round = 0; round < 10; round++) {
      const batch = Array.from({ length: 200 }, () => signedAttestation(keys[round % 2]!, { outPath: randomStorePath('load'), narHash: randomNarHash() }));
      const res = await postAttestations(primary.url, keys[0]!, batch);
      expect(res.status).toBe(200);
      const acked = Date.now();
      const { results } = (await res.json()) as { results: Array<{ leafIndex: number }> };
      const last = Math.max(...results.map((r) => r.leafIndex));
      await until('the mirror has the batch', async () => ((await (await fetch(`${mirror.url}/api/v1/mirror`)).json()) as { verifiedSize: number }).verifiedSize > last, LAG_BOUND_MS * 4);
      lags.push(Date.now() - acked);
    }
    lags.sort((a, b) => a - b);
    console.log(`mirror lag from the primary's 2xx: median ${lags[5]} ms, max ${lags[9]} ms (bound ${LAG_BOUND_MS} ms)`);
    expect(lags[9]).toBeLessThan(LAG_BOUND_MS);
  }, 120_000);

  it('substitutes the closure through the mirror after the primary is SIGKILLed', async () => {
    // The mirror fetched every NAR with quorum ahead from the primary.
    const hashParts = outputs.map((p) => p.slice(11, 43));
    await until('the mirror holds every NAR', async () => (await Promise.all(hashParts.map((h) => fetch(`${mirror.url}/${h}.narinfo`)))).every((r) => r.status === 200));
    await stopChild(primary.child, 'SIGKILL');
    const client = join(dir, 'client');
    const r = await runAsync(
      'nix-store',
      ['--store', client, '-r', ...outputs, '--option', 'substituters', `${primary.url} ${mirror.url}`, '--option', 'trusted-public-keys', `${cacheKeyOf('primary')} ${cacheKeyOf('mirror')}`, '--option', 'build-users-group', '', '--option', 'narinfo-cache-negative-ttl', '0', '--option', 'connect-timeout', '2', '--max-jobs', '0'],
      nixEnv,
    );
    expect(r.code, r.stderr).toBe(0);
    nix('nix', ['--store', client, 'store', 'verify', '--no-trust', ...outputs]);
  }, 300_000);
});
