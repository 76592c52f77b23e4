import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAttestation } from '../../src/ledger/attestation.js';
import { generateSecretKey } from '../../src/nix/keys.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { escapeHtml, html } from '../../src/web/html.js';
import type { LeafData } from '../../src/web/leaf.js';
import type { BuilderData, ConflictsData, OverviewData, PathData, SearchData } from '../../src/web/model.js';
import { parseSearchQuery, PAGE_SIZE } from '../../src/web/model.js';
import { tempDir } from '../helpers/nix.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { addBuilder, revokeBuilder } from '../../src/app/builders.js';
import { setPolicy } from '../../src/app/policies.js';

describe('html', () => {
  it('escapes every interpolated value, and only once', () => {
    const evil = `<img src=x onerror="alert('1')">&`;
    const inner = html`<b>${evil}</b>`;
    expect(html`<p title="${evil}">${inner}${[evil, 3, null, false, undefined]}</p>`.text).toBe(
      '<p title="&lt;img src=x onerror=&quot;alert(&#39;1&#39;)&quot;&gt;&amp;"><b>&lt;img src=x onerror=&quot;alert(&#39;1&#39;)&quot;&gt;&amp;</b>&lt;img src=x onerror=&quot;alert(&#39;1&#39;)&quot;&gt;&amp;3</p>',
    );
    expect(escapeHtml('a&b<c>d"e\'f')).toBe('a&amp;b&lt;c&gt;d&quot;e&#39;f');
  });
});

describe('search queries', () => {
  const hash = '0'.repeat(31) + 'z';
  it.each([
    ['', { kind: 'empty' }],
    ['   ', { kind: 'empty' }],
    [`/nix/store/${hash}-hello-2.12`, { kind: 'hash-part', hashPart: hash }],
    [`/nix/store/${hash}-hello-2.12.drv`, { kind: 'hash-part', hashPart: hash }],
    [`${hash}-hello`, { kind: 'hash-part', hashPart: hash }],
    [` ${hash} `, { kind: 'hash-part', hashPart: hash }],
    ['hello', { kind: 'name', text: 'hello' }],
    ['<script>', { kind: 'invalid', text: '<script>', message: 'store path names hold only A-Z a-z 0-9 + - . _ ? =' }],
    ['a\u0000b\ud800c', { kind: 'invalid', text: 'a\ufffdb\ufffdc', message: 'store path names hold only A-Z a-z 0-9 + - . _ ? =' }],
  ])('%j', (q, expected) => expect(parseSearchQuery(q)).toEqual(expected));
  it.each([
    ['ab', /at least 3 characters/],
    ['/nix/store/abc-hello', /a store path is \/nix\/store\//],
    ['x'.repeat(201), /at most 200 characters/],
  ])('refuses %j', (q, message) => {
    const parsed = parseSearchQuery(q);
    expect(parsed.kind).toBe('invalid');
    expect(parsed.kind === 'invalid' && parsed.message).toMatch(message);
  });
});

describe('web pages and their JSON', () => {
  let dir: string;
  let server: RunningServer;
  const keys = ['alice-1', 'bob-1', 'carol-1'].map(generateSecretKey);
  const [alice, bob, carol] = keys as [(typeof keys)[0], (typeof keys)[0], (typeof keys)[0]];
  const hello = randomStorePath('hello-2.12.1');
  const helloHash = randomNarHash();
  const helloDrv = randomStorePath('hello-2.12.1.drv');
  const disputed = randomStorePath('openssl-3.0.13');
  const [goodHash, badHash] = [randomNarHash(), randomNarHash()];
  const lonely = randomStorePath('lonely-1.0');
  const paged = Array.from({ length: 2 * PAGE_SIZE + 20 }, (_, i) => randomStorePath(`pagetest-${i}`));

  const submit = (items: unknown[]) => server.service.ingestor.submit(items.map((x) => parseAttestation(x)));
  const get = async (path: string, status = 200) => {
    const res = await fetch(`${server.url}${path}`);
    const body = await res.text();
    expect(res.status, `${path}: ${body.slice(0, 300)}`).toBe(status);
    return { res, body };
  };
  const json = async <T>(path: string, status = 200) => JSON.parse((await get(path, status)).body) as T;

  beforeAll(async () => {
    dir = tempDir('web-pages');
    server = await startServer(testConfig(dir, { ledger: { checkpointIntervalMs: 0 } }));
    for (const k of keys) addBuilder(server.service, k.publicKey);
    const refs = [randomStorePath('glibc-2.39')];
    await submit([alice, bob, carol].map((k) => signedAttestation(k, { outPath: hello, narHash: helloHash, references: refs, drvPath: helloDrv })));
    // carol disagrees on openssl, and bob signs two contents for it (an equivocation).
    await submit([signedAttestation(alice, { outPath: disputed, narHash: goodHash }), signedAttestation(bob, { outPath: disputed, narHash: goodHash })]);
    await submit([signedAttestation(carol, { outPath: disputed, narHash: badHash }), signedAttestation(bob, { outPath: disputed, narHash: badHash })]);
    await submit([signedAttestation(alice, { outPath: lonely, narHash: randomNarHash() })]);
    await submit(paged.map((outPath) => signedAttestation(carol, { outPath, narHash: randomNarHash() })));
    // hello's NAR is held, so the default policy advertises it.
    server.service.db
      .prepare(`INSERT INTO nars (nar_hash, nar_size, blob_key, compression, file_hash, file_size, uploaded_by, created_at) VALUES (?, 1234, 'nar/x.nar', 'none', ?, 1234, NULL, 0)`)
      .run(helloHash, helloHash);
  });
  afterAll(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const hashPart = (p: string) => p.slice(11, 43);

  it('overview: tree size, checkpoint, path classes, advertised paths, recent activity', async () => {
    const d = await json<OverviewData>('/api/v1/stats');
    // The default policy's and three builders' leaves, then the attestations.
    expect(d.treeSize).toBe(4 + 3 + 4 + 1 + paged.length);
    expect(d.checkpoint?.size).toBe(d.treeSize);
    expect(d.paths).toEqual({ total: 3 + paged.length, reproduced: 1, unreproduced: 1, single: 1 + paged.length });
    expect(d.policies).toEqual([{ name: 'default', threshold: 2, onConflict: 'block', builders: 'all active builders', possible: true, advertised: 1 }]);
    expect(d.recentAttestations.map((a) => a.leafIndex)).toEqual(Array.from({ length: 10 }, (_, i) => d.treeSize - 1 - i));
    expect(d.recentConflicts.map((c) => [c.builder, c.outPath])).toEqual([['bob-1', disputed]]);
    const { body } = await get('/');
    expect(body).toContain(`<strong>${d.treeSize}</strong> log entries`);
    expect(body).toContain(d.checkpoint!.rootHash);
  });

  it('search finds a path by store path, hash part, derivation path, base name and name substring', async () => {
    for (const q of [hello, hashPart(hello), helloDrv, hashPart(helloDrv), hello.slice(11), 'hello-2.12', 'LLO-2.1']) {
      const d = await json<SearchData>(`/api/v1/search?q=${encodeURIComponent(q)}`);
      expect(d.results.map((r) => r.outPath), q).toEqual([hello]);
      expect(d.results[0]).toMatchObject({ builders: 3, contents: 1, class: 'reproduced', status: 'quorum', name: 'hello-2.12.1' });
      const { body } = await get(`/search?q=${encodeURIComponent(q)}`);
      expect(body).toContain(`href="/paths/${hashPart(hello)}"`);
    }
    expect((await json<SearchData>(`/api/v1/search?q=${hashPart(randomStorePath())}`)).results).toEqual([]);
    expect((await get('/search?q=ab')).body).toContain('type at least 3 characters');
  });

  it('search pages through many matches, newest first, without repeats', async () => {
    const seen: string[] = [];
    let next: number | null | undefined;
    let pages = 0;
    do {
      const d: SearchData = await json<SearchData>(`/api/v1/search?q=pagetest${next === undefined ? '' : `&before=${next}`}`);
      expect(d.matches).toBe(paged.length);
      expect(d.results.length).toBeLessThanOrEqual(PAGE_SIZE);
      seen.push(...d.results.map((r) => r.outPath));
      const html = (await get(`/search?q=pagetest${next === undefined ? '' : `&before=${next}`}`)).body;
      if (d.next !== null) expect(html).toContain(`href="/search?q=pagetest&amp;before=${d.next}"`);
      next = d.next;
      pages++;
    } while (next !== null);
    expect(pages).toBe(3);
    expect(seen).toEqual([...paged].reverse());
    await json('/api/v1/search?q=pagetest&before=-1', 400);
    expect((await get('/search?q=pagetest&before=x', 400)).body).toContain('before must be a non-negative integer');
  });

  it('path page: every attestation, agreement groups, a decision per policy with its reason, and the conflict evidence', async () => {
    setPolicy(server.service, { name: 'lenient', threshold: 1, onConflict: 'ignore', builders: new Set(['alice-1']) });
    const d = await json<PathData>(`/api/v1/paths/${hashPart(disputed)}/summary`);
    const [o] = d.outputs;
    expect(o!.attestations.map((a) => [a.builder, a.narHash, a.group])).toEqual([
      ['alice-1', goodHash, 'A'],
      ['bob-1', goodHash, 'A'],
      ['carol-1', badHash, 'B'],
      ['bob-1', badHash, 'B'],
    ]);
    expect(o!.groups.map((g) => [g.label, g.narHash, g.builders])).toEqual([
      ['A', goodHash, ['alice-1', 'bob-1']],
      ['B', badHash, ['bob-1', 'carol-1']],
    ]);
    expect(o!.decisions.map((x) => [x.policy.name, x.status, x.served])).toEqual([
      ['default', 'blocked', false],
      ['lenient', 'quorum', false],
    ]);
    expect(o!.decisions[0]!.reason).toMatch(/blocked .*equivocating keys: bob-1/);
    expect(o!.equivocations).toEqual([
      {
        builder: 'bob-1',
        statements: [
          { leafIndex: 4 + 4, group: 'A', statement: expect.stringContaining(`;${goodHash};`) },
          { leafIndex: 4 + 6, group: 'B', statement: expect.stringContaining(`;${badHash};`) },
        ],
      },
    ]);
    const { res, body } = await get(`/paths/${hashPart(disputed)}`);
    expect(res.headers.get('content-security-policy')).toContain("script-src 'self'");
    for (const a of o!.attestations) expect(body).toContain(`<tr id="leaf-${a.leafIndex}" data-leaf="${a.leafIndex}">`);
    expect(body).toContain(o!.decisions[0]!.reason);
    expect(body).toContain('Conflict evidence');
    expect((await json<PathData>(`/api/v1/paths/${hashPart(hello)}/summary`)).outputs[0]!.decisions[0]!.served).toBe(true);
  });

  it('names no builder as agreeing when only one signed the leading content', async () => {
    const { body } = await get(`/paths/${hashPart(lonely)}`);
    expect(body).toContain('<td data-label="Agreeing"><span class="muted">nobody: only</span> alice-1 <span class="muted">signed its content</span></td>');
    expect((await get(`/paths/${hashPart(hello)}`)).body).toContain('<td data-label="Agreeing">alice-1, bob-1, carol-1</td>');
  });

  it('says in which order search results are, and they are in it', async () => {
    const { body } = await get('/search?q=pagetest');
    expect(body).toContain('the paths that first appeared in the log most recently first');
    const d = await json<SearchData>('/api/v1/search?q=pagetest');
    expect(d.results.map((r) => r.outPath)).toEqual([...paged].reverse().slice(0, PAGE_SIZE));
  });

  it('leaf page: every leaf number links to its entry, decoded, with its hash and inclusion proof', async () => {
    const d = await json<PathData>(`/api/v1/paths/${hashPart(hello)}/summary`);
    const a = d.outputs[0]!.attestations[0]!;
    expect((await get(`/paths/${hashPart(hello)}`)).body).toContain(`<a href="/leaves/${a.leafIndex}" title="the log entry, its fields and inclusion proof">`);
    const leaf = await json<LeafData>(`/api/v1/leaves/${a.leafIndex}`);
    const { entries } = await json<{ entries: Array<{ leaf: string }> }>(`/api/v1/log/entries?start=${a.leafIndex}&end=${a.leafIndex + 1}`);
    expect(leaf.base64).toBe(entries[0]!.leaf);
    expect(leaf.lines.join('\n')).toBe(Buffer.from(entries[0]!.leaf, 'base64').toString('utf8'));
    expect(leaf.kind).toBe('nix-quorum-attestation-v1');
    expect(Object.fromEntries(leaf.fields.map((f) => [f.name, f.value]))).toMatchObject({ derivation: helloDrv, 'output path': hello, 'NAR hash': helloHash, 'builder key': 'alice-1', 'signature (base64)': a.signature });
    // The leaf hash is RFC 9162's, and the proof leads from it to the checkpoint's root.
    const { createHash } = await import('node:crypto');
    const h = (...parts: Buffer[]) => createHash('sha256').update(Buffer.concat(parts)).digest();
    expect(leaf.leafHash).toBe(h(Buffer.from([0]), Buffer.from(leaf.base64, 'base64')).toString('base64'));
    const inclusion = await json<{ hashes: string[] }>(`/api/v1/log/proof/inclusion?index=${a.leafIndex}&size=${leaf.proof!.treeSize}`);
    expect(leaf.proof!.hashes).toEqual(inclusion.hashes);
    expect(leaf.proof!.checkpoint).toBe(server.service.checkpoints.latest()!.note);
    const { body } = await get(`/leaves/${a.leafIndex}`);
    expect(body).toContain(escapeHtml(helloDrv));
    expect(body).toContain(leaf.leafHash);
    for (const hash of leaf.proof!.hashes) expect(body).toContain(hash);
    // The log operator's leaves read as theirs: the registry entry that added alice's key.
    const { entries: all } = await json<{ entries: Array<{ index: number; kind: string; leaf: string }> }>(`/api/v1/log/entries?start=0&end=${d.treeSize}`);
    const added = all.find((e) => e.kind === 'builder' && Buffer.from(e.leaf, 'base64').toString().startsWith('nix-quorum-builder-v1;add;alice-1;'))!;
    const registry = await json<LeafData>(`/api/v1/leaves/${added.index}`);
    expect(registry).toMatchObject({ kind: 'nix-quorum-builder-v1', builder: 'alice-1', outPath: null });
    expect(Object.fromEntries(registry.fields.map((f) => [f.name, f.value]))).toMatchObject({ action: 'add', name: 'alice-1', 'public key (base64)': alice.publicKey.raw.toString('base64') });
    expect((await get(`/leaves/${added.index}`)).body).toContain('A statement of the log operator about the builder key <strong>alice-1</strong>');
    await json(`/api/v1/leaves/${d.treeSize + 100}`, 404);
    await json('/api/v1/leaves/-1', 400);
    expect((await get('/leaves/x', 400)).body).toContain('a leaf index is a non-negative integer');
  });

  it('builders: attestations, agreement with the others, equivocations, last seen', async () => {
    const { builders } = await json<{ builders: BuilderData[] }>('/api/v1/builders/stats');
    const by = Object.fromEntries(builders.map((b) => [b.name, b]));
    expect(by['alice-1']).toMatchObject({ attestations: 3, paths: 3, shared: 2, agreed: 2, agreementRate: 1, equivocated: 0, lastLeaf: 4 + 7 });
    expect(by['bob-1']).toMatchObject({ attestations: 3, paths: 2, shared: 2, agreed: 1, agreementRate: 0.5, equivocated: 1 });
    expect(by['carol-1']).toMatchObject({ attestations: 2 + paged.length, paths: 2 + paged.length, shared: 2, agreed: 2, equivocated: 0 });
    expect((await get('/builders')).body).toContain('50.0% (1 of 2)');
  });

  it('conflicts: equivocating keys and unreproduced outputs, newest first', async () => {
    const d = await json<{ unreproduced: ConflictsData['unreproduced']; total: number; next: number | null }>('/api/v1/conflicts/unreproduced');
    expect(d).toMatchObject({ total: 1, next: null });
    expect(d.unreproduced.map((p) => p.outPath)).toEqual([disputed]);
    const { body } = await get('/conflicts');
    expect(body).toContain(`href="/paths/${hashPart(disputed)}"`);
    expect(body).toMatch(/<strong>bob-1<\/strong>/);
  });

  it('log: checkpoints, the log key and how to verify independently, at /transparency-log (/log redirects: /log/<drv> are build logs)', async () => {
    const moved = await fetch(`${server.url}/log`, { redirect: 'manual' });
    expect(moved.status).toBe(301);
    expect(moved.headers.get('location')).toBe('/transparency-log');
    const { body } = await get('/transparency-log');
    expect(body).toContain(escapeHtml(server.service.noteVerifierText.trim()));
    expect(body).toContain('nix-quorum verify --server');
    expect(body).toContain(escapeHtml(server.service.checkpoints.latest()!.note));
  });

  it('escapes what a request reflects and loads nothing from elsewhere', async () => {
    const evil = `"><script>alert(1)</script><img src=x onerror=alert(2)>`;
    const { body } = await get(`/search?q=${encodeURIComponent(evil)}`);
    expect(body).not.toContain('<script>alert');
    expect(body).not.toContain('<img src=x');
    expect(body).toContain(escapeHtml(evil));
    for (const page of ['/', '/search?q=hello', `/paths/${hashPart(hello)}`, '/builders', '/conflicts', '/transparency-log', '/leaves/0']) {
      const { res, body: text } = await get(page);
      expect(res.headers.get('content-security-policy')).toMatch(/default-src 'none'/);
      const urls = [...text.matchAll(/\b(?:src|href|action)="([^"]*)"/g)].map((m) => m[1]!);
      expect(urls.length).toBeGreaterThan(0);
      for (const u of urls) expect(u, `${page} refers to ${u}`).toMatch(/^(\/(?!\/)|#)/);
    }
  });

  it('answers bad or unknown paths with a page that says so', async () => {
    expect((await get('/paths/not-a-hash', 400)).body).toContain('must be 32 nix32 characters');
    expect((await get(`/paths/${hashPart(randomStorePath())}`, 404)).body).toContain('No builder has attested hash part');
    await json(`/api/v1/paths/${hashPart(randomStorePath())}/summary`, 404);
    await get('/assets/missing.js', 404);
    const nacl = await get('/assets/nacl-fast.min.js');
    expect(nacl.res.headers.get('content-type')).toMatch(/javascript/);
  });

  it('flags a policy that revocations made impossible, on the overview and the path page', async () => {
    setPolicy(server.service, { name: 'trio', threshold: 3, onConflict: 'block', builders: ['alice-1', 'bob-1', 'carol-1'] });
    expect((await json<OverviewData>('/api/v1/stats')).policies.find((p) => p.name === 'trio')).toMatchObject({ possible: true });
    revokeBuilder(server.service, 'carol-1');
    const trio = (await json<OverviewData>('/api/v1/stats')).policies.find((p) => p.name === 'trio');
    expect(trio).toMatchObject({ possible: false, impossible: 'only 2 active keys in the policy, threshold 3: no path can reach quorum' });
    expect((await get('/')).body).toMatch(/<td data-label="Threshold" class="num">3 <span class="badge status-blocked" title="only 2 active keys[^"]*">impossible<\/span>/);
    expect((await get(`/paths/${hashPart(hello)}`)).body).toContain('impossible</span>');
  });
});
