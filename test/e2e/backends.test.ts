import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { formatSecretKey, generateSecretKey } from '../../src/nix/keys.js';
import { parseNarInfo } from '../../src/nix/narinfo.js';
import { hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { chrootBuild, closureOutputs, writeClosure } from '../helpers/closure.js';
import { testConfig } from '../helpers/ledger.js';
import { startNginx, type BenchServer } from '../../bench/common.js';
import { describeNix, nix, nixEnv, tempDir } from '../helpers/nix.js';
import { startS3rver, type RunningS3rver } from '../helpers/s3rver.js';
import { runAsync, runCli } from '../helpers/server.js';
import { addBuilder } from '../../src/app/builders.js';

async function keysOf(listing: AsyncIterable<{ key: string }>): Promise<string[]> {
  const keys: string[] = [];
  for await (const { key } of listing) keys.push(key);
  return keys;
}

/**
 * The same closure, attested by two builders, substituted by a real Nix client from a server whose
 * NARs live on each backend: the embedded filesystem, S3 (s3rver), three S3 stores sharded with two
 * replicas, and an upstream cache (nginx serving `nix copy --to file://`) the builders did not upload to.
 */
describeNix('a real Nix client substitutes a closure from every blob store backend', () => {
  let dir: string;
  let outputs: string[];
  const keys = [generateSecretKey('backend-b1-1'), generateSecretKey('backend-b2-1')];
  const keyFiles: string[] = [];
  const s3: RunningS3rver[] = [];
  let nginx: BenchServer;
  let clients = 0;

  beforeAll(async () => {
    dir = tempDir('backends');
    const closure = writeClosure(dir, { count: 6, salt: 'backends-e2e' });
    for (const b of [0, 1]) {
      const built = chrootBuild(join(dir, `b${b}`), closure.file);
      expect(built.status, built.stderr).toBe(0);
      keyFiles.push(join(dir, `key${b}`));
      writeFileSync(keyFiles[b]!, formatSecretKey(keys[b]!));
    }
    outputs = closureOutputs(join(dir, 'b0'), closure.file).outputs;
    for (let i = 0; i < 4; i++) s3.push(await startS3rver({ buckets: ['nars'] }));
    nix('nix', ['copy', '--store', join(dir, 'b0'), '--to', `file://${join(dir, 'upstream')}`, ...outputs]);
    nginx = await startNginx({ root: join(dir, 'upstream') });
  }, 600_000);

  afterAll(async () => {
    await Promise.all(s3.map((s) => s.stop()));
    await nginx?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const s3Store = (s: RunningS3rver) => ({ type: 's3', endpoint: s.endpoint, region: s.region, bucket: 'nars', accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey });

  async function substituteVia(name: string, flags: Record<string, unknown>, builderConfig: Record<string, unknown> = {}): Promise<RunningServer> {
    const server = await startServer(testConfig(join(dir, `data-${name}`), flags));
    try {
      const configFile = join(dir, `builder-${name}.json`);
      writeFileSync(configFile, JSON.stringify(builderConfig));
      for (const b of [0, 1]) {
        addBuilder(server.service, keys[b]!.publicKey);
        const submitted = await runCli(['submit', '--upload', '--config', configFile, '--store', join(dir, `b${b}`), '--server', server.url, '--key-file', keyFiles[b]!, ...outputs], nixEnv);
        expect(submitted.code, submitted.stderr).toBe(0);
      }
      const cacheKey = readFileSync(join(dir, `data-${name}`, 'cache-key.public'), 'utf8').trim();
      const client = join(dir, `client${clients++}`);
      const result = await runAsync('nix-store', [
        '--store', client, '-r', ...outputs,
        '--option', 'substituters', server.url, '--option', 'trusted-public-keys', cacheKey,
        '--option', 'build-users-group', '', '--option', 'narinfo-cache-negative-ttl', '0', '--max-jobs', '0',
      ], nixEnv);
      expect(result.code, result.stderr).toBe(0);
      nix('nix', ['--store', client, 'store', 'verify', '--no-trust', ...outputs]);
      return server;
    } catch (error) {
      await server.close();
      throw error;
    }
  }

  it('fs (the embedded default)', async () => {
    await (await substituteVia('fs', {})).close();
  });

  it('s3 on s3rver', async () => {
    const server = await substituteVia('s3', { blobStore: s3Store(s3[0]!) });
    expect(await keysOf(server.blobs.list('nar/'))).toHaveLength(outputs.length);
    await server.close();
  });

  it('sharded over three s3rver stores with two replicas', async () => {
    const server = await substituteVia('sharded', { blobStore: { type: 'sharded', replicas: 2, stores: [s3Store(s3[1]!), s3Store(s3[2]!), s3Store(s3[3]!)] } });
    await server.close();
  });

  it('upstream: builders skip uploading what the upstream cache holds, and Nix fetches it from there', async () => {
    const server = await substituteVia('upstream', { upstreams: [nginx.url] }, { upstreams: [nginx.url] });
    try {
      // No NAR was uploaded; the blob store holds only the builders' build logs.
      expect(await keysOf(server.blobs.list('nar/'))).toEqual([]);
      expect((await keysOf(server.blobs.list())).every((k) => k.startsWith('log/'))).toBe(true);
      const info = parseNarInfo(await (await fetch(`${server.url}/${hashPartOf(outputs[0] as StorePath)}.narinfo`)).text());
      expect(info.url.startsWith(`${nginx.url}/nar/`)).toBe(true);
    } finally {
      await server.close();
    }
  });
});
