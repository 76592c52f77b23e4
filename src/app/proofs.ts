import { QuorumError } from '../errors.js';
import { encodeLeaf } from '../ledger/leaf.js';
import { attestationOf, attestationsOfHashPart, revokedNameLeaves } from '../ledger/queries.js';
import { formatTlogProof } from '../ledger/tlogProof.js';
import type { NarCatalog } from '../nars/catalog.js';
import type { HashPart } from '../nix/storePath.js';
import type { Service } from '../service.js';
import { CosignatureStore, type CosignedCheckpoint } from '../witness/cosignatures.js';

/** One log entry with its c2sp.org/tlog-proof@v1 text. */
export interface ProvedLeaf {
  /** base64 of the leaf bytes. */
  leaf: string;
  proof: string;
}

export interface PathProofs {
  attestations: ProvedLeaf[];
  /** The add and revoke leaves of every revoked name, so a client can honour revocations of keys it pinned. */
  registry: ProvedLeaf[];
  /**
   * Where the NAR of the most attested content that is stored can be fetched: `url` relative to the
   * ledger's URL (its substituter's nar/ route) or absolute (an upstream cache).
   */
  nar: { narHash: string; url: string; compression: string; fileHash: string; fileSize: number } | null;
}

/**
 * GET /api/v1/paths/<hashPart>/proofs: every attestation of a hash part, each with its tlog-proof
 * against ONE checkpoint (the newest, or with `cosigned` the newest that has that many
 * cosignatures), so a client that trusts no server can check them itself (src/client/). Nothing is
 * signed per request: the checkpoint and its cosignatures are the stored ones. Attestations logged
 * after that checkpoint are left out: they cannot be proved against it yet.
 */
export function pathProofReader(s: Service, catalog: NarCatalog): (hashPart: HashPart, cosigned: number) => PathProofs {
  const cosignatures = new CosignatureStore(s.db);
  // Revocations are few and change only with a new checkpoint: proved once per checkpoint note
  // (a new cosignature changes the note, and so every proof's text).
  let registry: { note: string; leaves: ProvedLeaf[] } | undefined;
  const prove = (checkpoint: CosignedCheckpoint, index: number, leaf: Buffer): ProvedLeaf => ({
    leaf: leaf.toString('base64'),
    proof: formatTlogProof({ index, hashes: s.log.inclusionProof(index, checkpoint.checkpoint.size), checkpoint: checkpoint.note }),
  });

  return (hashPart, cosigned) => {
    const checkpoint = cosigned > 0 ? cosignatures.newestCosigned(cosigned) : cosignatures.with(s.checkpoints.latest() ?? s.checkpoints.publish());
    if (!checkpoint) throw new QuorumError('not-witnessed', `no checkpoint of this log has ${cosigned} witness cosignatures yet`, { field: 'cosigned' });
    const { size } = checkpoint.checkpoint;
    const records = attestationsOfHashPart(s.db, hashPart).filter((r) => r.leafIndex < size);
    if (registry?.note !== checkpoint.note) {
      registry = { note: checkpoint.note, leaves: revokedNameLeaves(s.db, size).map(({ index, leaf }) => prove(checkpoint, index, leaf)) };
    }
    return {
      attestations: records.map((r) => prove(checkpoint, r.leafIndex, encodeLeaf(attestationOf(r)))),
      registry: registry.leaves,
      nar: narOf(catalog, records.map((r) => r.narHash)),
    };
  };
}

function narOf(catalog: NarCatalog, narHashes: string[]): PathProofs['nar'] {
  const count = new Map<string, number>();
  for (const h of narHashes) count.set(h, (count.get(h) ?? 0) + 1);
  for (const [narHash] of [...count].sort((a, b) => b[1] - a[1])) {
    const record = catalog.get(narHash);
    if (record) return { narHash, url: record.blobKey, compression: record.compression, fileHash: record.fileHash, fileSize: record.fileSize };
  }
  return null;
}
