import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of one `nix-quorum witness` process. */
export function createWitnessMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    requests: new Counter({ name: 'nixquorum_witness_add_checkpoint_total', help: 'add-checkpoint requests by HTTP status answered', labelNames: ['status'], registers: [registry] }),
    seconds: new Histogram({ name: 'nixquorum_witness_add_checkpoint_seconds', help: 'add-checkpoint latency, body received to answer', buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5], registers: [registry] }),
    commits: new Counter({ name: 'nixquorum_witness_commits_total', help: 'check-and-update transactions (one WAL fsync each, at most)', registers: [registry] }),
    evidence: new Counter({ name: 'nixquorum_witness_evidence_total', help: 'refused checkpoints kept as evidence, by log origin', labelNames: ['origin'], registers: [registry] }),
    treeSize: new Gauge({ name: 'nixquorum_witness_tree_size', help: 'size of the latest checkpoint cosigned, by log origin', labelNames: ['origin'], registers: [registry] }),
  };
}

export type WitnessMetrics = ReturnType<typeof createWitnessMetrics>;
