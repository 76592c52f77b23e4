import { existsSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postAttestations } from '../../bench/common.js';
import { addBuilder } from '../../src/app/builders.js';
import { uploadAuthHeader } from '../../src/http/builderAuth.js';
import { generateSecretKey } from '../../src/nix/keys.js';
import { hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { metric, treeNar, type Nar } from '../helpers/nars.js';
import { tempDirs } from '../helpers/nix.js';
import { waitFor } from '../helpers/witness.js';

const dirs = tempDirs();
afterAll(() => dirs.removeAll());
const builder = generateSecretKey('blobs-builder-1');
/** gc.cron every second: the scrub and the temp-file sweep run on the gc schedule. */
const EVERY_SECOND = { gc: { cron: '* * * * * *' }, quorum: { defaultThreshold: 1 } };

async function start(dir: string): Promise<RunningServer> {
  const server = await startServer(testConfig(dir, EVERY_SECOND));
  if (!server.service.registry.get(builder.name)) addBuilder(server.service, builder.publicKey);
  return server;
}

const upload = (server: RunningServer, nar: Nar) =>
  fetch(`${server.url}/api/v1/nars/${nar.narHash}`, { method: 'PUT', body: new Uint8Array(nar.bytes), headers: { authorization: uploadAuthHeader(builder, nar.narHash, nar.narSize) } });

/** A path with quorum (one builder is the quorum here) whose NAR is stored: its narinfo, and the file it names. */
async function servedPath(server: RunningServer, nar: Nar): Promise<{ narinfo: string; file: string }> {
  expect((await upload(server, nar)).status).toBe(201);
  const outPath = randomStorePath('blob');
  expect((await postAttestations(server.url, builder, signedAttestation(builder, { outPath, narHash: nar.narHash, narSize: nar.narSize }))).status).toBe(201);
  const narinfo = `${server.url}/${hashPartOf(outPath as StorePath)}.narinfo`;
  const text = await (await fetch(narinfo)).text();
  return { narinfo, file: `${server.url}/${/^URL: (.*)$/m.exec(text)![1]!}` };
}

/** Deletes a NAR's blob behind the server's back, as a lost disk or a hand-run `rm` would. */
function loseBlob(server: RunningServer, nar: Nar): void {
  const key = server.catalog.get(nar.narHash)!.blobKey;
  const root = join(server.service.config.dataDir, 'nars');
  const [folder, file] = key.split('/') as [string, string];
  rmSync(join(root, folder, `@${file.slice(0, 2)}`, file));
}

describe('a NAR missing from the blob store stops being advertised', () => {
  let server: RunningServer;
  let dir: string;
  beforeAll(async () => {
    dir = dirs.make('missing-nar');
    server = await start(dir);
  });
  afterAll(() => server.close());

  it('found by a download: the NAR 404s, then its narinfo too, counted in nixquorum_nars_missing_total; a re-upload restores it', async () => {
    const nar = await treeNar(dirs.make('nar'), 2048);
    const { narinfo, file } = await servedPath(server, nar);
    expect((await fetch(file)).status).toBe(200);
    loseBlob(server, nar);

    const res = await fetch(file);
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ code: 'not-found', error: expect.stringMatching(/missing from the blob store/) });
    expect((await fetch(narinfo)).status).toBe(404);
    expect(await metric(server.url, 'nixquorum_nars_missing_total{found_by="read"}')).toBe(1);

    expect((await upload(server, nar)).status).toBe(201);
    expect((await fetch(narinfo)).status).toBe(200);
    expect((await fetch(file)).status).toBe(200);
  });

  it('found by the scrub on the gc schedule, without a download', async () => {
    const nar = await treeNar(dirs.make('nar'), 2048);
    const { narinfo } = await servedPath(server, nar);
    loseBlob(server, nar);
    await waitFor(async () => (await fetch(narinfo)).status === 404, 'the scrub drops the NAR', 10_000);
    expect(await metric(server.url, 'nixquorum_nars_missing_total{found_by="scrub"}')).toBe(1);
    expect(server.catalog.get(nar.narHash)).toBeUndefined();
    expect((await upload(server, nar)).status).toBe(201);
    expect((await fetch(narinfo)).status).toBe(200);
  });

  it('a re-upload restores a NAR whose loss nothing noticed yet (instead of answering "exists")', async () => {
    await server.close();
    // No scrub this time: the default schedule is once a day.
    server = await startServer(testConfig(dir, { quorum: { defaultThreshold: 1 } }));
    const nar = await treeNar(dirs.make('nar'), 2048);
    const { file } = await servedPath(server, nar);
    loseBlob(server, nar);
    const again = await upload(server, nar);
    expect(again.status).toBe(201);
    expect(await metric(server.url, 'nixquorum_nars_missing_total{found_by="upload"}')).toBe(1);
    expect((await fetch(file)).status).toBe(200);
  });
});

describe('temp files left by a crash', () => {
  const HOUR_AGO = (Date.now() - 2 * 3600_000) / 1000;

  /** What a process killed mid-upload leaves: a temp file in the blob store, one of writeFileDurable in the data directory. */
  function crashLeftovers(dir: string): string[] {
    const files = [join(dir, 'nars', '.tmp', 'c0ffee00-dead-4bad-8bad-000000000000'), join(dir, 'server.json.tmp-4242')];
    for (const file of files) {
      writeFileSync(file, 'half a write');
      utimesSync(file, HOUR_AGO, HOUR_AGO);
    }
    return files;
  }

  it('are removed when the server starts, and by gc while it runs, but not an upload in flight', async () => {
    const dir = dirs.make('leftovers');
    let server = await start(dir);
    await server.close();
    const atStart = crashLeftovers(dir);
    server = await start(dir);
    try {
      for (const file of atStart) expect(existsSync(file), file).toBe(false);

      // An upload that has sent half its NAR and then stalls, its temp file as old as a crash's.
      const nar = await treeNar(dirs.make('nar'), 4 * 1024 * 1024);
      const req = http.request(`${server.url}/api/v1/nars/${nar.narHash}`, { method: 'PUT', headers: { 'content-length': String(nar.narSize), authorization: uploadAuthHeader(builder, nar.narHash, nar.narSize) } });
      const answered = new Promise<number>((resolve, reject) => req.once('response', (res) => resolve(res.statusCode!)).once('error', reject));
      req.write(nar.bytes.subarray(0, nar.narSize / 2));
      const tmp = join(dir, 'nars', '.tmp');
      await waitFor(() => readdirSync(tmp).length === 1, 'the upload reaches the blob store');
      const inFlight = join(tmp, readdirSync(tmp)[0]!);
      utimesSync(inFlight, HOUR_AGO, HOUR_AGO);

      const byGc = crashLeftovers(dir);
      await waitFor(() => byGc.every((file) => !existsSync(file)), 'gc removes the leftovers', 10_000);
      // gc has run (every second) since: the in-flight upload's file stays, and the upload completes.
      expect(existsSync(inFlight)).toBe(true);
      req.end(nar.bytes.subarray(nar.narSize / 2));
      expect(await answered).toBe(201);
      expect(readdirSync(tmp)).toEqual([]);
    } finally {
      await server.close();
    }
  });
});
