import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addBuilder, revokeBuilder } from '../../src/app/builders.js';
import { deletePolicy, setPolicy } from '../../src/app/policies.js';
import { parseAttestation } from '../../src/ledger/attestation.js';
import { generateSecretKey, type SecretKey } from '../../src/nix/keys.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { tempDir } from '../helpers/nix.js';
import { fetchLeaves, replayLeaves, servedQuorum } from '../helpers/replay.js';
import { runCli } from '../helpers/server.js';

const LEAVES = 100_000;

/** A deterministic stream of choices, so a failure can be replayed. */
function rng(seed: number) {
  let s = seed >>> 0;
  return (n: number) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % n;
  };
}

describe(`verify replays a ledger of ${LEAVES.toLocaleString('en')} leaves of every kind`, () => {
  let dir: string;
  let server: RunningServer;

  beforeAll(async () => {
    dir = tempDir('replay');
    server = await startServer(testConfig(dir, { logLevel: 'error' }));
    const s = server.service;
    const pick = rng(20261202);
    const keys: SecretKey[] = [];
    const active: SecretKey[] = [];
    const register = () => {
      const k = generateSecretKey(`b${keys.length}.example-1`);
      keys.push(k);
      active.push(k);
      addBuilder(s, k.publicKey);
    };
    for (let i = 0; i < 8; i++) register();
    setPolicy(s, { name: 'strict', threshold: 3, onConflict: 'block', builders: keys.slice(0, 4).map((k) => k.name) });
    setPolicy(s, { name: 'lenient', threshold: 1, onConflict: 'ignore', builders: keys.slice(4, 8).map((k) => k.name) });
    setPolicy(s, { name: 'doomed', threshold: 2, onConflict: 'ignore', builders: null });
    const paths = Array.from({ length: 12_000 }, (_, i) => ({ outPath: randomStorePath(`r${i}`), contents: [randomNarHash(), randomNarHash()] }));
    let round = 0;
    while (s.log.size() < LEAVES) {
      const batch = Array.from({ length: Math.min(2000, LEAVES - s.log.size() - 2) }, () => {
        const path = paths[pick(paths.length)]!;
        const key = active[pick(active.length)]!;
        // Mostly agreement; some dissent (the second content), which also makes equivocations.
        return parseAttestation(signedAttestation(key, { outPath: path.outPath, narHash: path.contents[pick(10) === 0 ? 1 : 0]! }));
      });
      await s.ingestor.submit(batch);
      // Between batches the registry and the policies move, so their leaves are spread through the log.
      round++;
      if (round % 6 === 0 && active.length > 4) revokeBuilder(s, active.splice(pick(active.length), 1)[0]!.name);
      if (round % 7 === 0) register();
      if (round % 15 === 0) setPolicy(s, { name: 'lenient', threshold: 1 + (round % 2), onConflict: 'ignore', builders: active.slice(0, 3).map((k) => k.name) });
      if (round === 20) deletePolicy(s, 'doomed');
      if (round % 17 === 0) setPolicy(s, { name: 'default', threshold: 2 + (round % 2), onConflict: 'block', builders: null });
    }
    await s.decisions.signaturesStored();
    s.checkpoints.publish();
  }, 300_000);
  afterAll(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('and agrees with the server; an independent replay written in the test agrees with both', async () => {
    const leaves = await fetchLeaves(server.url);
    expect(leaves.length).toBeGreaterThanOrEqual(LEAVES);
    const kinds = new Set(leaves.map((l) => l.toString('utf8').split(';')[0]));
    expect(kinds).toEqual(new Set(['nix-quorum-attestation-v1', 'nix-quorum-builder-v1', 'nix-quorum-policy-v1']));

    // Everything is fetched before the replay: it keeps this process busy for seconds, longer than a kept-alive connection waits.
    const served = new Map<string, Map<string, string>>();
    for (const policy of ['default', 'lenient', 'strict']) served.set(policy, await servedQuorum(server.url, policy));
    const ours = replayLeaves(leaves);
    expect(ours.problems).toEqual([]);
    expect([...ours.policies.keys()].sort()).toEqual(['default', 'lenient', 'strict']);
    let withQuorum = 0;
    for (const [policy, decided] of ours.quorum) {
      expect(served.get(policy), policy).toEqual(decided);
      withQuorum += decided.size;
    }
    expect(withQuorum).toBeGreaterThan(1000);

    const verified = await runCli(['verify', '--server', server.url, '--state', join(dir, 'verify-state.json'), '--json']);
    expect(verified.code, verified.stderr).toBe(0);
    const report = JSON.parse(verified.stdout) as { ok: boolean; size: number; problems: string[]; replayed: { builders: number; policies: number; attestations: number; decisions: number } };
    expect(report.problems).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.size).toBe(leaves.length);
    expect(report.replayed).toEqual({
      builders: ours.builders.size,
      policies: ours.policies.size,
      attestations: leaves.filter((l) => l.toString('utf8').startsWith('nix-quorum-attestation-v1;')).length,
      decisions: withQuorum,
    });
  }, 300_000);
});
