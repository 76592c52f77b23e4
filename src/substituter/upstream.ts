import type { UpstreamCaches } from '../blobstore/upstream.js';
import type { NarCatalog } from '../nars/catalog.js';
import type { HashPart } from '../nix/storePath.js';
import type { QuorumPath } from './narinfo.js';

/**
 * Finds a quorum path's NAR in the upstream caches and catalogues it under its absolute upstream
 * URL, which the narinfo then points at: Nix fetches from upstream directly and checks the NarHash
 * the quorum agreed on, so the upstream is trusted no more than any blob store.
 * Resolves false when no upstream holds that NarHash; throws when an upstream failed and absence
 * is unknown (the caller must not cache that answer).
 */
export function upstreamResolver(caches: UpstreamCaches, catalog: NarCatalog): (hashPart: HashPart, path: QuorumPath) => Promise<boolean> {
  return async (hashPart, path) => {
    const nar = await caches.lookup(hashPart, path.narHash);
    // FileHash/FileSize are what our narinfo must state; every Nix-written narinfo has them.
    if (!nar || nar.narSize !== path.narSize || nar.fileHash === undefined || nar.fileSize === undefined) return false;
    catalog.add({ narHash: path.narHash, narSize: path.narSize, blobKey: nar.url, compression: nar.compression, fileHash: nar.fileHash, fileSize: nar.fileSize, fileCrc32: null }, null);
    return true;
  };
}
