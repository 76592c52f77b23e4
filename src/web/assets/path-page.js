// @ts-check
/**
 * The path page's in-browser verification. For each attestation row it fetches the log entry and an
 * inclusion proof and checks them against a checkpoint it verified itself, then marks the row
 * "verified in your browser" or says exactly what failed. The log key is pinned on first use and the
 * last verified checkpoint is kept (localStorage, per server), so a later visit also proves the log
 * only grew. The witnesses' cosignatures on that checkpoint are verified too and named. tweetnacl
 * (served as /assets/nacl-fast.min.js) provides `nacl`.
 */
import { VerifyError, base64Decode, base64Encode, checkLeaf, leafHash, openCheckpoint, parseCosignerKey, parseNixPublicKey, parseVerifierKey, verifyConsistency, verifyCosignatures, verifyInclusion } from './ledger-verify.js';

const nacl = /** @type {any} */ (globalThis).nacl;
const status = /** @type {HTMLElement} */ (document.getElementById('verify-status'));
const rows = /** @type {HTMLElement[]} */ ([...document.querySelectorAll('tr[data-leaf]')]);
const storageKey = (/** @type {string} */ what) => `nix-quorum:${location.host}:${what}`;
/** How long to wait for a checkpoint that covers the newest entries (they are signed within seconds). */
const CHECKPOINT_WAIT_MS = 15000;
const COSIGNATURE_WAIT_MS = 3000;

/** @param {string} path */
async function get(path, as = 'json') {
  const res = await fetch(path, { cache: 'no-store' });
  if (!res.ok) throw new VerifyError(`${path} answered HTTP ${res.status}`);
  return as === 'json' ? res.json() : res.text();
}

/** @param {HTMLElement} row @param {'ok' | 'fail' | 'busy'} state @param {string} text @param {string} [detail] */
function mark(row, state, text, detail = '') {
  const badge = /** @type {HTMLElement} */ (row.querySelector('[data-verify]'));
  badge.className = `badge verify-${state}`;
  badge.textContent = text;
  badge.title = detail;
  row.dataset.verified = state;
}

/** @param {'ok' | 'fail' | 'busy'} state @param {string} text */
function say(state, text) {
  status.className = `verify-status verify-${state}`;
  status.textContent = text;
}

/** @param {HTMLElement} row */
function shown(row) {
  const field = (/** @type {ParentNode} */ scope, /** @type {string} */ name) => (scope.querySelector(`[data-field="${name}"]`)?.textContent ?? '').trim();
  const section = /** @type {HTMLElement} */ (row.closest('[data-out-path]'));
  return {
    builder: field(row, 'builder'),
    drvPath: field(row, 'drvPath'),
    outputName: field(row, 'outputName'),
    outPath: field(section, 'outPath'),
    narHash: field(row, 'narHash'),
    narSize: field(row, 'narSize'),
    references: [...row.querySelectorAll('[data-field="references"] li')].map((li) => (li.textContent ?? '').trim()),
  };
}

/** The log key, pinned the first time this browser saw this server. */
async function logKey() {
  const key = await parseVerifierKey(crypto.subtle, await get('/api/v1/log/key', 'text'));
  const pinned = localStorage.getItem(storageKey('log-key'));
  if (pinned === null) localStorage.setItem(storageKey('log-key'), key.text);
  else if (pinned !== key.text) throw new VerifyError(`the log key changed since this browser first saw this server (then ${pinned}, now ${key.text}); if the operators really replaced it, clear this site's data`);
  return key;
}

/**
 * The witnesses the server names, with their keys. Like the builder keys these come from the server:
 * compare them with the keys the witnesses publish.
 */
async function witnessKeys() {
  const { witnesses } = await get('/api/v1/log/witnesses');
  return Promise.all(witnesses.map((/** @type {{vkey: string}} */ w) => parseCosignerKey(crypto.subtle, w.vkey)));
}

/**
 * The latest checkpoint, verified, and proven to extend the last one this browser verified, with the
 * witnesses that cosigned it.
 * @param {{name: string, keyId: number, publicKey: Uint8Array}} key
 * @param {Array<{name: string, keyId: number, publicKey: Uint8Array}>} witnesses
 */
async function checkpoint(key, witnesses) {
  const note = await get('/api/v1/log/checkpoint', 'text');
  const cp = { ...openCheckpoint(nacl, note, key), cosigned: verifyCosignatures(nacl, note, witnesses) };
  const seen = JSON.parse(localStorage.getItem(storageKey('checkpoint')) ?? 'null');
  if (seen) {
    const seenRoot = base64Decode(seen.root, 'the stored checkpoint root');
    if (cp.size < seen.size) throw new VerifyError(`the server shows a checkpoint of ${cp.size} entries, older than the ${seen.size} entries this browser verified before`);
    const proof = cp.size === seen.size ? { hashes: [] } : await get(`/api/v1/log/proof/consistency?first=${seen.size}&second=${cp.size}`);
    await verifyConsistency(crypto.subtle, seen.size, cp.size, proof.hashes.map((/** @type {string} */ h, /** @type {number} */ i) => base64Decode(h, `consistency proof hash ${i}`)), seenRoot, cp.root);
  }
  localStorage.setItem(storageKey('checkpoint'), JSON.stringify({ size: cp.size, root: base64Encode(cp.root) }));
  return cp;
}

/** @param {HTMLElement} row @param {{size: number, root: Uint8Array}} cp @param {Map<string, Uint8Array>} keys */
async function verifyRow(row, cp, keys) {
  const index = Number(row.dataset.leaf);
  const fields = shown(row);
  const builderKey = keys.get(fields.builder);
  if (!builderKey) throw new VerifyError(`the server lists no public key for builder ${fields.builder}`);
  const { entries } = await get(`/api/v1/log/entries?start=${index}&end=${index + 1}`);
  if (entries?.[0]?.index !== index) throw new VerifyError(`the server did not return log entry ${index}`);
  const leaf = base64Decode(entries[0].leaf, `log entry ${index}`);
  checkLeaf(nacl, leaf, fields, builderKey);
  const proof = await get(`/api/v1/log/proof/inclusion?index=${index}&size=${cp.size}`);
  if (proof.index !== index || proof.size !== cp.size || !Array.isArray(proof.hashes)) throw new VerifyError(`the server answered an inclusion proof for another leaf or tree size`);
  const hashes = proof.hashes.map((/** @type {string} */ h, /** @type {number} */ i) => base64Decode(h, `inclusion proof hash ${i}`));
  await verifyInclusion(crypto.subtle, await leafHash(crypto.subtle, leaf), index, cp.size, hashes, cp.root);
  mark(row, 'ok', 'verified in your browser', `signature by ${fields.builder} verified; entry ${index} is in the signed checkpoint of ${cp.size} entries`);
}

async function main() {
  if (rows.length === 0) return;
  for (const row of rows) mark(row, 'busy', 'checking…');
  say('busy', 'Checking the log in your browser…');
  let cp;
  let keys;
  /** @type {Array<{name: string, keyId: number, publicKey: Uint8Array}>} */
  let witnesses = [];
  try {
    if (!nacl) throw new VerifyError('tweetnacl did not load (/assets/nacl-fast.min.js)');
    if (!globalThis.crypto?.subtle) throw new VerifyError('WebCrypto is not available: browsers offer it only to pages served over HTTPS or from localhost');
    const key = await logKey();
    witnesses = await witnessKeys();
    cp = await checkpoint(key, witnesses);
    const newest = Math.max(...rows.map((r) => Number(r.dataset.leaf)));
    for (const deadline = Date.now() + CHECKPOINT_WAIT_MS; cp.size <= newest && Date.now() < deadline; ) {
      say('busy', `Waiting for a signed checkpoint that covers entry ${newest} (the latest covers ${cp.size})…`);
      await new Promise((r) => setTimeout(r, 1000));
      cp = await checkpoint(key, witnesses);
    }
    // A new checkpoint is cosigned within moments: give the witnesses a little time.
    for (const deadline = Date.now() + COSIGNATURE_WAIT_MS; cp.cosigned.length < witnesses.length && Date.now() < deadline; ) {
      say('busy', `Checkpoint of ${cp.size} entries: waiting for the witnesses' cosignatures (${cp.cosigned.length} of ${witnesses.length})…`);
      await new Promise((r) => setTimeout(r, 500));
      const next = await checkpoint(key, witnesses);
      if (next.size > newest) cp = next;
    }
    const { builders } = await get('/api/v1/builders');
    keys = new Map(builders.map((/** @type {{publicKey: string}} */ b) => parseNixPublicKey(b.publicKey)).map((/** @type {{name: string, key: Uint8Array}} */ k) => [k.name, k.key]));
    say('busy', `Checkpoint of ${cp.size} entries verified with the log key ${key.name}${cosignedText(cp.cosigned, witnesses)}; checking each attestation…`);
  } catch (e) {
    const message = e instanceof VerifyError ? e.message : `unexpected error: ${e}`;
    say('fail', `Verification failed: ${message}`);
    for (const row of rows) mark(row, 'fail', `not verified: ${message}`);
    return;
  }
  let failed = 0;
  for (const row of rows) {
    if (Number(row.dataset.leaf) >= cp.size) {
      failed++;
      mark(row, 'fail', `not verified: entry ${row.dataset.leaf} is not in the latest signed checkpoint (${cp.size} entries) yet; reload in a minute`);
      continue;
    }
    try {
      await verifyRow(row, cp, keys);
    } catch (e) {
      failed++;
      mark(row, 'fail', `FAILED: ${e instanceof VerifyError ? e.message : `unexpected error: ${e}`}`);
    }
  }
  say(
    failed ? 'fail' : 'ok',
    failed
      ? `${failed} of ${rows.length} attestations could not be verified in your browser; see each row.`
      : `All ${rows.length} attestations verified in your browser against the signed checkpoint of ${cp.size} entries${cosignedText(cp.cosigned, witnesses)}.`,
  );
}

/**
 * "; cosigned by w1, w2 (2 of 3 witnesses)", or that no witness did.
 * @param {Array<{name: string, timestamp: number}>} cosigned @param {Array<unknown>} witnesses
 */
function cosignedText(cosigned, witnesses) {
  if (witnesses.length === 0) return ' (this server names no witnesses)';
  const names = cosigned.map((c) => `${c.name} at ${new Date(c.timestamp * 1000).toISOString()}`);
  return cosigned.length === 0 ? `; cosigned by none of its ${witnesses.length} witnesses yet` : `; cosigned by ${names.join(', ')} (${cosigned.length} of ${witnesses.length} witnesses, cosignatures verified)`;
}

main();
