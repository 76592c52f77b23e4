import type { AddressInfo } from 'node:net';
import { createLogger, type Logger } from '../log.js';
import { formatPublicKey } from '../nix/keys.js';
import type { ClientConfig } from './config.js';
import { HeadTracker } from './heads.js';
import { createClientServer } from './http.js';
import { Ledger } from './ledger.js';
import { createClientMetrics, type ClientMetrics } from './metrics.js';
import { NarSources } from './nars.js';
import { PathResolver } from './resolver.js';
import { ClientState } from './state.js';

/** How often the client asks for a newer checkpoint while it answers from its cache. */
const REFRESH_MS = 30_000;

export interface ClientCore {
  config: ClientConfig;
  state: ClientState;
  heads: HeadTracker;
  resolver: PathResolver;
  nars: NarSources;
  metrics: ClientMetrics;
  /** The client's Nix public key, `name:base64`: what nix.conf trusts. */
  publicKey: string;
  close(): void;
}

/** The client without a listener: what `client` serves and `client --check` runs once. */
export function openClient(config: ClientConfig, logger: Logger): ClientCore {
  const state = new ClientState(config.stateDir);
  const metrics = createClientMetrics();
  const ledgers = config.ledgers.map((url) => new Ledger(url));
  const heads = new HeadTracker(state, config.trust, metrics, logger);
  const nars = new NarSources(ledgers, metrics, logger);
  const cosigned = config.trust.witnesses?.threshold ?? 0;
  const resolver = new PathResolver(ledgers, heads, { builders: config.builders, threshold: config.threshold, onConflict: config.onConflict }, cosigned, state.key, nars, metrics, logger);
  const close = () => {
    for (const ledger of ledgers) ledger.close();
    state.close();
  };
  return { config, state, heads, resolver, nars, metrics, publicKey: formatPublicKey(state.key.publicKey), close };
}

export interface RunningClient extends ClientCore {
  url: string;
  close(): Promise<void>;
}

/** `nix-quorum client`: the verifying substituter, listening until close(). */
export async function startClient(config: ClientConfig, logger = createLogger(config.logLevel)): Promise<RunningClient> {
  const core = openClient(config, logger);
  const server = createClientServer({
    resolver: core.resolver,
    nars: core.nars,
    metrics: core.metrics,
    logger,
    healthy: () => (core.heads.current() ? null : 'no checkpoint verified yet'),
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.listen.port, config.listen.host, () => resolve());
    });
  } catch (error) {
    core.close();
    throw error;
  }
  const address = server.address() as AddressInfo;
  const url = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;
  const refreshHead = () => core.resolver.refreshHead().catch((error: unknown) => logger.error('refreshing the checkpoint failed', { err: error }));
  const refresh = setInterval(refreshHead, REFRESH_MS);
  refresh.unref();
  void refreshHead();
  logger.info('client listening', { url, ledgers: config.ledgers, state: config.stateDir, threshold: config.threshold, builders: [...config.builders.keys()] });
  return {
    ...core,
    url,
    async close() {
      clearInterval(refresh);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
      core.close();
    },
  };
}
