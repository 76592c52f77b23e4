import { describe, expect, it } from 'vitest';
import { attestationJson, signOutput } from '../../src/builder/attest.js';
import { parseAttestation } from '../../src/ledger/attestation.js';
import { statementText } from '../../src/ledger/statement.js';
import { fingerprint } from '../../src/nix/fingerprint.js';
import { parseNarHash } from '../../src/nix/hash.js';
import { generateSecretKey, verifyNix, verifyRaw } from '../../src/nix/keys.js';
import type { StorePath } from '../../src/nix/storePath.js';
import { randomNarHash, randomStorePath } from '../helpers/ledger.js';

describe('signOutput', () => {
  const key = generateSecretKey('attest-test-1');
  const dep = randomStorePath('dep');
  const output = {
    drvPath: randomStorePath('pkg.drv'),
    outputName: 'dev',
    outPath: randomStorePath('pkg-dev'),
    narHash: parseNarHash(randomNarHash()),
    narSize: 123_456,
    references: [dep, randomStorePath('lib'), dep] as StorePath[],
  };

  it('signs the attestation statement and the Nix fingerprint over sorted, distinct references', () => {
    const a = signOutput(output, key);
    const references = [...new Set(output.references)].sort();
    expect(a.references).toEqual(references);
    expect(a.builder).toBe(key.name);
    expect(verifyRaw(key.publicKey, statementText(a), a.signature)).toBe(true);
    expect(verifyNix(key.publicKey, fingerprint(output.outPath, output.narHash, output.narSize, references), a.narinfoSignature!)).toBe(true);
  });

  it('produces the submitted JSON that the server parses back to the same attestation', () => {
    const a = signOutput(output, key);
    const json = JSON.parse(JSON.stringify(attestationJson(a))) as unknown;
    expect(parseAttestation(json)).toEqual(a);
  });
});
