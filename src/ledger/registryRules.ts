import type { ErrorCode } from '../errors.js';
import { publicKeyProblem } from '../nix/ed25519Point.js';
import type { RegistryEntry } from './leaf.js';

/** A builder as the registry leaves state it. */
export interface RegisteredBuilder {
  name: string;
  /** 32 raw Ed25519 bytes. */
  publicKey: Buffer;
  /** How votes are counted: one key is one builder, whatever names point at it. */
  keyId: string;
  addedLeaf: number;
  addedAt: number;
  revokedLeaf: number | null;
  revokedAt: number | null;
}

/** Where the identity rule looks up what the log said before: an in-memory replay, or the server's tables. */
export interface RegistryLookup {
  byName(name: string): RegisteredBuilder | undefined;
  byKey(keyId: string): RegisteredBuilder | undefined;
}

export const keyIdOf = (publicKey: Uint8Array): string => Buffer.from(publicKey).toString('base64');

/**
 * The identity rule of design.md, for a registry entry about to be logged (by the server) or found
 * in a log (by a verifier): a name is bound once, forever; a key is bound to one name, forever (a
 * revoked key is never accepted again under any name); keys of small order and non-canonical
 * encodings are refused; only a bound, unrevoked name can be revoked. Returns what is wrong, or
 * undefined. Without it one signer could vote under two names, or come back after revocation.
 */
export function registryProblem(lookup: RegistryLookup, entry: RegistryEntry): { code: ErrorCode; message: string } | undefined {
  const named = lookup.byName(entry.name);
  if (entry.action === 'revoke') {
    if (!named) return { code: 'no-such-builder', message: `no builder named ${entry.name}` };
    if (named.revokedLeaf !== null) return { code: 'builder-exists', message: `${entry.name} is already revoked` };
    return undefined;
  }
  if (named) return { code: 'builder-exists', message: `a builder named ${entry.name} already exists${named.revokedLeaf === null ? '' : ' (revoked; names are never reused)'}: choose another key name` };
  const problem = publicKeyProblem(entry.publicKey);
  if (problem) return { code: 'bad-key', message: `${entry.name}'s key is refused: ${problem}` };
  const holder = lookup.byKey(keyIdOf(entry.publicKey));
  if (holder) {
    return holder.revokedLeaf === null
      ? { code: 'key-registered', message: `this key is already registered as ${holder.name}: one key is one builder` }
      : { code: 'key-revoked', message: `this key was registered as ${holder.name} and revoked: a revoked key is never accepted again` };
  }
  return undefined;
}
