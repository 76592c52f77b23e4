import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of `nix-quorum client` (GET /metrics on its listener). */
export function createClientMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    narinfoRequests: new Counter({ name: 'nixquorum_client_narinfo_requests_total', help: 'narinfo requests from Nix by result: hit (verified, served), cached (served from the cache), refused (no verified quorum), unavailable (no ledger answered)', labelNames: ['result'], registers: [registry] }),
    verifySeconds: new Histogram({ name: 'nixquorum_client_verify_seconds', help: 'time to fetch and verify one path from the ledgers', buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5], registers: [registry] }),
    ledgerFailures: new Counter({ name: 'nixquorum_client_ledger_failures_total', help: 'answers of a ledger that was skipped: down, malformed, or failing a verification step (code)', labelNames: ['ledger', 'code'], registers: [registry] }),
    evidence: new Counter({ name: 'nixquorum_client_evidence_total', help: 'rollbacks and forks under the log key this client kept as evidence', labelNames: ['code'], registers: [registry] }),
    verifiedSize: new Gauge({ name: 'nixquorum_client_verified_tree_size', help: 'size of the newest checkpoint this client verified', registers: [registry] }),
    narRequests: new Counter({ name: 'nixquorum_client_nar_requests_total', help: 'NAR downloads through the client by result', labelNames: ['result'], registers: [registry] }),
    narBytes: new Counter({ name: 'nixquorum_client_nar_bytes_total', help: 'NAR bytes passed to Nix', registers: [registry] }),
  };
}

export type ClientMetrics = ReturnType<typeof createClientMetrics>;
