import { spawnSync } from 'node:child_process';
import { cpSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprint, signNarInfo, verifyNarInfoSig } from '../../src/nix/fingerprint.js';
import { narHashToSri, parseNarHash } from '../../src/nix/hash.js';
import { formatPublicKey, formatSecretKey, generateSecretKey, parsePublicKey, parseSecretKey, type SecretKey } from '../../src/nix/keys.js';
import { parseNarInfo, serializeNarInfo, type NarInfo } from '../../src/nix/narinfo.js';
import { hashPartOf, parseStorePath, storePathFromBaseName } from '../../src/nix/storePath.js';
import { chrootBuildFlags, describeNix, nix, nixEnv, tempDir } from '../helpers/nix.js';

// As `nix copy --to file://…` wrote it (Nix 2.8), signed by two keys.
const SAMPLE = `StorePath: /nix/store/872kxwmj0mdiqxyjagljp2q4pc01fzh0-top
URL: nar/0b42ibp6v1b1qrxkf9zmcvbdc9lzgimlx0hcbhyxrdss1a2hwfaf.nar.xz
Compression: xz
FileHash: sha256:0b42ibp6v1b1qrxkf9zmcvbdc9lzgimlx0hcbhyxrdss1a2hwfaf
FileSize: 236
NarHash: sha256:09lkbalwfmzqbsf6vskmpkghxaa9vygc26ly7k167lb4aj39jfj2
NarSize: 560
References: jdn2wv58p1ab2z2c280jd83zjwpg705r-dep
Deriver: bwnygw5kvaprxwa1829mps6zaka2nfm0-top.drv
Sig: k1:53Ihdf4kYe3EVyHCYYn30fy/tdFH3DLonPzTMGNWnIjH9tV9eb3VasmsiqoE8vMG4ttKPUOyUkHTpmomOHY0CQ==
Sig: k2:h2m1JIYeKqyZJ2AaLttsCKNkulrszICdz+mU5m6rFrd3EVvGcgXfzNk6TQdAFCUa96KBkrKclLS5o5OE6ob2Bg==
`;
const K1 = parsePublicKey('k1:daqX4F50dFmVsZL8Rqk9UNIIK5vlXVb0BQPocAR9WaA=');

describe('narinfo', () => {
  it('parses what Nix writes and writes it back byte for byte', () => {
    const info = parseNarInfo(SAMPLE);
    expect(info).toEqual({
      storePath: '/nix/store/872kxwmj0mdiqxyjagljp2q4pc01fzh0-top',
      url: 'nar/0b42ibp6v1b1qrxkf9zmcvbdc9lzgimlx0hcbhyxrdss1a2hwfaf.nar.xz',
      compression: 'xz',
      fileHash: 'sha256:0b42ibp6v1b1qrxkf9zmcvbdc9lzgimlx0hcbhyxrdss1a2hwfaf',
      fileSize: 236,
      narHash: 'sha256:09lkbalwfmzqbsf6vskmpkghxaa9vygc26ly7k167lb4aj39jfj2',
      narSize: 560,
      references: ['jdn2wv58p1ab2z2c280jd83zjwpg705r-dep'],
      deriver: 'bwnygw5kvaprxwa1829mps6zaka2nfm0-top.drv',
      sigs: [
        'k1:53Ihdf4kYe3EVyHCYYn30fy/tdFH3DLonPzTMGNWnIjH9tV9eb3VasmsiqoE8vMG4ttKPUOyUkHTpmomOHY0CQ==',
        'k2:h2m1JIYeKqyZJ2AaLttsCKNkulrszICdz+mU5m6rFrd3EVvGcgXfzNk6TQdAFCUa96KBkrKclLS5o5OE6ob2Bg==',
      ],
    });
    expect(serializeNarInfo(info)).toBe(SAMPLE);
    expect(verifyNarInfoSig(info, K1, info.sigs[0]!)).toBe(true);
    expect(verifyNarInfoSig({ ...info, narSize: 561 }, K1, info.sigs[0]!)).toBe(false);
    expect(verifyNarInfoSig(info, K1, info.sigs[1]!)).toBe(false);
  });

  it('reads absent and placeholder values the way Nix does', () => {
    const info = parseNarInfo(
      [
        'StorePath: /nix/store/872kxwmj0mdiqxyjagljp2q4pc01fzh0-top',
        'URL: https://example.org/x.nar',
        'System: x86_64-linux', // known to old Nix, never written by 2.8: ignored like any unknown key
        'X-Future-Field: anything: at all',
        `NarHash: sha256:${'ab'.repeat(32)}`,
        'NarSize: 9007199254740991',
        'References: ',
        'Deriver: unknown-deriver',
        'CA: ',
        '',
      ].join('\n'),
    );
    expect(info).toEqual({
      storePath: '/nix/store/872kxwmj0mdiqxyjagljp2q4pc01fzh0-top',
      url: 'https://example.org/x.nar',
      compression: 'bzip2',
      narHash: parseNarHash(`sha256:${'ab'.repeat(32)}`),
      narSize: Number.MAX_SAFE_INTEGER,
      references: [],
      sigs: [],
    });
    expect(parseNarInfo(SAMPLE.replace('Compression: xz', 'Compression: ')).compression).toBe('bzip2');
    expect(parseNarInfo(SAMPLE.replace(/References: .*\n/, '')).references).toEqual([]);
  });

  it('keeps one copy of a repeated Sig, like Nix', () => {
    const sigLine = SAMPLE.split('\n').find((l) => l.startsWith('Sig: k1'))!;
    expect(parseNarInfo(`${SAMPLE}${sigLine}\n`).sigs).toHaveLength(2);
  });

  it('writes fields in Nix order, references and signatures sorted, hashes canonical, optional fields only when set', () => {
    const info = parseNarInfo(SAMPLE);
    const a = 'a'.repeat(32);
    const shuffled: NarInfo = {
      ...info,
      fileHash: narHashToSri(parseNarHash(info.fileHash!)),
      references: [`${a}-zz`, `${a}-aa`, '0'.repeat(32) + '-b'],
      sigs: [info.sigs[1]!, info.sigs[0]!, info.sigs[1]!],
      ca: `fixed:r:sha256:${'0'.repeat(52)}`,
    };
    const text = serializeNarInfo(shuffled);
    expect(text).toBe(
      SAMPLE.replace(/References: .*/, `References: ${'0'.repeat(32)}-b ${a}-aa ${a}-zz`) + `CA: fixed:r:sha256:${'0'.repeat(52)}\n`,
    );
    const { fileHash: _h, fileSize: _s, deriver: _d, ...bare } = info;
    expect(serializeNarInfo({ ...bare, sigs: [] })).toBe(
      SAMPLE.split('\n')
        .filter((l) => !/^(FileHash|FileSize|Deriver|Sig):/.test(l))
        .join('\n'),
    );
  });

  it('refuses to write a value that would break a line', () => {
    const info = parseNarInfo(SAMPLE);
    expect(() => serializeNarInfo({ ...info, url: 'nar/x.nar\nSig: evil:AAAA' })).toThrow(/URL value must not contain a line break/);
    expect(() => serializeNarInfo({ ...info, sigs: ['k\r\n'] })).toThrow(/Sig value must not contain a line break/);
    expect(() => serializeNarInfo({ ...info, url: '' })).toThrow(/URL: must not be empty/);
    expect(() => serializeNarInfo({ ...info, narSize: 0 })).toThrow(/NarSize must be a positive integer/);
    expect(() => serializeNarInfo({ ...info, fileSize: 1.5 })).toThrow(/FileSize must be a non-negative integer/);
    expect(() => serializeNarInfo({ ...info, fileHash: 'md5:abc' })).toThrow(/FileHash: FileHash must be a SHA-256 hash/);
  });

  it('builds the fingerprint from full, sorted, distinct reference paths', () => {
    const top = parseStorePath('/nix/store/872kxwmj0mdiqxyjagljp2q4pc01fzh0-top');
    const dep = parseStorePath('/nix/store/jdn2wv58p1ab2z2c280jd83zjwpg705r-dep');
    const hash = parseNarHash('sha256:09lkbalwfmzqbsf6vskmpkghxaa9vygc26ly7k167lb4aj39jfj2');
    expect(fingerprint(top, hash, 560, [dep, top, dep])).toBe(`1;${top};${hash};560;${top},${dep}`);
    expect(fingerprint(top, hash, 560, [])).toBe(`1;${top};${hash};560;`);
    expect(() => fingerprint(top, hash, 0, [])).toThrow(/narSize must be a positive integer/);
  });
});

describeNix('narinfo against Nix', () => {
  let dir: string;
  let store: string;
  /** top → dep, script (a text CA path) and itself; plus two CA paths added straight to the store. */
  let paths: { top: string; dep: string; script: string; added: string; fixed: string };
  let nixKeys: SecretKey[];
  const cache = (name: string) => join(dir, name);

  beforeAll(() => {
    dir = tempDir('narinfo');
    store = join(dir, 'store');
    writeFileSync(
      join(dir, 'x.nix'),
      `let
        script = builtins.toFile "script.sh" "echo hi";
        dep = derivation { name = "dep"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "/bin/mkdir $out; echo hello > $out/hi" ]; };
      in derivation {
        name = "top"; system = builtins.currentSystem; builder = "/bin/sh"; inherit dep script;
        args = [ "-c" "/bin/mkdir $out; echo $dep $script $out > $out/refs" ];
      }`,
    );
    writeFileSync(join(dir, 'file.txt'), 'some file\n');
    const top = nix('nix-build', ['--store', store, ...chrootBuildFlags, '--no-out-link', join(dir, 'x.nix')]).trim();
    const refs = nix('nix-store', ['--store', store, '-q', '--references', top]).trim().split('\n');
    paths = {
      top,
      dep: refs.find((p) => p.endsWith('-dep'))!,
      script: refs.find((p) => p.endsWith('-script.sh'))!,
      added: nix('nix-store', ['--store', store, '--add', join(dir, 'file.txt')]).trim(),
      fixed: nix('nix-store', ['--store', store, '--add-fixed', 'sha256', join(dir, 'file.txt')]).trim(),
    };
    nixKeys = ['nix-1', 'nix-2'].map((name) => {
      const [sk, pk] = [join(dir, `${name}.sk`), join(dir, `${name}.pk`)];
      nix('nix-store', ['--generate-binary-cache-key', name, sk, pk]);
      return parseSecretKey(readFileSync(sk, 'utf8'));
    });
    const roots = [paths.top, paths.added, paths.fixed];
    nix('nix', ['copy', '--store', store, '--to', `file://${cache('xz')}?secret-key=${join(dir, 'nix-1.sk')}`, ...roots]);
    nix('nix', ['store', 'sign', '--store', `file://${cache('xz')}`, '--key-file', join(dir, 'nix-2.sk'), '--recursive', ...roots]);
    nix('nix', ['copy', '--store', store, '--to', `file://${cache('none')}?compression=none`, ...roots]);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function narInfoTexts(name: string): Map<string, string> {
    const files = readdirSync(cache(name)).filter((f) => f.endsWith('.narinfo'));
    return new Map(files.map((f) => [f, readFileSync(join(cache(name), f), 'utf8')]));
  }
  const allPaths = () => Object.values(paths);

  it('round-trips every narinfo that `nix copy` wrote, compressed and not, byte for byte', () => {
    const seen = new Set<string>();
    for (const name of ['xz', 'none']) {
      const texts = narInfoTexts(name);
      expect(texts.size).toBe(5);
      for (const [file, text] of texts) {
        const info = parseNarInfo(text);
        expect(file).toBe(`${hashPartOf(info.storePath)}.narinfo`);
        expect(serializeNarInfo(info)).toBe(text);
        for (const line of text.split('\n')) seen.add(line.replace(/: .*/, ''));
        expect(info.compression).toBe(name);
      }
    }
    // The corpus covers every field Nix writes.
    expect([...seen].sort()).toEqual(['', 'CA', 'Compression', 'Deriver', 'FileHash', 'FileSize', 'NarHash', 'NarSize', 'References', 'Sig', 'StorePath', 'URL']);
    const top = parseNarInfo(narInfoTexts('xz').get(`${hashPartOf(parseStorePath(paths.top))}.narinfo`)!);
    expect(top.references).toHaveLength(3);
    expect(top.sigs.map((s) => s.split(':')[0])).toEqual(['nix-1', 'nix-2']);
  });

  it('reads every field as Nix itself does (`nix path-info --json` on the same cache)', () => {
    for (const name of ['xz', 'none']) {
      const theirs = JSON.parse(nix('nix', ['path-info', '--json', '--store', `file://${cache(name)}`, ...allPaths()])) as Record<string, unknown>[];
      const ours = [...narInfoTexts(name).values()].map(parseNarInfo);
      expect(theirs).toHaveLength(ours.length);
      for (const t of theirs) {
        const info = ours.find((o) => o.storePath === t.path)!;
        expect({
          path: info.storePath,
          url: info.url,
          narHash: narHashToSri(info.narHash),
          narSize: info.narSize,
          downloadHash: narHashToSri(parseNarHash(info.fileHash!)),
          downloadSize: info.fileSize,
          references: info.references.map((r) => storePathFromBaseName(r)).sort(),
          ...(info.deriver === undefined ? {} : { deriver: `/nix/store/${info.deriver}` }),
          ...(info.ca === undefined ? {} : { ca: info.ca }),
          ...(info.sigs.length === 0 ? {} : { signatures: info.sigs }),
        }).toEqual(t);
      }
    }
  });

  it('makes the same signature as Nix for the same key (the fingerprint is byte-exact), and verifies Nix signatures', () => {
    for (const text of narInfoTexts('xz').values()) {
      const info = parseNarInfo(text);
      expect(info.sigs).toEqual(nixKeys.map((key) => signNarInfo(info, key)));
      nixKeys.forEach((key, i) => expect(verifyNarInfoSig(info, key.publicKey, info.sigs[i]!)).toBe(true));
    }
  });

  describe('Nix is the judge of our signatures', () => {
    let judged: string;
    const ours = [generateSecretKey('nq-test-1'), generateSecretKey('nq-test-2')];
    const trusted = ours.map((k) => formatPublicKey(k.publicKey)).join(' ');
    beforeAll(() => {
      judged = join(dir, 'judged');
      cpSync(cache('none'), judged, { recursive: true });
    });

    function verify(...extra: string[]) {
      return spawnSync('nix', ['store', 'verify', '--store', `file://${judged}`, '--trusted-public-keys', trusted, ...extra, paths.top], { env: nixEnv, encoding: 'utf8' });
    }
    function rewrite(change: (info: NarInfo) => NarInfo): void {
      const file = join(judged, `${hashPartOf(parseStorePath(paths.top))}.narinfo`);
      writeFileSync(file, serializeNarInfo(change(parseNarInfo(readFileSync(file, 'utf8')))));
    }

    it('rejects the unsigned narinfo', () => {
      rewrite((info) => ({ ...info, sigs: [] }));
      const result = verify();
      expect(result.status).toBe(2);
      expect(result.stderr).toContain('is untrusted');
    });

    it('accepts a narinfo signed by our code, whatever order we hold the references in', () => {
      rewrite((info) => ({ ...info, sigs: [signNarInfo({ ...info, references: [...info.references].reverse() }, ours[0]!)] }));
      const result = verify();
      expect(result.stderr).not.toContain('untrusted');
      expect(result.status).toBe(0);
    });

    it('counts two of our signatures towards --sigs-needed 2', () => {
      rewrite((info) => ({ ...info, sigs: ours.map((key) => signNarInfo(info, key)) }));
      expect(verify('--sigs-needed', '2').status).toBe(0);
      rewrite((info) => ({ ...info, sigs: [signNarInfo(info, ours[1]!)] }));
      expect(verify('--sigs-needed', '2').status).toBe(2);
    });

    it('rejects a tampered signature and a signature over other contents', () => {
      rewrite((info) => {
        const [name, body] = signNarInfo(info, ours[0]!).split(':') as [string, string];
        const raw = Buffer.from(body, 'base64');
        raw[10] = raw[10]! ^ 0x01;
        return { ...info, sigs: [`${name}:${raw.toString('base64')}`] };
      });
      let result = verify();
      expect(result.status).toBe(2);
      expect(result.stderr).toContain('is untrusted');
      // A valid signature, but over a reference list the narinfo does not claim.
      rewrite((info) => ({ ...info, sigs: [signNarInfo({ ...info, references: info.references.slice(1) }, ours[0]!)] }));
      result = verify();
      expect(result.status).toBe(2);
    });

    it('lets Nix sign with our secret key file, and the result is our signature', () => {
      rewrite((info) => ({ ...info, sigs: [] }));
      const keyFile = join(dir, 'ours.sk');
      writeFileSync(keyFile, formatSecretKey(ours[1]!));
      nix('nix', ['store', 'sign', '--store', `file://${judged}`, '--key-file', keyFile, paths.top]);
      expect(verify().status).toBe(0);
      const info = parseNarInfo(readFileSync(join(judged, `${hashPartOf(parseStorePath(paths.top))}.narinfo`), 'utf8'));
      expect(info.sigs).toEqual([signNarInfo(info, ours[1]!)]);
    });
  });
});
