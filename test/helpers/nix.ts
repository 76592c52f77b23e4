import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe } from 'vitest';

/**
 * Real Nix is an oracle for many tests. Off CI a machine without Nix skips them;
 * under CI (CI=true) they run regardless, so a missing nix-bin fails the build instead of hiding.
 */
export const haveNix = spawnSync('nix-store', ['--version']).status === 0;
export const describeNix: typeof describe = haveNix || process.env.CI ? describe : (describe.skip as typeof describe);

/** Environment for single-user Nix as root on Debian's nix-bin 2.8. */
export const nixEnv: NodeJS.ProcessEnv = {
  ...process.env,
  NIX_REMOTE: 'local',
  NIX_CONFIG: 'experimental-features = nix-command',
};

/** Runs a Nix CLI command and returns its stdout; throws with stderr on failure. */
export function nix(cmd: string, args: string[], options: { input?: string | Buffer; env?: NodeJS.ProcessEnv } = {}): string {
  return execFileSync(cmd, args, {
    env: { ...nixEnv, ...options.env },
    input: options.input,
    maxBuffer: 1 << 30,
    encoding: 'utf8',
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

/** Flags that make a chroot store build here as root without a daemon or build users. */
export const chrootBuildFlags = [
  '--option', 'sandbox', 'true',
  '--option', 'build-users-group', '',
  '--option', 'substituters', '',
  '--option', 'extra-sandbox-paths', '/bin /lib /lib64 /usr',
];

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `nq-${prefix}-`));
}

/** Temporary directories made as a test goes, removed together at its end. */
export function tempDirs(): { make(prefix: string): string; removeAll(): void } {
  const made: string[] = [];
  return {
    make(prefix) {
      const dir = tempDir(prefix);
      made.push(dir);
      return dir;
    },
    removeAll() {
      for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
    },
  };
}
