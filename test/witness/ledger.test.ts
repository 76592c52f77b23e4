import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSecretKey } from '../../src/nix/keys.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { specParseVkey, specVerifyCosignatures } from '../helpers/cosignatureSpec.js';
import { testConfig } from '../helpers/ledger.js';
import { tempDirs } from '../helpers/nix.js';
import { runCli, stopChild } from '../helpers/server.js';
import { prepareLedger, spawnWitness, submitAttestations, waitFor, type SpawnedWitness } from '../helpers/witness.js';

const ORIGIN = 'quorum.test/log';

describe('a ledger with two witnesses', () => {
  const dirs = tempDirs();
  const builder = generateSecretKey('builder-1');
  let ledger: RunningServer;
  let logVkey: string;
  let w1: SpawnedWitness;
  let w2: SpawnedWitness;
  let w2Dir: string;
  /** The registry and policy leaves the log starts with. */
  let base: number;
  /** The tree sizes after the first 5 attestations, and after 15 more. */
  let first: number;
  let later: number;

  const dir = (name: string) => dirs.make(name);
  const submit = (n: number) => submitAttestations(ledger.url, builder, n);
  const served = async (query = '') => {
    const res = await fetch(`${ledger.url}/api/v1/log/checkpoint${query}`);
    return { status: res.status, text: await res.text() };
  };
  const sizeOf = (note: string) => Number(note.split('\n')[1]);
  const cosignedBy = (note: string, w: SpawnedWitness) => specVerifyCosignatures(note, specParseVkey(w.vkey)).length;
  const size = () => ledger.service.log.size();

  beforeAll(async () => {
    const ledgerDir = dir('ledger');
    logVkey = prepareLedger(ledgerDir, ORIGIN, [builder.publicKey]);
    w1 = await spawnWitness(dir('w1'), [{ origin: ORIGIN, vkey: logVkey }], { name: 'witness.test/w1' });
    w2Dir = dir('w2');
    w2 = await spawnWitness(w2Dir, [{ origin: ORIGIN, vkey: logVkey }], { name: 'witness.test/w2' });
    ledger = await startServer(
      testConfig(ledgerDir, {
        ledger: { origin: ORIGIN, checkpointIntervalMs: 0, witnessRetryMaxMs: 300, witnesses: [w1, w2].map((w) => ({ url: w.url, vkey: w.vkey })) },
      }),
    );
    base = ledger.service.log.size();
    first = base + 5;
    later = first + 15;
  });
  afterAll(async () => {
    await ledger.close();
    await stopChild(w1.child);
    await stopChild(w2.child);
    dirs.removeAll();
  });

  it('serves each checkpoint with the log signature followed by both cosignatures', async () => {
    expect(await submit(5)).toBe(200);
    await waitFor(async () => {
      const { text } = await served();
      return sizeOf(text) === first && cosignedBy(text, w1) === 1 && cosignedBy(text, w2) === 1;
    }, 'both cosignatures on the checkpoint after 5 attestations');
    const { text } = await served();
    const lines = text.slice(text.lastIndexOf('\n\n') + 2).trimEnd().split('\n');
    expect(lines.map((l) => l.split(' ')[1])).toEqual([ORIGIN, 'witness.test/w1', 'witness.test/w2']);
    // The newest with at least M cosignatures, for clients that require M.
    expect(sizeOf((await served('?cosigned=2')).text)).toBe(first);
    expect(await served('?cosigned=3')).toMatchObject({ status: 404 });
    expect(JSON.parse((await served('?cosigned=x')).text)).toMatchObject({ code: 'bad-query', field: 'cosigned' });
    // The witness's own view agrees.
    const status = (await (await fetch(`${ledger.url}/api/v1/log/witnesses`)).json()) as { witnesses: Array<Record<string, unknown>> };
    expect(status.witnesses).toEqual([
      expect.objectContaining({ name: 'witness.test/w1', vkey: w1.vkey, url: w1.url, cosignedSize: first, witnessSize: first, lastError: null }),
      expect.objectContaining({ name: 'witness.test/w2', vkey: w2.vkey, url: w2.url, cosignedSize: first, witnessSize: first, lastError: null }),
    ]);
  });

  it('shows which witnesses cosigned which size on /log and in /api/v1/log/checkpoints', async () => {
    const data = (await (await fetch(`${ledger.url}/api/v1/log/checkpoints`)).json()) as {
      witnesses: Array<{ name: string; cosignedSize: number }>;
      checkpoints: Array<{ size: number; cosignatures: Array<{ witness: string; timestamp: number; line: string }> }>;
    };
    expect(data.witnesses.map((w) => [w.name, w.cosignedSize])).toEqual([
      ['witness.test/w1', first],
      ['witness.test/w2', first],
    ]);
    const cosigned = data.checkpoints.find((c) => c.size === first)!;
    expect(cosigned.cosignatures.map((c) => c.witness)).toEqual(['witness.test/w1', 'witness.test/w2']);
    const page = await (await fetch(`${ledger.url}/log`)).text();
    expect(page).toMatch(/<h2>Witnesses<\/h2>/);
    expect(page).toMatch(new RegExp(`<tr data-size="${first}">.*<td data-label="Cosigned by" data-cosigned><span title="[^"]+">witness\\.test/w1</span>, <span title="[^"]+">witness\\.test/w2</span></td>`));
    expect(page).toContain(w1.vkey);
  });

  it('verify --witness … --witness-threshold 2 accepts the cosigned checkpoint', async () => {
    const state = join(dir('verify'), 'state.json');
    const ran = await runCli(['verify', '--server', ledger.url, '--log-key', logVkey, '--witness', w1.vkey, '--witness', w2.vkey, '--witness-threshold', '2', '--state', state]);
    expect(ran.stderr).toBe('');
    expect(ran.code).toBe(0);
    expect(ran.stdout).toMatch(new RegExp(`^ok: quorum\\.test/log: ${first} entries verified`));
    expect(ran.stdout).toMatch(/witnessed: cosigned by witness\.test\/w1 \(\S+\), witness\.test\/w2 \(\S+\); 2 of 2 required/);
    const json = await runCli(['verify', '--server', ledger.url, '--witness', w1.vkey, '--witness', w2.vkey, '--witness-threshold', '1', '--state', state, '--json']);
    expect(JSON.parse(json.stdout).cosignatures.map((c: { witness: string }) => c.witness)).toEqual([w1.vkey, w2.vkey]);
    const bad = await runCli(['verify', '--server', ledger.url, '--witness', w1.vkey, '--witness-threshold', '2', '--state', state]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^nix-quorum: the witness threshold must be a whole number from 1 to the number of witnesses given \(1\), got 2\n$/);
  });

  it('with one witness down, ingest goes on, checkpoints get the cosignature that can be had, and catch up when it returns', async () => {
    await stopChild(w2.child, 'SIGKILL');
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push(await submit(3));
    // Every submission was acknowledged while a witness was down: ingest never waits for witnesses.
    expect(statuses).toEqual([200, 200, 200, 200, 200]);
    expect(size()).toBe(later);
    await waitFor(async () => {
      const { text } = await served();
      return sizeOf(text) === later && cosignedBy(text, w1) === 1;
    }, "w1's cosignature on the newest checkpoint");
    expect(cosignedBy((await served()).text, w2)).toBe(0);
    expect(sizeOf((await served('?cosigned=2')).text)).toBe(first);
    const down = (await (await fetch(`${ledger.url}/api/v1/log/witnesses`)).json()) as { witnesses: Array<{ name: string; lastError: { message: string } | null }> };
    expect(down.witnesses[1]!.lastError?.message).toMatch(/cannot reach the witness/);
    const metrics = await (await fetch(`${ledger.url}/metrics`)).text();
    expect(metrics).toMatch(/nixquorum_witness_submissions_total\{witness="witness\.test\/w2",result="failed"\} [1-9]/);
    expect(metrics).toMatch(new RegExp(`nixquorum_witness_cosigned_size\\{witness="witness\\.test/w1"\\} ${later}\n`));

    w2 = await spawnWitness(w2Dir, [{ origin: ORIGIN, vkey: logVkey }], { port: w2.port });
    await waitFor(async () => sizeOf((await served('?cosigned=2')).text) === later, 'both cosignatures on the newest checkpoint after w2 returned');
    const back = (await (await fetch(`${ledger.url}/api/v1/log/witnesses`)).json()) as { witnesses: Array<{ cosignedSize: number; lastError: unknown }> };
    expect(back.witnesses.map((w) => [w.cosignedSize, w.lastError])).toEqual([
      [later, null],
      [later, null],
    ]);
  });
});
