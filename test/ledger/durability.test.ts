import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { generateSecretKey } from '../../src/nix/keys.js';
import { openService } from '../../src/service.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { tempDir } from '../helpers/nix.js';
import { CLI, freePort } from '../helpers/server.js';
import { addBuilder } from '../../src/app/builders.js';
import { postAttestations } from '../../bench/common.js';
import { describeStrace } from '../helpers/strace.js';

interface Call {
  name: string;
  fd: number;
  start: number;
  end: number;
  text: string;
  result: number;
}

/** Parses `strace -f -ttt -T` output, joining "<unfinished ...>" calls with their "resumed" halves. */
function parseStrace(log: string): Call[] {
  const calls: Call[] = [];
  const unfinished = new Map<string, { name: string; start: number; head: string }>();
  for (const line of log.split('\n')) {
    const m = /^(\d+)\s+([\d.]+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const [, pid, time, rest] = m as unknown as [string, string, string, string];
    let name: string;
    let start: number;
    let text: string;
    const resumed = /^<\.\.\. (\w+) resumed>(.*)$/.exec(rest);
    if (resumed) {
      const head = unfinished.get(`${pid}:${resumed[1]}`);
      if (!head) continue;
      unfinished.delete(`${pid}:${resumed[1]}`);
      ({ name, start } = head);
      text = head.head + resumed[2];
    } else {
      const call = /^(\w+)\((.*)$/.exec(rest);
      if (!call) continue;
      name = call[1]!;
      start = Number(time);
      if (rest.endsWith('<unfinished ...>')) {
        unfinished.set(`${pid}:${name}`, { name, start, head: rest.slice(0, -'<unfinished ...>'.length) });
        continue;
      }
      text = rest;
    }
    const tail = /= (-?\d+).*<([\d.]+)>$/.exec(text);
    if (!tail) continue;
    const fd = /^\w+\((?:AT_FDCWD, )?(\d+)?/.exec(text.replace(/^<\.\.\. \w+ resumed>/, ''))?.[1];
    calls.push({ name, fd: fd === undefined ? -1 : Number(fd), start, end: start + Number(tail[2]), text, result: Number(tail[1]) });
  }
  return calls;
}

describeStrace('durability: an acknowledged attestation is on disk', () => {
  let dir: string;
  let calls: Call[];
  let status: number;

  beforeAll(async () => {
    dir = tempDir('durable');
    const key = generateSecretKey('alice-1');
    const setup = openService(testConfig(dir), createLogger('error'));
    addBuilder(setup, key.publicKey);
    setup.close();
    const port = await freePort();
    const log = join(dir, 'strace.log');
    const child = spawn(
      'strace',
      ['-f', '-ttt', '-T', '-s', '32', '-e', 'trace=openat,pwrite64,fdatasync,fsync,write,writev', '-o', log, process.execPath, CLI, 'serve', '--data', dir, '--listen', `127.0.0.1:${port}`],
      { stdio: 'ignore', env: { ...process.env, NIX_QUORUM_LOG_LEVEL: 'error' } },
    );
    const url = `http://127.0.0.1:${port}`;
    for (let i = 0; i < 400; i++) {
      if ((await fetch(`${url}/healthz`).catch(() => undefined))?.ok) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const batch = Array.from({ length: 20 }, (_, i) => signedAttestation(key, { outPath: randomStorePath(`p${i}`), narHash: randomNarHash() }));
    const res = await postAttestations(url, key, batch);
    status = res.status;
    await res.text();
    const exited = new Promise((r) => child.once('exit', r));
    const server = Number(spawnSync('pgrep', ['-P', String(child.pid)], { encoding: 'utf8' }).stdout.trim());
    process.kill(server, 'SIGTERM');
    await exited;
    calls = parseStrace(readFileSync(log, 'utf8'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('fsyncs the WAL after the batch is written to it and before the 2xx is sent', () => {
    expect(status).toBe(200);
    const walFds = new Set(calls.filter((c) => c.name === 'openat' && c.text.includes('ledger.sqlite-wal"') && c.result >= 0).map((c) => c.result));
    expect(walFds.size).toBeGreaterThan(0);
    const responses = calls.filter((c) => (c.name === 'write' || c.name === 'writev') && /HTTP\/1\.1 2\d\d/.test(c.text));
    const response = responses.at(-1)!;
    expect(response).toBeDefined();
    const walWrites = calls.filter((c) => c.name === 'pwrite64' && walFds.has(c.fd) && c.start < response.start);
    expect(walWrites.length).toBeGreaterThan(0);
    const lastWrite = walWrites.at(-1)!;
    const flushes = calls.filter((c) => (c.name === 'fdatasync' || c.name === 'fsync') && walFds.has(c.fd) && c.result === 0);
    expect(flushes.some((f) => f.start >= lastWrite.end && f.end <= response.start)).toBe(true);
  });
});
