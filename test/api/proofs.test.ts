import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addBuilder, revokeBuilder } from '../../src/app/builders.js';
import { parseAttestation } from '../../src/ledger/attestation.js';
import { parseCheckpoint } from '../../src/ledger/checkpoint.js';
import { decodeLeaf } from '../../src/ledger/leaf.js';
import { leafHash, verifyInclusion } from '../../src/ledger/merkle.js';
import { parseTlogProof, TLOG_PROOF_V1 } from '../../src/ledger/tlogProof.js';
import { generateSecretKey } from '../../src/nix/keys.js';
import { hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { tempDir } from '../helpers/nix.js';

interface Proofs {
  attestations: Array<{ leaf: string; proof: string }>;
  registry: Array<{ leaf: string; proof: string }>;
  nar: { narHash: string; url: string; compression: string; fileHash: string; fileSize: number } | null;
}

describe('GET /api/v1/paths/<hashPart>/proofs', () => {
  let dir: string;
  let server: RunningServer;
  const [alice, bob, carol] = ['alice-1', 'bob-1', 'carol-1'].map(generateSecretKey) as [ReturnType<typeof generateSecretKey>, ReturnType<typeof generateSecretKey>, ReturnType<typeof generateSecretKey>];
  const outPath = randomStorePath('proved');
  const narHash = randomNarHash();

  beforeAll(async () => {
    dir = tempDir('proofs');
    // Checkpoints only when the test publishes one: what is logged after it is not provable yet.
    server = await startServer(testConfig(dir, { ledger: { checkpointIntervalMs: 3_600_000 } }));
    for (const k of [alice, bob, carol]) addBuilder(server.service, k.publicKey);
    await server.service.ingestor.submit([alice, bob].map((k) => parseAttestation(signedAttestation(k, { outPath, narHash }))));
    await server.service.ingestor.submit([parseAttestation(signedAttestation(carol, { outPath, narHash: randomNarHash() }))]);
    revokeBuilder(server.service, carol.name);
    server.service.checkpoints.publish();
  });
  afterAll(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const get = async (hashPart: string, query = '') => fetch(`${server.url}/api/v1/paths/${hashPart}/proofs${query}`);
  const proofs = async (path: string = outPath) => (await (await get(hashPartOf(path as StorePath))).json()) as Proofs;

  /** What a client does with one proved leaf: the checkpoint under the log key, then the inclusion path to its root. */
  const verified = (entry: { leaf: string; proof: string }) => {
    const proof = parseTlogProof(entry.proof);
    const checkpoint = parseCheckpoint(proof.checkpoint, server.service.noteVerifier, server.service.origin);
    const leaf = Buffer.from(entry.leaf, 'base64');
    verifyInclusion(leafHash(leaf), proof.index, checkpoint.size, proof.hashes, checkpoint.rootHash);
    return { proof, checkpoint, leaf: decodeLeaf(leaf) };
  };

  it('proves every attestation of the hash part against one checkpoint, the newest', async () => {
    const body = await proofs();
    expect(body.attestations).toHaveLength(3);
    const all = body.attestations.map(verified);
    expect(all.every((v) => v.proof.checkpoint === all[0]!.proof.checkpoint)).toBe(true);
    expect(all[0]!.checkpoint.size).toBe(server.service.log.size());
    expect(all.map((v) => (v.leaf.kind === 'attestation' ? `${v.leaf.attestation.builder} ${v.leaf.attestation.outPath}` : v.leaf.kind))).toEqual([alice, bob, carol].map((k) => `${k.name} ${outPath}`));
    expect(body.attestations[0]!.proof.startsWith(`${TLOG_PROOF_V1}\nindex ${all[0]!.proof.index}\n`)).toBe(true);
  });

  it('proves the add and revoke leaves of each revoked name, and no other registry leaf', async () => {
    const { registry } = await proofs();
    const leaves = registry.map(verified).map((v) => v.leaf);
    expect(leaves.map((l) => (l.kind === 'builder' ? `${l.entry.action} ${l.entry.name}` : l.kind))).toEqual([`add ${carol.name}`, `revoke ${carol.name}`]);
  });

  it('leaves out attestations logged after the checkpoint, until one covers them', async () => {
    const late = randomStorePath('late');
    await server.service.ingestor.submit([parseAttestation(signedAttestation(alice, { outPath: late, narHash }))]);
    expect((await proofs(late)).attestations).toEqual([]);
    server.service.checkpoints.publish();
    expect((await proofs(late)).attestations.map(verified)).toHaveLength(1);
  });

  it('names where the NAR of the most attested stored content is, or null', async () => {
    expect((await proofs()).nar).toBeNull();
    server.catalog.add({ narHash: narHash as never, narSize: 1234, blobKey: `nar/${narHash.slice(7)}.nar.br`, compression: 'br', fileHash: randomNarHash(), fileSize: 99, fileCrc32: null }, null);
    expect((await proofs()).nar).toMatchObject({ narHash, url: `nar/${narHash.slice(7)}.nar.br`, compression: 'br', fileSize: 99 });
  });

  it('answers a hash part nothing attested with no attestations, and refuses a malformed one naming the field', async () => {
    expect((await proofs(randomStorePath('unknown'))).attestations).toEqual([]);
    const bad = await get('not-a-hash-part');
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ code: 'bad-request', field: 'hashPart' });
  });

  it('with ?cosigned=M, proves against the newest checkpoint with M cosignatures, or answers 404 not-witnessed', async () => {
    const res = await get(hashPartOf(outPath), '?cosigned=1');
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ code: 'not-witnessed', field: 'cosigned' });
    const bad = await get(hashPartOf(outPath), '?cosigned=x');
    expect(await bad.json()).toMatchObject({ code: 'bad-query', field: 'cosigned' });
  });
});
