import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BulkLoader } from '../../bench/bulkLoad.js';
import { addBuilder } from '../../src/app/builders.js';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { generateSecretKey } from '../../src/nix/keys.js';
import { openService } from '../../src/service.js';
import { tempDir } from '../helpers/nix.js';
import { freePort, spawnServer, stopChild } from '../helpers/server.js';

/** The size; NQ_CATCH_UP_ATTESTATIONS makes a quicker local run. */
const ATTESTATIONS = Number(process.env.NQ_CATCH_UP_ATTESTATIONS ?? 1_000_000);

/** A digest of every decision row: the mirror must hold exactly the primary's. */
function decisionsDigest(dataDir: string): { rows: number; digest: string } {
  const db = new Database(join(dataDir, 'ledger.sqlite'), { readonly: true });
  const hash = createHash('sha256');
  let rows = 0;
  for (const row of db.prepare('SELECT policy, out_path, status, nar_hash, nar_size, refs, deriver, sigs, agreeing FROM decisions ORDER BY policy, out_path').raw().iterate()) {
    hash.update(JSON.stringify(row));
    rows++;
  }
  db.close();
  return { rows, digest: hash.digest('hex') };
}

/**
 * A mirror started from empty on a primary of a million really signed attestations catches up:
 * it verifies every leaf's signature and the root, and ends with the primary's decisions.
 * bench/mirror measures the same catch-up's rate (docs/benchmarks.md, "Mirror").
 */
describe(`a mirror started from empty on a ${ATTESTATIONS}-attestation primary`, () => {
  const dir = tempDir('catch-up');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('catches up: the whole log verified, the same decisions as the primary', async () => {
    const primaryDir = join(dir, 'primary');
    const service = openService(loadConfig({ env: {}, flags: { dataDir: primaryDir, logLevel: 'error' } }), createLogger('error'));
    // During the load only: no fsync per batch (this is not a durability test).
    service.db.pragma('synchronous = OFF');
    const builders = ['alice-1', 'bob-1', 'carol-1'].map((name) => {
      const secretKey = generateSecretKey(name);
      return { builder: addBuilder(service, secretKey.publicKey).builder, secretKey };
    });
    await new BulkLoader(service, builders).loadTo(ATTESTATIONS);
    const size = service.log.size();
    const logKey = service.noteVerifierText.trim();
    service.close();

    const primary = await spawnServer(primaryDir, await freePort());
    const mirror = await spawnServer(join(dir, 'mirror'), await freePort(), ['--follow', primary.url, '--log-key', logKey]);
    try {
      const started = Date.now();
      let status = { verifiedSize: 0, degraded: null as string | null };
      while (status.verifiedSize < size) {
        await new Promise((r) => setTimeout(r, 1000));
        // Busy building indexes at the end of the bulk catch-up, the mirror can drop an idle keep-alive connection as it is reused: ask again.
        status = ((await fetch(`${mirror.url}/api/v1/mirror`).then((r) => r.json(), () => null)) as typeof status | null) ?? status;
        expect(status.degraded).toBeNull();
      }
      console.log(`mirror caught up on ${size} leaves in ${((Date.now() - started) / 1000).toFixed(0)} s`);
      expect(await (await fetch(`${mirror.url}/api/v1/log/checkpoint`)).text()).toBe(await (await fetch(`${primary.url}/api/v1/log/checkpoint`)).text());
    } finally {
      await Promise.all([stopChild(mirror.child), stopChild(primary.child)]);
    }
    const [ofPrimary, ofMirror] = [decisionsDigest(primaryDir), decisionsDigest(join(dir, 'mirror'))];
    expect(ofPrimary.rows).toBeGreaterThan(ATTESTATIONS / 4);
    expect(ofMirror).toEqual(ofPrimary);
  }, 60 * 60_000);
});
