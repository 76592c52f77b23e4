import { isUtf8 } from 'node:buffer';
import { QuorumError } from '../errors.js';
import { parseAttestation } from './attestation.js';
import { statementText, type Attestation } from './statement.js';

/**
 * Leaf bytes of the log (design.md, "Ledger"): UTF-8, lines joined by "\n", no trailing newline; the
 * first line names the kind. The Merkle leaf hash is SHA-256(0x00 || leaf bytes) (RFC 9162).
 *
 * attestation (4 lines):
 *   <statement>            exactly what the builder signed, contains no newline
 *   <builder key name>
 *   <base64 signature>     64-byte Ed25519 signature over the statement
 *   <narinfoSignature>     the builder's Nix `name:base64` Sig over the fingerprint, or empty
 * builder registry (1 line):
 *   nix-quorum-builder-v1;add;<name>;<base64 32-byte key>;<unix ms> | nix-quorum-builder-v1;revoke;<name>;;<unix ms>
 * policy (1 line):
 *   nix-quorum-policy-v1;<name>;<threshold>;<block|ignore>;<key names sorted, joined by ",", or *>;<unix ms>
 *
 * Registry and policy leaves are the log operator's statements, authenticated by the checkpoints
 * that include them; with the attestations they are everything a quorum decision depends on.
 */

export const BUILDER_PREFIX = 'nix-quorum-builder-v1';
export const POLICY_PREFIX = 'nix-quorum-policy-v1';

/** Builder key names (the part of a Nix key before ':'). */
export const KEY_NAME = /^[A-Za-z0-9._+\-]{1,128}$/;
export const POLICY_NAME = /^[A-Za-z0-9._\-]{1,64}$/;

export type RegistryEntry =
  | { action: 'add'; name: string; publicKey: Buffer; at: number }
  | { action: 'revoke'; name: string; at: number };

/** A policy as the log states it; threshold 0 deletes the policy of that name. */
export interface PolicyEntry {
  name: string;
  threshold: number;
  onConflict: 'block' | 'ignore';
  /** Key names, sorted and distinct, or '*' for every active builder. */
  builders: readonly string[] | '*';
  at: number;
}

export type LogLeaf =
  | { kind: 'attestation'; attestation: Attestation }
  | { kind: 'builder'; entry: RegistryEntry }
  | { kind: 'policy'; entry: PolicyEntry };

export function encodeLeaf(a: Attestation): Buffer {
  return Buffer.from(attestationLeafText(a), 'utf8');
}

function attestationLeafText(a: Attestation): string {
  return [statementText(a), a.builder, a.signature.toString('base64'), a.narinfoSignature ?? ''].join('\n');
}

export function registryLeafText(e: RegistryEntry): string {
  return e.action === 'add' ? `${BUILDER_PREFIX};add;${e.name};${e.publicKey.toString('base64')};${e.at}` : `${BUILDER_PREFIX};revoke;${e.name};;${e.at}`;
}

export function policyLeafText(e: PolicyEntry): string {
  return `${POLICY_PREFIX};${e.name};${e.threshold};${e.onConflict};${e.builders === '*' ? '*' : e.builders.join(',')};${e.at}`;
}

/** Decodes any leaf; a leaf that is not in the one canonical spelling of its kind is refused. */
export function decodeLeaf(leaf: Uint8Array): LogLeaf {
  // Invalid UTF-8 would decode to U+FFFD: two leaves, one text.
  if (!isUtf8(leaf)) bad('a leaf is UTF-8 text');
  const text = Buffer.from(leaf.buffer, leaf.byteOffset, leaf.byteLength).toString('utf8');
  if (text.startsWith(`${BUILDER_PREFIX};`)) return { kind: 'builder', entry: decodeRegistry(text) };
  if (text.startsWith(`${POLICY_PREFIX};`)) return { kind: 'policy', entry: decodePolicy(text) };
  return { kind: 'attestation', attestation: decodeAttestation(text) };
}

function decodeAttestation(text: string): Attestation {
  const lines = text.split('\n');
  if (lines.length !== 4) bad(`an attestation leaf has 4 lines, this one has ${lines.length}`);
  const [statement, builder, signature, narinfoSignature] = lines as [string, string, string, string];
  const fields = statement.split(';');
  if (fields.length !== 7 || fields[0] !== 'nix-quorum-attestation-v1') bad('leaf statement is not a nix-quorum-attestation-v1 statement');
  const [, drvPath, outputName, outPath, narHash, narSize, refs] = fields as [string, string, string, string, string, string, string];
  if (!/^(0|[1-9][0-9]{0,15})$/.test(narSize)) bad('leaf statement narSize is not a decimal integer');
  const attestation = parseAttestation({
    drvPath,
    outputName,
    outPath,
    narHash,
    narSize: Number(narSize),
    references: refs === '' ? [] : refs.split(','),
    builder,
    signature,
    narinfoSignature: narinfoSignature === '' ? null : narinfoSignature,
  });
  // Re-encoding must give the same text (so the same bytes), or the leaf was not canonical (e.g. unsorted references).
  if (attestationLeafText(attestation) !== text) bad('leaf is not in canonical form');
  return attestation;
}

function decodeRegistry(text: string): RegistryEntry {
  const fields = text.split(';');
  if (fields.length !== 5) bad(`a builder leaf has 5 fields, this one has ${fields.length}`);
  const [, action, name, key, at] = fields as [string, string, string, string, string];
  if (!KEY_NAME.test(name)) bad(`builder leaf name ${JSON.stringify(name.slice(0, 80))} is not a key name`);
  const entry: RegistryEntry =
    action === 'add'
      ? { action, name, publicKey: canonicalKey(key), at: unixMs(at) }
      : action === 'revoke' && key === ''
        ? { action, name, at: unixMs(at) }
        : bad('a builder leaf is "add" with a key or "revoke" without one');
  if (registryLeafText(entry) !== text) bad('builder leaf is not in canonical form');
  return entry;
}

function decodePolicy(text: string): PolicyEntry {
  const fields = text.split(';');
  if (fields.length !== 6) bad(`a policy leaf has 6 fields, this one has ${fields.length}`);
  const [, name, threshold, onConflict, builders, at] = fields as [string, string, string, string, string, string];
  if (!POLICY_NAME.test(name)) bad(`policy leaf name ${JSON.stringify(name.slice(0, 80))} is not a policy name`);
  if (!/^(0|[1-9][0-9]{0,8})$/.test(threshold)) bad('policy leaf threshold is not a decimal integer');
  if (onConflict !== 'block' && onConflict !== 'ignore') bad('policy leaf onConflict is neither block nor ignore');
  let set: PolicyEntry['builders'] = '*';
  if (builders !== '*') {
    const names = builders.split(',');
    if (!names.every((n) => KEY_NAME.test(n))) bad('policy leaf builders are not key names joined by ","');
    set = names;
  }
  const entry: PolicyEntry = { name, threshold: Number(threshold), onConflict, builders: set, at: unixMs(at) };
  // Sorted, distinct names: the canonical spelling.
  if (set !== '*' && policyLeafText({ ...entry, builders: [...new Set(set)].sort() }) !== text) bad('policy leaf builders are not sorted and distinct');
  if (policyLeafText(entry) !== text) bad('policy leaf is not in canonical form');
  return entry;
}

function canonicalKey(text: string): Buffer {
  const raw = Buffer.from(text, 'base64');
  if (raw.length !== 32 || raw.toString('base64') !== text) bad('builder leaf key is not the base64 of 32 bytes');
  return raw;
}

function unixMs(text: string): number {
  if (!/^(0|[1-9][0-9]{0,15})$/.test(text) || !Number.isSafeInteger(Number(text))) bad('leaf time is not unix milliseconds');
  return Number(text);
}

function bad(message: string): never {
  throw new QuorumError('bad-leaf', message);
}
