import { QuorumError } from '../errors.js';
import { checkUploadAuth, parseUploadAuth, type BuilderAuth } from '../http/builderAuth.js';
import type { Builder, BuilderRegistry } from '../ledger/registry.js';
import type { NarHash } from '../nix/hash.js';

/**
 * The builder a request authenticates as, if it is one whose votes count (registered in the log
 * under that name, not revoked): checked from the header alone, before any body is read, so a
 * request from anybody else costs one lookup.
 */
export function authenticBuilder(registry: BuilderRegistry, auth: BuilderAuth): Builder {
  const builder = registry.get(auth.builder);
  if (!builder?.counts) throw new QuorumError('forbidden', `${auth.builder} is not an active registered builder: only builders may do this`, { field: 'Authorization' });
  return builder;
}

/** Who may upload this NAR: an active builder proving its key over this very hash and size. Nobody else can fill the disk. */
export function authorizeUpload(registry: BuilderRegistry, authorization: string | undefined, narHash: NarHash, narSize: number): Builder {
  const auth = parseUploadAuth(authorization);
  const builder = authenticBuilder(registry, auth);
  checkUploadAuth(auth, builder.publicKey, narHash, narSize);
  return builder;
}
