import { rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { auditLog } from '../../src/ledger/audit.js';
import { createLogger } from '../../src/log.js';
import { generateSecretKey } from '../../src/nix/keys.js';
import { openService } from '../../src/service.js';
import { tempDir } from '../helpers/nix.js';
import { testConfig } from '../helpers/ledger.js';
import { freePort, spawnServer, stopChild } from '../helpers/server.js';
import { addBuilder } from '../../src/app/builders.js';
import { killUnderLoad, storedAttestations } from '../helpers/crash.js';

describe('durability under SIGKILL', () => {
  it('loses no acknowledged attestation across ten kills in the middle of concurrent load, and the log still verifies', async () => {
    const dir = tempDir('crash');
    const key = generateSecretKey('crash-builder-1');
    {
      const service = openService(testConfig(dir), createLogger('error'));
      addBuilder(service, key.publicKey);
      service.close();
    }
    try {
      const acknowledged = await killUnderLoad(dir, key, 10);
      expect(acknowledged.size).toBeGreaterThan(100);

      const stored = storedAttestations(dir);
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
