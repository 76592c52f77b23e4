import type { Db } from '../db.js';
import { QuorumError } from '../errors.js';
import { formatPublicKey, publicKeyFromRaw, type PublicKey } from '../nix/keys.js';

export interface Builder {
  id: number;
  name: string;
  publicKey: PublicKey;
  addedAt: number;
  revokedAt: number | null;
}

interface BuilderRow {
  id: number;
  name: string;
  public_key: Buffer;
  added_at: number;
  revoked_at: number | null;
}

function fromRow(row: BuilderRow): Builder {
  return { id: row.id, name: row.name, publicKey: publicKeyFromRaw(row.name, row.public_key), addedAt: row.added_at, revokedAt: row.revoked_at };
}

export function builderJson(b: Builder) {
  return { name: b.name, publicKey: formatPublicKey(b.publicKey), addedAt: new Date(b.addedAt).toISOString(), revokedAt: b.revokedAt === null ? null : new Date(b.revokedAt).toISOString(), active: b.revokedAt === null };
}

/**
 * The builder keys, cached in memory because every attestation needs its key; the cache is
 * replaced on every change this process makes (the only writer of the ledger).
 */
export class BuilderRegistry {
  private byName = new Map<string, Builder>();
  private byId = new Map<number, Builder>();
  private listeners: Array<(builder: Builder) => void> = [];

  constructor(private readonly db: Db) {
    this.reload();
  }

  reload(): void {
    const rows = this.db.prepare('SELECT id, name, public_key, added_at, revoked_at FROM builders ORDER BY id').all() as BuilderRow[];
    this.byName = new Map(rows.map((r) => [r.name, fromRow(r)]));
    this.byId = new Map([...this.byName.values()].map((b) => [b.id, b]));
  }

  list(): Builder[] {
    return [...this.byName.values()];
  }

  get(name: string): Builder | undefined {
    return this.byName.get(name);
  }

  getById(id: number): Builder | undefined {
    return this.byId.get(id);
  }

  /** Active builders only. */
  active(): Builder[] {
    return this.list().filter((b) => b.revokedAt === null);
  }

  add(publicKey: PublicKey, now = Date.now()): Builder {
    const existing = this.byName.get(publicKey.name);
    if (existing) {
      if (existing.publicKey.raw.equals(publicKey.raw) && existing.revokedAt === null) return existing;
      throw new QuorumError('builder-exists', `a builder named ${publicKey.name} already exists${existing.revokedAt === null ? '' : ' (revoked; names are never reused)'}: choose another key name`, { field: 'name' });
    }
    this.db.prepare('INSERT INTO builders (name, public_key, added_at) VALUES (?, ?, ?)').run(publicKey.name, publicKey.raw, now);
    this.reload();
    return this.byName.get(publicKey.name)!;
  }

  /** Marks a key revoked; `onRevoke` listeners run inside the caller's transaction to drop its votes. */
  revoke(name: string, now = Date.now()): Builder {
    const existing = this.byName.get(name);
    if (!existing) throw new QuorumError('unknown-builder', `no builder named ${name}`, { field: 'name' });
    if (existing.revokedAt !== null) return existing;
    this.db.transaction(() => {
      this.db.prepare('UPDATE builders SET revoked_at = ? WHERE id = ?').run(now, existing.id);
      this.reload();
      const revoked = this.byName.get(name)!;
      for (const listener of this.listeners) listener(revoked);
    })();
    return this.byName.get(name)!;
  }

  onRevoke(listener: (builder: Builder) => void): void {
    this.listeners.push(listener);
  }
}
