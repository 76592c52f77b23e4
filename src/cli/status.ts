import { servingKey, type PathStatus, type Serving } from '../builder/status.js';
import { STORE_DIR } from '../nix/storePath.js';
import { renderTable } from './table.js';

const served = (serving: Map<string, Serving>, outPath: string, policy: string) => {
  const s = serving.get(servingKey(outPath, policy));
  return s === undefined ? '?' : s.served ? 'yes' : `no: ${s.why}`;
};

/** Human-readable status: per output path, a table of the decision under each policy, who signed what, and the attestations. */
export function formatPathStatus(status: PathStatus, serving: Map<string, Serving> = new Map()): string {
  if (status.paths.length === 0) return `${STORE_DIR}/${status.hashPart}-…: no attestations yet\n`;
  const lines: string[] = [];
  for (const p of status.paths) {
    lines.push(p.outPath);
    lines.push(
      renderTable(
        p.decisions,
        [
          { header: 'policy', value: (d) => d.policy },
          { header: 'status', value: (d) => d.status.toUpperCase() },
          { header: 'served', value: (d) => served(serving, p.outPath, d.policy) },
          { header: 'reason', value: (d) => d.reason },
        ],
        '  ',
      ).trimEnd(),
    );
    for (const d of p.decisions) {
      const who = (
        [
          ['agreeing', d.agreeing],
          ['dissenting', d.dissenting],
          ['equivocating', d.equivocating],
          ['missing', d.missing],
        ] as const
      ).flatMap(([label, keys]) => (keys.length ? [`${label}: ${keys.join(', ')}`] : []));
      if (d.content) who.unshift(`content: ${d.content.narHash}, ${d.content.narSize} bytes`);
      if (who.length) lines.push(`  ${d.policy}: ${who.join('; ')}`);
    }
    lines.push(`  attestations (${p.attestations.length}):`);
    lines.push(
      renderTable(
        p.attestations,
        [
          { header: 'leaf', value: (a) => `#${a.leafIndex}`, align: 'right' },
          { header: 'builder', value: (a) => a.builder },
          { header: 'nar hash', value: (a) => a.narHash },
          { header: 'bytes', value: (a) => a.narSize, align: 'right' },
          { header: 'derivation', value: (a) => `${a.drvPath}!${a.outputName}` },
        ],
        '    ',
      ).trimEnd(),
    );
    if (p.conflicts.length) lines.push(`  conflicts: ${p.conflicts.length} (a key signed two different contents; see /conflicts)`);
  }
  return `${lines.join('\n')}\n`;
}
