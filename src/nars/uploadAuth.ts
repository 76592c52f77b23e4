import { QuorumError } from '../errors.js';
import type { NarHash } from '../nix/hash.js';
import { signRaw, verifyRaw, type PublicKey, type SecretKey } from '../nix/keys.js';

/**
 * Only registered builders may upload NARs (nobody else can fill the disk). A builder proves it holds
 * its key by signing the upload it is about to make:
 *
 *   Authorization: NixQuorum-Upload builder=<key name>,ts=<unix seconds>,sig=<base64 Ed25519>
 *   signed text:   nix-quorum-upload-v1;<narHash sha256:nix32>;<narSize>;<ts>
 *
 * The timestamp bounds replay to a window; replaying an upload only re-sends verified bytes.
 */
export const UPLOAD_AUTH_SCHEME = 'NixQuorum-Upload';
export const UPLOAD_AUTH_WINDOW_SECONDS = 600;

export function uploadAuthText(narHash: NarHash, narSize: number, ts: number): string {
  return `nix-quorum-upload-v1;${narHash};${narSize};${ts}`;
}

export function uploadAuthHeader(key: SecretKey, narHash: NarHash, narSize: number, now = Date.now()): string {
  const ts = Math.floor(now / 1000);
  return `${UPLOAD_AUTH_SCHEME} builder=${key.name},ts=${ts},sig=${signRaw(key, uploadAuthText(narHash, narSize, ts)).toString('base64')}`;
}

export interface UploadAuth {
  builder: string;
  ts: number;
  sig: Buffer;
}

export function parseUploadAuth(header: string | undefined): UploadAuth {
  const m = /^NixQuorum-Upload builder=([A-Za-z0-9._+\-]{1,128}),ts=([0-9]{1,12}),sig=([A-Za-z0-9+/]{86}==)$/.exec(header ?? '');
  if (!m) {
    throw new QuorumError('unauthorized', `NAR uploads need "Authorization: ${UPLOAD_AUTH_SCHEME} builder=<key name>,ts=<unix seconds>,sig=<base64>" signed by a registered builder key`);
  }
  return { builder: m[1]!, ts: Number(m[2]), sig: Buffer.from(m[3]!, 'base64') };
}

/** Throws 'forbidden' unless `auth` is a fresh signature of this upload by `key`. */
export function checkUploadAuth(auth: UploadAuth, key: PublicKey, narHash: NarHash, narSize: number, now = Date.now()): void {
  if (Math.abs(now / 1000 - auth.ts) > UPLOAD_AUTH_WINDOW_SECONDS) {
    throw new QuorumError('forbidden', `upload authorization timestamp is more than ${UPLOAD_AUTH_WINDOW_SECONDS} s off the server clock: check the builder's clock`);
  }
  if (!verifyRaw(key, uploadAuthText(narHash, narSize, auth.ts), auth.sig)) {
    throw new QuorumError('forbidden', `upload authorization is not a valid signature by ${auth.builder} over this NAR's hash and size`);
  }
}
