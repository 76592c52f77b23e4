import { attestationsOfHashPart, conflicts, outPathsOfHashPart } from '../ledger/queries.js';
import type { HashPart } from '../nix/storePath.js';
import type { Service } from '../service.js';

/**
 * A hash part's attestations, a page at a time in log order (after leaf `after`; `next` continues),
 * with the decision under each policy of each of its paths, evaluated now over all of them.
 */
export function pathStatus(s: Service, hashPart: HashPart, { after = -1, limit = 500 }: { after?: number; limit?: number } = {}) {
  const page = attestationsOfHashPart(s.db, hashPart, { after, limit: limit + 1 });
  const attestations = page.slice(0, limit);
  return {
    hashPart,
    next: page.length > limit ? attestations[attestations.length - 1]!.leafIndex : null,
    paths: outPathsOfHashPart(s.db, hashPart).map((outPath) => ({
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
