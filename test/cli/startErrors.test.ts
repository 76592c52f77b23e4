import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { openService } from '../../src/service.js';
import { testConfig } from '../helpers/ledger.js';
import { tempDirs } from '../helpers/nix.js';
import { freePort, runCli, type Ran } from '../helpers/server.js';

/** What every start failure looks like: a non-zero exit and one line on stderr naming the problem, no stack frames. */
function expectOneLine(ran: Ran, names: RegExp): void {
  expect(ran.code, ran.stderr).not.toBe(0);
  expect(ran.code).not.toBeNull();
  expect(ran.stderr.trimEnd().split('\n'), ran.stderr).toHaveLength(1);
  expect(ran.stderr).not.toMatch(/^\s+at /m);
  expect(ran.stderr).toMatch(names);
}

/** An environment without NIX_QUORUM_* settings of the machine running the tests. */
function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NIX_QUORUM_'))), ...extra };
}

const dirs = tempDirs();
afterAll(() => dirs.removeAll());

describe('serve refuses a bad configuration in one line and creates nothing', () => {
  let dir: string;
  let data: string;
  beforeAll(() => {
    dir = dirs.make('start-config');
    data = join(dir, 'data');
  });
  const serve = (args: string[], extra: Record<string, string> = {}) => runCli(['serve', '--data', data, '--listen', '127.0.0.1:0', ...args], env(extra));
  const config = (name: string, text: string) => {
    const file = join(dir, name);
    writeFileSync(file, text);
    return file;
  };

  it('a gc.cron that is no cron expression', async () => {
    expectOneLine(await serve(['--config', config('cron.json', '{"gc": {"cron": "every night at three"}}')]), /gc\.cron: "every night at three" is not a cron expression/);
    expect(existsSync(data)).toBe(false);
  });

  it('a config file that is not JSON, or cannot be read', async () => {
    expectOneLine(await serve(['--config', config('broken.json', '{"gc": ')]), /config file .*broken\.json is not valid JSON/);
    expectOneLine(await serve(['--config', join(dir, 'absent.json')]), /cannot read config file .*absent\.json: ENOENT/);
    // A folder where the file should be: unreadable as a file.
    expectOneLine(await serve(['--config', dir]), /cannot read config file .*: EISDIR/);
    expect(existsSync(data)).toBe(false);
  });

  it('settings the schema refuses, several at once, from the file and the environment', async () => {
    expectOneLine(await serve(['--config', config('values.json', '{"ledger": {"checkpointCron": "*/0"}, "substituter": {"priority": -1}}')]), /ledger\.checkpointCron: .*; .*substituter\.priority/);
    expectOneLine(await runCli(['serve', '--data', data], env({ NIX_QUORUM_LISTEN: 'everywhere' })), /listen: listen must be HOST:PORT/);
    expectOneLine(await serve([], { NIX_QUORUM_LOG_LEVEL: 'loud' }), /logLevel: /);
    expect(existsSync(data)).toBe(false);
  });
});

describe('serve says in one line when it cannot listen, before it creates anything', () => {
  let data: string;
  let taken: Server;
  let port: number;
  beforeAll(async () => {
    data = join(dirs.make('start-listen'), 'data');
    port = await freePort();
    taken = createServer();
    await new Promise<void>((resolve) => taken.listen(port, '127.0.0.1', resolve));
  });
  afterAll(() => new Promise<void>((resolve) => taken.close(() => resolve())));

  it('a port in use (EADDRINUSE)', async () => {
    expectOneLine(await runCli(['serve', '--data', data, '--listen', `127.0.0.1:${port}`], env()), new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: the address is already in use`));
    expect(existsSync(data)).toBe(false);
  });

  it("an address that is not this machine's (EADDRNOTAVAIL)", async () => {
    expectOneLine(await runCli(['serve', '--data', data, '--listen', '10.255.255.1:1'], env()), /cannot listen on 10\.255\.255\.1:1: the address is not one of this machine's/);
    expect(existsSync(data)).toBe(false);
  });
});

describe('serve refuses an unreadable database in one line and creates nothing', () => {
  let data: string;
  let db: string;
  let pristine: string;

  /** The data directory's files with sizes, to show that a refused start changed nothing. */
  const listing = () => readdirSync(data).sort().map((name) => `${name} ${statSync(join(data, name)).isDirectory() ? 'dir' : statSync(join(data, name)).size}`);
  const serve = () => runCli(['serve', '--data', data, '--listen', '127.0.0.1:0'], env());

  beforeAll(() => {
    data = dirs.make('start-db');
    db = join(data, 'ledger.sqlite');
    pristine = join(dirs.make('start-db-copy'), 'ledger.sqlite');
    // A real ledger, closed cleanly (its WAL folded into the file and removed).
    openService(testConfig(data), createLogger('error')).close();
    expect(existsSync(`${db}-wal`)).toBe(false);
    renameSync(db, pristine);
  });

  it('garbage bytes over the whole file', async () => {
    writeFileSync(db, randomBytes(64 * 1024));
    const before = listing();
    expectOneLine(await serve(), /the database .*ledger\.sqlite cannot be read \(SQLITE_NOTADB: file is not a database\): restore it from a backup/);
    expect(listing()).toEqual(before);
  });

  it('damaged pages behind an intact header', async () => {
    const copy = readFileSync(pristine);
    // Page 1 (header and schema) stays; every other page is overwritten.
    randomBytes(copy.length - 4096).copy(copy, 4096);
    writeFileSync(db, copy);
    const before = listing();
    expectOneLine(await serve(), /the database .*ledger\.sqlite cannot be read \(SQLITE_CORRUPT/);
    expect(listing()).toEqual(before);
  });

  it('a folder where the file should be', async () => {
    rmSync(db);
    mkdirSync(db);
    const before = listing();
    expectOneLine(await serve(), /the database .*ledger\.sqlite cannot be read \(SQLITE_CANTOPEN: unable to open database file\)/);
    expect(listing()).toEqual(before);
    rmSync(db, { recursive: true });
  });
});
