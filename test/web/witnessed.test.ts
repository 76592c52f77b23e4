import nacl from 'tweetnacl';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSecretKey } from '../../src/nix/keys.js';
import { startServer, type RunningServer } from '../../src/serve.js';
// The browser's verifier, run here in Node against the served checkpoint.
import { parseCosignerKey, verifyCosignatures } from '../../src/web/assets/ledger-verify.js';
import { postAttestations } from '../../bench/common.js';
import { describeChromium, launchChromium } from '../helpers/chromium.js';
import { specCosign, specParseVkey, specVerifyCosignatures, specVkey } from '../helpers/cosignatureSpec.js';
import { randomNarHash, randomStorePath, signedAttestation, testConfig } from '../helpers/ledger.js';
import { tempDirs } from '../helpers/nix.js';
import { stopChild } from '../helpers/server.js';
import { prepareLedger, spawnWitness, waitFor, type SpawnedWitness } from '../helpers/witness.js';

const ORIGIN = 'quorum.test/web';
const subtle = globalThis.crypto.subtle;

/** A ledger with two running witnesses and one path attested by two builders, its checkpoint cosigned by both. */
function witnessedLedger() {
  const dirs = tempDirs();
  const builders = [generateSecretKey('alice-1'), generateSecretKey('bob-1')];
  const outPath = randomStorePath('hello-2.12.1');
  const state = { server: undefined as unknown as RunningServer, witnesses: [] as SpawnedWitness[], outPath, size: 0 };
  const dir = (name: string) => dirs.make(name);
  beforeAll(async () => {
    const ledgerDir = dir('web-witnessed');
    const vkey = prepareLedger(ledgerDir, ORIGIN, builders.map((b) => b.publicKey));
    for (const i of [1, 2]) state.witnesses.push(await spawnWitness(dir(`web-w${i}`), [{ origin: ORIGIN, vkey }], { name: `witness.test/w${i}` }));
    state.server = await startServer(testConfig(ledgerDir, { ledger: { origin: ORIGIN, checkpointIntervalMs: 0, witnesses: state.witnesses.map((w) => ({ url: w.url, vkey: w.vkey })) } }));
    state.size = state.server.service.log.size() + builders.length;
    const narHash = randomNarHash();
    for (const b of builders) {
      const res = await postAttestations(state.server.url, b, signedAttestation(b, { outPath, narHash }));
      expect(res.status).toBe(201);
    }
    await waitFor(async () => {
      const note = await (await fetch(`${state.server.url}/api/v1/log/checkpoint?cosigned=2`)).text();
      return note.split('\n')[1] === String(state.size);
    }, 'the newest checkpoint cosigned by both witnesses');
  });
  afterAll(async () => {
    await state.server?.close();
    for (const w of state.witnesses) await stopChild(w.child);
    dirs.removeAll();
  });
  return state;
}

describe('ledger-verify.js cosignatures (in Node, against a real ledger and witnesses)', () => {
  const ledger = witnessedLedger();

  it("verifies the served checkpoint's cosignatures and names their witnesses and times", async () => {
    const note = await (await fetch(`${ledger.server.url}/api/v1/log/checkpoint`)).text();
    const keys = await Promise.all(ledger.witnesses.map((w) => parseCosignerKey(subtle, w.vkey)));
    const found = verifyCosignatures(nacl, note, keys);
    expect(found.map((c) => c.name)).toEqual(['witness.test/w1', 'witness.test/w2']);
    // The same timestamps as the spec implementation reads.
    expect(found.map((c) => c.timestamp)).toEqual(ledger.witnesses.map((w) => specVerifyCosignatures(note, specParseVkey(w.vkey))[0]));
    // Lines of keys not asked for are ignored; one made by the spec implementation is accepted.
    expect(verifyCosignatures(nacl, note, [keys[1]!]).map((c) => c.name)).toEqual(['witness.test/w2']);
    const extra = generateSecretKey('w3');
    const w3 = await parseCosignerKey(subtle, specVkey('witness.test/w3', extra.publicKey.raw));
    expect(verifyCosignatures(nacl, `${note}${specCosign(note, 'witness.test/w3', extra.seed, 1_700_000_000)}`, [w3])).toEqual([{ name: 'witness.test/w3', timestamp: 1_700_000_000 }]);
  });

  it('refuses an altered cosignature, a checkpoint altered under it, and a log key as a witness key', async () => {
    const note = await (await fetch(`${ledger.server.url}/api/v1/log/checkpoint`)).text();
    const keys = await Promise.all(ledger.witnesses.map((w) => parseCosignerKey(subtle, w.vkey)));
    const lines = note.trimEnd().split('\n');
    const last = lines.at(-1)!.split(' ');
    const raw = Buffer.from(last[2]!, 'base64');
    raw[40] = raw[40]! ^ 1;
    const altered = `${[...lines.slice(0, -1), `${last[0]} ${last[1]} ${raw.toString('base64')}`].join('\n')}\n`;
    expect(() => verifyCosignatures(nacl, altered, keys)).toThrow(/the cosignature by witness witness\.test\/w2 does not verify/);
    expect(() => verifyCosignatures(nacl, note.replace(`\n${ledger.size}\n`, `\n${ledger.size + 1}\n`), keys)).toThrow(/does not verify/);
    const logKey = await (await fetch(`${ledger.server.url}/api/v1/log/key`)).text();
    await expect(parseCosignerKey(subtle, logKey)).rejects.toThrow(/is not a cosignature\/v1 key/);
  });
});

describeChromium('the path page verifies the cosignatures in Chromium', () => {
  const ledger = witnessedLedger();
  let browser: Browser;
  afterAll(async () => browser?.close());

  async function verified(page: Page): Promise<string> {
    await page.waitForFunction(() => [...document.querySelectorAll('tr[data-leaf]')].every((r) => ['ok', 'fail'].includes(r.getAttribute('data-verified') ?? '')), undefined, { timeout: 60_000 });
    return (await page.textContent('#verify-status'))!;
  }

  it('names the witnesses whose cosignatures it verified, and fails on an altered one', async () => {
    browser = await launchChromium();
    const hashPart = ledger.outPath.slice(11, 43);
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${ledger.server.url}/paths/${hashPart}`);
    expect(await verified(page)).toMatch(
      new RegExp(`^All 2 attestations verified in your browser against the signed checkpoint of ${ledger.size} entries; cosigned by witness\\.test/w1 at \\S+, witness\\.test/w2 at \\S+ \\(2 of 2 witnesses, cosignatures verified\\)\\.$`),
    );

    // The server (or someone between) alters a cosignature: the browser says which.
    const tampered = await browser.newContext();
    const evil = await tampered.newPage();
    await evil.route('**/api/v1/log/checkpoint', async (route) => {
      const response = await route.fetch();
      const text = await response.text();
      const lines = text.trimEnd().split('\n');
      const at = lines.findIndex((l) => l.includes(' witness.test/w1 '));
      const [dash, name, b64] = lines[at]!.split(' ');
      const raw = Buffer.from(b64!, 'base64');
      raw[30] = raw[30]! ^ 1;
      lines[at] = `${dash} ${name} ${raw.toString('base64')}`;
      await route.fulfill({ response, body: `${lines.join('\n')}\n` });
    });
    await evil.goto(`${ledger.server.url}/paths/${hashPart}`);
    expect(await verified(evil)).toBe('Verification failed: the cosignature by witness witness.test/w1 does not verify: the checkpoint or the cosignature was altered');
    await context.close();
    await tampered.close();
  });
});

