import type { Metrics } from '../metrics.js';
import type { Service } from '../service.js';
import { checkDistinctFromLog, checkDistinctWitnesses, parseCosignerVerifier } from './cosignature.js';
import { CosignatureStore } from './cosignatures.js';
import { WitnessSubmitter } from './submitter.js';

export interface Witnessing {
  store: CosignatureStore;
  submitter: WitnessSubmitter;
  stop(): Promise<void>;
}

/** The ledger's side of witnessing: submits every new checkpoint to `ledger.witnesses`, from start until stop(). */
export function startWitnessing(service: Service, metrics: Metrics): Witnessing {
  const { config, checkpoints, log, noteVerifier } = service;
  const store = new CosignatureStore(service.db);
  const endpoints = config.ledger.witnesses.map(({ url, vkey }, i) => {
    const field = `ledger.witnesses[${i}].vkey`;
    const verifier = parseCosignerVerifier(vkey, field);
    checkDistinctFromLog(verifier, noteVerifier, field);
    return { url, verifier };
  });
  checkDistinctWitnesses(endpoints.map((e) => e.verifier));
  const submitter = new WitnessSubmitter({ latest: () => checkpoints.latest(), consistencyProof: (a, b) => log.consistencyProof(a, b) }, store, endpoints, {
    timeoutMs: config.ledger.witnessTimeoutMs,
    retryMaxMs: config.ledger.witnessRetryMaxMs,
    logger: service.logger,
    onResult: (witness, result, size) => {
      metrics.witnessSubmissions.inc({ witness: witness.name, result });
      if (result === 'cosigned') metrics.witnessCosignedSize.set({ witness: witness.name }, size);
    },
  });
  checkpoints.onPublished(() => submitter.wake());
  return { store, submitter, stop: () => submitter.stop() };
}
