import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { addBuilder } from '../../src/app/builders.js';
import { createLogger } from '../../src/log.js';
import type { PublicKey } from '../../src/nix/keys.js';
import { openService } from '../../src/service.js';
import { testConfig } from './ledger.js';
import { witnessArgs } from '../../bench/common.js';
import { CLI, freePort } from './server.js';

export interface SpawnedWitness {
  url: string;
  port: number;
  vkey: string;
  child: ChildProcess;
  /** What it wrote to stderr so far (JSON logs). */
  stderr(): string;
}

/**
 * Runs `nix-quorum witness` as a child process and waits until it answers. `wrap` runs it under
 * another command (e.g. strace); `port` reuses an address (a restarted witness).
 */
export async function spawnWitness(
  dataDir: string,
  logs: ReadonlyArray<{ origin: string; vkey: string }>,
  options: { name?: string; port?: number; wrap?: string[] } = {},
): Promise<SpawnedWitness> {
  const port = options.port ?? (await freePort());
  const args = [CLI, ...witnessArgs(dataDir, port, logs, options.name)];
  const [command, ...prefix] = options.wrap ? [...options.wrap, process.execPath] : [process.execPath];
  const child = spawn(command!, [...prefix, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NIX_QUORUM_LOG_LEVEL: 'warn' } });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  child.stdout!.resume();
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 400; i++) {
    if (child.exitCode !== null) throw new Error(`witness exited with ${child.exitCode}: ${stderr}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) return { url, port, vkey: readFileSync(join(dataDir, 'witness-key.vkey'), 'utf8').trim(), child, stderr: () => stderr };
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`witness did not start: ${stderr}`);
}

/** Polls `condition` until it holds (a deadline, not a timing assertion). */
export async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Creates a ledger's data directory (keys, database) with `builders` registered; returns its log vkey. */
export function prepareLedger(dataDir: string, origin: string, builders: readonly PublicKey[]): string {
  const service = openService(testConfig(dataDir, { ledger: { origin } }), createLogger('error'));
  for (const b of builders) addBuilder(service, b);
  const vkey = service.noteVerifierText.trim();
  service.close();
  return vkey;
}
