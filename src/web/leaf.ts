import { BUILDER_PREFIX, POLICY_PREFIX } from '../ledger/leaf.js';
import { leavesByIndex } from '../ledger/queries.js';
import { STATEMENT_PREFIX } from '../ledger/statement.js';
import type { Service } from '../service.js';

/**
 * One log entry for the leaf page (`/leaves/<index>`, JSON at /api/v1/leaves/<index>): its bytes,
 * their fields as design.md defines each kind of leaf, its hash, and the proof that it is in the tree
 * of the latest checkpoint. Decoded from the leaf text alone, so the page shows what was logged.
 */

export interface LeafField {
  name: string;
  value: string;
}

export interface LeafData {
  index: number;
  /** The first line's first field: nix-quorum-attestation-v1, nix-quorum-builder-v1, … */
  kind: string;
  /** The leaf bytes as UTF-8 lines. */
  lines: string[];
  base64: string;
  fields: LeafField[];
  /** SHA-256(0x00 || leaf), base64 (RFC 9162). */
  leafHash: string;
  /** For an attestation: its output path and builder; for a registry leaf, the builder. */
  outPath: string | null;
  builder: string | null;
  /** Inclusion in the tree of the latest checkpoint, or null while none covers the entry yet. */
  proof: { treeSize: number; rootHash: string; hashes: string[]; checkpoint: string } | null;
  treeSize: number;
}

/** Names of the `;`-separated fields of the first line of each kind of leaf (design.md, "Formats"). */
const FIELDS: Record<string, string[]> = {
  [STATEMENT_PREFIX]: ['kind', 'derivation', 'output name', 'output path', 'NAR hash', 'NAR size', 'references'],
  [BUILDER_PREFIX]: ['kind', 'action', 'name', 'public key (base64)', 'time (unix ms)'],
  [POLICY_PREFIX]: ['kind', 'name', 'threshold', 'on conflict', 'builders', 'time (unix ms)'],
};
/** The lines after the first, for attestation leaves. */
const ATTESTATION_LINES = ['builder key', 'signature (base64)', 'builder narinfo Sig'];

function fieldsOf(lines: string[]): { kind: string; fields: LeafField[] } {
  const parts = lines[0]!.split(';');
  const kind = parts[0]!;
  const names = FIELDS[kind];
  if (!names) return { kind, fields: [] };
  const fields = names.map((name, i) => ({ name, value: i === names.length - 1 ? parts.slice(i).join(';') : (parts[i] ?? '') }));
  if (kind === STATEMENT_PREFIX) lines.slice(1).forEach((value, i) => fields.push({ name: ATTESTATION_LINES[i] ?? `line ${i + 2}`, value }));
  return { kind, fields };
}

/** The leaf at `index`, or null past the end of the log. */
export function leafData(service: Service, index: number): LeafData | null {
  const treeSize = service.log.size();
  if (index >= treeSize) return null;
  const record = leavesByIndex(service.db, index, index + 1)[0];
  if (!record) return null;
  const bytes = record.leaf;
  const lines = bytes.toString('utf8').split('\n');
  const { kind, fields } = fieldsOf(lines);
  const field = (name: string) => fields.find((f) => f.name === name)?.value ?? null;
  const latest = service.checkpoints.latest();
  const proof =
    latest && index < latest.size
      ? { treeSize: latest.size, rootHash: latest.rootHash.toString('base64'), hashes: service.log.inclusionProof(index, latest.size).map((h) => h.toString('base64')), checkpoint: latest.note }
      : null;
  return {
    index,
    kind,
    lines,
    base64: bytes.toString('base64'),
    fields,
    leafHash: service.log.node(0, index).toString('base64'),
    outPath: field('output path'),
    builder: record.builder ?? (kind === BUILDER_PREFIX ? field('name') : null),
    proof,
    treeSize,
  };
}
