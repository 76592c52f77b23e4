import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QuorumClient } from '../../src/builder/remote.js';
import { hashPartOfArgument, parsePathStatus, servingOf, statusJson } from '../../src/builder/status.js';
import { formatPathStatus } from '../../src/cli/status.js';
import { uploadAuthHeader } from '../../src/http/builderAuth.js';
import { narHashFromDigest, sha256 } from '../../src/nix/hash.js';
import { encodeStrings, NAR_MAGIC } from '../../src/nix/nar/index.js';
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

  it('explains each policy\'s decision, whether it is served and why not, and lists who signed what', async () => {
    const outPath = randomStorePath('hello');
    const nar = encodeStrings(NAR_MAGIC, '(', 'type', 'regular', 'contents', `${Math.random()}\n`, ')');
    const narHash = narHashFromDigest(sha256(nar));
    const other = randomNarHash();
    await server.service.ingestor.submit([
      parseAttestation(signedAttestation(a!, { outPath, narHash, narSize: nar.length })),
      parseAttestation(signedAttestation(b!, { outPath, narHash, narSize: nar.length })),
    ]);
    const client = new QuorumClient(server.url);
    const show = async () => {
      const status = parsePathStatus(await client.path(hashPartOf(outPath)));
      const serving = await servingOf(client, status);
      return { text: formatPathStatus(status, serving), json: statusJson(status, serving) as { paths: Array<{ decisions: Array<{ served: boolean; notServedBecause: string | null }> }> } };
    };
    // Quorum, but nobody uploaded the NAR: not served, and it says what to run.
    const unserved = await show();
    expect(unserved.text).toContain(`${outPath}\n`);
    expect(unserved.text).toMatch(/^ {2}POLICY +STATUS +SERVED +REASON$/m);
    expect(unserved.text).toMatch(new RegExp(`^ {2}default +QUORUM +no: its NAR was never uploaded: on a builder that has the path, run \`nix-quorum submit --upload ${outPath}\` +2 of 3 trusted keys agree \\(threshold 2\\)$`, 'm'));
    expect(unserved.text).toContain(`default: content: ${narHash}, ${nar.length} bytes; agreeing: status-a-1, status-b-1; missing: status-c-1`);
    expect(unserved.text).toMatch(/attestations \(2\):\n {4} *LEAF +BUILDER +NAR HASH +BYTES +DERIVATION\n {4} *#\d+ +status-a-1 /);
    expect(unserved.json.paths[0]!.decisions[0]).toMatchObject({ served: false, notServedBecause: expect.stringMatching(/never uploaded/) });

    const put = await fetch(`${server.url}/api/v1/nars/${narHash}`, { method: 'PUT', body: new Uint8Array(nar), headers: { authorization: uploadAuthHeader(a!, narHash, nar.length) } });
    expect(put.status).toBe(201);
    const served = await show();
    expect(served.text).toMatch(/^ {2}default +QUORUM +yes +2 of 3 trusted keys agree/m);
    expect(served.json.paths[0]!.decisions[0]).toMatchObject({ served: true, notServedBecause: null });

    await server.service.ingestor.submit([parseAttestation(signedAttestation(c!, { outPath, narHash: other, narSize: nar.length }))]);
    const blocked = (await show()).text;
    expect(blocked).toMatch(/^ {2}default +BLOCKED +no: blocked +blocked \(onConflict: block\)/m);
    expect(blocked).toMatch(/dissenting: status-c-1/);
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
