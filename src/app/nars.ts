import { QuorumError } from '../errors.js';
import type { BuilderAuth } from '../http/builderAuth.js';
import type { Builder, BuilderRegistry } from '../ledger/registry.js';

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
