import { Counter, Gauge, type Registry } from 'prom-client';

/** A mirror's own Prometheus series, in the server's registry. */
export function createMirrorMetrics(registry: Registry) {
  const registers = [registry];
  return {
    verifiedSize: new Gauge({ name: 'nixquorum_mirror_verified_size', help: 'size of the last checkpoint of the primary this mirror verified and serves', registers }),
    primarySize: new Gauge({ name: 'nixquorum_mirror_primary_size', help: "size of the primary's newest checkpoint", registers }),
    degraded: new Gauge({ name: 'nixquorum_mirror_degraded', help: '1 while the primary offers what does not follow from what was verified (the mirror stopped there)', registers }),
    fetchedLeaves: new Counter({ name: 'nixquorum_mirror_fetched_leaves_total', help: 'leaves fetched from the primary', registers }),
    appliedLeaves: new Counter({ name: 'nixquorum_mirror_applied_leaves_total', help: 'leaves verified and applied', registers }),
    equivocations: new Counter({ name: 'nixquorum_mirror_equivocations_total', help: 'equivocations seen as they replicated: statements of a key for a path that contradict an earlier one of the same key', registers }),
  };
}

export type MirrorMetrics = ReturnType<typeof createMirrorMetrics>;
