import { rmSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { auditLog } from '../../src/ledger/audit.js';
import { createLogger } from '../../src/log.js';
import { generateSecretKey } from '../../src/nix/keys.js';
import { openService } from '../../src/service.js';
import { tempDir } from '../helpers/nix.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { freePort, spawnServer, stopChild } from '../helpers/server.js';
import { addBuilder } from '../../src/app/builders.js';
import { postAttestations } from '../../bench/common.js';

describe('durability under SIGKILL', () => {
  it('loses no acknowledged attestation across ten kills in the middle of concurrent load, and the log still verifies', async () => {
    const dir = tempDir('crash');
    const key = generateSecretKey('crash-builder-1');
    {
      const service = openService(testConfig(dir), createLogger('error'));
      addBuilder(service, key.publicKey);
      service.close();
    }
    const acknowledged = new Map<string, number>(); // outPath -> leaf index
    try {
      for (let round = 0; round < 10; round++) {
        const port = await freePort();
        const { url, child } = await spawnServer(dir, port);
        let stop = false;
        const client = async () => {
          while (!stop) {
            const batch = Array.from({ length: 20 }, () => signedAttestation(key, { outPath: randomStorePath(`r${round}`), narHash: randomNarHash() }));
            try {
              const res = await postAttestations(url, key, batch);
              if (!res.ok) continue;
              const { results } = (await res.json()) as { results: Array<{ status: string; leafIndex: number }> };
              results.forEach((r, i) => {
                expect(r.status).toBe('accepted');
                acknowledged.set(batch[i]!.outPath, r.leafIndex);
              });
            } catch {
              return; // the server died under us: whatever was not acknowledged may be lost
            }
          }
        };
        const clients = Array.from({ length: 8 }, client);
        await new Promise((r) => setTimeout(r, 150 + Math.random() * 250));
        child.kill('SIGKILL');
        stop = true;
        await Promise.all(clients);
        await stopChild(child, 'SIGKILL');
      }
      expect(acknowledged.size).toBeGreaterThan(100);

      const db = new Database(join(dir, 'ledger.sqlite'), { readonly: true });
      const stored = new Map((db.prepare('SELECT out_path, leaf_index FROM attestations').all() as Array<{ out_path: string; leaf_index: number }>).map((r) => [r.out_path, r.leaf_index]));
      db.close();
      for (const [outPath, leafIndex] of acknowledged) expect(stored.get(outPath)).toBe(leafIndex);

      const { url, child } = await spawnServer(dir, await freePort());
      try {
        const report = await auditLog(url);
        // The default policy's and the builder's leaves, then the attestations.
        expect(report.verifiedEntries).toBe(stored.size + 2);
        expect(report.problems).toEqual([]);
      } finally {
        await stopChild(child);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
