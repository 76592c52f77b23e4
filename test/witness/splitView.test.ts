import { createHash } from 'node:crypto';
import { cpSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCheckpoint, parseNoteVerifierKey } from '../../src/ledger/checkpoint.js';
import { generateSecretKey } from '../../src/nix/keys.js';
import { startServer, type RunningServer } from '../../src/serve.js';
import { specParseVkey, specVerifyCosignatures } from '../helpers/cosignatureSpec.js';
import { testConfig } from '../helpers/ledger.js';
import { tempDirs } from '../helpers/nix.js';
import { runCli, stopChild } from '../helpers/server.js';
import { prepareLedger, spawnWitness, submitAttestations, waitFor, type SpawnedWitness } from '../helpers/witness.js';

const ORIGIN = 'quorum.test/split';

/**
 * A split view: the operator copies the ledger's data directory and runs both copies with the same
 * log key, showing different histories to different people. Each copy signs valid checkpoints; only
 * the witnesses can tell, because each cosigns one history only.
 */
describe('split view: two copies of a ledger under one log key', () => {
  const dirs = tempDirs();
  const builder = generateSecretKey('builder-1');
  const witnesses: SpawnedWitness[] = [];
  let logVkey: string;
  let a: RunningServer;
  let b: RunningServer;
  /** Tree sizes: the shared history (after the log's own registry and policy leaves), A's, B's. */
  let shared: number;
  let aSize: number;
  let bSize: number;

  const dir = (name: string) => dirs.make(name);
  const config = (dataDir: string) =>
    testConfig(dataDir, { ledger: { origin: ORIGIN, checkpointIntervalMs: 0, witnessRetryMaxMs: 300, witnesses: witnesses.map((w) => ({ url: w.url, vkey: w.vkey })) } });
  const submit = async (server: RunningServer, n: number, name: string) => expect(await submitAttestations(server.url, builder, n, name)).toBe(200);
  const newest = async (server: RunningServer) => (await fetch(`${server.url}/api/v1/log/checkpoint`)).text();
  const cosigners = (note: string) => witnesses.filter((w) => specVerifyCosignatures(note, specParseVkey(w.vkey)).length === 1).length;
  const verify = (server: RunningServer, state: string) =>
    runCli(['verify', '--server', server.url, '--log-key', logVkey, ...witnesses.flatMap((w) => ['--witness', w.vkey]), '--witness-threshold', '2', '--state', state]);

  beforeAll(async () => {
    const aDir = dir('ledger-a');
    logVkey = prepareLedger(aDir, ORIGIN, [builder.publicKey]);
    for (const i of [1, 2, 3]) witnesses.push(await spawnWitness(dir(`w${i}`), [{ origin: ORIGIN, vkey: logVkey }], { name: `witness.test/w${i}` }));
    // A shared, witnessed history: the log's first leaves and 3 attestations.
    a = await startServer(config(aDir));
    shared = a.service.log.size() + 3;
    aSize = shared + 2;
    bSize = shared + 4;
    await submit(a, 3, 'shared');
    await waitFor(async () => {
      const note = await newest(a);
      return note.split('\n')[1] === String(shared) && cosigners(note) === 3;
    }, 'the shared history cosigned by all three');
    await a.close();
    // The copy, with the same log key; both copies run on.
    const bDir = dir('ledger-b');
    cpSync(aDir, bDir, { recursive: true });
    a = await startServer(config(aDir));
    b = await startServer(config(bDir));
  });
  afterAll(async () => {
    await a.close();
    await b.close();
    for (const w of witnesses) await stopChild(w.child);
    dirs.removeAll();
  });

  it('the witnesses cosign one history; the other is refused (409, then 422) and kept as evidence', async () => {
    await submit(a, 2, 'a');
    await waitFor(async () => {
      const note = await newest(a);
      return note.split('\n')[1] === String(aSize) && cosigners(note) === 3;
    }, "A's newest checkpoint cosigned by all three");
    // B's history differs from the shared one on, and is longer: it proves consistency from A's size with its own tree, which fails.
    await submit(b, 4, 'b');
    await waitFor(async () => {
      const { witnesses: status } = (await (await fetch(`${b.url}/api/v1/log/witnesses`)).json()) as { witnesses: Array<{ lastError: { status: number } | null }> };
      return status.every((s) => s.lastError?.status === 422);
    }, 'every witness to refuse B with 422');
    const bNote = await newest(b);
    expect(bNote.split('\n')[1]).toBe(String(bSize));
    expect(cosigners(bNote)).toBe(0);
    // Both histories are signed by the log key: neither server is "wrong" on its own.
    const key = parseNoteVerifierKey(logVkey);
    expect(parseCheckpoint(bNote, key).size).toBe(bSize);
    expect(parseCheckpoint(await newest(a), key).size).toBe(aSize);

    for (const w of witnesses) {
      // Each witness holds A's history only.
      const head = await (await fetch(`${w.url}/${createHash('sha256').update(ORIGIN).digest('hex')}/checkpoint`)).text();
      expect(head.split('\n').slice(0, 3)).toEqual((await newest(a)).split('\n').slice(0, 3));
      // And keeps B's checkpoint, signed by the log key, with the proof that failed.
      const { evidence } = (await (await fetch(`${w.url}/evidence?origin=${encodeURIComponent(ORIGIN)}`)).json()) as { evidence: Array<{ status: number; note: string; oldSize: number; witnessSize: number }> };
      const refused = evidence.find((e) => e.note.split('\n')[1] === String(bSize));
      expect(refused, w.url).toMatchObject({ status: 422, oldSize: aSize, witnessSize: aSize });
      expect(parseCheckpoint(refused!.note, key).rootHash.equals(parseCheckpoint(bNote, key).rootHash)).toBe(true);
      // B first sent its stale idea of the witness's size and was told A's (409), then proved from there and failed.
      expect(await (await fetch(`${w.url}/metrics`)).text()).toMatch(/nixquorum_witness_add_checkpoint_total\{status="409"\} [1-9]/);
    }
  });

  it('verify --witness-threshold 2 of 3 fails on the unwitnessed fork, naming the witnesses that refused, and passes on the witnessed one', async () => {
    const failed = await verify(b, join(dir('verify-b'), 'state.json'));
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(new RegExp(`the checkpoint of ${bSize} entries has 0 valid cosignatures of the 2 required; not cosigned by witness\\.test/w1, witness\\.test/w2, witness\\.test/w3`));
    for (const i of [1, 2, 3]) {
      expect(failed.stderr).toMatch(new RegExp(`witness\\.test/w${i} \\(http://127\\.0\\.0\\.1:\\d+\\): the server reports 422: consistency proof from ${aSize} to ${bSize} leaves does not lead to the first root`));
      expect(failed.stderr).toMatch(new RegExp(`witness\\.test/w${i}: it cosigned a checkpoint of ${aSize} entries \\(root \\S+\\), signed by the log key: FORK, this server's tree does not extend it`));
      expect(failed.stderr).toMatch(new RegExp(`witness\\.test/w${i}: it keeps 1 refused checkpoint\\(s\\) signed by the log key as evidence; the latest: 422`));
    }
    const passed = await verify(a, join(dir('verify-a'), 'state.json'));
    expect(passed.stderr).toBe('');
    expect(passed.code).toBe(0);
    expect(passed.stdout).toMatch(/witnessed: cosigned by witness\.test\/w1 .*, witness\.test\/w2 .*, witness\.test\/w3 .*; 2 of 3 required/);
  });
});
