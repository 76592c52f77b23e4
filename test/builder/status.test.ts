import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QuorumClient } from '../../src/builder/remote.js';
import { formatPathStatus, hashPartOfArgument, parsePathStatus } from '../../src/builder/status.js';
import { parseAttestation } from '../../src/ledger/attestation.js';
import { generateSecretKey } from '../../src/nix/keys.js';
import { hashPartOf } from '../../src/nix/storePath.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { tempDir } from '../helpers/nix.js';
import { addBuilder } from '../../src/app/builders.js';

describe('hashPartOfArgument', () => {
  const path = randomStorePath('hello-2.12');
  it('accepts a store path, its base name or its hash part', () => {
    const hashPart = hashPartOf(path);
    expect(hashPartOfArgument(path)).toBe(hashPart);
    expect(hashPartOfArgument(path.slice('/nix/store/'.length))).toBe(hashPart);
    expect(hashPartOfArgument(hashPart)).toBe(hashPart);
  });
  it('rejects anything else, naming the argument', () => {
    for (const bad of ['', 'hello', '/nix/store/eeee', '/other/store/00000000000000000000000000000000-x']) {
      expect(() => hashPartOfArgument(bad)).toThrow(expect.objectContaining({ code: 'bad-store-path', field: 'path' }));
    }
  });
});

describe('status of a path, from a real server', () => {
  let dir: string;
  let server: RunningServer;
  const [a, b, c] = ['status-a-1', 'status-b-1', 'status-c-1'].map((n) => generateSecretKey(n));
  beforeAll(async () => {
    dir = tempDir('builder-status');
    server = await startServer(testConfig(dir));
    for (const k of [a!, b!, c!]) addBuilder(server.service, k.publicKey);
  });
  afterAll(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('explains each policy\'s decision with its reason and lists who signed what', async () => {
    const outPath = randomStorePath('hello');
    const narHash = randomNarHash();
    const other = randomNarHash();
    await server.service.ingestor.submit([
      parseAttestation(signedAttestation(a!, { outPath, narHash })),
      parseAttestation(signedAttestation(b!, { outPath, narHash })),
    ]);
    const client = new QuorumClient(server.url);
    const agreed = formatPathStatus(parsePathStatus(await client.path(hashPartOf(outPath))));
    expect(agreed).toContain(`${outPath}\n`);
    expect(agreed).toMatch(/policy default: QUORUM: 2 of 3 trusted keys agree \(threshold 2\)/);
    expect(agreed).toContain(`content: ${narHash}, 1234 bytes`);
    expect(agreed).toContain('agreeing: status-a-1, status-b-1; missing: status-c-1');
    expect(agreed).toMatch(/attestations \(2\):\n {4}#\d+ status-a-1: /);

    await server.service.ingestor.submit([parseAttestation(signedAttestation(c!, { outPath, narHash: other }))]);
    const blocked = formatPathStatus(parsePathStatus(await client.path(hashPartOf(outPath))));
    expect(blocked).toMatch(/policy default: BLOCKED: .*dissenting: status-c-1/);
  });

  it('says so when nobody attested the path yet', async () => {
    const outPath = randomStorePath('nobody');
    const text = formatPathStatus(parsePathStatus(await new QuorumClient(server.url).path(hashPartOf(outPath))));
    expect(text).toBe(`/nix/store/${hashPartOf(outPath)}-…: no attestations yet\n`);
  });

  it('refuses an answer of an unexpected shape with a clear error', () => {
    expect(() => parsePathStatus({ hashPart: 'x', paths: [{ outPath: 1 }] })).toThrow(expect.objectContaining({ code: 'bad-response', message: expect.stringMatching(/paths\.0\.outPath/) }));
  });
});
