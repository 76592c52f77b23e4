import { attestationsOfHashPart, conflicts } from '../ledger/queries.js';
import type { HashPart } from '../nix/storePath.js';
import type { Service } from '../service.js';

/** Every attestation of a hash part with the decision under each policy, evaluated now. */
export function pathStatus(s: Service, hashPart: HashPart) {
  const attestations = attestationsOfHashPart(s.db, hashPart);
  const outPaths = [...new Set(attestations.map((a) => a.outPath))];
  return {
    hashPart,
    paths: outPaths.map((outPath) => ({
      outPath,
      attestations: attestations.filter((a) => a.outPath === outPath),
      decisions: s.decisions.evaluatePath(outPath).map(({ policy, decision }) => ({ policy: policy.name, ...decision })),
      conflicts: conflicts(s.db, { limit: 100, outPath }),
    })),
  };
}

/**
 * The paths with quorum under a policy (what the substituter may serve), in out_path order after
 * `after`: what an auditor compares with the decisions it derives from the log itself.
 */
export function quorumDecisions(s: Service, policy: string, after: string, limit: number) {
  s.policies.require(policy);
  const rows = s.db
    .prepare("SELECT out_path, nar_hash, nar_size, refs FROM decisions WHERE policy = ? AND out_path > ? AND status = 'quorum' ORDER BY out_path LIMIT ?")
    .raw()
    .all(policy, after, limit + 1) as Array<[string, string, number, string]>;
  const page = rows.slice(0, limit);
  return {
    policy,
    decisions: page.map(([outPath, narHash, narSize, refs]) => ({ outPath, narHash, narSize, references: refs === '' ? [] : refs.split(',') })),
    next: rows.length > limit ? page[page.length - 1]![0] : null,
  };
}
