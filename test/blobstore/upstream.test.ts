import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { UpstreamCaches } from '../../src/blobstore/upstream.js';
import { narHashDigest, parseNarHash, type NarHash } from '../../src/nix/hash.js';
import { chrootBuildFlags, describeNix, nix, nixEnv, tempDir } from '../helpers/nix.js';
import { startNginx, type BenchServer } from '../../bench/common.js';

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest();

interface Built {
  path: string;
  hashPart: string;
  narHash: NarHash;
  narSize: number;
  nar: Buffer;
}

describeNix('upstream binary caches (nix copy --to file://, served by nginx)', () => {
  const dir = tempDir('upstream');
  const servers: BenchServer[] = [];
  let small: Built;
  let large: Built;
  /** Caches written by nix copy: xz (Nix's default) and uncompressed. */
  let xz: BenchServer;
  let none: BenchServer;
  let failing: BenchServer;
  let empty: BenchServer;
  let hanging: Server;
  let hangingUrl: string;

  beforeAll(async () => {
    const store = join(dir, 'builder');
    writeFileSync(
      join(dir, 'paths.nix'),
      `let mk = name: script: derivation { inherit name; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" script ]; };
      in {
        small = mk "upstream-small" "/bin/mkdir -p $out/share && /bin/echo hello > $out/share/greeting && /bin/ln -s share/greeting $out/link";
        large = mk "upstream-large" "/bin/mkdir -p $out/bin && /bin/cp /bin/bash /bin/ls $out/bin/ && /bin/cp -r /usr/include/linux $out/include";
      }`,
    );
    const paths = nix('nix-build', ['--store', store, ...chrootBuildFlags, '--no-out-link', join(dir, 'paths.nix'), '-A', 'small', '-A', 'large']).trim().split('\n');
    const info = JSON.parse(nix('nix', ['path-info', '--store', store, '--json', ...paths])) as Array<{ path: string; narHash: string; narSize: number }>;
    [small, large] = paths.map((path) => {
      const entry = info.find((i) => i.path === path)!;
      const nar = execFileSync('nix', ['store', 'dump-path', '--store', store, path], { env: nixEnv, maxBuffer: 1 << 30 });
      return { path, hashPart: path.slice('/nix/store/'.length, '/nix/store/'.length + 32), narHash: parseNarHash(entry.narHash), narSize: entry.narSize, nar };
    }) as [Built, Built];
    for (const [name, query] of [['cache-xz', ''], ['cache-none', '?compression=none']] as const) {
      nix('nix', ['copy', '--from', store, '--to', `file://${join(dir, name)}${query}`, ...paths]);
    }
    mkdirSync(join(dir, 'empty'));
    xz = await startNginx({ root: join(dir, 'cache-xz') });
    none = await startNginx({ root: join(dir, 'cache-none') });
    failing = await startNginx({ root: join(dir, 'cache-none'), serverConfig: 'location / { return 500; }' });
    empty = await startNginx({ root: join(dir, 'empty') });
    servers.push(xz, none, failing, empty);
    // Accepts connections and never answers.
    hanging = createServer(() => undefined).listen(0, '127.0.0.1');
    await new Promise((resolve) => hanging.once('listening', resolve));
    hangingUrl = `http://127.0.0.1:${(hanging.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await Promise.all(servers.map((server) => server.stop()));
    hanging?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('finds an xz NAR by hash part and NarHash, and streams the file Nix wrote', async () => {
    const upstream = new UpstreamCaches([xz.url]);
    const found = (await upstream.lookup(large.hashPart, large.narHash))!;
    expect(found).toMatchObject({ cache: xz.url, storePath: large.path, compression: 'xz', narHash: large.narHash, narSize: large.narSize });
    expect(found.url).toMatch(new RegExp(`^${xz.url}/nar/[0-9a-z]{52}\\.nar\\.xz$`));

    const read = (await upstream.open(found.url))!;
    const file = await readAll(read.body);
    expect(read.size).toBe(found.fileSize);
    expect(file.length).toBe(found.fileSize);
    expect(sha256(file).equals(narHashDigest(parseNarHash(found.fileHash!)))).toBe(true);
    // What a client gets after decompressing is exactly `nix store dump-path`.
    const nar = execFileSync('xz', ['-d', '-c'], { input: file, maxBuffer: 1 << 30 });
    expect(nar.equals(large.nar)).toBe(true);
    expect(sha256(nar).equals(narHashDigest(large.narHash))).toBe(true);
  });

  it('streams an uncompressed NAR byte for byte, whole and in ranges', async () => {
    const upstream = new UpstreamCaches([none.url]);
    const found = (await upstream.lookup(large.hashPart, large.narHash))!;
    expect(found.compression).toBe('none');
    const whole = (await upstream.open(found.url))!;
    expect((await readAll(whole.body)).equals(large.nar)).toBe(true);
    const part = (await upstream.open(found.url, { start: 100, end: 4099 }))!;
    expect({ size: part.size, start: part.start, end: part.end }).toEqual({ size: large.narSize, start: 100, end: 4099 });
    expect((await readAll(part.body)).equals(large.nar.subarray(100, 4100))).toBe(true);
    const tail = (await upstream.open(found.url, { start: large.narSize - 10 }))!;
    expect((await readAll(tail.body)).equals(large.nar.subarray(large.narSize - 10))).toBe(true);
    await expect(upstream.open(found.url, { start: large.narSize })).rejects.toMatchObject({ code: 'bad-range' });
    expect(await upstream.open(`${none.url}/nar/gone.nar`)).toBeNull();
  });

  it('accepts the expected NarHash in any form Nix prints', async () => {
    const upstream = new UpstreamCaches([none.url]);
    const sri = `sha256-${narHashDigest(small.narHash).toString('base64')}`;
    expect((await upstream.lookup(small.hashPart, sri))?.storePath).toBe(small.path);
  });

  it('answers null when the upstream holds the path with another NarHash', async () => {
    const upstream = new UpstreamCaches([xz.url, none.url]);
    expect(await upstream.lookup(small.hashPart, large.narHash)).toBeNull();
  });

  it('answers null for a path no upstream holds', async () => {
    const upstream = new UpstreamCaches([empty.url, xz.url]);
    expect(await upstream.lookup('0'.repeat(32), small.narHash)).toBeNull();
  });

  it('falls over from an upstream answering 500 to the next one', async () => {
    const found = await new UpstreamCaches([failing.url, none.url]).lookup(small.hashPart, small.narHash);
    expect(found?.cache).toBe(none.url);
    // Without a healthy upstream, "absent" cannot be told from "down".
    await expect(new UpstreamCaches([failing.url]).lookup(small.hashPart, small.narHash)).rejects.toMatchObject({ code: 'upstream-unavailable' });
    await expect(new UpstreamCaches([failing.url, empty.url]).lookup(small.hashPart, small.narHash)).rejects.toMatchObject({ code: 'upstream-unavailable' });
  });

  it('falls over from an upstream that refuses connections or never answers', async () => {
    const refused = 'http://127.0.0.1:1'; // nothing listens on port 1
    const upstream = new UpstreamCaches([refused, hangingUrl, xz.url], { timeoutMs: 500 });
    expect((await upstream.lookup(small.hashPart, small.narHash))?.cache).toBe(xz.url);
  });

  it('treats a narinfo that points elsewhere or describes another path as a failing upstream', async () => {
    const forged = join(dir, 'forged');
    cpSync(join(dir, 'cache-none'), forged, { recursive: true });
    const narinfo = join(forged, `${small.hashPart}.narinfo`);
    const original = readFileSync(narinfo, 'utf8');
    const server = await startNginx({ root: forged });
    servers.push(server);
    const upstream = new UpstreamCaches([server.url]);

    writeFileSync(narinfo, original.replace(/^URL: .*$/m, 'URL: file:///etc/passwd'));
    await expect(upstream.lookup(small.hashPart, small.narHash)).rejects.toThrow(/not http\(s\)/);

    writeFileSync(narinfo, original.replace(small.hashPart, large.hashPart));
    await expect(upstream.lookup(small.hashPart, small.narHash)).rejects.toThrow(/describes/);

    writeFileSync(narinfo, 'StorePath: nonsense\n');
    await expect(upstream.lookup(small.hashPart, small.narHash)).rejects.toMatchObject({ code: 'upstream-unavailable' });
  });

  it('refuses cache URLs that are not http(s) base URLs', () => {
    for (const url of ['file:///tmp/cache', 'not a url', 'https://cache.example/?x=1']) {
      expect(() => new UpstreamCaches([url]), url).toThrow(/base URL of a Nix binary cache/);
    }
  });
});
