import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';

/**
 * c2sp.org/tlog-cosignature (Ed25519 cosignature/v1) and c2sp.org/signed-note, written here from
 * the specs with node:crypto alone, sharing nothing with src/: an independent check of the
 * witness's cosignatures, and a maker of cosignatures the product must accept.
 */

const SPKI = Buffer.from('302a300506032b6570032100', 'hex');
const PKCS8 = Buffer.from('302e020100300506032b657004220420', 'hex');

export interface SpecKey {
  name: string;
  id: Buffer;
  publicKey: KeyObject;
}

/** vkey = <name>+hex(key ID)+base64(0x04 || 32-byte key); key ID = SHA-256(name || "\n" || 0x04 || key)[:4]. */
export function specParseVkey(vkey: string): SpecKey {
  const [name, idHex, ...rest] = vkey.split('+');
  const material = Buffer.from(rest.join('+'), 'base64');
  if (material.length !== 33 || material[0] !== 0x04) throw new Error(`not a cosignature/v1 vkey: ${vkey}`);
  const id = createHash('sha256').update(`${name}\n`).update(material).digest().subarray(0, 4);
  if (id.toString('hex') !== idHex) throw new Error(`key ID mismatch in ${vkey}`);
  return { name: name!, id, publicKey: createPublicKey({ key: Buffer.concat([SPKI, material.subarray(1)]), format: 'der', type: 'spki' }) };
}

export function specVkey(name: string, rawPublicKey: Buffer): string {
  const material = Buffer.concat([Buffer.from([0x04]), rawPublicKey]);
  const id = createHash('sha256').update(`${name}\n`).update(material).digest().subarray(0, 4);
  return `${name}+${id.toString('hex')}+${material.toString('base64')}`;
}

/** Note text: everything up to and including the newline before the last blank line. */
function textOf(note: string): string {
  return note.slice(0, note.lastIndexOf('\n\n') + 1);
}

/** Timestamps of the valid cosignatures by `key` on a signed note (lines of other keys ignored). */
export function specVerifyCosignatures(note: string, key: SpecKey): number[] {
  const text = textOf(note);
  const found: number[] = [];
  for (const line of note.slice(text.length + 1).split('\n').filter(Boolean)) {
    const [dash, name, b64] = line.split(' ');
    if (dash !== '\u2014' || name !== key.name) continue;
    const sig = Buffer.from(b64!, 'base64');
    if (!sig.subarray(0, 4).equals(key.id)) continue;
    if (sig.length !== 4 + 8 + 64) throw new Error('bad cosignature length');
    const timestamp = Number(sig.readBigUInt64BE(4));
    const message = Buffer.from(`cosignature/v1\ntime ${timestamp}\n${text}`, 'utf8');
    if (!verify(null, message, key.publicKey, sig.subarray(12))) throw new Error(`cosignature by ${name} does not verify`);
    found.push(timestamp);
  }
  return found;
}

/** A cosignature line by the key of `seed` (32 bytes) under `name`, at `timestamp`. */
export function specCosign(note: string, name: string, seed: Buffer, timestamp: number): string {
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8, seed]), format: 'der', type: 'pkcs8' });
  const raw = createPublicKey(privateKey).export({ format: 'der', type: 'spki' }).subarray(SPKI.length);
  const id = createHash('sha256').update(`${name}\n`).update(Buffer.from([0x04])).update(raw).digest().subarray(0, 4);
  const time = Buffer.alloc(8);
  time.writeBigUInt64BE(BigInt(timestamp));
  const signature = sign(null, Buffer.from(`cosignature/v1\ntime ${timestamp}\n${textOf(note)}`, 'utf8'), privateKey);
  return `\u2014 ${name} ${Buffer.concat([id, time, signature]).toString('base64')}\n`;
}
