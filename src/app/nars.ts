import { QuorumError } from '../errors.js';
import type { Builder, BuilderRegistry } from '../ledger/registry.js';
import { checkUploadAuth, parseUploadAuth } from '../nars/uploadAuth.js';
import type { NarHash } from '../nix/hash.js';

/**
 * Who may upload this NAR: an active builder the log registered under the name the header gives,
 * proving its key over this very hash and size. Nobody else can fill the disk.
 */
export function authorizeUpload(registry: BuilderRegistry, authorization: string | undefined, narHash: NarHash, narSize: number): Builder {
  const auth = parseUploadAuth(authorization);
  const builder = registry.get(auth.builder);
  if (!builder || registry.activeKey(auth.builder) === undefined) throw new QuorumError('forbidden', `${auth.builder} is not an active registered builder: only builders may upload NARs`);
  checkUploadAuth(auth, builder.publicKey, narHash, narSize);
  return builder;
}
