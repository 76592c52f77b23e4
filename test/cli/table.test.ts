import { describe, expect, it } from 'vitest';
import { formatList, renderTable } from '../../src/cli/table.js';

const rows = [
  { name: 'b1.example.org-1', attestations: 12, active: true },
  { name: 'b2-1', attestations: 1234, active: false },
];
const columns = [
  { header: 'name', value: (r: (typeof rows)[number]) => r.name },
  { header: 'attestations', value: (r: (typeof rows)[number]) => r.attestations, align: 'right' as const },
  { header: 'status', value: (r: (typeof rows)[number]) => (r.active ? 'active' : 'revoked\nsince today') },
];

describe('tables for people, JSON for scripts', () => {
  it('aligns columns under an upper-case header, numbers to the right, one line per row', () => {
    expect(renderTable(rows, columns)).toBe(
      ['NAME              ATTESTATIONS  STATUS', 'b1.example.org-1            12  active', 'b2-1                      1234  revoked since today', ''].join('\n'),
    );
    expect(renderTable(rows.slice(0, 1), columns, '  ').split('\n')[0]).toBe('  NAME              ATTESTATIONS  STATUS');
  });

  it('prints the JSON value with --json, and says when a list is empty', () => {
    expect(JSON.parse(formatList(rows, columns, { json: true }))).toEqual(rows);
    expect(JSON.parse(formatList(rows, columns, { json: true, value: { builders: rows } }))).toEqual({ builders: rows });
    expect(formatList([], columns, { empty: 'no builders yet' })).toBe('no builders yet\n');
    expect(formatList(rows, columns)).toBe(renderTable(rows, columns));
  });
});
