import { z } from 'zod';
import { QuorumError } from '../errors.js';
import { parseNarHash } from '../nix/hash.js';
import { parseDrvPath, parseStorePath, type StorePath } from '../nix/storePath.js';
import { statementText, type Attestation } from './statement.js';

const OUTPUT_NAME = /^[A-Za-z0-9+\-._?=]{1,64}$/;
const KEY_NAME = /^[A-Za-z0-9._+\-]{1,128}$/;
/**
 * What one attestation may hold (README, "Limits"): every leaf stays small enough that any ledger
 * can be fetched and audited page by page, whatever a builder sends.
 */
export const MAX_REFERENCES = 4096;
export const MAX_LEAF_BYTES = 1024 * 1024;

const storePath = (field: string) =>
  z.string().transform((s, ctx) => {
    try {
      return parseStorePath(s, field);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
  });

/** Zod schema for the submitted JSON (design.md), producing an Attestation. */
export const attestationInput = z
  .object({
    drvPath: z.string().transform((s, ctx) => {
      try {
        return parseDrvPath(s);
      } catch (e) {
        ctx.addIssue({ code: 'custom', message: (e as Error).message });
        return z.NEVER;
      }
    }),
    outputName: z.string().regex(OUTPUT_NAME, 'outputName must be 1-64 characters of A-Z a-z 0-9 + - . _ ? ='),
    outPath: storePath('outPath'),
    narHash: z.string().transform((s, ctx) => {
      try {
        return parseNarHash(s);
      } catch (e) {
        ctx.addIssue({ code: 'custom', message: (e as Error).message });
        return z.NEVER;
      }
    }),
    narSize: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
    references: z.array(storePath('references')).max(MAX_REFERENCES),
    builder: z.string().regex(KEY_NAME, 'builder must be the key name: letters, digits and . _ + -'),
    signature: z
      .string()
      .regex(/^[A-Za-z0-9+/]{86}==$/, 'signature must be the base64 of a 64-byte Ed25519 signature')
      .transform((s) => Buffer.from(s, 'base64')),
    narinfoSignature: z
      .string()
      .regex(/^[A-Za-z0-9._+\-]{1,128}:[A-Za-z0-9+/]{86}==$/, 'narinfoSignature must be name:base64(64-byte signature)')
      .nullish()
      .transform((s) => s ?? null),
  })
  .strict()
  .transform((a): Attestation => ({ ...a, references: [...new Set(a.references)].sort() as StorePath[] }));

/** Formats a zod error as "field: message; field: message" so a client sees what to fix. */
export function describeZodError(error: z.ZodError, prefix = ''): string {
  return error.issues
    .map((i) => {
      const path = [prefix, ...i.path.map(String)].filter(Boolean).join('.');
      return path ? `${path}: ${i.message}` : i.message;
    })
    .join('; ');
}

export function parseAttestation(input: unknown, prefix = ''): Attestation {
  const parsed = attestationInput.safeParse(input);
  if (!parsed.success) {
    const first = parsed.error.issues[0]?.path.map(String).join('.');
    throw new QuorumError('bad-attestation', describeZodError(parsed.error, prefix), { field: first });
  }
  const a = parsed.data;
  // The leaf's bytes (leaf.ts): statement, name, base64 signature, narinfo Sig, three newlines (all ASCII).
  const leafBytes = statementText(a).length + a.builder.length + 88 + (a.narinfoSignature?.length ?? 0) + 3;
  if (leafBytes > MAX_LEAF_BYTES) {
    throw new QuorumError('bad-attestation', `${prefix ? `${prefix}.` : ''}references: the attestation's leaf would be ${leafBytes} bytes, more than the ${MAX_LEAF_BYTES} a leaf may be`, { field: 'references' });
  }
  return a;
}
