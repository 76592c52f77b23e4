import { spawn, type ChildProcess } from 'node:child_process';
import { CLI_PATH as CLI, freePort } from '../../bench/common.js';

/** The built CLI and free ports are the benchmarks' too (bench/common.ts). */
export { CLI, freePort };

export interface SpawnOptions {
  /** Where the child's stdout and stderr go: a file descriptor (e.g. of /dev/full), else a pipe whose stderr is collected. */
  output?: number;
  /** Added to the environment (NIX_QUORUM_LOG_LEVEL is warn unless set here). */
  env?: NodeJS.ProcessEnv;
}

/** Runs `nix-quorum serve` as a child process (so it can be SIGKILLed) and waits until it answers. */
export async function spawnServer(dataDir: string, port: number, extraArgs: string[] = [], options: SpawnOptions = {}): Promise<{ url: string; child: ChildProcess; stderr: () => string }> {
  return spawnUntilHealthy(process.execPath, [CLI, 'serve', '--data', dataDir, '--listen', `127.0.0.1:${port}`, ...extraArgs], port, 'server', options);
}

/** Spawns a nix-quorum process that listens on `port` and waits until its /healthz answers. */
export async function spawnUntilHealthy(command: string, args: string[], port: number, what: string, options: SpawnOptions = {}): Promise<{ url: string; child: ChildProcess; stderr: () => string }> {
  const output = options.output ?? 'pipe';
  const child = spawn(command, args, { stdio: ['ignore', output, output], env: { ...process.env, NIX_QUORUM_LOG_LEVEL: 'warn', ...options.env } });
  let stderr = '';
  child.stderr?.on('data', (d) => (stderr += d));
  child.stdout?.resume();
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 400; i++) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}: ${stderr}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) return { url, child, stderr: () => stderr };
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`${what} did not start: ${stderr}`);
}

export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  await exited;
}

export interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command without blocking this process (tests host servers in-process: a sync spawn would deadlock). */
export function runAsync(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs this checkout's built `nix-quorum` CLI asynchronously. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Ran> {
  return runAsync(process.execPath, [CLI, ...args], env);
}
