import { Router } from 'express';
import type { ServerResponse, IncomingMessage } from 'node:http';
import { closeAfterAnswer } from '../http/body.js';
import type { FastHandler } from '../server.js';
import type { Follower } from './follower.js';

/**
 * A mirror takes no writes: attestations, uploads and admin calls belong to the primary. They are
 * answered 421 (Misdirected Request) naming it, before anything is read. Reads go on as usual.
 */
export function refuseWrites(primary: string): FastHandler {
  return (req: IncomingMessage, res: ServerResponse) => {
    if (req.method === 'GET' || req.method === 'HEAD') return false;
    const body = JSON.stringify({ error: `this server is a read-only mirror of ${primary}: send ${req.method} requests there`, code: 'mirror-read-only', field: 'method' });
    closeAfterAnswer(req, res);
    res.writeHead(421, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), 'x-nix-quorum-primary': primary }).end(body);
    return true;
  };
}

/**
 * GET /api/v1/mirror: what this mirror follows, how far it verified, why it stopped if it did, and
 * the evidence it keeps (the newest 10 inconsistencies, each with both signed checkpoints).
 */
export function mirrorRoutes(follower: Follower): Router {
  return Router().get('/mirror', (_req, res) => res.json({ ...follower.current(), evidence: follower.evidence() }));
}
