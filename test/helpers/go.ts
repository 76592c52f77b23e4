import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe } from 'vitest';

/**
 * Go's golang.org/x/mod (Debian golang-golang-x-mod-dev) is an independent oracle for signed notes
 * and Merkle trees. Off CI a machine without it skips those tests; under CI=true they run regardless.
 */
const GOPATH = '/usr/share/gocode';
export const haveGo = spawnSync('go', ['version']).status === 0 && existsSync(join(GOPATH, 'src/golang.org/x/mod/sumdb/note'));
export const describeGo: typeof describe = haveGo || process.env.CI ? describe : (describe.skip as typeof describe);

/** Builds one Go source file (package main) into `dir` with the Debian GOPATH; returns the binary. */
export function buildGo(dir: string, name: string, source: string): string {
  const src = join(dir, `${name}-src`);
  mkdirSync(src, { recursive: true });
  writeFileSync(join(src, 'main.go'), source);
  const binary = join(dir, name);
  execFileSync('go', ['build', '-o', binary, '.'], {
    cwd: src,
    env: { ...process.env, GO111MODULE: 'off', GOPATH, GOCACHE: join(dir, 'gocache'), GOFLAGS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return binary;
}
