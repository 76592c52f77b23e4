import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { narHashFromDigest } from '../src/nix/hash.js';
import { nix32Encode } from '../src/nix/nix32.js';
import { PROJECT_ROOT } from '../src/paths.js';

/** Shared by the benchmarks: the built CLI, free ports, a server's readiness, random Nix values. */
export const CLI_PATH = join(PROJECT_ROOT, 'dist', 'src', 'cli', 'main.js');

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export async function waitForHealth(url: string, tries = 400): Promise<void> {
  for (let i = 0; i < tries; i++) {
    try {
      if ((await fetch(`${url}/healthz`)).ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${url} did not come up`);
}

export function randomStorePath(name: string): string {
  return `/nix/store/${nix32Encode(randomBytes(20))}-${name}`;
}

export function randomNarHash(): string {
  return narHashFromDigest(randomBytes(32));
}
