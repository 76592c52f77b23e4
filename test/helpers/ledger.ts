import { randomBytes } from 'node:crypto';
import { loadConfig, type Config } from '../../src/config.js';
import { statementText } from '../../src/ledger/statement.js';
import { narHashFromDigest } from '../../src/nix/hash.js';
import { signRaw, type SecretKey } from '../../src/nix/keys.js';
import { nix32Encode } from '../../src/nix/nix32.js';
import type { StorePath } from '../../src/nix/storePath.js';

/** A config for a test server: temp data dir, random loopback port, no environment leaking in. */
export function testConfig(dataDir: string, flags: Record<string, unknown> = {}): Config {
  return loadConfig({ env: {}, flags: { dataDir, listen: '127.0.0.1:0', logLevel: 'warn', ...flags } });
}

export function randomStorePath(name = 'pkg'): StorePath {
  return `/nix/store/${nix32Encode(randomBytes(20))}-${name}` as StorePath;
}

export function randomNarHash(): string {
  return narHashFromDigest(randomBytes(32));
}

export interface AttestationFields {
  drvPath?: string;
  outputName?: string;
  outPath: string;
  narHash: string;
  narSize?: number;
  references?: string[];
}

/** The JSON a builder submits, signed by `key` (design.md). */
export function signedAttestation(key: SecretKey, fields: AttestationFields) {
  const a = {
    drvPath: fields.drvPath ?? `${fields.outPath.slice(0, 44)}drv-${fields.outPath.slice(44)}.drv`,
    outputName: fields.outputName ?? 'out',
    outPath: fields.outPath,
    narHash: fields.narHash,
    narSize: fields.narSize ?? 1234,
    references: [...(fields.references ?? [])].sort(),
  };
  const statement = statementText(a as Parameters<typeof statementText>[0]);
  return { ...a, builder: key.name, signature: signRaw(key, statement).toString('base64') };
}
