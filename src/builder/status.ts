import { z } from 'zod';
import { QuorumError } from '../errors.js';
import { describeZodError } from '../ledger/attestation.js';
import { parseHashPart, STORE_DIR, type HashPart } from '../nix/storePath.js';

/** Accepts `/nix/store/<hash>-<name>`, `<hash>-<name>` or the bare 32-character hash part. */
export function hashPartOfArgument(text: string): HashPart {
  const base = text.startsWith(`${STORE_DIR}/`) ? text.slice(STORE_DIR.length + 1) : text;
  return parseHashPart(base.slice(0, 32), 'path');
}

const names = z.array(z.string());
const decision = z.object({
  policy: z.string(),
  status: z.string(),
  reason: z.string(),
  content: z.object({ narHash: z.string(), narSize: z.number() }).nullable(),
  agreeing: names,
  dissenting: names,
  equivocating: names,
  missing: names,
});
const pathStatus = z.object({
  hashPart: z.string(),
  paths: z.array(
    z.object({
      outPath: z.string(),
      attestations: z.array(z.object({ leafIndex: z.number(), builder: z.string(), drvPath: z.string(), outputName: z.string(), narHash: z.string(), narSize: z.number() })),
      decisions: z.array(decision),
      conflicts: z.array(z.unknown()),
    }),
  ),
});

export type PathStatus = z.output<typeof pathStatus>;

/** Checks the server's answer once, so formatting can trust its shape. */
export function parsePathStatus(json: unknown): PathStatus {
  const parsed = pathStatus.safeParse(json);
  if (!parsed.success) throw new QuorumError('bad-response', `the server's /api/v1/paths answer has an unexpected shape: ${describeZodError(parsed.error)}`);
  return parsed.data;
}

/** Human-readable status: one block per output path, the decision and its reason per policy. */
export function formatPathStatus(status: PathStatus): string {
  if (status.paths.length === 0) return `${STORE_DIR}/${status.hashPart}-…: no attestations yet\n`;
  const lines: string[] = [];
  for (const p of status.paths) {
    lines.push(p.outPath);
    for (const d of p.decisions) {
      lines.push(`  policy ${d.policy}: ${d.status.toUpperCase()}: ${d.reason}`);
      if (d.content) lines.push(`    content: ${d.content.narHash}, ${d.content.narSize} bytes`);
      const who = (
        [
          ['agreeing', d.agreeing],
          ['dissenting', d.dissenting],
          ['equivocating', d.equivocating],
          ['missing', d.missing],
        ] as const
      ).flatMap(([label, keys]) => (keys.length ? [`${label}: ${keys.join(', ')}`] : []));
      if (who.length) lines.push(`    ${who.join('; ')}`);
    }
    lines.push(`  attestations (${p.attestations.length}):`);
    for (const a of p.attestations) lines.push(`    #${a.leafIndex} ${a.builder}: ${a.narHash}, ${a.narSize} bytes (${a.drvPath}!${a.outputName})`);
    if (p.conflicts.length) lines.push(`  conflicts: ${p.conflicts.length} (a key signed two different contents; see /conflicts)`);
  }
  return `${lines.join('\n')}\n`;
}
