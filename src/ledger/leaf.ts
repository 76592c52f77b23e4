import { QuorumError } from '../errors.js';
import { parseAttestation } from './attestation.js';
import { statementText, type Attestation } from './statement.js';

/**
 * Leaf bytes of the log (UTF-8, four lines joined by "\n", no trailing newline):
 *
 *   <statement>            exactly what the builder signed (design.md), contains no newline
 *   <builder key name>
 *   <base64 signature>     64-byte Ed25519 signature over the statement
 *   <narinfoSignature>     the builder's Nix `name:base64` Sig over the fingerprint, or empty
 *
 * Everything a verifier needs, given the builder's public key, is in the leaf; the Merkle leaf hash
 * is SHA-256(0x00 || leaf bytes) (RFC 9162).
 */
export function encodeLeaf(a: Attestation): Buffer {
  return Buffer.from([statementText(a), a.builder, a.signature.toString('base64'), a.narinfoSignature ?? ''].join('\n'), 'utf8');
}

export function decodeLeaf(leaf: Uint8Array): Attestation {
  const lines = Buffer.from(leaf).toString('utf8').split('\n');
  if (lines.length !== 4) throw new QuorumError('bad-leaf', `a leaf has 4 lines, this one has ${lines.length}`);
  const [statement, builder, signature, narinfoSignature] = lines as [string, string, string, string];
  const fields = statement.split(';');
  if (fields.length !== 7 || fields[0] !== 'nix-quorum-attestation-v1') {
    throw new QuorumError('bad-leaf', 'leaf statement is not a nix-quorum-attestation-v1 statement');
  }
  const [, drvPath, outputName, outPath, narHash, narSize, refs] = fields as [string, string, string, string, string, string, string];
  if (!/^(0|[1-9][0-9]{0,15})$/.test(narSize)) throw new QuorumError('bad-leaf', 'leaf statement narSize is not a decimal integer');
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
  // Re-encoding must give the same bytes, or the leaf was not canonical (e.g. unsorted references).
  if (!encodeLeaf(attestation).equals(Buffer.from(leaf))) throw new QuorumError('bad-leaf', 'leaf is not in canonical form');
  return attestation;
}
