import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatCheckpoint, formatKeyText, formatNoteVerifierKey, generateNoteKey, noteKeyId, signNote, type NoteSignerKey } from '../../src/ledger/checkpoint.js';
import { secretKeyFromSeed } from '../../src/nix/keys.js';
import { EMPTY_ROOT, MemoryNodeStore, appendLeaves, consistencyProof, leafHash, rootHash } from '../../src/ledger/merkle.js';
import { specParseVkey, specVerifyCosignatures } from '../helpers/cosignatureSpec.js';
import { tempDir } from '../helpers/nix.js';
import { runCli, stopChild } from '../helpers/server.js';
import { describeStrace } from '../helpers/strace.js';
import { spawnWitness, waitFor, type SpawnedWitness } from '../helpers/witness.js';

/** A log's Merkle tree, grown in the test (merkle.ts is checked against RFC 9162 in its own tests). */
class Tree {
  private readonly store = new MemoryNodeStore();
  size = 0;
  grow(to: number): this {
    const leaves = Array.from({ length: to - this.size }, () => leafHash(randomBytes(16)));
    this.store.add(appendLeaves(this.size, leaves, this.store));
    this.size = to;
    return this;
  }
  root(size = this.size): Buffer {
    return rootHash(size, this.store);
  }
  proof(from: number, to = this.size): Buffer[] {
    return consistencyProof(from, to, this.store);
  }
}

const logKey = generateNoteKey('log.example/quorum');
const vkey = formatNoteVerifierKey(logKey.verifier);
const ORIGINS = Array.from({ length: 10 }, (_, i) => `log.example/o${i}`);

const note = (origin: string, size: number, root: Buffer, signer: NoteSignerKey = logKey) => signNote(formatCheckpoint({ origin, size, rootHash: root }), signer);
/** The request body exactly as c2sp.org/tlog-witness describes it (built here, not with src/). */
const body = (old: number | string, proof: Buffer[], checkpoint: string) => `old ${old}\n${proof.map((h) => `${h.toString('base64')}\n`).join('')}\n${checkpoint}`;

async function post(w: SpawnedWitness, text: string) {
  const res = await fetch(`${w.url}/add-checkpoint`, { method: 'POST', body: text });
  return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
}
const cosignedTimes = (w: SpawnedWitness, checkpoint: string, answer: string) => specVerifyCosignatures(`${checkpoint}${answer}`, specParseVkey(w.vkey));
const originHash = (origin: string) => createHash('sha256').update(origin).digest('hex');

describe('nix-quorum witness: the add-checkpoint contract (c2sp.org/tlog-witness)', () => {
  let dir: string;
  let w: SpawnedWitness;

  beforeAll(async () => {
    dir = tempDir('witness');
    w = await spawnWitness(dir, ORIGINS.map((origin) => ({ origin, vkey })), { name: 'witness.example/w1' });
  });
  afterAll(async () => {
    await stopChild(w.child);
    rmSync(dir, { recursive: true, force: true });
  });

  it('200: cosigns a first checkpoint (old 0), one that extends it with a proof, and the same tree again', async () => {
    const origin = ORIGINS[0]!;
    const tree = new Tree().grow(5);
    const first = note(origin, 5, tree.root());
    const before = Math.floor(Date.now() / 1000);
    const a = await post(w, body(0, [], first));
    expect(a).toMatchObject({ status: 200, type: 'text/plain; charset=utf-8' });
    expect(a.text).toMatch(/^\u2014 witness\.example\/w1 \S+\n$/);
    const [time] = cosignedTimes(w, first, a.text);
    expect(time).toBeGreaterThanOrEqual(before);
    expect(time).toBeLessThanOrEqual(Math.floor(Date.now() / 1000));

    tree.grow(9);
    const second = note(origin, 9, tree.root());
    const b = await post(w, body(5, tree.proof(5), second));
    expect(b.status).toBe(200);
    expect(cosignedTimes(w, second, b.text)).toHaveLength(1);
    const again = await post(w, body(9, [], second));
    expect(again.status).toBe(200);
    expect(cosignedTimes(w, second, again.text)).toHaveLength(1);

    // Monitoring: the latest cosigned checkpoint, with the log's signature and ours.
    const head = await fetch(`${w.url}/${originHash(origin)}/checkpoint`);
    expect(head.status).toBe(200);
    const text = await head.text();
    expect(text.startsWith(second.slice(0, second.lastIndexOf('\n\n') + 2))).toBe(true);
    expect(text).toContain(second.slice(second.lastIndexOf('\n\n') + 2));
    expect(cosignedTimes(w, text, '')).toHaveLength(1);
    expect((await fetch(`${w.url}/${originHash(ORIGINS[9]!)}/checkpoint`)).status).toBe(404);
  });

  it('404: a checkpoint of an origin it is not configured for', async () => {
    const res = await post(w, body(0, [], note('log.example/unknown', 1, new Tree().grow(1).root())));
    expect(res.status).toBe(404);
    expect(JSON.parse(res.text)).toMatchObject({ code: 'unknown-origin' });
  });

  it('403: no signature by a trusted key, or one of a trusted key that does not verify; unknown keys are ignored', async () => {
    const origin = ORIGINS[1]!;
    const tree = new Tree().grow(3);
    const stranger = generateNoteKey('log.example/quorum');
    const other = generateNoteKey('other.example/log');
    for (const signer of [stranger, other]) {
      const res = await post(w, body(0, [], note(origin, 3, tree.root(), signer)));
      expect(res.status, signer.name).toBe(403);
      expect(JSON.parse(res.text)).toMatchObject({ code: 'unsigned-checkpoint', error: expect.stringMatching(/no signature by a key this witness trusts/) });
    }
    const good = note(origin, 3, tree.root());
    const corrupted = good.replace(/ (\S+)\n$/, (_m, b64: string) => ` ${Buffer.from(Buffer.from(b64, 'base64').map((b, i) => (i === 20 ? b ^ 1 : b))).toString('base64')}\n`);
    const bad = await post(w, body(0, [], corrupted));
    expect(bad.status).toBe(403);
    expect(JSON.parse(bad.text).error).toMatch(/does not verify/);
    // Signed by an unknown key AND the trusted one: the unknown line is ignored.
    const both = `${good}${note(origin, 3, tree.root(), stranger).slice(good.lastIndexOf('\n\n') + 2)}`;
    expect((await post(w, body(0, [], both))).status).toBe(200);
  });

  it('400: an old size above the checkpoint size, and malformed bodies (at most 63 proof lines)', async () => {
    const origin = ORIGINS[2]!;
    const tree = new Tree().grow(70);
    const checkpoint = note(origin, 5, tree.root(5));
    const cases: Array<[string, string]> = [
      ['old size above the checkpoint size', body(7, [], checkpoint)],
      ['leading zero', body('05', [], checkpoint)],
      ['no old line', `\n${checkpoint}`],
      ['no blank line', `old 0\n${checkpoint.replace('\n\n', '\n')}`],
      ['proof line not base64 of 32 bytes', `old 0\nAAAA\n\n${checkpoint}`],
      ['64 proof lines', body(0, Array.from({ length: 64 }, () => randomBytes(32)), checkpoint)],
      ['not a checkpoint', body(0, [], signNote(`${origin}\n5\n`, logKey))],
    ];
    for (const [what, text] of cases) {
      const res = await post(w, text);
      expect(res.status, what).toBe(400);
      expect(JSON.parse(res.text).code, what).toBe('bad-add-checkpoint');
    }
    // 63 lines are within the protocol: checked as a proof (and failing as one).
    expect((await post(w, body(0, Array.from({ length: 63 }, () => randomBytes(32)), checkpoint))).status).toBe(422);
  });

  it('409 with text/x.tlog.size: an old size that is not the latest it cosigned', async () => {
    const origin = ORIGINS[3]!;
    const tree = new Tree().grow(5);
    expect((await post(w, body(0, [], note(origin, 5, tree.root())))).status).toBe(200);
    tree.grow(9);
    const next = note(origin, 9, tree.root());
    for (const [old, proof] of [
      [0, []],
      [3, tree.proof(3)],
      [9, []],
    ] as Array<[number, Buffer[]]>) {
      const res = await post(w, body(old, proof, next));
      expect(res, `old ${old}`).toEqual({ status: 409, type: 'text/x.tlog.size', text: '5\n' });
    }
    expect((await post(w, body(5, tree.proof(5), next))).status).toBe(200);
    // A log it never cosigned is at 0.
    expect(await post(w, body(4, new Tree().grow(6).proof(4), note(ORIGINS[4]!, 6, tree.root(6))))).toEqual({ status: 409, type: 'text/x.tlog.size', text: '0\n' });
  });

  it('422: a failing proof, a bad empty tree, a proof from 0, the same size with another root; the refusals are kept as evidence', async () => {
    const origin = ORIGINS[5]!;
    const tree = new Tree();
    const fork = new Tree().grow(6);
    const refuse = async (text: string, why: RegExp) => {
      const res = await post(w, text);
      expect(res.status, why.source).toBe(422);
      expect(JSON.parse(res.text), why.source).toMatchObject({ code: 'inconsistent-checkpoint', error: expect.stringMatching(why) });
    };
    await refuse(body(0, [], note(origin, 0, randomBytes(32))), /size 0 must have the empty tree's root/);
    expect((await post(w, body(0, [], note(origin, 0, EMPTY_ROOT)))).status).toBe(200);
    tree.grow(6);
    await refuse(body(0, [randomBytes(32)], note(origin, 6, tree.root())), /old size 0 takes an empty consistency proof/);
    expect((await post(w, body(0, [], note(origin, 6, tree.root())))).status).toBe(200);
    tree.grow(10);
    const proof = tree.proof(6);
    proof[0] = Buffer.from(proof[0]!.map((b, i) => (i === 0 ? b ^ 1 : b)));
    await refuse(body(6, proof, note(origin, 10, tree.root())), /does not lead to/);
    await refuse(body(6, fork.grow(10).proof(6), note(origin, 10, tree.root())), /does not lead to/);
    const forkAt6 = note(origin, 6, fork.root(6));
    await refuse(body(6, [], forkAt6), /different roots: the log forked/);
    // The same fork with a stale old size is a 409, and still evidence: two signed roots for one size.
    expect((await post(w, body(0, [], forkAt6))).status).toBe(409);
    // A stale old size alone is not evidence.
    expect((await post(w, body(0, [], note(origin, 10, tree.root())))).status).toBe(409);

    const res = await fetch(`${w.url}/evidence?origin=${encodeURIComponent(origin)}`);
    expect(res.status).toBe(200);
    const { witness, evidence } = (await res.json()) as { witness: string; evidence: Array<Record<string, unknown>> };
    expect(witness).toBe(w.vkey);
    expect(evidence.map((e) => [e.status, e.oldSize])).toEqual([
      [409, 0],
      [422, 6],
      [422, 6],
      [422, 6],
      [422, 0],
      [422, 0],
    ]);
    // Each holds what was submitted, and the log-signed checkpoint the witness held then.
    expect(evidence[0]).toMatchObject({ origin, note: forkAt6, witnessSize: 6, witnessNote: note(origin, 6, tree.root(6)) });
    expect(evidence[3]).toMatchObject({ proof: proof.map((h) => h.toString('base64')), witnessSize: 6 });
    expect(evidence.at(-1)).toMatchObject({ witnessSize: null, witnessNote: null });
    const all = (await (await fetch(`${w.url}/evidence?limit=2`)).json()) as { evidence: unknown[]; next: number };
    expect(all.evidence).toHaveLength(2);
    expect(((await (await fetch(`${w.url}/evidence?before=${all.next}`)).json()) as { evidence: unknown[] }).evidence.length).toBeGreaterThan(0);
    expect((await fetch(`${w.url}/evidence?limit=x`)).status).toBe(400);
  });

  it('never rolls back under concurrent submissions (the race in the spec)', async () => {
    const origin = ORIGINS[6]!;
    const tree = new Tree().grow(200);
    // 20 requests from old 0 at once: one wins, the others learn its size.
    const first = await Promise.all(Array.from({ length: 20 }, (_, i) => post(w, body(0, [], note(origin, i + 1, tree.root(i + 1))))));
    const winners = first.map((r, i) => [r.status, i + 1] as const).filter(([status]) => status === 200);
    expect(winners).toHaveLength(1);
    let head = winners[0]![1];
    for (const r of first) if (r.status !== 200) expect(r).toEqual({ status: 409, type: 'text/x.tlog.size', text: `${head}\n` });
    // The spec's race: A (size N) and B (size N+K) both from the latest, sent together, many times.
    for (let round = 0; round < 15; round++) {
      const sizes = [head + 1, head + 5];
      const answers = await Promise.all(sizes.map((size) => post(w, body(head, tree.proof(head, size), note(origin, size, tree.root(size))))));
      const won = sizes.filter((_, i) => answers[i]!.status === 200);
      expect(won, `round ${round}`).toHaveLength(1);
      const lost = answers.find((a) => a.status !== 200)!;
      expect(lost).toEqual({ status: 409, type: 'text/x.tlog.size', text: `${won[0]}\n` });
      expect(won[0]!).toBeGreaterThan(head);
      head = won[0]!;
    }
    const held = await (await fetch(`${w.url}/${originHash(origin)}/checkpoint`)).text();
    expect(held.split('\n')[1]).toBe(String(head));
  });

  it('serves Prometheus metrics', async () => {
    const text = await (await fetch(`${w.url}/metrics`)).text();
    for (const status of ['200', '400', '403', '404', '409', '422']) expect(text).toMatch(new RegExp(`nixquorum_witness_add_checkpoint_total\\{status="${status}"\\} [1-9]`));
    expect(text).toMatch(/nixquorum_witness_evidence_total\{origin="log\.example\/o5"\} 6/);
    expect(text).toMatch(/nixquorum_witness_tree_size\{origin="log\.example\/o0"\} 9/);
    expect(text).toMatch(/nixquorum_witness_commits_total [1-9]/);
    expect((await fetch(`${w.url}/add-checkpoint`)).status).toBe(405);
  });

  it('refuses to start without a log, for a log holding its own key, or under another name', async () => {
    const other = tempDir('witness-bad');
    try {
      const none = await runCli(['witness', '--data', other, '--listen', '127.0.0.1:0']);
      expect(none.code).toBe(1);
      expect(none.stderr).toMatch(/needs at least one log to witness: --log ORIGIN=VKEY/);
      // A log whose key is the witness's own: it would cosign its own checkpoints.
      const secret = readFileSync(join(dir, 'witness-key.secret'), 'utf8').trim();
      const seed = Buffer.from(secret.split('+').slice(4).join('+'), 'base64').subarray(1);
      const pub = secretKeyFromSeed('same', seed).publicKey.raw;
      const own = formatKeyText('log.example/same', noteKeyId('log.example/same', pub), 1, pub);
      const same = await runCli(['witness', '--data', dir, '--listen', '127.0.0.1:0', '--log', `log.example/same=${own}`]);
      expect(same.code).toBe(1);
      expect(same.stderr).toMatch(/uses the same Ed25519 key as the log log\.example\/same; a witness must have its own key/);
      const renamed = await runCli(['witness', '--data', dir, '--listen', '127.0.0.1:0', '--name', 'other.example/w9', '--log', `${ORIGINS[0]}=${vkey}`]);
      expect(renamed.code).toBe(1);
      expect(renamed.stderr).toMatch(/is the key of witness witness\.example\/w1, not other\.example\/w9/);
      expect((await runCli(['witness', '--help'])).stdout).toMatch(/--log <origin=vkey>/);
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });
});

describeStrace('nix-quorum witness: SIGKILL between the check and the answer', () => {
  let dir: string;
  beforeAll(() => {
    dir = tempDir('witness-kill');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps the state it checked and made durable, answers nothing, and after a restart cosigns that tree again, never another', async () => {
    const origin = 'log.example/kill';
    const logs = [{ origin, vkey }];
    // A first start creates the database, so the traced start below makes no fsync of its own.
    const first = await spawnWitness(dir, logs);
    await stopChild(first.child);
    const trace = join(dir, 'strace.log');
    // strace returns each fdatasync 3 s late: the disk has the state, the witness has not answered.
    const traced = await spawnWitness(dir, logs, { port: first.port, wrap: ['strace', '-f', '-o', trace, '-e', 'trace=fdatasync', '-e', 'inject=fdatasync:delay_exit=3000000'] });
    const tree = new Tree().grow(7);
    const checkpoint = note(origin, 7, tree.root());
    const answer = post(traced, body(0, [], checkpoint)).catch((error: Error) => error);
    await waitFor(() => /fdatasync\(\d+\)\s+= 0 \(DELAYED\)/.test(readFileSync(trace, 'utf8')), 'the WAL fsync');
    const exited = new Promise((r) => traced.child.once('exit', r));
    process.kill(Number(execFileSync('pgrep', ['-P', String(traced.child.pid)], { encoding: 'utf8' }).trim()), 'SIGKILL');
    expect(await answer).toBeInstanceOf(Error);
    await exited;

    const restarted = await spawnWitness(dir, logs, { port: first.port });
    try {
      // The log retries as it would: it learns the size the witness holds and asks for that tree again.
      expect(await post(restarted, body(0, [], checkpoint))).toEqual({ status: 409, type: 'text/x.tlog.size', text: '7\n' });
      const again = await post(restarted, body(7, [], checkpoint));
      expect(again.status).toBe(200);
      expect(cosignedTimes(restarted, checkpoint, again.text)).toHaveLength(1);
      // Never another tree of that size, nor a smaller one: the state did not roll back.
      expect((await post(restarted, body(7, [], note(origin, 7, new Tree().grow(7).root())))).status).toBe(422);
      expect((await post(restarted, body(0, [], note(origin, 3, tree.root(3))))).status).toBe(409);
    } finally {
      await stopChild(restarted.child);
    }
  });
});
