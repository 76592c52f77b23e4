import { QuorumError } from '../errors.js';
import type { NarHash } from '../nix/hash.js';
import { signRaw, verifyRaw, type PublicKey, type SecretKey } from '../nix/keys.js';

/**
 * Requests only registered builders may make (uploading a NAR, submitting attestations) carry the
 * builder's signature over what it is about to send, so a request from anybody else is refused
 * after one header check, before its body is read:
 *
 *   Authorization: <scheme> builder=<key name>,ts=<unix seconds>,sig=<base64 Ed25519>
 *   NixQuorum-Upload:  signed text nix-quorum-upload-v1;<narHash sha256:nix32>;<narSize>;<ts>
 *   NixQuorum-Attest:  signed text nix-quorum-attest-v1;<Content-Length of the body>;<ts>
 *   NixQuorum-Log:     signed text nix-quorum-log-v1;<drvPath>;<sha256:nix32 of the compressed log>;<its size>;<ts>
 *
 * Both are checked before a byte of the body is read: a request from anybody without a builder key
 * costs one signature check. The timestamp bounds replay to a window. Replaying an upload only
 * re-sends bytes the server checks against the signed hash; replaying a submission header (seen on
 * the wire, so only without TLS) lets a body of that length be parsed within the window, and every
 * attestation in it must still carry a builder's own signature.
 */
export const UPLOAD_AUTH_SCHEME = 'NixQuorum-Upload';
export const ATTEST_AUTH_SCHEME = 'NixQuorum-Attest';
export const LOG_AUTH_SCHEME = 'NixQuorum-Log';
export const AUTH_WINDOW_SECONDS = 600;

type Scheme = typeof UPLOAD_AUTH_SCHEME | typeof ATTEST_AUTH_SCHEME | typeof LOG_AUTH_SCHEME;

export interface BuilderAuth {
  builder: string;
  ts: number;
  sig: Buffer;
}

export function uploadAuthText(narHash: NarHash, narSize: number, ts: number): string {
  return `nix-quorum-upload-v1;${narHash};${narSize};${ts}`;
}

export function attestAuthText(contentLength: number, ts: number): string {
  return `nix-quorum-attest-v1;${contentLength};${ts}`;
}

export function logAuthText(drvPath: string, fileHash: NarHash, fileSize: number, ts: number): string {
  return `nix-quorum-log-v1;${drvPath};${fileHash};${fileSize};${ts}`;
}

function header(scheme: Scheme, key: SecretKey, text: (ts: number) => string, now: number): string {
  const ts = Math.floor(now / 1000);
  return `${scheme} builder=${key.name},ts=${ts},sig=${signRaw(key, text(ts)).toString('base64')}`;
}

export function uploadAuthHeader(key: SecretKey, narHash: NarHash, narSize: number, now = Date.now()): string {
  return header(UPLOAD_AUTH_SCHEME, key, (ts) => uploadAuthText(narHash, narSize, ts), now);
}

export function attestAuthHeader(key: SecretKey, body: Uint8Array, now = Date.now()): string {
  return header(ATTEST_AUTH_SCHEME, key, (ts) => attestAuthText(body.length, ts), now);
}

export function logAuthHeader(key: SecretKey, drvPath: string, fileHash: NarHash, fileSize: number, now = Date.now()): string {
  return header(LOG_AUTH_SCHEME, key, (ts) => logAuthText(drvPath, fileHash, fileSize, ts), now);
}

const WHAT: Record<Scheme, string> = { [UPLOAD_AUTH_SCHEME]: 'NAR uploads', [ATTEST_AUTH_SCHEME]: 'attestation submissions', [LOG_AUTH_SCHEME]: 'build log uploads' };

/** Reads the header of `scheme`; a request without one is refused with 401 (no body is read). */
export function parseBuilderAuth(scheme: Scheme, value: string | undefined): BuilderAuth {
  const m = /^([A-Za-z-]{1,32}) builder=([A-Za-z0-9._+\-]{1,128}),ts=([0-9]{1,12}),sig=([A-Za-z0-9+/]{86}==)$/.exec(value ?? '');
  if (!m || m[1] !== scheme) {
    throw new QuorumError('unauthorized', `${WHAT[scheme]} need "Authorization: ${scheme} builder=<key name>,ts=<unix seconds>,sig=<base64>" signed by a registered builder key`, { field: 'Authorization' });
  }
  return { builder: m[2]!, ts: Number(m[3]), sig: Buffer.from(m[4]!, 'base64') };
}

/** Throws 'forbidden' if the timestamp is outside the window: cheap, so it runs before anything is read. */
export function checkAuthTime(auth: BuilderAuth, now = Date.now()): void {
  if (Math.abs(now / 1000 - auth.ts) > AUTH_WINDOW_SECONDS) {
    throw new QuorumError('forbidden', `the authorization timestamp is more than ${AUTH_WINDOW_SECONDS} s off the server clock: check the builder's clock`, { field: 'Authorization' });
  }
}

/** Throws 'forbidden' unless `auth` is a fresh signature of `text` by `key`. */
export function checkBuilderAuth(auth: BuilderAuth, key: PublicKey, text: string, now = Date.now()): void {
  checkAuthTime(auth, now);
  if (!verifyRaw(key, text, auth.sig)) {
    throw new QuorumError('forbidden', `the authorization is not a valid signature by ${auth.builder} over this request`, { field: 'Authorization' });
  }
}

export function parseUploadAuth(value: string | undefined): BuilderAuth {
  return parseBuilderAuth(UPLOAD_AUTH_SCHEME, value);
}

/** Throws 'forbidden' unless `auth` is a fresh signature of this upload by `key`. */
export function checkUploadAuth(auth: BuilderAuth, key: PublicKey, narHash: NarHash, narSize: number, now = Date.now()): void {
  checkBuilderAuth(auth, key, uploadAuthText(narHash, narSize, auth.ts), now);
}
