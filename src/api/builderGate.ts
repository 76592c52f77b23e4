import type { IncomingMessage, ServerResponse } from 'node:http';
import { authenticBuilder } from '../app/nars.js';
import { QuorumError } from '../errors.js';
import { ATTEST_AUTH_SCHEME, attestAuthText, checkBuilderAuth, checkUploadAuth, parseBuilderAuth, parseUploadAuth } from '../http/builderAuth.js';
import { closeAfterAnswer } from '../http/body.js';
import { sendError } from '../http/errors.js';
import type { Builder, BuilderRegistry } from '../ledger/registry.js';
import { parseNarHash } from '../nix/hash.js';
import type { FastHandler } from '../server.js';

const ATTESTATIONS = '/api/v1/attestations';
const NARS = '/api/v1/nars/';
const GATED = Symbol('builder');

/**
 * The routes only builders may use (submitting attestations, uploading NARs) check who is asking on
 * bare node:http, before express and before a byte of the body is read: a refusal costs one header
 * check and one signature check, however large a body the client goes on sending (whose connection
 * is then closed). What passes is handed on with the builder it authenticated (gatedBuilder).
 */
export function builderGate(registry: BuilderRegistry): FastHandler {
  return (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '').split('?')[0]!;
    try {
      if (req.method === 'POST' && path === ATTESTATIONS) {
        const auth = parseBuilderAuth(ATTEST_AUTH_SCHEME, req.headers.authorization);
        const builder = authenticBuilder(registry, auth);
        checkBuilderAuth(auth, builder.publicKey, attestAuthText(contentLength(req, 'the builder signs it'), auth.ts));
        (req as IncomingMessage & { [GATED]?: Builder })[GATED] = builder;
      } else if (req.method === 'PUT' && path.startsWith(NARS)) {
        // A narHash is plain ASCII: a name that needs decoding is no narHash (parseNarHash says so).
        const narHash = parseNarHash(path.slice(NARS.length).replace(/%3A/gi, ':'), 'narHash');
        const narSize = contentLength(req, 'uploads are uncompressed NARs of that size');
        const auth = parseUploadAuth(req.headers.authorization);
        const builder = authenticBuilder(registry, auth);
        checkUploadAuth(auth, builder.publicKey, narHash, narSize);
        (req as IncomingMessage & { [GATED]?: Builder })[GATED] = builder;
      }
    } catch (error) {
      if (!(error instanceof QuorumError)) throw error;
      closeAfterAnswer(req, res);
      sendError(res, error);
      return true;
    }
    return false;
  };
}

/** The builder builderGate authenticated this request as (it runs before every gated route). */
export function gatedBuilder(req: IncomingMessage): Builder {
  const builder = (req as IncomingMessage & { [GATED]?: Builder })[GATED];
  if (!builder) throw new QuorumError('internal', 'a builder-only route was reached without builderGate');
  return builder;
}

function contentLength(req: IncomingMessage, why: string): number {
  const length = req.headers['content-length'];
  if (length === undefined || !/^[0-9]{1,16}$/.test(length)) throw new QuorumError('bad-content-length', `Content-Length must give the body's size (${why}; no chunked bodies)`, { field: 'Content-Length' });
  return Number(length);
}
