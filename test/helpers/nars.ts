import { randomBytes } from 'node:crypto';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { narHashFromDigest, sha256, type NarHash } from '../../src/nix/hash.js';
import { dumpNar } from '../../src/nix/nar/index.js';

export interface Nar {
  bytes: Buffer;
  narHash: NarHash;
  narSize: number;
}

export const narOf = (bytes: Buffer): Nar => ({ bytes, narHash: narHashFromDigest(sha256(bytes)), narSize: bytes.length });

/** The NAR of a real directory made under `dir` (a data file of `dataBytes` random bytes, an executable, a symlink), as Nix would dump it. */
export async function treeNar(dir: string, dataBytes: number): Promise<Nar> {
  const root = join(dir, `out-${randomBytes(4).toString('hex')}`);
  mkdirSync(join(root, 'bin'), { recursive: true });
  writeFileSync(join(root, 'data'), randomBytes(dataBytes));
  writeFileSync(join(root, 'bin', 'run'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  symlinkSync('data', join(root, 'link'));
  const chunks: Buffer[] = [];
  for await (const chunk of dumpNar(root)) chunks.push(chunk);
  return narOf(Buffer.concat(chunks));
}

/** One series' value from a server's /metrics (0 when absent). */
export async function metric(url: string, series: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}
