import { describe, expect, it } from 'vitest';
import { formatTlogProof, parseTlogProof } from '../../src/ledger/tlogProof.js';

const checkpoint = 'example.com/log\n3\nsFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n\n\u2014 example.com/log hI2DJwAAAA==\n';
const hash = Buffer.alloc(32, 7);

describe('c2sp.org/tlog-proof@v1', () => {
  it('writes the spec\'s layout and reads it back, with or without an extra line', () => {
    const text = formatTlogProof({ index: 2, hashes: [hash, hash], checkpoint });
    expect(text).toBe(`c2sp.org/tlog-proof@v1\nindex 2\n${hash.toString('base64')}\n${hash.toString('base64')}\n\n${checkpoint}`);
    expect(parseTlogProof(text)).toEqual({ index: 2, hashes: [hash, hash], checkpoint });
    expect(parseTlogProof(text.replace('\nindex', '\nextra YWJj\nindex')).index).toBe(2);
    expect(parseTlogProof(formatTlogProof({ index: 0, hashes: [], checkpoint })).hashes).toEqual([]);
  });

  it.each([
    ['another first line', (t: string) => t.replace('@v1', '@v2')],
    ['a leading zero in the index', (t: string) => t.replace('index 2', 'index 02')],
    ['no index line', (t: string) => t.replace('index 2\n', '')],
    ['a hash of 31 bytes', (t: string) => t.replace(hash.toString('base64'), Buffer.alloc(31).toString('base64'))],
    ['no blank line before the checkpoint', (t: string) => t.replaceAll('\n\n', '\n')],
    ['extra data that is not base64', (t: string) => t.replace('\nindex', '\nextra !!\nindex')],
  ])('refuses %s', (_what, change) => {
    expect(() => parseTlogProof(change(formatTlogProof({ index: 2, hashes: [hash], checkpoint })))).toThrow(expect.objectContaining({ code: 'bad-proof' }));
  });
});
