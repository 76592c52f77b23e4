import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { parseAttestation } from '../../src/ledger/attestation.js';
import { generateSecretKey } from '../../src/nix/keys.js';
import { openService } from '../../src/service.js';
import { tempDir } from '../helpers/nix.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { CLI, freePort, spawnServer, stopChild } from '../helpers/server.js';
import { addBuilder } from '../../src/app/builders.js';

const run = promisify(execFile);

/** Runs `nix-quorum verify`, returning exit code and output instead of throwing. */
async function verify(url: string, state: string): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, 'verify', '--server', url, '--state', state]);
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

describe('nix-quorum verify', () => {
  let dir: string;
  let state: string;
  const key = generateSecretKey('verify-builder-1');

  async function seed(n: number): Promise<void> {
    const service = openService(testConfig(dir), createLogger('error'));
    if (!service.registry.get(key.name)) addBuilder(service, key.publicKey);
    await service.ingestor.submit(Array.from({ length: n }, () => parseAttestation(signedAttestation(key, { outPath: randomStorePath(), narHash: randomNarHash() }))));
    service.checkpoints.publish();
    service.close();
  }

  beforeEach(() => {
    dir = tempDir('verify');
    state = join(dir, 'verify-state.json');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('passes on an honest log, remembers the checkpoint, and accepts its growth', async () => {
    await seed(300);
    let { url, child } = await spawnServer(dir, await freePort());
    const first = await verify(url, state);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    // The default policy's and the builder's leaves come first.
    expect(first.stdout).toMatch(/302 entries verified/);
    expect(first.stdout).toMatch(/replayed 1 builders, 1 policies and 300 attestations/);
    await stopChild(child);
    await seed(45);
    ({ url, child } = await spawnServer(dir, await freePort()));
    const second = await verify(url, state);
    expect(second.code).toBe(0);
    expect(second.stdout).toMatch(/347 entries verified/);
    expect(second.stdout).toMatch(/consistent with the checkpoint seen before \(size 302\)/);
    await stopChild(child);
  });

  it('fails and names the entry when one stored attestation is edited in SQLite', async () => {
    await seed(50);
    const db = new Database(join(dir, 'ledger.sqlite'));
    db.prepare('UPDATE attestations SET nar_size = nar_size + 1 WHERE leaf_index = 37').run();
    db.close();
    const { url, child } = await spawnServer(dir, await freePort());
    const result = await verify(url, state);
    await stopChild(child);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/entry 37/);
  });

  it('detects a rewritten history against the checkpoint it saw before', async () => {
    await seed(20);
    let { url, child } = await spawnServer(dir, await freePort());
    expect((await verify(url, state)).code).toBe(0);
    await stopChild(child);
    // The operator throws the log away and builds a new one with the same key: every new checkpoint
    // is validly signed, but the history the auditor saw is gone.
    const db = new Database(join(dir, 'ledger.sqlite'));
    db.pragma('foreign_keys = OFF');
    db.exec('DELETE FROM checkpoints; DELETE FROM merkle_nodes; DELETE FROM attestations; DELETE FROM operator_leaves; DELETE FROM decisions; DELETE FROM policies; DELETE FROM builders');
    db.close();
    await seed(25);
    ({ url, child } = await spawnServer(dir, await freePort()));
    const result = await verify(url, state);
    await stopChild(child);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/history was rewritten/);
  });
});
