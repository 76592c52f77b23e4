import type { Step } from '../verification/errors.js';
import type { Resolution } from './resolver.js';

export interface StepLine {
  step: number;
  name: string;
  ok: boolean;
  detail: string;
}

/** What `client --check` prints: the verdict and the issue's five steps, for people (a table) and scripts (JSON). */
export interface CheckReport {
  hashPart: string;
  verdict: 'substitute' | 'refuse';
  ledger: string | null;
  steps: StepLine[];
  skipped: Resolution['skipped'];
  narinfo: string | null;
}

const STEP_NAMES = ['checkpoint', 'attestations', 'revocations', 'policy', 'narinfo'] as const;
/** Which of the five steps a failed verification step (src/verification/errors.ts) belongs to. */
const STEP_OF: Record<Step, number> = { checkpoint: 1, consistency: 1, inclusion: 2, leaf: 2, signature: 2 };

export function checkReport(r: Resolution): CheckReport {
  const steps: StepLine[] = [];
  const line = (step: number, ok: boolean, detail: string) => steps.push({ step, name: STEP_NAMES[step - 1]!, ok, detail });
  if (r.checkpoint) {
    const { checkpoint, cosignatures, relation, previousSize } = r.checkpoint;
    const cosigned = cosignatures.length > 0 ? `, cosigned by ${cosignatures.map((c) => c.witness.name).join(', ')}` : '';
    const history = relation === 'first' ? 'the first this client verified: stored' : relation === 'same' ? 'the tree stored before' : `extends the stored tree of ${previousSize} entries (consistency proof verified): stored`;
    line(1, true, `${checkpoint.origin}, ${checkpoint.size} entries, signed by the pinned log key${cosigned}; ${history}`);
  }
  const v = r.verdict;
  if (v) {
    line(2, true, `${v.counted.length > 0 ? `included and signed by your builders: ${v.counted.join(', ')}` : 'none by your builders'}${v.ignored.length > 0 ? `; ignored: ${v.ignored.join('; ')}` : ''}`);
    line(3, true, v.revoked.length > 0 ? `the log revoked ${v.revoked.join(', ')}: not counted` : 'none of your builders is revoked');
    if (v.decision) line(4, v.decision.status === 'quorum', `${v.decision.status}: ${v.decision.reason}`);
  } else if (r.ledger !== null) {
    line(2, false, 'no attestation of this path');
  }
  if (r.ledger === null) {
    const last = r.skipped[r.skipped.length - 1];
    if (last) line(last.step ? STEP_OF[last.step] : 1, false, `every ledger failed; last: ${last.ledger}: ${last.message}`);
  }
  line(5, r.narinfo !== null, r.narinfo !== null ? `served, signed by this client's key${v?.content ? `: NarHash ${v.content.narHash}, NarSize ${v.content.narSize}` : ''}` : 'refused: Nix gets 404 for this path');
  return { hashPart: r.hashPart, verdict: r.narinfo !== null ? 'substitute' : 'refuse', ledger: r.ledger, steps, skipped: r.skipped, narinfo: r.narinfo };
}
