import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of one server process; one registry per process (tests create several). */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    narinfoRequests: new Counter({ name: 'nixquorum_narinfo_requests_total', help: 'narinfo lookups by policy and result (hit, miss, bad)', labelNames: ['policy', 'result'], registers: [registry] }),
    narinfoSeconds: new Histogram({ name: 'nixquorum_narinfo_seconds', help: 'narinfo lookup latency', labelNames: ['result'], buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1], registers: [registry] }),
    narRequests: new Counter({ name: 'nixquorum_nar_requests_total', help: 'NAR downloads by result', labelNames: ['result'], registers: [registry] }),
    narBytes: new Counter({ name: 'nixquorum_nar_bytes_total', help: 'NAR bytes sent', registers: [registry] }),
    blobErrors: new Counter({ name: 'nixquorum_blobstore_errors_total', help: 'blob store failures by operation', labelNames: ['op'], registers: [registry] }),
    narsMissing: new Counter({ name: 'nixquorum_nars_missing_total', help: 'catalogued NARs found missing from the blob store and no longer advertised, by how they were found (read, scrub, upload)', labelNames: ['found_by'], registers: [registry] }),
    attestations: new Counter({ name: 'nixquorum_attestations_total', help: 'submitted attestations by result', labelNames: ['status'], registers: [registry] }),
    refused: new Counter({ name: 'nixquorum_attestations_refused_total', help: 'attestations refused, by why (code)', labelNames: ['code'], registers: [registry] }),
    commits: new Counter({ name: 'nixquorum_ingest_commits_total', help: 'group commits (one fsync each)', registers: [registry] }),
    uploads: new Counter({ name: 'nixquorum_nar_uploads_total', help: 'NAR uploads by result', labelNames: ['result'], registers: [registry] }),
    treeSize: new Gauge({ name: 'nixquorum_log_tree_size', help: 'leaves in the log', registers: [registry] }),
    witnessSubmissions: new Counter({ name: 'nixquorum_witness_submissions_total', help: 'checkpoint submissions to witnesses, by witness name and result (cosigned, refused, failed)', labelNames: ['witness', 'result'], registers: [registry] }),
    witnessCosignedSize: new Gauge({ name: 'nixquorum_witness_cosigned_size', help: 'largest tree size each witness cosigned', labelNames: ['witness'], registers: [registry] }),
    decisions: new Counter({ name: 'nixquorum_decisions_total', help: 'quorum decisions (re)computed, by policy and resulting status', labelNames: ['policy', 'status'], registers: [registry] }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
