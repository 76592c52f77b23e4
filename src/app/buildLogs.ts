import { QuorumError } from '../errors.js';
import type { Builder, BuilderRegistry } from '../ledger/registry.js';
import type { BuildLogs } from '../logs/buildLogs.js';
import { checkBuilderAuth, LOG_AUTH_SCHEME, logAuthText, parseBuilderAuth } from '../http/builderAuth.js';
import type { NarHash } from '../nix/hash.js';
import type { StorePath } from '../nix/storePath.js';

/**
 * Who may deliver this build log: an active builder the log registered, under its own name, proving
 * its key over the derivation and the body's hash and size, and only of a derivation it attested an
 * output of. Nobody can fill the disk, or put words in another builder's log.
 */
export function authorizeLogUpload(
  registry: BuilderRegistry,
  logs: BuildLogs,
  upload: { authorization: string | undefined; builder: string; drvPath: StorePath; fileHash: NarHash; size: number },
): { builder: Builder; signedAt: number; signature: Buffer } {
  const auth = parseBuilderAuth(LOG_AUTH_SCHEME, upload.authorization);
  const builder = registry.get(auth.builder);
  if (!builder || registry.activeKey(auth.builder) === undefined) throw new QuorumError('forbidden', `${auth.builder} is not an active registered builder: only builders may upload build logs`);
  if (builder.name !== upload.builder) throw new QuorumError('forbidden', `${auth.builder} may upload only its own logs, not ${upload.builder}'s`, { field: 'builder' });
  checkBuilderAuth(auth, builder.publicKey, logAuthText(upload.drvPath, upload.fileHash, upload.size, auth.ts));
  if (!logs.attested(upload.drvPath, builder.id)) throw new QuorumError('forbidden', `${builder.name} has attested no output of ${upload.drvPath}: submit the attestation before its log`, { field: 'drvPath' });
  return { builder, signedAt: auth.ts, signature: auth.sig };
}
