import { join } from 'node:path';
import Database from 'better-sqlite3';
import { expect } from 'vitest';
import { postAttestations } from '../../bench/common.js';
import type { SecretKey } from '../../src/nix/keys.js';
import { randomNarHash, randomStorePath, signedAttestation } from './ledger.js';
import { freePort, spawnServer, stopChild } from './server.js';

/**
 * `rounds` times: starts `nix-quorum serve` on `dir`, has 8 clients submit batches of 20
 * attestations signed by `key`, and SIGKILLs the server 150-400 ms later. Every attestation answered
 * 2xx goes into `acknowledged` (outPath -> leaf index), which is returned.
 */
export async function killUnderLoad(dir: string, key: SecretKey, rounds: number, acknowledged = new Map<string, number>()): Promise<Map<string, number>> {
  for (let round = 0; round < rounds; round++) {
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
  return acknowledged;
}

/** Every attestation in the ledger of `dir`: outPath -> leaf index (read with the server stopped). */
export function storedAttestations(dir: string): Map<string, number> {
  const db = new Database(join(dir, 'ledger.sqlite'), { readonly: true });
  try {
    return new Map((db.prepare('SELECT out_path, leaf_index FROM attestations').all() as Array<{ out_path: string; leaf_index: number }>).map((r) => [r.out_path, r.leaf_index]));
  } finally {
    db.close();
  }
}
