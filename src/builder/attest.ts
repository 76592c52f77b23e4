import { statementText, type Attestation } from '../ledger/statement.js';
import { fingerprint } from '../nix/fingerprint.js';
import { signNix, signRaw, type SecretKey } from '../nix/keys.js';
import type { BuiltOutput } from './outputs.js';

/** The submitted JSON of design.md (what POST /api/v1/attestations and the spool hold). */
export interface AttestationJson {
  drvPath: string;
  outputName: string;
  outPath: string;
  narHash: string;
  narSize: number;
  references: string[];
  builder: string;
  signature: string;
  narinfoSignature: string | null;
}

/**
 * Signs what the builder saw: the attestation statement, and the Nix fingerprint so the substituter
 * can also serve this builder's own narinfo `Sig` (clients that trust the builder key directly).
 */
export function signOutput(output: BuiltOutput, key: SecretKey): Attestation {
  const references = [...new Set(output.references)].sort();
  const signed = { ...output, references };
  return {
    ...signed,
    builder: key.name,
    signature: signRaw(key, statementText(signed)),
    narinfoSignature: signNix(key, fingerprint(output.outPath, output.narHash, output.narSize, references)),
  };
}

export function attestationJson(a: Attestation): AttestationJson {
  return {
    drvPath: a.drvPath,
    outputName: a.outputName,
    outPath: a.outPath,
    narHash: a.narHash,
    narSize: a.narSize,
    references: a.references,
    builder: a.builder,
    signature: a.signature.toString('base64'),
    narinfoSignature: a.narinfoSignature,
  };
}
