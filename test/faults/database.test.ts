import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postAttestations } from '../../bench/common.js';
import { addBuilder } from '../../src/app/builders.js';
import { createLogger } from '../../src/log.js';
import { generateSecretKey } from '../../src/nix/keys.js';
import { hashPartOf, type StorePath } from '../../src/nix/storePath.js';
import { openService } from '../../src/service.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { tempDirs } from '../helpers/nix.js';
import { freePort, spawnServer, stopChild } from '../helpers/server.js';

const dirs = tempDirs();
afterAll(() => dirs.removeAll());

/** /healthz's status and, when unhealthy, its {error, code}. */
async function health(url: string): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${url}/healthz`);
  return { status: res.status, body: res.status === 200 ? await res.text() : await res.json() };
}

describe('a database that becomes unreadable under a running server', () => {
  const builder = generateSecretKey('db-builder-1');
  let dir: string;
  let db: string;
  let server: Awaited<ReturnType<typeof spawnServer>>;
  let outPath: string;

  beforeAll(async () => {
    dir = dirs.make('db-health');
    db = join(dir, 'ledger.sqlite');
    const service = openService(testConfig(dir), createLogger('error'));
    addBuilder(service, builder.publicKey);
    service.close();
    server = await spawnServer(dir, await freePort());
    outPath = randomStorePath('kept');
    const batch = [signedAttestation(builder, { outPath, narHash: randomNarHash() }), ...Array.from({ length: 300 }, () => signedAttestation(builder, { outPath: randomStorePath('filler'), narHash: randomNarHash() }))];
    expect((await postAttestations(server.url, builder, batch)).status).toBe(200);
  });
  afterAll(() => stopChild(server.child));

  it('is reported by /healthz (503, naming why) when the file is replaced under it, and healthy again once it is back', async () => {
    expect(await health(server.url)).toEqual({ status: 200, body: 'ok\n' });
    // The server's own connections keep the file they opened; the probe of /healthz opens it anew.
    renameSync(db, `${db}.away`);
    mkdirSync(db);
    expect(await health(server.url)).toEqual({
      status: 503,
      body: { code: 'database-unreadable', error: expect.stringMatching(/^unhealthy: the database .*ledger\.sqlite cannot be read \(SQLITE_(CANTOPEN|IOERR)\w*: [^)]+\): restore it/) },
    });
    rmdirSync(db);
    renameSync(`${db}.away`, db);
    expect(await health(server.url)).toEqual({ status: 200, body: 'ok\n' });
  });

  it('is found by a query that reads damaged pages: that request and /healthz answer 503 database-unreadable, and the server stays up', async () => {
    // Everything into the file itself, so that what is read next comes from it (and not from the WAL).
    const other = new Database(db);
    other.pragma('wal_checkpoint(TRUNCATE)');
    other.close();
    const pristine = readFileSync(db);
    const damaged = Buffer.from(pristine);
    randomBytes(damaged.length - 4096).copy(damaged, 4096);
    writeFileSync(db, damaged);

    const res = await fetch(`${server.url}/api/v1/paths/${hashPartOf(outPath as StorePath)}`).catch((e) => {
      throw new Error(`${e}: ${server.stderr()}`);
    });
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ code: 'database-unreadable', error: expect.stringMatching(/SQLITE_CORRUPT/) });
    writeFileSync(db, pristine);
    // Damage seen by a query is remembered: the page cache may hide it from the next ones.
    expect(await health(server.url)).toEqual({ status: 503, body: { code: 'database-unreadable', error: expect.stringMatching(/SQLITE_CORRUPT/) } });
    expect(server.child.exitCode).toBeNull();
    expect(server.stderr()).toMatch(/"msg":"the ledger database is unreadable"/);
  });
});
