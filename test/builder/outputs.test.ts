import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { runHook } from '../../src/builder/hook.js';
import { invalidPaths } from '../../src/builder/nix.js';
import { buildOutputs, resolvePaths } from '../../src/builder/outputs.js';
import { parseNarHash } from '../../src/nix/hash.js';
import { formatSecretKey, generateSecretKey } from '../../src/nix/keys.js';
import { parseDrvPath, parseStorePath, type StorePath } from '../../src/nix/storePath.js';
import { chrootBuild, closureOutputs, writeClosure } from '../helpers/closure.js';
import { describeNix, nix, tempDir } from '../helpers/nix.js';

describeNix('reading outputs from Nix\'s database (real Nix 2.8)', () => {
  let dir: string;
  let store: string;
  let drvs: StorePath[];
  let outputs: StorePath[];
  const byName = (suffix: string) => outputs.find((p) => p.endsWith(suffix))!;
  const splitDrv = () => drvs.find((d) => d.endsWith('-nq-split.drv'))!;

  beforeAll(() => {
    dir = tempDir('builder-outputs');
    store = join(dir, 'store');
    const closure = writeClosure(dir, { count: 2, salt: 'outputs-test' });
    const build = chrootBuild(store, closure.file);
    expect(build.status, build.stderr).toBe(0);
    const listed = closureOutputs(store, closure.file);
    drvs = listed.drvs.map((d) => parseDrvPath(d));
    outputs = listed.outputs.map((p) => parseStorePath(p));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('takes every output of a derivation when OUT_PATHS is empty (Nix 2.8), with its name and Nix\'s own hash, size and references', async () => {
    const got = await buildOutputs(splitDrv(), [], { store });
    expect(got.map((o) => [o.outputName, o.outPath]).sort()).toEqual([
      ['dev', byName('-nq-split-dev')],
      ['out', byName('-nq-split')],
    ]);
    const oracle = JSON.parse(nix('nix', ['--store', store, 'path-info', '--json', ...got.map((o) => o.outPath)])) as Array<{ path: string; narHash: string; narSize: number; references: string[] }>;
    for (const o of got) {
      const info = oracle.find((i) => i.path === o.outPath)!;
      expect(o).toEqual({ drvPath: splitDrv(), outputName: o.outputName, outPath: o.outPath, narHash: parseNarHash(info.narHash), narSize: info.narSize, references: [...info.references].sort() });
    }
    expect(got.find((o) => o.outputName === 'out')!.references).toContain(byName('-nq-split-dev'));
  });

  it('takes only the paths in OUT_PATHS when Nix passes them, and refuses a path that is not an output', async () => {
    expect((await buildOutputs(splitDrv(), [byName('-nq-split-dev')], { store })).map((o) => o.outputName)).toEqual(['dev']);
    await expect(buildOutputs(splitDrv(), [byName('-nq-d0')], { store })).rejects.toThrow(/is not an output of/);
  });

  it('resolves existing paths to deriver and output name, or says per path why it cannot', async () => {
    const source = join(dir, 'source.txt');
    writeFileSync(source, 'a source, not a build output\n');
    const added = parseStorePath(nix('nix-store', ['--store', store, '--add', source]).trim());
    const missing = parseStorePath('/nix/store/00000000000000000000000000000000-missing');
    const [ok, noSuchPath, noDeriver, drv] = await resolvePaths([byName('-nq-split-dev'), missing, added, splitDrv()], { store });
    expect(drv).toMatchObject({ error: expect.stringMatching(/is a derivation, not a build output/) });
    expect(ok).toMatchObject({ output: { drvPath: splitDrv(), outputName: 'dev', outPath: byName('-nq-split-dev') } });
    expect(noSuchPath).toEqual({ path: missing, error: `${missing} is not in the store ${store}`, noDeriver: false });
    expect(noDeriver).toMatchObject({ noDeriver: true, error: expect.stringMatching(/no known deriver/) });

    // Another closure whose top derivation (nothing refers to it) is then deleted, as a GC would.
    const other = writeClosure(dir, { count: 2, salt: 'outputs-test-gc' });
    expect(chrootBuild(store, other.file).status).toBe(0);
    const otherOutputs = closureOutputs(store, other.file);
    const otherDrv = parseDrvPath(otherOutputs.drvs.find((d) => d.endsWith('-nq-split.drv'))!);
    nix('nix-store', ['--store', store, '--delete', '--ignore-liveness', otherDrv]);
    expect(await invalidPaths([otherDrv], { store })).toEqual(new Set([otherDrv]));
    const [gone] = await resolvePaths([parseStorePath(otherOutputs.outputs.find((p) => p.endsWith('-nq-split'))!)], { store });
    expect(gone).toMatchObject({ noDeriver: false, error: expect.stringMatching(/its derivation .*-nq-split\.drv is not in the store \(garbage-collected\?\)/) });
  });

  it('tells a hook reading the wrong store to set NIX_QUORUM_STORE', async () => {
    const keyFile = join(dir, 'key.secret');
    writeFileSync(keyFile, formatSecretKey(generateSecretKey('outputs-test-1')));
    const another = join(dir, 'another-store');
    nix('nix-store', ['--store', another, '--init']);
    const env = { NIX_REMOTE: 'local', DRV_PATH: splitDrv(), NIX_QUORUM_KEY_FILE: keyFile, NIX_QUORUM_SPOOL: join(dir, 'spool'), NIX_QUORUM_STORE: another };
    await expect(runHook(env, {})).rejects.toThrow(expect.objectContaining({ code: 'wrong-store', message: expect.stringMatching(/set NIX_QUORUM_STORE/) }));
    const queued = await runHook({ ...env, NIX_CONFIG: `store = ${store}` }, {});
    expect(queued.entries.map((e) => e.outputName).sort()).toEqual(['dev', 'out']);
    expect(queued.store).toBe(store);
  });
});
