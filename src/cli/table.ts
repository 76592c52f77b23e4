/**
 * Lists for people and for scripts: an aligned text table, or JSON with --json. Every command that
 * prints a list uses this, so they all look and behave alike.
 */

export interface Column<T> {
  header: string;
  value: (row: T) => string | number;
  /** Numbers read best right-aligned. */
  align?: 'left' | 'right';
}

/** Column text on one line: a value with a newline or tab would break the alignment. */
const cell = (v: string | number) => String(v).replace(/[\t\r\n]+/g, ' ');

/** Rows under an upper-case header, columns two spaces apart; the last column is not padded. */
export function renderTable<T>(rows: readonly T[], columns: readonly Column<T>[], indent = ''): string {
  const cells = [columns.map((c) => c.header.toUpperCase()), ...rows.map((r) => columns.map((c) => cell(c.value(r))))];
  const widths = columns.map((_, i) => Math.max(...cells.map((line) => line[i]!.length)));
  const lines = cells.map((line) =>
    line
      .map((text, i) => (i === line.length - 1 && columns[i]!.align !== 'right' ? text : columns[i]!.align === 'right' ? text.padStart(widths[i]!) : text.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd(),
  );
  return lines.map((l) => `${indent}${l}`).join('\n') + '\n';
}

/** What a list command prints: `json` (the value as is, for scripts) with --json, else the table. */
export function formatList<T>(rows: readonly T[], columns: readonly Column<T>[], options: { json?: boolean; value?: unknown; empty?: string } = {}): string {
  if (options.json) return `${JSON.stringify(options.value ?? rows, null, 2)}\n`;
  if (rows.length === 0) return `${options.empty ?? '(none)'}\n`;
  return renderTable(rows, columns);
}
