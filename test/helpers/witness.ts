import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { addBuilder } from '../../src/app/builders.js';
import { createLogger } from '../../src/log.js';
import type { PublicKey, SecretKey } from '../../src/nix/keys.js';
import { openService } from '../../src/service.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from './ledger.js';
import { postAttestations, witnessArgs } from '../../bench/common.js';
import { CLI, freePort, spawnUntilHealthy } from './server.js';

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
  const [command, ...prefix] = [...(options.wrap ?? []), process.execPath];
  const started = await spawnUntilHealthy(command!, [...prefix, CLI, ...witnessArgs(dataDir, port, logs, options.name)], port, 'witness');
  return { ...started, port, vkey: readFileSync(join(dataDir, 'witness-key.vkey'), 'utf8').trim() };
}

/** POSTs `n` new attestations signed by `key` as one batch; the HTTP status. */
export async function submitAttestations(url: string, key: SecretKey, n: number, name = 'pkg'): Promise<number> {
  const batch = Array.from({ length: n }, () => signedAttestation(key, { outPath: randomStorePath(name), narHash: randomNarHash() }));
  const res = await postAttestations(url, key, batch);
  await res.arrayBuffer();
  return res.status;
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
