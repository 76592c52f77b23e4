import { hostname } from 'node:os';

/**
 * What clients put in nix.conf, as `serve` prints it (examples/client-nix.conf is the same text
 * with placeholders; test/examples holds them equal).
 */

/** Seconds Nix should remember a miss here: Nix's default of 3600 hides a path for an hour after it was asked for before quorum. */
export const NEGATIVE_TTL_SECONDS = 300;

/**
 * The URL clients use: publicUrl if set; else the address the server listens on, unless that is a
 * wildcard (0.0.0.0, ::), which no client can reach: then this host's name, marked as a guess.
 */
export function clientUrl(publicUrl: string | undefined, listening: { host: string; port: number }): { url: string; guessed: boolean } {
  if (publicUrl) return { url: publicUrl, guessed: false };
  const wildcard = listening.host === '0.0.0.0' || listening.host === '::' || listening.host === '';
  const host = wildcard ? hostname() : listening.host.includes(':') ? `[${listening.host}]` : listening.host;
  return { url: `http://${host}:${listening.port}`, guessed: wildcard };
}

/** The nix.conf lines for a client of `url` trusting `cacheKey` (a Nix public key). */
export function clientNixConf(url: string, cacheKey: string): string[] {
  return [
    `extra-substituters = ${url}`,
    `extra-trusted-public-keys = ${cacheKey}`,
    '# Nix remembers a path no substituter had for narinfo-cache-negative-ttl seconds (default 3600, for',
    '# every substituter). A quorum cache is usually asked before quorum; this retries after 5 minutes:',
    `narinfo-cache-negative-ttl = ${NEGATIVE_TTL_SECONDS}`,
  ];
}
