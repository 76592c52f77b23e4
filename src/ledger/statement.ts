import type { NarHash } from '../nix/hash.js';
import type { StorePath } from '../nix/storePath.js';

/*
 * The statement a builder signs, apart from its zod schema (attestation.ts): the post-build hook
 * signs one per build and must not pay for loading zod.
 */

/** A builder's claim: building drvPath gave outPath with this content. Typed and validated. */
export interface Attestation {
  drvPath: StorePath;
  outputName: string;
  outPath: StorePath;
  narHash: NarHash;
  narSize: number;
  /** Full store paths, sorted, without duplicates. */
  references: StorePath[];
  /** Key name of the builder. */
  builder: string;
  /** 64-byte Ed25519 signature over statementText(). */
  signature: Buffer;
  /** The builder's Nix `Sig` over the narinfo fingerprint, served alongside ours. */
  narinfoSignature: string | null;
}

export const STATEMENT_PREFIX = 'nix-quorum-attestation-v1';

/** What a statement says about one build output: everything but who signed it. */
export type StatementFields = Pick<Attestation, 'drvPath' | 'outputName' | 'outPath' | 'narHash' | 'narSize' | 'references'>;

/** The exact UTF-8 text a builder signs (design.md). */
export function statementText(a: StatementFields): string {
  return [STATEMENT_PREFIX, a.drvPath, a.outputName, a.outPath, a.narHash, String(a.narSize), a.references.join(',')].join(';');
}

/**
 * What "the same content" means for quorum: equal narHash, narSize and references (`refs`: full
 * paths, sorted, joined by ',', as the attestations table stores them).
 */
export function contentKey(c: { narHash: string; narSize: number; refs: string }): string {
  return `${c.narHash};${c.narSize};${c.refs}`;
}
