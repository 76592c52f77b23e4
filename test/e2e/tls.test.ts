import { addBuilder } from '../../src/app/builders.js';
import { execFileSync } from 'node:child_process';
import https from 'node:https';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { exampleProxySite, startNginx, type BenchServer } from '../../bench/common.js';
import { formatSecretKey, generateSecretKey } from '../../src/nix/keys.js';
import { hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { launchChromium, verification } from '../helpers/chromium.js';
import { chrootBuild, closureOutputs, writeClosure } from '../helpers/closure.js';
import { testConfig } from '../helpers/ledger.js';
import { describeNix, nix, nixEnv, tempDir } from '../helpers/nix.js';
import { runAsync, runCli } from '../helpers/server.js';

const HOST = 'quorum.test';
const BIG = 200 * 1024 * 1024;

/** Established TCP connections to local `port` (IPv4), from the kernel's table. */
function established(port: number): number {
  const local = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1).filter((line) => {
    const [, localAddress, , state] = line.trim().split(/\s+/);
    return localAddress?.endsWith(local) && state === '01';
  }).length;
}

describeNix('behind the README\'s nginx TLS reverse proxy (real nginx, Nix and Chromium)', () => {
  let dir: string;
  let server: RunningServer;
  let nginx: BenchServer;
  let browser: Browser | undefined;
  let url: string;
  let cert: string;
  let cacheKey: string;
  let outputs: string[];
  let big: string;
  const keys = ['tls-b1-1', 'tls-b2-1'].map((n) => generateSecretKey(n));

  beforeAll(async () => {
    dir = tempDir('tls');
    server = await startServer(testConfig(join(dir, 'data')));
    cacheKey = readFileSync(join(dir, 'data', 'cache-key.public'), 'utf8').trim();
    cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${HOST}`, '-addext', `subjectAltName=DNS:${HOST},IP:127.0.0.1`], { stdio: 'ignore' });
    nginx = await startNginx({ site: (port) => exampleProxySite({ port, upstream: Number(new URL(server.url).port), tls: { cert, key, serverName: HOST } }) });
    url = `https://127.0.0.1:${nginx.port}`;
    for (const k of keys) addBuilder(server.service, k.publicKey);
    const closure = writeClosure(dir, { count: 3, salt: `tls-${Date.now()}`, bigBytes: BIG });
    for (const b of [0, 1]) {
      const built = chrootBuild(join(dir, `b${b}`), closure.file);
      expect(built.status, built.stderr).toBe(0);
    }
    ({ outputs } = closureOutputs(join(dir, 'b0'), closure.file));
    big = outputs.find((p) => p.endsWith('-nq-big'))!;
  }, 600_000);

  afterAll(async () => {
    await browser?.close();
    await nginx?.stop();
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('takes a builder\'s 200 MB NAR upload through the proxy, over HTTPS', async () => {
    for (const [b, k] of keys.entries()) {
      const keyFile = join(dir, `key${b}`);
      writeFileSync(keyFile, formatSecretKey(k));
      // The builder trusts the test's certificate as it would a real one.
      const submitted = await runCli(['submit', '--upload', '--store', join(dir, `b${b}`), '--server', url, '--key-file', keyFile, ...outputs], { ...nixEnv, NODE_EXTRA_CA_CERTS: cert });
      expect(submitted.code, submitted.stderr).toBe(0);
      expect(submitted.stderr).toMatch(new RegExp(`accepted ${outputs.length},`));
    }
    const res = await fetch(`${server.url}/api/v1/nars/${server.service.db.prepare('SELECT nar_hash FROM decisions WHERE out_path = ?').pluck().get(big)}`, { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(Number(res.headers.get('x-nar-size'))).toBeGreaterThan(BIG);
  }, 300_000);

  it('without the example\'s body size setting, nginx refuses the upload and the builder says what to change', async () => {
    const limited = await startNginx({ site: (port) => exampleProxySite({ port, upstream: Number(new URL(server.url).port), tls: { cert, key: join(dir, 'key.pem'), serverName: HOST } }).replace('    client_max_body_size 0;\n', '') });
    try {
      const b2 = join(dir, 'b2');
      const built = chrootBuild(b2, writeClosure(dir, { count: 2, salt: `tls-limited-${Date.now()}`, bigBytes: 2 * 1024 * 1024 }).file);
      expect(built.status, built.stderr).toBe(0);
      const bigger = built.stdout.split('\n').find((p) => p.endsWith('-nq-big'))!;
      const submitted = await runCli(['submit', '--upload', '--store', b2, '--server', `https://127.0.0.1:${limited.port}`, '--key-file', join(dir, 'key0'), bigger], { ...nixEnv, NODE_EXTRA_CA_CERTS: cert });
      expect(submitted.code).toBe(1);
      expect(submitted.stderr).toMatch(/: 413 Request Entity Too Large: a reverse proxy in front of the server limits request bodies \(nginx: client_max_body_size 0/);
      expect(submitted.stderr).not.toContain('<html>');
    } finally {
      await limited.stop();
    }
  }, 300_000);

  it('lets a Nix client substitute the closure over HTTPS, checking every NAR hash', async () => {
    const client = join(dir, 'client');
    // Nix 2.8 reads its CA file from NIX_SSL_CERT_FILE only (the ssl-cert-file setting came with Nix 2.15).
    const result = await runAsync(
      'nix-store',
      ['--store', client, '-r', ...outputs, '--option', 'substituters', url, '--option', 'trusted-public-keys', cacheKey, '--option', 'build-users-group', '', '--option', 'narinfo-cache-negative-ttl', '0', '--max-jobs', '0'],
      { ...nixEnv, NIX_SSL_CERT_FILE: cert },
    );
    expect(result.code, result.stderr).toBe(0);
    nix('nix', ['--store', client, 'store', 'verify', '--no-trust', ...outputs]);
    const ours = JSON.parse(nix('nix', ['--store', client, 'path-info', '--json', big])) as Array<{ narHash: string }>;
    const theirs = JSON.parse(nix('nix', ['--store', join(dir, 'b0'), 'path-info', '--json', big])) as Array<{ narHash: string }>;
    expect(ours[0]!.narHash).toBe(theirs[0]!.narHash);
  }, 300_000);

  it('keeps its connections to the server open between requests', async () => {
    const port = Number(new URL(server.url).port);
    const ca = readFileSync(cert);
    for (let i = 0; i < 30; i++) {
      const status = await new Promise<number | undefined>((resolve, reject) => {
        https.get(`${url}/nix-cache-info`, { ca, agent: false }, (res) => res.resume().on('end', () => resolve(res.statusCode))).on('error', reject);
      });
      expect(status).toBe(200);
    }
    // Thirty requests, each on its own client connection, reached the server over connections
    // nginx keeps open (at most `keepalive 32` idle ones, some from the tests before); with a new
    // connection per request none would be left: nginx closes each after its answer.
    const open = established(port);
    expect(open).toBeGreaterThan(0);
    expect(open).toBeLessThanOrEqual(32);
  });

  it('verifies the path page in Chromium over HTTPS, a secure context by its own name', async () => {
    const spki = execFileSync('sh', ['-c', `openssl x509 -in '${cert}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`], { encoding: 'utf8' }).trim();
    // The browser resolves the site's name to the proxy and trusts exactly this certificate.
    browser = await launchChromium([`--host-resolver-rules=MAP ${HOST} 127.0.0.1`, `--ignore-certificate-errors-spki-list=${spki}`]);
    const page = await (await browser.newContext()).newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    const site = `https://${HOST}:${nginx.port}`;
    await page.goto(`${site}/paths/${hashPartOf(big as StorePath)}`);
    expect(await page.evaluate(() => window.isSecureContext)).toBe(true);
    expect(await verification(page)).toEqual(keys.map((k) => ({ builder: k.name, state: 'ok', text: 'verified in your browser' })));
    expect(await page.textContent('#verify-status')).toMatch(/All 2 attestations verified in your browser/);
    expect(errors).toEqual([]);
  });
});
