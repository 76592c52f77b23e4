import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
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
  const args = [CLI, 'witness', '--data', dataDir, '--listen', `127.0.0.1:${port}`, ...(options.name ? ['--name', options.name] : []), ...logs.flatMap((l) => ['--log', `${l.origin}=${l.vkey}`])];
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
