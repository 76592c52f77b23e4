import { existsSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { signOutput } from '../../src/builder/attest.js';
import { QUARANTINE_DIR, Spool } from '../../src/builder/spool.js';
import { readSpoolEntry } from '../../src/builder/spoolEntry.js';
import { generateSecretKey } from '../../src/nix/keys.js';
import { parseNarHash } from '../../src/nix/hash.js';
import type { StorePath } from '../../src/nix/storePath.js';
import { randomNarHash, randomStorePath } from '../helpers/ledger.js';
import { tempDir } from '../helpers/nix.js';

const key = generateSecretKey('spool-test-1');

function attestation(name = 'pkg') {
  const outPath = randomStorePath(name);
  return signOutput(
    { drvPath: randomStorePath(`${name}.drv`), outputName: 'out', outPath, narHash: parseNarHash(randomNarHash()), narSize: 4096, references: [randomStorePath('dep'), outPath] as StorePath[] },
    key,
  );
}

describe('Spool', () => {
  let dir: string;
  let spool: Spool;
  beforeEach(() => {
    dir = tempDir('spool');
    spool = new Spool(join(dir, 'spool'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('stores a signed attestation durably and reads the same thing back', () => {
    const a = attestation();
    const name = spool.add(a, '/tmp/some-store');
    expect(spool.list()).toEqual([name]);
    const entry = readSpoolEntry(spool, name);
    expect(entry).toEqual({ name, attestation: a, store: '/tmp/some-store' });
    const json = JSON.parse(readFileSync(join(spool.dir, name), 'utf8')) as Record<string, unknown>;
    expect(json).toMatchObject({ version: 1, store: '/tmp/some-store', attestation: { outPath: a.outPath, signature: a.signature.toString('base64') } });
  });

  it('names an entry by what was signed, so attesting one output twice queues it once', () => {
    const a = attestation();
    const name = spool.add(a, null);
    expect(spool.add(a, null)).toBe(name);
    expect(spool.list()).toEqual([name]);
    expect(spool.add(attestation(), null)).not.toBe(name);
    expect(spool.list()).toHaveLength(2);
  });

  it('reads a missing spool as empty, and forgets removed entries (twice is fine)', () => {
    expect(spool.list()).toEqual([]);
    const name = spool.add(attestation(), null);
    spool.remove(name);
    spool.remove(name);
    expect(spool.list()).toEqual([]);
  });

  it('rejects corrupt entries with a message naming the problem', () => {
    const good = spool.add(attestation(), null);
    const text = readFileSync(join(spool.dir, good), 'utf8');
    const write = (name: string, body: string) => writeFileSync(join(spool.dir, name), body);
    const variants: Array<[string, string, RegExp]> = [
      ['00000000000000000000000000000000-0000000000000000.json', text.slice(0, 40), /not valid JSON/],
      ['00000000000000000000000000000001-0000000000000000.json', text.replace('"version":1', '"version":2'), /version must be 1/],
      ['00000000000000000000000000000002-0000000000000000.json', text.replace(/"narSize":4096/, '"narSize":-1'), /attestation\.narSize/],
      ['00000000000000000000000000000003-0000000000000000.json', text.replace(/"store":null/, '"store":null,"extra":1'), /extra/],
      ['stray.json', text, /not a spool entry name/],
    ];
    for (const [name, body, message] of variants) {
      write(name, body);
      expect(() => readSpoolEntry(spool, name), name).toThrow(expect.objectContaining({ code: 'bad-spool-entry', message: expect.stringMatching(message) }));
    }
    expect(spool.list()).toContain('stray.json');
  });

  it('quarantines an entry out of the queue, with its reason beside it', () => {
    const keep = spool.add(attestation(), null);
    const bad = '00000000000000000000000000000000-0000000000000000.json';
    writeFileSync(join(spool.dir, bad), '{');
    const moved = spool.quarantine(bad, 'not valid JSON');
    expect(moved).toBe(join(spool.dir, QUARANTINE_DIR, bad));
    expect(spool.list()).toEqual([keep]);
    expect(readFileSync(`${moved}.reason`, 'utf8')).toBe('not valid JSON\n');
    expect(readFileSync(moved, 'utf8')).toBe('{');
  });

  it('cleans up temp files of killed hooks once they are old, never fresh ones', () => {
    spool.add(attestation(), null);
    const old = join(spool.dir, '00000000000000000000000000000000-0000000000000000.json.tmp-123');
    const fresh = join(spool.dir, '00000000000000000000000000000001-0000000000000000.json.tmp-456');
    writeFileSync(old, '{');
    writeFileSync(fresh, '{');
    const twoHoursAgo = (Date.now() - 2 * 3600_000) / 1000;
    utimesSync(old, twoHoursAgo, twoHoursAgo);
    spool.removeStaleTemp();
    expect(existsSync(old)).toBe(false);
    expect(existsSync(fresh)).toBe(true);
    expect(spool.list()).toHaveLength(1);
  });

  it('says which setting to fix when the spool cannot be written', () => {
    writeFileSync(join(dir, 'a-file'), '');
    const unwritable = new Spool(join(dir, 'a-file', 'spool'));
    expect(() => unwritable.add(attestation(), null)).toThrow(expect.objectContaining({ code: 'spool-unwritable', message: expect.stringMatching(/NIX_QUORUM_SPOOL/) }));
    expect(readdirSync(dir)).toEqual(['a-file']);
  });
});
