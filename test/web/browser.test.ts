import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parseAttestation } from '../../src/ledger/attestation.js';
import { statementText, type Attestation } from '../../src/ledger/statement.js';
import { encodeLeaf } from '../../src/ledger/leaf.js';
import { brotliCompressSync } from 'node:zlib';
import { QuorumClient } from '../../src/builder/remote.js';
import { uploadAuthHeader } from '../../src/http/builderAuth.js';
import { narHashFromDigest, sha256 } from '../../src/nix/hash.js';
import { generateSecretKey, signRaw } from '../../src/nix/keys.js';
import { encodeStrings } from '../../src/nix/nar/index.js';
import type { StorePath } from '../../src/nix/storePath.js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { describeChromium, launchChromium, verification } from '../helpers/chromium.js';
import { tempDir } from '../helpers/nix.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { addBuilder } from '../../src/app/builders.js';

const SCREENSHOTS = join(PROJECT_ROOT, 'test-artifacts', 'screenshots');
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 375, height: 812 };
/** Markup in the one free-form setting a page shows (the log origin; no spaces or '+' allowed there). */
const ORIGIN = '<svg/onload=window.__pwned=1>';
/** Markup where the ledger's own parsers forbid it: written straight into the database, as a buggy or hostile writer could. */
const EVIL_NAME = 'x<script>window.__pwned=2</script>';
const EVIL_OUTPUT = '<img src=x onerror=window.__pwned=3>';
const EVIL_QUERY = '"><img src=x onerror=window.__pwned=4><script>window.__pwned=5</script>';

describeChromium('web pages in Chromium', () => {
  let dir: string;
  let server: RunningServer;
  let browser: Browser;
  const alice = generateSecretKey('alice-1');
  const bob = generateSecretKey('bob-1');
  const carol = generateSecretKey('carol-1');
  const hello = randomStorePath('hello-2.12.1');
  const helloHash = randomNarHash();
  const disputed = randomStorePath('openssl-3.0.13');
  const evilPath = randomStorePath('placeholder').replace(/placeholder$/, EVIL_NAME);
  const rebuilt = randomStorePath('tool-1.4');
  const rebuiltDrv = `${randomStorePath('tool-1.4')}.drv` as StorePath;
  const hashPart = (p: string) => p.slice(11, 43);

  const submit = (items: unknown[]) => server.service.ingestor.submit(items.map((x) => parseAttestation(x)));

  beforeAll(async () => {
    mkdirSync(SCREENSHOTS, { recursive: true });
    dir = tempDir('web-browser');
    server = await startServer(testConfig(dir, { ledger: { checkpointIntervalMs: 0, origin: ORIGIN } }));
    for (const k of [alice, bob, carol]) addBuilder(server.service, k.publicKey);
    const glibc = randomStorePath('glibc-2.39');
    for (const k of [alice, bob, carol]) await submit([signedAttestation(k, { outPath: hello, narHash: helloHash, references: [glibc] })]);
    await submit([signedAttestation(alice, { outPath: glibc, narHash: randomNarHash() }), signedAttestation(bob, { outPath: disputed, narHash: randomNarHash() })]);
    await submit([signedAttestation(carol, { outPath: disputed, narHash: randomNarHash() })]);
    writeUnvalidated();
    await uploadDisagreement();
    server.service.checkpoints.publish();
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Two builders who built `rebuilt` differently, with both NARs uploaded (so the page shows which
   * files differ) and alice's build log delivered.
   */
  async function uploadDisagreement(): Promise<void> {
    const nar = (buildId: string) =>
      encodeStrings('nix-archive-1', '(', 'type', 'directory',
        'entry', '(', 'name', 'bin', 'node', '(', 'type', 'directory', 'entry', '(', 'name', 'tool', 'node', '(', 'type', 'regular', 'executable', '', 'contents', '#!/bin/sh\necho tool\n', ')', ')', ')', ')',
        'entry', '(', 'name', 'share', 'node', '(', 'type', 'directory', 'entry', '(', 'name', 'build-id', 'node', '(', 'type', 'regular', 'contents', buildId, ')', ')', ')', ')',
        ')');
    for (const [key, buildId] of [[alice, 'built at 1717171717\n'], [bob, 'built at 1727272727 on another machine\n']] as const) {
      const bytes = nar(buildId);
      const narHash = narHashFromDigest(sha256(bytes));
      await submit([signedAttestation(key, { outPath: rebuilt, narHash, narSize: bytes.length, drvPath: rebuiltDrv })]);
      const put = await fetch(`${server.url}/api/v1/nars/${narHash}`, { method: 'PUT', body: new Uint8Array(bytes), headers: { authorization: uploadAuthHeader(key, narHash, bytes.length) } });
      expect(put.status).toBe(201);
    }
    await new QuorumClient(server.url).putLog(rebuiltDrv, alice, brotliCompressSync(Buffer.from(`building '${rebuiltDrv}'...\nbuilt at 1717171717\n`)));
  }

  /** An attestation the API would refuse (markup in the name and output), signed and logged like any other. */
  function writeUnvalidated(): void {
    const { db, log, decisions } = server.service;
    const a = {
      drvPath: `${randomStorePath('evil')}.drv`,
      outputName: EVIL_OUTPUT,
      outPath: evilPath,
      narHash: randomNarHash(),
      narSize: 42,
      references: [],
      builder: alice.name,
      narinfoSignature: null,
    } as unknown as Attestation;
    a.signature = signRaw(alice, statementText(a));
    db.transaction(() => {
      const size = log.size();
      const builderId = server.service.registry.get(alice.name)!.id;
      db.prepare(
        `INSERT INTO attestations (leaf_index, builder_id, drv_path, output_name, out_path, nar_hash, nar_size, refs, signature, narinfo_signature, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, '', ?, NULL, ?)`,
      ).run(size, builderId, a.drvPath, a.outputName, a.outPath, a.narHash, a.narSize, a.signature, Date.now());
      log.append(size, [encodeLeaf(a)]);
      decisions.recompute(new Set([a.outPath]));
    })();
  }

  /** A fresh browser context that records every request and anything a script injection would leave behind. */
  async function open(options: { viewport?: { width: number; height: number }; javaScriptEnabled?: boolean } = {}) {
    browser ??= await launchChromium();
    const context: BrowserContext = await browser.newContext({ viewport: options.viewport ?? DESKTOP, javaScriptEnabled: options.javaScriptEnabled ?? true });
    const page: Page = await context.newPage();
    const requests: string[] = [];
    const dialogs: string[] = [];
    const errors: string[] = [];
    page.on('request', (r) => requests.push(r.url()));
    page.on('dialog', (d) => {
      dialogs.push(d.message());
      void d.dismiss();
    });
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    page.on('response', (r) => r.status() >= 400 && errors.push(`${r.status()} ${r.url()}`));
    await context.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (e) => ((window as unknown as { __csp: string[] }).__csp ??= []).push(`${e.violatedDirective} ${e.blockedURI}`));
    });
    return { context, page, requests, dialogs, errors };
  }

  async function expectNothingInjected(page: Page, pwned: { dialogs: string[] }): Promise<void> {
    expect(pwned.dialogs).toEqual([]);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
    expect(await page.evaluate(() => (window as unknown as { __csp?: string[] }).__csp ?? [])).toEqual([]);
    expect(await page.evaluate(() => document.querySelectorAll('main img, main svg, main script, header svg, header img').length)).toBe(0);
  }

  it('search, follow a result to its path page, and see every builder verified in the browser', async () => {
    const { context, page, requests, errors } = await open();
    await page.goto(`${server.url}/`);
    await page.fill('#q', 'hello-2.12');
    await Promise.all([page.waitForURL(/\/search\?q=hello-2\.12$/), page.press('#q', 'Enter')]);
    await page.screenshot({ path: join(SCREENSHOTS, 'search-desktop.png'), fullPage: true });
    await Promise.all([page.waitForURL(`${server.url}/paths/${hashPart(hello)}`), page.click(`a[href="/paths/${hashPart(hello)}"]`)]);

    const rows = await verification(page);
    expect(rows).toEqual(['alice-1', 'bob-1', 'carol-1'].map((builder) => ({ builder, state: 'ok', text: 'verified in your browser' })));
    expect(await page.textContent('#verify-status')).toMatch(/All 3 attestations verified in your browser against the signed checkpoint of \d+ entries/);
    await page.screenshot({ path: join(SCREENSHOTS, 'path-desktop.png'), fullPage: true });

    // The log grows; the next page proves the new checkpoint extends the one this browser kept.
    await submit([signedAttestation(bob, { outPath: randomStorePath('later-1.0'), narHash: randomNarHash() })]);
    await page.goto(`${server.url}/paths/${hashPart(disputed)}`);
    expect((await verification(page)).map((r) => r.state)).toEqual(['ok', 'ok']);
    expect(await page.evaluate(() => JSON.parse(localStorage.getItem(`nix-quorum:${location.host}:checkpoint`)!).size)).toBe(server.service.log.size());

    expect(errors).toEqual([]);
    for (const url of requests) expect(url.startsWith(`${server.url}/`), url).toBe(true);
    expect(requests).toContain(`${server.url}/assets/nacl-fast.min.js`);
    await context.close();
  });

  it('shows precisely what failed when the server serves a tampered proof, entry or checkpoint', async () => {
    const leaves = server.service.db.prepare('SELECT leaf_index FROM attestations WHERE out_path = ? ORDER BY leaf_index').pluck().all(hello) as number[];
    const [, bobLeaf, carolLeaf] = leaves as [number, number, number];
    const { context, page } = await open();
    await page.route('**/api/v1/log/proof/inclusion?**', async (route) => {
      const response = await route.fetch();
      const proof = (await response.json()) as { index: number; hashes: string[] };
      if (proof.index === bobLeaf) {
        const first = Buffer.from(proof.hashes[0]!, 'base64');
        first[0] = first[0]! ^ 0x01;
        proof.hashes[0] = first.toString('base64');
      }
      await route.fulfill({ response, json: proof });
    });
    await page.route('**/api/v1/log/entries?**', async (route) => {
      const response = await route.fetch();
      const body = (await response.json()) as { entries: Array<{ index: number; leaf: string }> };
      for (const e of body.entries) if (e.index === carolLeaf) e.leaf = Buffer.from(Buffer.from(e.leaf, 'base64').toString().replace(';1234;', ';1235;')).toString('base64');
      await route.fulfill({ response, json: body });
    });
    await page.goto(`${server.url}/paths/${hashPart(hello)}`);
    const [aliceRow, bobRow, carolRow] = await verification(page);
    expect(aliceRow).toMatchObject({ state: 'ok', text: 'verified in your browser' });
    expect(bobRow!.state).toBe('fail');
    expect(bobRow!.text).toMatch(new RegExp(`^FAILED: the inclusion proof for leaf ${bobLeaf} leads to root \\S+, not the checkpoint's root \\S+$`));
    expect(carolRow!.state).toBe('fail');
    expect(carolRow!.text).toBe(`FAILED: the log entry's narSize is "1235", the page shows "1234"`);
    expect(await page.textContent('#verify-status')).toBe('2 of 3 attestations could not be verified in your browser; see each row.');
    expect(await page.locator('.verify-ok').count()).toBe(1);
    await page.screenshot({ path: join(SCREENSHOTS, 'path-tampered-desktop.png'), fullPage: true });

    // A checkpoint whose root was changed: its signature no longer verifies, so nothing is verified.
    await page.unrouteAll();
    await page.route('**/api/v1/log/checkpoint', async (route) => {
      const response = await route.fetch();
      const lines = (await response.text()).split('\n');
      lines[2] = Buffer.alloc(32, 7).toString('base64');
      await route.fulfill({ response, body: lines.join('\n') });
    });
    await page.reload();
    const rows = await verification(page);
    for (const r of rows) expect(r).toMatchObject({ state: 'fail', text: expect.stringMatching(/^not verified: the checkpoint's signature by .* does not verify/) });
    expect(await page.textContent('#verify-status')).toMatch(/^Verification failed: the checkpoint's signature/);
    await context.close();
  });

  it('shows markup from the query, the origin and the ledger as text, and nothing executes', async () => {
    const { context, page, dialogs } = await open();
    await page.goto(`${server.url}/search?q=${encodeURIComponent(EVIL_QUERY)}`);
    expect(await page.inputValue('#q')).toBe(EVIL_QUERY);
    expect(await page.textContent('main')).toContain(EVIL_QUERY);
    await expectNothingInjected(page, { dialogs });

    await page.goto(`${server.url}/search?q=${hashPart(evilPath)}`);
    await Promise.all([page.waitForURL(`${server.url}/paths/${hashPart(evilPath)}`), page.click(`a[href="/paths/${hashPart(evilPath)}"]`)]);
    expect(await page.textContent('[data-field="outPath"]')).toBe(evilPath);
    expect(await page.textContent('[data-field="outputName"]')).toBe(EVIL_OUTPUT);
    // What is shown as text is exactly what the builder signed: the browser verifies it.
    expect(await verification(page)).toEqual([{ builder: 'alice-1', state: 'ok', text: 'verified in your browser' }]);
    await expectNothingInjected(page, { dialogs });

    for (const path of ['/', '/transparency-log', '/conflicts', '/builders', '/leaves/0', `/paths/${hashPart(rebuilt)}`]) {
      await page.goto(`${server.url}${path}`);
      await expectNothingInjected(page, { dialogs });
    }
    await page.goto(`${server.url}/`);
    expect(await page.textContent('h1')).toBe(`Ledger ${ORIGIN}`);
    await context.close();
  });

  it('shows which files two builders\' NARs differ in, links both NARs and the build log', async () => {
    const { context, page, errors } = await open();
    await page.goto(`${server.url}/paths/${hashPart(rebuilt)}`);
    expect((await verification(page)).map((r) => r.state)).toEqual(['ok', 'ok']);
    expect(await page.textContent('table.diff caption')).toBe('1 file differs between groups A, B');
    expect(await page.$$eval('table.diff tbody tr td:first-child', (tds) => tds.map((td) => td.textContent))).toEqual(['share/build-id']);
    const log = await (await page.request.get(`${server.url}${await page.getAttribute('a:text("build log")', 'href')}`)).text();
    expect(log).toContain('built at 1717171717');
    const nars = await page.$$eval('a[download]', (as) => as.map((a) => a.getAttribute('href')));
    expect(nars).toHaveLength(2);
    for (const href of nars) expect((await page.request.get(`${server.url}${href}`)).headers()['content-type']).toBe('application/x-nix-nar');
    expect(errors).toEqual([]);
    await context.close();
  });

  it('reads without JavaScript', async () => {
    const { context, page } = await open({ javaScriptEnabled: false });
    await page.goto(`${server.url}/paths/${hashPart(hello)}`);
    expect(await page.$$eval('[data-field="builder"]', (els) => els.map((e) => e.textContent))).toEqual(['alice-1', 'bob-1', 'carol-1']);
    expect(await page.$$eval('[data-verify]', (els) => els.map((e) => e.textContent))).toEqual(Array(3).fill('not checked: needs JavaScript'));
    expect(await page.textContent('main')).toMatch(/quorum.*3 of 3 trusted keys agree/s);
    await page.goto(`${server.url}/`);
    await page.fill('#q', hashPart(disputed));
    await Promise.all([page.waitForURL(/\/search\?q=/), page.press('#q', 'Enter')]);
    expect(await page.textContent('main')).toContain(disputed);
    await page.screenshot({ path: join(SCREENSHOTS, 'path-no-javascript-desktop.png'), fullPage: true });
    await context.close();
  });

  for (const [label, viewport] of [['desktop', DESKTOP], ['phone', PHONE]] as const) {
    it(`fits a ${label} screen (${viewport.width}px): screenshots of the main pages`, async () => {
      const { context, page } = await open({ viewport });
      const pages: Array<[string, string]> = [
        ['overview', '/'],
        ['search', '/search?q=hello'],
        ['path', `/paths/${hashPart(hello)}`],
        ['path-conflict', `/paths/${hashPart(disputed)}`],
        ['builders', '/builders'],
        ['conflicts', '/conflicts'],
        ['log', '/transparency-log'],
        ['path-diff', `/paths/${hashPart(rebuilt)}`],
        ['leaf', `/leaves/${server.service.db.prepare('SELECT MIN(leaf_index) FROM attestations WHERE out_path = ?').pluck().get(hello)}`],
        ['leaf-operator', '/leaves/0'],
      ];
      for (const [name, path] of pages) {
        await page.goto(`${server.url}${path}`);
        if (name.startsWith('path')) await verification(page);
        // Nothing wider than the screen: no sideways scrolling of the page.
        expect(await page.evaluate(() => document.documentElement.scrollWidth), `${path} at ${viewport.width}px`).toBeLessThanOrEqual(viewport.width);
        await page.screenshot({ path: join(SCREENSHOTS, `${name}-${label}.png`), fullPage: true });
      }
      await context.close();
    });
  }
});
