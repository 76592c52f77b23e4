import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { FsBlobStore } from '../../src/blobstore/fs.js';
import { parseAttestation } from '../../src/ledger/attestation.js';
import { createLogger } from '../../src/log.js';
import { NarCatalog } from '../../src/nars/catalog.js';
import { NarListings } from '../../src/nars/listings.js';
import { collectGarbage, GC_GRACE_MS, narHashOfBlobKey, type GcResult } from '../../src/nars/gc.js';
import { narBlobKey, uploadNar } from '../../src/nars/upload.js';
import { narHashFromDigest, sha256, type NarHash } from '../../src/nix/hash.js';
import { generateSecretKey, type SecretKey } from '../../src/nix/keys.js';
import { encodeStrings } from '../../src/nix/nar/index.js';
import { startServer } from '../../src/serve.js';
import { openService, type Service } from '../../src/service.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { tempDir } from '../helpers/nix.js';
import { CLI } from '../helpers/server.js';
import { addBuilder, revokeBuilder } from '../../src/app/builders.js';
import { setPolicy } from '../../src/app/policies.js';

const HOUR = 60 * 60 * 1000;
const DAY = 24 * HOUR;
const RETENTION_DAYS = 30;

interface Nar {
  bytes: Buffer;
  narHash: NarHash;
  narSize: number;
}

/** A small, valid NAR of one regular file (random contents, so every NAR is new). */
function makeNar(): Nar {
  const bytes = encodeStrings('nix-archive-1', '(', 'type', 'regular', 'contents', randomBytes(100 + Math.floor(Math.random() * 400)), ')');
  return { bytes, narHash: narHashFromDigest(sha256(bytes)), narSize: bytes.length };
}

/** A real service (SQLite ledger, registry, decisions) with a real filesystem blob store next to it. */
class World {
  readonly dir: string;
  readonly service: Service;
  readonly blobs: FsBlobStore;
  readonly catalog: NarCatalog;
  readonly keys = { alice: generateSecretKey('alice-1'), bob: generateSecretKey('bob-1'), carol: generateSecretKey('carol-1') };
  /** Log lines of the service and of GC (warnings and errors). */
  readonly logLines: string[] = [];

  private constructor(blobs: FsBlobStore, dir: string) {
    this.dir = dir;
    this.blobs = blobs;
    this.service = openService(testConfig(dir), createLogger('warn', (line) => this.logLines.push(line)));
    this.catalog = new NarCatalog(this.service.db);
    for (const key of Object.values(this.keys)) addBuilder(this.service, key.publicKey);
  }

  static async open(): Promise<World> {
    const dir = tempDir('gc');
    return new World(await FsBlobStore.open(join(dir, 'nars')), dir);
  }

  async upload(nar: Nar): Promise<string> {
    const { record } = await uploadNar(this.blobs, this.catalog, { narHash: nar.narHash, narSize: nar.narSize, body: Readable.from([nar.bytes]), compression: 'br', uploadedBy: null, listings: new NarListings(this.service.db) });
    return record.blobKey;
  }

  /** A blob with no catalogue row, as a crash between the blob's put and its row's insert leaves. */
  async orphan(nar: Nar): Promise<string> {
    const key = narBlobKey(nar.narHash, 'br');
    await this.blobs.put(key, Readable.from([nar.bytes]));
    return key;
  }

  async attest(key: SecretKey, outPath: string, nar: Nar): Promise<void> {
    const [result] = await this.service.ingestor.submit([parseAttestation(signedAttestation(key, { outPath, narHash: nar.narHash, narSize: nar.narSize }))]);
    expect(result!.status).toBe('accepted');
  }

  /** Makes a catalogued NAR look uploaded at `createdAt` (unix ms). */
  age(narHash: string, createdAt: number): void {
    this.service.db.prepare('UPDATE nars SET created_at = ? WHERE nar_hash = ?').run(createdAt, narHash);
  }

  gc(now: number, options: { dryRun?: boolean } = {}): Promise<GcResult> {
    return collectGarbage({
      db: this.service.db,
      blobs: this.blobs,
      catalog: this.catalog,
      logger: createLogger('warn', (line) => this.logLines.push(line)),
      retentionDays: RETENTION_DAYS,
      now,
      ...options,
    });
  }

  async blobKeys(): Promise<string[]> {
    const out: string[] = [];
    for await (const { key } of this.blobs.list()) out.push(key);
    return out;
  }

  quorumHashes(): Set<string> {
    return new Set(this.service.db.prepare("SELECT DISTINCT nar_hash FROM decisions WHERE status = 'quorum'").pluck().all() as string[]);
  }

  sightings(): unknown[] {
    return this.service.db.prepare("SELECT key, value FROM meta WHERE key LIKE 'gc-orphan:%' ORDER BY key").all();
  }

  close(): void {
    this.service.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

describe('collectGarbage', () => {
  let world: World;
  afterEach(() => world?.close());

  it('deletes an unattested NAR once the grace period is over, its catalogue row before its blob', async () => {
    world = await World.open();
    const nar = makeNar();
    const key = await world.upload(nar);
    const fileSize = world.catalog.get(nar.narHash)!.fileSize;
    const t = Date.now();

    const early = await world.gc(t + GC_GRACE_MS - HOUR);
    expect(early.deleted).toEqual([]);
    expect(early.kept).toBe(1);
    expect(await world.blobs.head(key)).not.toBeNull();

    // Watch the real store's deletes: the row must already be gone when the blob goes.
    const rowWhenBlobDeleted = new Map<string, unknown>();
    const realDelete = world.blobs.delete.bind(world.blobs);
    vi.spyOn(world.blobs, 'delete').mockImplementation(async (k) => {
      rowWhenBlobDeleted.set(k, world.catalog.get(narHashOfBlobKey(k)!));
      return realDelete(k);
    });
    const late = await world.gc(t + GC_GRACE_MS + HOUR);
    expect(late.deleted).toEqual([{ reason: 'unattested', blobKey: key, narHash: nar.narHash, bytes: fileSize, upstream: false }]);
    expect(late.bytesFreed).toBe(fileSize);
    expect(late.kept).toBe(0);
    expect(rowWhenBlobDeleted).toEqual(new Map([[key, undefined]]));
    expect(world.catalog.get(nar.narHash)).toBeUndefined();
    expect(await world.blobKeys()).toEqual([]);
  });

  it('deletes a NAR whose path never reached quorum only after the retention period', async () => {
    world = await World.open();
    const nar = makeNar();
    const key = await world.upload(nar);
    await world.attest(world.keys.alice, randomStorePath('pending'), nar); // 1 of the default 2
    const t = Date.now();

    expect((await world.gc(t + (RETENTION_DAYS - 1) * DAY)).deleted).toEqual([]);
    expect(await world.blobs.head(key)).not.toBeNull();
    const late = await world.gc(t + (RETENTION_DAYS + 1) * DAY);
    expect(late.deleted.map((d) => [d.reason, d.blobKey])).toEqual([['no-quorum', key]]);
    expect(world.catalog.get(nar.narHash)).toBeUndefined();
    expect(await world.blobKeys()).toEqual([]);
  });

  it('never deletes a NAR with quorum under any policy, until a revocation takes the quorum away', async () => {
    world = await World.open();
    const { alice, bob, carol } = world.keys;
    setPolicy(world.service, { name: 'solo', builders: new Set(['carol-1']), threshold: 1, onConflict: 'block' });
    const byTwo = makeNar();
    const byCarol = makeNar();
    const twoKey = await world.upload(byTwo);
    const carolKey = await world.upload(byCarol);
    const p = randomStorePath('two');
    await world.attest(alice, p, byTwo);
    await world.attest(bob, p, byTwo);
    await world.attest(carol, randomStorePath('solo'), byCarol); // quorum under 'solo' only
    const t = Date.now();

    const result = await world.gc(t + 1000 * DAY);
    expect(result.deleted).toEqual([]);
    expect(result.kept).toBe(2);
    expect(await world.blobKeys()).toEqual([carolKey, twoKey].sort());

    revokeBuilder(world.service, 'bob-1');
    const after = await world.gc(t + 1000 * DAY);
    expect(after.deleted.map((d) => [d.reason, d.narHash])).toEqual([['no-quorum', byTwo.narHash]]);
    expect(await world.blobKeys()).toEqual([carolKey]);
  });

  it('removes only the catalogue row of a NAR held by an upstream cache', async () => {
    world = await World.open();
    const narHash = randomNarHash() as NarHash;
    const url = 'https://upstream.example/nar/0abc.nar.xz';
    world.catalog.add({ narHash, narSize: 4096, blobKey: url, compression: 'xz', fileHash: randomNarHash(), fileSize: 1000, fileCrc32: null }, null);
    const deletes = vi.spyOn(world.blobs, 'delete');
    const result = await world.gc(Date.now() + GC_GRACE_MS + HOUR);
    expect(result.deleted).toEqual([{ reason: 'unattested', blobKey: url, narHash, bytes: 0, upstream: true }]);
    expect(result.bytesFreed).toBe(0);
    expect(deletes).not.toHaveBeenCalled();
    expect(world.catalog.get(narHash)).toBeUndefined();
  });

  it('deletes an uncatalogued blob only when passes at least the grace period apart saw it uncatalogued', async () => {
    world = await World.open();
    const nar = makeNar();
    const key = await world.orphan(nar);
    // Not NAR keys: GC does not judge what it did not name.
    await world.blobs.put('nar/notes.txt', Readable.from([Buffer.from('x')]));
    await world.blobs.put('other/thing', Readable.from([Buffer.from('y')]));
    const t = Date.now();

    const first = await world.gc(t);
    expect(first.deleted).toEqual([]);
    expect(first.waitingOrphans).toBe(1);
    const second = await world.gc(t + GC_GRACE_MS - 1);
    expect(second.deleted).toEqual([]);
    expect(second.waitingOrphans).toBe(1);
    expect(await world.blobs.head(key)).not.toBeNull();

    const third = await world.gc(t + GC_GRACE_MS);
    expect(third.deleted).toEqual([{ reason: 'orphan-blob', blobKey: key, narHash: nar.narHash, bytes: nar.bytes.length, upstream: false }]);
    expect(third.waitingOrphans).toBe(0);
    expect(await world.blobKeys()).toEqual(['nar/notes.txt', 'other/thing']);
    expect(world.sightings()).toEqual([]);
  });

  it('forgets an uncatalogued blob once it is catalogued, so it never inherits an old sighting', async () => {
    world = await World.open();
    const nar = makeNar();
    const key = await world.orphan(nar);
    const t = Date.now();
    await world.gc(t);
    expect(world.sightings()).toHaveLength(1);

    await world.upload(nar); // the builder retried: same key, now with its row
    await world.attest(world.keys.alice, randomStorePath('retried'), nar);
    expect((await world.gc(t + GC_GRACE_MS)).deleted).toEqual([]);
    expect(world.sightings()).toEqual([]);

    // The row goes again (e.g. dropped after a lost blob): a first sighting, not an old one.
    expect(world.catalog.remove(nar.narHash, key)).toBe(true);
    const again = await world.gc(t + GC_GRACE_MS + 1);
    expect(again.deleted).toEqual([]);
    expect(again.waitingOrphans).toBe(1);
    expect(await world.blobs.head(key)).not.toBeNull();
  });

  it('keeps an uncatalogued blob that a path with quorum waits for', async () => {
    world = await World.open();
    const nar = makeNar();
    const key = await world.orphan(nar);
    const p = randomStorePath('waiting');
    await world.attest(world.keys.alice, p, nar);
    await world.attest(world.keys.bob, p, nar);
    const t = Date.now();
    for (const now of [t, t + GC_GRACE_MS, t + 100 * DAY]) expect((await world.gc(now)).deleted).toEqual([]);
    expect(await world.blobs.head(key)).not.toBeNull();
  });

  it('re-checks in the deleting transaction: a NAR that gained an attestation or quorum since it was found stays', async () => {
    world = await World.open();
    const { alice, bob } = world.keys;
    const gainsAttestation = makeNar();
    const gainsQuorum = makeNar();
    const stillGarbage = makeNar();
    for (const nar of [gainsAttestation, gainsQuorum, stillGarbage]) await world.upload(nar);
    const path = randomStorePath('late');
    await world.attest(alice, path, gainsQuorum);
    const t = Date.now();
    world.age(gainsQuorum.narHash, t - (RETENTION_DAYS + 1) * DAY);
    const cutoffs = { unattestedBefore: t + GC_GRACE_MS, unadvertisedBefore: t - RETENTION_DAYS * DAY };

    const { nars, lastLeaf } = world.catalog.collectable(cutoffs);
    expect(nars.map((n) => n.narHash).sort()).toEqual([gainsAttestation.narHash, gainsQuorum.narHash, stillGarbage.narHash].sort());
    await world.attest(alice, randomStorePath('new'), gainsAttestation);
    await world.attest(bob, path, gainsQuorum);
    const removed = nars.filter((nar) => world.catalog.removeIfCollectable(nar, cutoffs, lastLeaf)).map((n) => n.narHash);
    expect(removed).toEqual([stillGarbage.narHash]);
    expect(world.catalog.get(gainsAttestation.narHash)).toBeDefined();
    expect(world.catalog.get(gainsQuorum.narHash)).toBeDefined();
  });

  it('drops the row of a re-upload that raced the deletion of its blob, so the catalogue never names a missing blob', async () => {
    world = await World.open();
    const nar = makeNar();
    const key = await world.upload(nar);
    // A builder re-uploads the NAR right after GC removed its row and right before GC deletes the blob.
    const realDelete = world.blobs.delete.bind(world.blobs);
    const reuploaded: unknown[] = [];
    vi.spyOn(world.blobs, 'delete').mockImplementationOnce(async (k) => {
      await world.upload(nar);
      reuploaded.push(world.catalog.get(nar.narHash)?.blobKey);
      return realDelete(k);
    });
    const result = await world.gc(Date.now() + GC_GRACE_MS + HOUR);
    expect(reuploaded).toEqual([key]);
    expect(result.deleted.map((d) => d.blobKey)).toEqual([key]);
    expect(await world.blobs.head(key)).toBeNull();
    expect(world.catalog.get(nar.narHash)).toBeUndefined();
    expect(world.logLines.map((l) => JSON.parse(l) as { msg: string })).toEqual([expect.objectContaining({ msg: expect.stringMatching(/raced its garbage collection/), narHash: nar.narHash, key })]);
  });

  it('dry run deletes and records nothing, and lists exactly what the real run then deletes', async () => {
    world = await World.open();
    const { alice, bob } = world.keys;
    const unattested = makeNar();
    const noQuorum = makeNar();
    const advertised = makeNar();
    const orphan = makeNar();
    const freshOrphan = makeNar();
    for (const nar of [unattested, noQuorum, advertised]) await world.upload(nar);
    await world.attest(alice, randomStorePath('nq'), noQuorum);
    const p = randomStorePath('adv');
    await world.attest(alice, p, advertised);
    await world.attest(bob, p, advertised);
    world.catalog.add({ narHash: randomNarHash() as NarHash, narSize: 1, blobKey: 'https://upstream.example/nar/x.nar.xz', compression: 'xz', fileHash: randomNarHash(), fileSize: 9, fileCrc32: null }, null);
    await world.orphan(orphan);
    const t = Date.now();
    await world.gc(t); // first sighting of `orphan`
    await world.orphan(freshOrphan);

    const now = t + (RETENTION_DAYS + 1) * DAY;
    const state = async () => ({ rows: world.service.db.prepare('SELECT * FROM nars ORDER BY nar_hash').all(), blobs: await world.blobKeys(), sightings: world.sightings() });
    const before = await state();
    const dry = await world.gc(now, { dryRun: true });
    expect(await state()).toEqual(before);
    expect(dry.deleted.map((d) => d.reason).sort()).toEqual(['no-quorum', 'orphan-blob', 'unattested', 'unattested']);
    expect(dry.waitingOrphans).toBe(1);

    const real = await world.gc(now);
    expect(real).toEqual(dry);
    expect(await world.blobKeys()).toEqual([narBlobKey(advertised.narHash, 'br'), narBlobKey(freshOrphan.narHash, 'br')].sort());
  });

  it('never deletes what an advertised path needs, and deletes exactly what the rules make garbage (random scenarios)', async () => {
    const builderNames = ['alice', 'bob', 'carol'] as const;
    const scenario = fc.record({
      nars: fc.array(fc.record({ catalogued: fc.boolean(), ageHours: fc.integer({ min: 0, max: 40 * 24 }) }), { minLength: 1, maxLength: 6 }),
      // Per path, what each builder attested: an index into `nars`, or nothing.
      paths: fc.array(fc.tuple(fc.option(fc.nat(5)), fc.option(fc.nat(5)), fc.option(fc.nat(5))), { maxLength: 5 }),
      soloThreshold: fc.integer({ min: 1, max: 2 }),
      revoke: fc.option(fc.constantFrom(...builderNames)),
      passes: fc.array(fc.integer({ min: 0, max: 20 * 24 }), { minLength: 1, maxLength: 4 }),
    });
    await fc.assert(
      fc.asyncProperty(scenario, async (s) => {
        world?.close();
        world = await World.open();
        const t = Date.now();
        setPolicy(world.service, { name: 'solo', builders: new Set(['carol-1', 'bob-1']), threshold: s.soloThreshold, onConflict: 'ignore' });
        const nars = s.nars.map(makeNar);
        for (const [i, spec] of s.nars.entries()) {
          if (spec.catalogued) {
            await world.upload(nars[i]!);
            world.age(nars[i]!.narHash, t - spec.ageHours * HOUR);
          } else {
            await world.orphan(nars[i]!);
          }
        }
        for (const votes of s.paths) {
          const path = randomStorePath('p');
          for (const [b, choice] of votes.entries()) if (choice !== null) await world.attest(world.keys[builderNames[b]!], path, nars[choice % nars.length]!);
        }
        if (s.revoke) revokeBuilder(world.service, `${s.revoke}-1`);

        const firstSeenUncatalogued = new Map<string, number>();
        let now = t;
        for (const step of s.passes) {
          now += step * HOUR;
          const needed = world.quorumHashes();
          const attested = new Set(world.service.db.prepare('SELECT nar_hash FROM attestations').pluck().all() as string[]);
          const rows = new Map(world.service.db.prepare('SELECT nar_hash, blob_key, created_at FROM nars').all().map((r) => {
            const row = r as { nar_hash: string; blob_key: string; created_at: number };
            return [row.nar_hash, row] as const;
          }));
          const blobsBefore = await world.blobKeys();
          const uncatalogued = blobsBefore.filter((k) => rows.get(narHashOfBlobKey(k)!)?.blob_key !== k && !needed.has(narHashOfBlobKey(k)!));
          const isGarbageRow = (r: { nar_hash: string; created_at: number }) =>
            !needed.has(r.nar_hash) && ((!attested.has(r.nar_hash) && r.created_at < now - GC_GRACE_MS) || r.created_at < now - Math.max(RETENTION_DAYS * DAY, GC_GRACE_MS));

          const result = await world.gc(now);

          // Nothing an advertised (or quorum-waiting) path needs went: not its row, not its blob.
          for (const key of blobsBefore) if (needed.has(narHashOfBlobKey(key)!)) expect(await world.blobs.head(key)).not.toBeNull();
          for (const narHash of needed) if (rows.has(narHash)) expect(world.catalog.get(narHash)).toBeDefined();
          // Every deletion was garbage by the rules, and all garbage went.
          const expectedRows = [...rows.values()].filter(isGarbageRow).map((r) => r.nar_hash).sort();
          const expectedOrphans = uncatalogued.filter((k) => firstSeenUncatalogued.has(k) && now - firstSeenUncatalogued.get(k)! >= GC_GRACE_MS);
          expect(result.deleted.filter((d) => d.reason !== 'orphan-blob').map((d) => d.narHash).sort()).toEqual(expectedRows);
          expect(result.deleted.filter((d) => d.reason === 'orphan-blob').map((d) => d.blobKey)).toEqual(expectedOrphans);
          for (const d of result.deleted) {
            if (d.reason === 'unattested') expect(attested.has(d.narHash)).toBe(false);
            if (d.reason !== 'orphan-blob') expect(world.catalog.get(d.narHash)).toBeUndefined();
            expect(await world.blobs.head(d.blobKey)).toBeNull();
          }
          expect(result.kept).toBe(world.catalog.count());
          expect(await world.blobKeys()).toEqual(blobsBefore.filter((k) => !result.deleted.some((d) => d.blobKey === k)));

          for (const k of [...firstSeenUncatalogued.keys()]) if (!uncatalogued.includes(k) || expectedOrphans.includes(k)) firstSeenUncatalogued.delete(k);
          for (const k of uncatalogued) if (!expectedOrphans.includes(k) && !firstSeenUncatalogued.has(k)) firstSeenUncatalogued.set(k, now);
        }
        // No upload ran concurrently, so GC never had to repair a race.
        expect(world.logLines).toEqual([]);
      }),
      { numRuns: 30 },
    );
  });
});

describe('nix-quorum gc and the scheduled collection', () => {
  let world: World;
  afterEach(() => world?.close());

  const gcCli = (...args: string[]) => spawnSync(process.execPath, [CLI, 'gc', ...args], { encoding: 'utf8', env: { ...process.env, NIX_QUORUM_LOG_LEVEL: 'warn' } });

  it('lists what it would delete with --dry-run, then deletes it, each with a summary', async () => {
    world = await World.open();
    const garbage = makeNar();
    const kept = makeNar();
    const key = await world.upload(garbage);
    await world.upload(kept);
    world.age(garbage.narHash, Date.now() - GC_GRACE_MS - HOUR);
    const fileSize = world.catalog.get(garbage.narHash)!.fileSize;
    world.service.close(); // the CLI opens the data directory itself, as next to a running server

    const dry = gcCli('--data', world.dir, '--dry-run');
    expect(dry.stderr).toBe('');
    expect(dry.status).toBe(0);
    expect(dry.stdout).toBe(`would delete unattested  ${key} ${fileSize} B\ndry run: would delete 1 NAR(s), ${fileSize} B; 1 catalogued NAR(s) kept\n`);
    const real = gcCli('--data', world.dir);
    expect(real.status).toBe(0);
    expect(real.stdout).toBe(dry.stdout.replace('would delete unattested', 'deleted unattested').replace('dry run: would delete', 'deleted'));
    expect(await world.blobKeys()).toEqual([narBlobKey(kept.narHash, 'br')]);
    expect(gcCli('--data', world.dir).stdout).toBe('deleted 0 NAR(s), 0 B; 1 catalogued NAR(s) kept\n');
  });

  it('refuses a directory without a database instead of reporting nothing to delete', () => {
    const dir = tempDir('gc-empty');
    try {
      const res = gcCli('--data', dir, '--dry-run');
      expect(res.status).toBe(1);
      expect(res.stderr).toMatch(/no ledger in .*: give the server's data directory with --data/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('runs in the server on config.gc.cron', async () => {
    world = await World.open();
    const garbage = makeNar();
    await world.upload(garbage);
    world.age(garbage.narHash, Date.now() - GC_GRACE_MS - HOUR);
    world.service.close();
    const server = await startServer(testConfig(world.dir, { gc: { cron: '* * * * * *', retentionDays: RETENTION_DAYS } }));
    try {
      for (let i = 0; i < 500 && server.catalog.get(garbage.narHash); i++) await new Promise((r) => setTimeout(r, 20));
      expect(server.catalog.get(garbage.narHash)).toBeUndefined();
      const keys: string[] = [];
      for await (const { key } of server.blobs.list()) keys.push(key);
      expect(keys).toEqual([]);
    } finally {
      await server.close();
    }
  });
});
