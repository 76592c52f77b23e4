import Database from 'better-sqlite3';
import { cpSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addBuilder } from '../../src/app/builders.js';
import { parseAttestation } from '../../src/ledger/attestation.js';
import { auditLog } from '../../src/ledger/audit.js';
import { encodeLeaf } from '../../src/ledger/leaf.js';
import { MerkleLog } from '../../src/ledger/log.js';
import { createLogger } from '../../src/log.js';
import { uploadAuthHeader } from '../../src/http/builderAuth.js';
import { narHashFromDigest, sha256, type NarHash } from '../../src/nix/hash.js';
import { generateSecretKey, type SecretKey } from '../../src/nix/keys.js';
import { dumpNar } from '../../src/nix/nar/index.js';
import { hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { tempDir } from '../helpers/nix.js';
import { fetchLeaves, replayLeaves, servedQuorum } from '../helpers/replay.js';

/**
 * The database is edited while the server is stopped, the way an operator (or whoever got at the
 * disk) could: after a restart either nothing wrong is served, or `verify` names what does not
 * follow from the log.
 */
describe('a database edited while the server is down', () => {
  const dirs: string[] = [];
  let prepared: string;
  const [alice, bob, carol, mallory] = ['alice-1', 'bob-1', 'carol-1', 'mallory-1'].map(generateSecretKey) as [SecretKey, SecretKey, SecretKey, SecretKey];
  const agreed = randomStorePath('agreed');
  const lonely = randomStorePath('lonely');
  const other = randomStorePath('other');
  const nars = new Map<string, { narHash: NarHash; narSize: number }>();

  async function narFor(server: RunningServer, dir: string, name: string) {
    const src = join(dir, `src-${name}`);
    writeFileSync(src, `content of ${name}\n`);
    const chunks: Buffer[] = [];
    for await (const c of dumpNar(src)) chunks.push(c);
    const bytes = Buffer.concat(chunks);
    const nar = { narHash: narHashFromDigest(sha256(bytes)), narSize: bytes.length };
    const res = await fetch(`${server.url}/api/v1/nars/${nar.narHash}`, { method: 'PUT', body: new Uint8Array(bytes), headers: { authorization: uploadAuthHeader(alice, nar.narHash, nar.narSize) } });
    expect(res.status).toBe(201);
    return nar;
  }

  beforeAll(async () => {
    prepared = tempDir('tamper');
    dirs.push(prepared);
    const server = await startServer(testConfig(prepared));
    for (const k of [alice, bob, carol]) addBuilder(server.service, k.publicKey);
    for (const [path, name] of [[agreed, 'agreed'], [lonely, 'lonely'], [other, 'other']] as const) nars.set(path, await narFor(server, prepared, name));
    const submit = (key: SecretKey, path: string) => server.service.ingestor.submit([parseAttestation(signedAttestation(key, { outPath: path, ...nars.get(path)! }))]);
    await submit(alice, agreed);
    await submit(bob, agreed);
    await submit(alice, lonely);
    await submit(bob, other);
    await server.close();
  });
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  /** A copy of the prepared ledger, edited by `edit`, served again; its log lines are kept. */
  async function restartAfter(edit: (db: Database.Database) => void): Promise<{ server: RunningServer; said: string }> {
    const dir = tempDir('tampered');
    dirs.push(dir);
    cpSync(prepared, dir, { recursive: true });
    const db = new Database(join(dir, 'ledger.sqlite'));
    db.pragma('foreign_keys = OFF');
    edit(db);
    db.close();
    const lines: string[] = [];
    const server = await startServer(testConfig(dir), createLogger('warn', (l) => lines.push(l)));
    await server.service.decisionsChecked;
    return { server, said: lines.join('') };
  }
  const status = async (server: RunningServer, path: string, policy = '') => (await fetch(`${server.url}${policy}/${hashPartOf(path as StorePath)}.narinfo`)).status;
  /** What the server says has quorum equals what an independent replay of its log gives. */
  async function followsFromLog(server: RunningServer): Promise<void> {
    const log = replayLeaves(await fetchLeaves(server.url));
    expect(log.problems).toEqual([]);
    for (const policy of log.policies.keys()) expect(await servedQuorum(server.url, policy)).toEqual(log.quorum.get(policy));
    expect((await auditLog(server.url)).problems).toEqual([]);
  }

  it('serves as before when nothing was edited', async () => {
    const { server, said } = await restartAfter(() => {});
    try {
      expect(said).not.toMatch(/did not follow from the log/);
      expect(await status(server, agreed)).toBe(200);
      expect(await status(server, lonely)).toBe(404);
      await followsFromLog(server);
    } finally {
      await server.close();
    }
  });

  it('a decision row written in: corrected at start, never served', async () => {
    const { server, said } = await restartAfter((db) => {
      const { narHash, narSize } = nars.get(lonely)!;
      db.prepare("INSERT INTO decisions (policy, out_path, status, nar_hash, nar_size, refs, agreeing, reason, updated_at) VALUES ('default', ?, 'quorum', ?, ?, '', 2, 'edited', 0)").run(lonely, narHash, narSize);
      db.prepare("UPDATE decisions SET status = 'blocked', nar_hash = NULL WHERE out_path = ?").run(agreed);
    });
    try {
      expect(said).toMatch(/decisions that did not follow from the log were corrected.*"corrected":2/);
      expect(await status(server, lonely)).toBe(404);
      expect(await status(server, agreed)).toBe(200);
      await followsFromLog(server);
    } finally {
      await server.close();
    }
  });

  it('a sock-puppet builder row with its own attestation: it never counts', async () => {
    const { server, said } = await restartAfter((db) => {
      const id = db.prepare('INSERT INTO builders (name, public_key, added_at, added_leaf) VALUES (?, ?, 0, 1)').run(mallory.name, mallory.publicKey.raw).lastInsertRowid;
      const size = db.prepare('SELECT MAX(idx) + 1 FROM merkle_nodes WHERE level = 0').pluck().get() as number;
      const a = signedAttestation(mallory, { outPath: lonely, ...nars.get(lonely)! });
      db.prepare("INSERT INTO attestations (leaf_index, builder_id, drv_path, output_name, out_path, nar_hash, nar_size, refs, signature, created_at) VALUES (?, ?, ?, 'out', ?, ?, ?, '', ?, 0)").run(
        size,
        id,
        a.drvPath,
        lonely,
        a.narHash,
        a.narSize,
        Buffer.from(a.signature, 'base64'),
      );
      db.prepare("INSERT INTO decisions (policy, out_path, status, nar_hash, nar_size, refs, agreeing, reason, updated_at) VALUES ('default', ?, 'quorum', ?, ?, '', 2, 'edited', 0)").run(lonely, a.narHash, a.narSize);
    });
    try {
      expect(said).toMatch(/builder mallory-1: no registry leaf states it; it no longer counts/);
      expect(await status(server, lonely)).toBe(404);
      expect(server.service.registry.active().map((b) => b.name)).toEqual(['alice-1', 'bob-1', 'carol-1']);
      await followsFromLog(server);
    } finally {
      await server.close();
    }
  });

  it('a policy row weakened: restored from its leaf', async () => {
    const { server, said } = await restartAfter((db) => {
      db.exec("UPDATE policies SET threshold = 1 WHERE name = 'default'");
      db.exec("INSERT INTO policies (name, threshold, on_conflict, all_builders, updated_at) VALUES ('loose', 1, 'ignore', 1, 0)");
    });
    try {
      expect(said).toMatch(/policy default: its rows differed from its policy leaf; restored/);
      expect(said).toMatch(/policy loose: no policy leaf states it; removed/);
      expect(server.service.policies.require('default').threshold).toBe(2);
      expect(await status(server, lonely)).toBe(404);
      expect(await status(server, lonely, '/policy/loose')).toBe(404);
      await followsFromLog(server);
    } finally {
      await server.close();
    }
  });

  it('a registry leaf edited: the server refuses to start, naming the leaf', async () => {
    const dir = tempDir('tampered');
    dirs.push(dir);
    cpSync(prepared, dir, { recursive: true });
    const db = new Database(join(dir, 'ledger.sqlite'));
    const leaf = db.prepare("SELECT leaf_index FROM operator_leaves WHERE leaf LIKE '%;add;carol-1;%'").pluck().get() as number;
    db.prepare('UPDATE operator_leaves SET leaf = ? WHERE leaf_index = ?').run(`nix-quorum-builder-v1;add;carol-1;${mallory.publicKey.raw.toString('base64')};1`, leaf);
    db.close();
    await expect(startServer(testConfig(dir))).rejects.toThrow(new RegExp(`leaf ${leaf} of the database is not the leaf the log holds at that index`));
  });

  it('an attestation row edited so that a path reaches quorum: verify names the entry', async () => {
    let edited = 0;
    const { server } = await restartAfter((db) => {
      // bob's statement about another path is made to say what alice said about the lonely one.
      edited = db.prepare('SELECT leaf_index FROM attestations WHERE out_path = ?').pluck().get(other) as number;
      const { narHash, narSize } = nars.get(lonely)!;
      const drv = db.prepare('SELECT drv_path FROM attestations WHERE out_path = ?').pluck().get(lonely) as string;
      db.prepare('UPDATE attestations SET out_path = ?, nar_hash = ?, nar_size = ?, drv_path = ? WHERE leaf_index = ?').run(lonely, narHash, narSize, drv, edited);
    });
    try {
      await expect(auditLog(server.url)).rejects.toThrow(new RegExp(`entry ${edited}: the signature by bob-1 does not match the statement`));
    } finally {
      await server.close();
    }
  });

  it('attestations a server appended to its own log in breach of the registry: verify names each one', async () => {
    let late = 0;
    let unknown = 0;
    const { server } = await restartAfter((db) => {
      const log = new MerkleLog(db);
      const revoke = log.size();
      const text = `nix-quorum-builder-v1;revoke;carol-1;;${Date.now()}`;
      db.prepare('INSERT INTO operator_leaves (leaf_index, leaf) VALUES (?, ?)').run(revoke, text);
      db.prepare("UPDATE builders SET revoked_at = 1, revoked_leaf = ? WHERE name = 'carol-1'").run(revoke);
      log.append(revoke, [Buffer.from(text)]);
      const puppet = db.prepare('INSERT INTO builders (name, public_key, added_at) VALUES (?, ?, 0)').run(mallory.name, mallory.publicKey.raw).lastInsertRowid;
      const carolId = db.prepare("SELECT id FROM builders WHERE name = 'carol-1'").pluck().get();
      for (const [key, id] of [[carol, carolId], [mallory, puppet]] as const) {
        const index = log.size();
        const a = parseAttestation(signedAttestation(key, { outPath: randomStorePath('appended'), narHash: nars.get(lonely)!.narHash }));
        db.prepare('INSERT INTO attestations (leaf_index, builder_id, drv_path, output_name, out_path, nar_hash, nar_size, refs, signature, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)').run(
          index, id, a.drvPath, a.outputName, a.outPath, a.narHash, a.narSize, '', a.signature,
        );
        log.append(index, [encodeLeaf(a)]);
        if (key === carol) late = index;
        else unknown = index;
      }
    });
    try {
      const report = await auditLog(server.url);
      expect(report.problems).toEqual([
        expect.stringMatching(new RegExp(`^entry ${late}: carol-1 attested .* after the log revoked its key \\(leaf ${late - 1}\\)$`)),
        `entries ${unknown}: signed as mallory-1, a name the log never registers`,
      ]);
    } finally {
      await server.close();
    }
  });

  it('a decision row edited in a large ledger is not served while the background check has not reached it yet', async () => {
    const dir = tempDir('tampered-large');
    dirs.push(dir);
    cpSync(prepared, dir, { recursive: true });
    let server = await startServer(testConfig(dir));
    // Enough attestations that the check after a restart takes several chunks; the edited path sorts last.
    const batch = Array.from({ length: 12_000 }, () => parseAttestation(signedAttestation(carol, { outPath: randomStorePath('bulk'), narHash: nars.get(other)!.narHash })));
    await server.service.ingestor.submit(batch);
    const last = `/nix/store/${'z'.repeat(32)}-last`;
    await server.service.ingestor.submit([parseAttestation(signedAttestation(alice, { outPath: last, ...nars.get(lonely)! }))]);
    await server.close();
    const db = new Database(join(dir, 'ledger.sqlite'));
    const { narHash, narSize } = nars.get(lonely)!;
    db.prepare("INSERT INTO decisions (policy, out_path, status, nar_hash, nar_size, refs, agreeing, reason, updated_at) VALUES ('default', ?, 'quorum', ?, ?, '', 2, 'edited', 0)").run(last, narHash, narSize);
    db.close();
    server = await startServer(testConfig(dir));
    try {
      expect(server.service.decisions.checked).toBe(false);
      expect(await status(server, last)).toBe(404);
      expect(server.service.db.prepare('SELECT COUNT(*) FROM decisions WHERE out_path = ?').pluck().get(last)).toBe(0);
      expect((await server.service.decisionsChecked).corrected).toBe(1);
    } finally {
      await server.close();
    }
  }, 120_000);
});
