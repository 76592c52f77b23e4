import type { Db } from '../db.js';
import { Derived, type DbVersion } from '../db/version.js';
import { formatPublicKey, publicKeyFromRaw, type PublicKey } from '../nix/keys.js';
import type { KeyDirectory } from '../quorum/evaluate.js';
import { keyIdOf, type RegisteredBuilder, type RegistryLookup } from './registryRules.js';

export interface Builder {
  id: number;
  name: string;
  publicKey: PublicKey;
  keyId: string;
  addedAt: number;
  revokedAt: number | null;
  /** The registry leaf that added it; null for a row no leaf of the log states (it never counts). */
  addedLeaf: number | null;
  revokedLeaf: number | null;
  /** Registered in the log and not revoked. */
  active: boolean;
  /**
   * Active, and the row its key is trusted through (see activeKey): its attestations are accepted
   * and count. False for a second row of a registered key, which only an edit of the database makes.
   */
  counts: boolean;
}

type BuilderRow = [id: number, name: string, publicKey: Buffer, addedAt: number, revokedAt: number | null, addedLeaf: number | null, revokedLeaf: number | null];

function fromRow([id, name, raw, addedAt, revokedAt, addedLeaf, revokedLeaf]: BuilderRow): Builder {
  return { id, name, publicKey: publicKeyFromRaw(name, raw), keyId: keyIdOf(raw), addedAt, revokedAt, addedLeaf, revokedLeaf, active: addedLeaf !== null && revokedLeaf === null, counts: false };
}

export function builderJson(b: Builder) {
  return { name: b.name, publicKey: formatPublicKey(b.publicKey), addedAt: new Date(b.addedAt).toISOString(), revokedAt: b.revokedAt === null ? null : new Date(b.revokedAt).toISOString(), active: b.active };
}

interface Snapshot {
  byName: Map<string, Builder>;
  byId: Map<number, Builder>;
  /** Keys of builders the log registered; for a key under several rows (only by editing the database), the first. */
  byKey: Map<string, Builder>;
}

/**
 * The builders table (a projection of the log's registry leaves), read through a cache keyed on the
 * database version, so a change by another process is seen at the next use. Writes go through the
 * application layer (src/app/builders.ts), which appends the leaf in the same transaction.
 */
export class BuilderRegistry implements RegistryLookup, KeyDirectory {
  private readonly snapshot: Derived<Snapshot>;

  constructor(db: Db, version: DbVersion) {
    const rows = db.prepare<[], BuilderRow>('SELECT id, name, public_key, added_at, revoked_at, added_leaf, revoked_leaf FROM builders ORDER BY id').raw();
    this.snapshot = new Derived(version, () => {
      const builders = rows.all().map(fromRow);
      const byKey = new Map<string, Builder>();
      for (const b of builders) if (b.addedLeaf !== null && !byKey.has(b.keyId)) byKey.set(b.keyId, b);
      for (const b of byKey.values()) b.counts = b.active;
      return { byName: new Map(builders.map((b) => [b.name, b])), byId: new Map(builders.map((b) => [b.id, b])), byKey };
    });
  }

  list(): Builder[] {
    return [...this.snapshot.get().byName.values()];
  }

  get(name: string): Builder | undefined {
    return this.snapshot.get().byName.get(name);
  }

  getById(id: number): Builder | undefined {
    return this.snapshot.get().byId.get(id);
  }

  active(): Builder[] {
    return this.list().filter((b) => b.active);
  }

  /** The key a builder row votes with, if the log registered it: rows sharing a key share one vote. */
  keyOf(builderId: number): string | undefined {
    const b = this.getById(builderId);
    return b && b.addedLeaf !== null ? b.keyId : undefined;
  }

  /** The name the log bound to a key. */
  nameOfKey(keyId: string): string {
    return this.snapshot.get().byKey.get(keyId)?.name ?? keyId;
  }

  /**
   * A key is trusted through the first row the log registered it under, never through a second row
   * holding the same key (only an edit of the database makes one): an alias can neither add a vote
   * nor keep a revoked key counting.
   */
  activeKey(name: string): string | undefined {
    const b = this.get(name);
    return b?.counts ? b.keyId : undefined;
  }

  activeKeys(): Iterable<string> {
    return [...this.snapshot.get().byKey.values()].filter((b) => b.active).map((b) => b.keyId);
  }

  byName(name: string): RegisteredBuilder | undefined {
    return registered(this.get(name));
  }

  byKey(keyId: string): RegisteredBuilder | undefined {
    return registered(this.snapshot.get().byKey.get(keyId));
  }
}

function registered(b: Builder | undefined): RegisteredBuilder | undefined {
  if (!b || b.addedLeaf === null) return undefined;
  return { name: b.name, publicKey: b.publicKey.raw, keyId: b.keyId, addedLeaf: b.addedLeaf, addedAt: b.addedAt, revokedLeaf: b.revokedLeaf, revokedAt: b.revokedAt };
}
