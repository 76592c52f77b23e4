import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatCheckpoint, formatNoteVerifierKey, generateNoteKey, parseNoteVerifierKey, signNote } from '../../src/ledger/checkpoint.js';
import { EMPTY_ROOT } from '../../src/ledger/merkle.js';
import {
  cosign,
  formatCosignerSigner,
  generateCosignerKey,
  parseCosignerSigner,
  parseCosignerVerifier,
  verifyCosignatures,
} from '../../src/witness/cosignature.js';
import { parseWitnessPolicy, verifyCosigned } from '../../src/witness/verifyCosigned.js';
import { specCosign, specParseVkey, specVerifyCosignatures, specVkey } from '../helpers/cosignatureSpec.js';
import { buildGo, describeGo } from '../helpers/go.js';
import { tempDir } from '../helpers/nix.js';

const log = generateNoteKey('log.example/quorum');
const root = Buffer.from('CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=', 'base64');
const note = signNote(formatCheckpoint({ origin: 'log.example/quorum', size: 20852163, rootHash: root }), log);
const body = note.slice(0, note.lastIndexOf('\n\n') + 1);
const NOW = 1_700_000_000;

describe('cosignature/v1 keys', () => {
  it('are vkeys of signature type 0x04 whose id is SHA-256(name, newline, 0x04, key)[:4], as the spec computes', () => {
    const w = generateCosignerKey('witness.example/w1');
    expect(w.verifier.text).toMatch(/^witness\.example\/w1\+[0-9a-f]{8}\+B[A-P][A-Za-z0-9+/]{42}$/);
    expect(w.verifier.text).toBe(specVkey('witness.example/w1', w.secretKey.publicKey.raw));
    expect(specParseVkey(w.verifier.text).id.readUInt32BE(0)).toBe(w.verifier.keyId);
    expect(parseCosignerVerifier(w.verifier.text).keyId).toBe(w.verifier.keyId);
    const again = parseCosignerSigner(formatCosignerSigner(w));
    expect(again.verifier.text).toBe(w.verifier.text);
    expect(formatCosignerSigner(w)).toMatch(/^PRIVATE\+KEY\+witness\.example\/w1\+[0-9a-f]{8}\+B[A-P]/);
  });

  it('refuse a log key (type 0x01), a wrong id and a bad name', () => {
    expect(() => parseCosignerVerifier(formatNoteVerifierKey(log.verifier))).toThrow(/signature type 1; only cosignature\/v1 \(4\)/);
    const w = generateCosignerKey('w');
    const wrongId = w.verifier.text.replace(/\+[0-9a-f]{8}\+/, `+${((w.verifier.keyId ^ 1) >>> 0).toString(16).padStart(8, '0')}+`);
    expect(() => parseCosignerVerifier(wrongId)).toThrow(/does not match/);
    expect(() => generateCosignerKey('a b')).toThrow(expect.objectContaining({ code: 'bad-key' }));
  });
});

describe('cosignatures against the spec, written in the test', () => {
  const w1 = generateCosignerKey('witness.example/w1');
  const w2 = generateCosignerKey('witness.example/w2');

  it('ours verify under the spec implementation, with the timestamp we signed', () => {
    const line = cosign(body, w1, NOW);
    expect(line).toMatch(/^\u2014 witness\.example\/w1 [A-Za-z0-9+/]{102}==\n$/);
    expect(specVerifyCosignatures(`${note}${line}`, specParseVkey(w1.verifier.text))).toEqual([NOW]);
    // The message is "cosignature/v1\ntime <t>\n" + the note text: another timestamp does not verify.
    const forged = line.replace(/ (\S+)\n$/, (_m, b64: string) => {
      const raw = Buffer.from(b64, 'base64');
      raw.writeBigUInt64BE(BigInt(NOW + 1), 4);
      return ` ${raw.toString('base64')}\n`;
    });
    expect(() => specVerifyCosignatures(`${note}${forged}`, specParseVkey(w1.verifier.text))).toThrow(/does not verify/);
  });

  it("the spec implementation's verify under ours; other keys' lines are ignored", () => {
    const line = specCosign(note, 'witness.example/w2', w2.secretKey.seed, NOW + 5);
    const found = verifyCosignatures(`${note}${cosign(body, w1, NOW)}${line}`, [w2.verifier]);
    expect(found.map((c) => [c.witness.name, c.timestamp])).toEqual([['witness.example/w2', NOW + 5]]);
    expect(found[0]!.line).toBe(line);
    expect(verifyCosignatures(note, [w1.verifier, w2.verifier])).toEqual([]);
  });

  it('refuse an altered checkpoint, a zero timestamp and a truncated line of a known witness', () => {
    const altered = `${note.replace('20852163', '20852164')}${cosign(body, w1, NOW)}`;
    expect(() => verifyCosignatures(altered, [w1.verifier])).toThrow(expect.objectContaining({ code: 'tampered' }));
    const zero = specCosign(note, 'witness.example/w1', w1.secretKey.seed, 0);
    expect(() => verifyCosignatures(`${note}${zero}`, [w1.verifier])).toThrow(/timestamp 0/);
    const short = cosign(body, w1, NOW).replace(/ (\S+)\n$/, (_m, b64: string) => ` ${Buffer.from(b64, 'base64').subarray(0, 40).toString('base64')}\n`);
    expect(() => verifyCosignatures(`${note}${short}`, [w1.verifier])).toThrow(/not an 8-byte timestamp/);
  });
});

describe('verifyCosigned: M valid cosignatures of distinct configured witnesses', () => {
  const ws = [1, 2, 3].map((i) => generateCosignerKey(`witness.example/w${i}`));
  const policy = (m?: number) => parseWitnessPolicy(ws.map((w) => w.verifier.text), m);
  const cosigned = (...which: number[]) => `${note}${which.map((i) => cosign(body, ws[i]!, NOW + i)).join('')}`;

  it('returns who cosigned when M is met, and names who did not when it is not', () => {
    const ok = verifyCosigned(cosigned(0, 2), log.verifier, policy(2));
    expect(ok.cosignatures.map((c) => c.witness.name)).toEqual(['witness.example/w1', 'witness.example/w3']);
    expect(ok.missing.map((w) => w.name)).toEqual(['witness.example/w2']);
    expect(() => verifyCosigned(cosigned(1), log.verifier, policy(2))).toThrow(
      expect.objectContaining({ code: 'not-witnessed', message: expect.stringMatching(/1 valid cosignature of the 2 required \(cosigned by witness\.example\/w2\); not cosigned by witness\.example\/w1, witness\.example\/w3/) }),
    );
    // The same witness twice counts once; the default threshold is every witness given.
    expect(() => verifyCosigned(`${cosigned(0)}${cosign(body, ws[0]!, NOW + 9)}`, log.verifier, policy(2))).toThrow(/not-witnessed|1 valid/);
    expect(() => verifyCosigned(cosigned(0, 1), log.verifier, policy())).toThrow(/of the 3 required/);
  });

  it('requires the log signature and distinct keys for the log and every witness', () => {
    const other = generateNoteKey('log.example/quorum');
    expect(() => verifyCosigned(cosigned(0, 1, 2), other.verifier, policy(1))).toThrow(expect.objectContaining({ code: 'bad-checkpoint' }));
    const twin = specVkey('twin', ws[0]!.secretKey.publicKey.raw);
    expect(() => parseWitnessPolicy([ws[0]!.verifier.text, twin], 1)).toThrow(/have the same key/);
    // A "witness" holding the log's own key: its cosignature would be the log vouching for itself.
    const logAsWitness = specVkey('log.example/quorum', log.secretKey.publicKey.raw);
    expect(() => verifyCosigned(note, log.verifier, parseWitnessPolicy([logAsWitness], 1))).toThrow(/same Ed25519 key as the log/);
    for (const m of [0, 4, 1.5, Number.NaN]) expect(() => policy(m), String(m)).toThrow(expect.objectContaining({ code: 'bad-witness-threshold' }));
  });
});

// An oracle outside this project: golang.org/x/mod/sumdb/note opens our notes; cosignature/v1 is a
// note.Verifier / note.Signer written in Go from c2sp.org/tlog-cosignature.
const GO_ORACLE = String.raw`package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

type cosigner struct {
	name string
	hash uint32
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
	time uint64
}

func (c *cosigner) Name() string    { return c.name }
func (c *cosigner) KeyHash() uint32 { return c.hash }
func message(t uint64, msg []byte) []byte {
	return append([]byte(fmt.Sprintf("cosignature/v1\ntime %d\n", t)), msg...)
}
func (c *cosigner) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	t := binary.BigEndian.Uint64(sig[:8])
	return t != 0 && ed25519.Verify(c.pub, message(t, msg), sig[8:])
}
func (c *cosigner) Sign(msg []byte) ([]byte, error) {
	sig := make([]byte, 8)
	binary.BigEndian.PutUint64(sig, c.time)
	return append(sig, ed25519.Sign(c.priv, message(c.time, msg))...), nil
}

func keyID(name string, material []byte) uint32 {
	h := sha256.Sum256(append([]byte(name+"\n"), material...))
	return binary.BigEndian.Uint32(h[:4])
}

func parseCosigner(vkey string) *cosigner {
	parts := strings.SplitN(vkey, "+", 3)
	material, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(material) != 33 || material[0] != 0x04 {
		fail("not a cosignature/v1 vkey: " + vkey)
	}
	id, _ := strconv.ParseUint(parts[1], 16, 32)
	if uint32(id) != keyID(parts[0], material) {
		fail("key id mismatch: " + vkey)
	}
	return &cosigner{name: parts[0], hash: uint32(id), pub: ed25519.PublicKey(material[1:])}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(1)
}

func main() {
	input, _ := io.ReadAll(os.Stdin)
	switch os.Args[1] {
	case "open": // open LOG_VKEY [WITNESS_VKEY...]: prints each verified signature
		logKey, err := note.NewVerifier(os.Args[2])
		if err != nil {
			fail(err.Error())
		}
		known := []note.Verifier{logKey}
		for _, v := range os.Args[3:] {
			known = append(known, parseCosigner(v))
		}
		n, err := note.Open(input, note.VerifierList(known...))
		if err != nil {
			fail(err.Error())
		}
		for _, s := range n.Sigs {
			fmt.Printf("verified %s %08x\n", s.Name, s.Hash)
		}
		fmt.Printf("unverified %d\n", len(n.UnverifiedSigs))
	case "cosign": // cosign NAME SEED_HEX TIME < note: prints the cosignature line
		seed, _ := hex.DecodeString(os.Args[3])
		priv := ed25519.NewKeyFromSeed(seed)
		pub := priv.Public().(ed25519.PublicKey)
		t, _ := strconv.ParseUint(os.Args[4], 10, 64)
		c := &cosigner{name: os.Args[2], hash: keyID(os.Args[2], append([]byte{0x04}, pub...)), pub: pub, priv: priv, time: t}
		text := input[:bytes.LastIndex(input, []byte("\n\n"))+1]
		signed, err := note.Sign(&note.Note{Text: string(text)}, c)
		if err != nil {
			fail(err.Error())
		}
		os.Stdout.Write(signed[len(text)+1:])
	}
}
`;

describeGo("cosignatures and checkpoints under Go's golang.org/x/mod/sumdb/note", () => {
  let dir: string;
  let oracle: string;
  const w1 = generateCosignerKey('witness.example/w1');
  const w2 = generateCosignerKey('witness.example/w2');
  const logVkey = formatNoteVerifierKey(log.verifier);
  const run = (args: string[], input: string) => spawnSync(oracle, args, { input, encoding: 'utf8' });

  beforeAll(() => {
    dir = tempDir('go-note');
    oracle = buildGo(dir, 'note-oracle', GO_ORACLE);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('opens our checkpoint with the log key and our cosignatures with the Go cosigner', () => {
    const served = `${note}${cosign(body, w1, NOW)}${cosign(body, w2, NOW + 1)}`;
    const opened = run(['open', logVkey, w1.verifier.text, w2.verifier.text], served);
    expect(opened.stderr).toBe('');
    expect(opened.stdout).toBe(
      `verified log.example/quorum ${log.keyId.toString(16).padStart(8, '0')}\nverified witness.example/w1 ${w1.verifier.keyId.toString(16).padStart(8, '0')}\nverified witness.example/w2 ${w2.verifier.keyId.toString(16).padStart(8, '0')}\nunverified 0\n`,
    );
    // With the log key only, Go verifies the checkpoint and leaves the cosignatures unverified (unknown keys).
    expect(run(['open', logVkey], served).stdout).toBe(`verified log.example/quorum ${log.keyId.toString(16).padStart(8, '0')}\nunverified 2\n`);
    // An empty-tree checkpoint too.
    const empty = signNote(formatCheckpoint({ origin: 'log.example/quorum', size: 0, rootHash: EMPTY_ROOT }), log);
    expect(run(['open', logVkey, w1.verifier.text], `${empty}${cosign(empty.slice(0, -(empty.length - empty.lastIndexOf('\n\n') - 1)), w1, NOW)}`).status).toBe(0);
  });

  it('rejects a cosignature of ours on an altered checkpoint', () => {
    const altered = `${note.replace('20852163', '20852164')}${cosign(body, w1, NOW)}`;
    const opened = run(['open', logVkey, w1.verifier.text], altered);
    expect(opened.status).toBe(1);
  });

  it("makes cosignatures that our verifier accepts, with Go's timestamp", () => {
    const line = run(['cosign', 'witness.example/w2', w2.secretKey.seed.toString('hex'), String(NOW + 7)], note);
    expect(line.status).toBe(0);
    const cosigned = verifyCosigned(`${note}${line.stdout}`, parseNoteVerifierKey(logVkey), parseWitnessPolicy([w1.verifier.text, w2.verifier.text], 1));
    expect(cosigned.cosignatures.map((c) => [c.witness.name, c.timestamp])).toEqual([['witness.example/w2', NOW + 7]]);
  });
});
