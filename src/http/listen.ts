import type { Server } from 'node:http';
import { QuorumError } from '../errors.js';

/** What the operator can do about each way a listen fails, said in the one line the CLI prints. */
const WHY: Record<string, string> = {
  EADDRINUSE: 'the address is already in use (is another server running there?): stop it, or choose another with --listen HOST:PORT',
  EADDRNOTAVAIL: "the address is not one of this machine's: choose one of its addresses with --listen HOST:PORT",
  EACCES: 'permission denied (ports below 1024 need privileges): choose a higher port with --listen HOST:PORT',
  ENOTFOUND: 'the host name does not resolve: give an address or a resolvable name with --listen HOST:PORT',
  EAI_AGAIN: 'the host name could not be resolved now: give an address with --listen HOST:PORT',
};

/** Listens on host:port; a failure is a 'listen-failed' QuorumError naming the address and what to do. */
export async function listen(server: Server, host: string, port: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const failed = (error: NodeJS.ErrnoException) => {
      const address = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
      const why = (error.code && WHY[error.code]) ?? error.message;
      reject(new QuorumError('listen-failed', `cannot listen on ${address}: ${why}`, { field: 'listen', cause: error }));
    };
    server.once('error', failed);
    server.listen(port, host, () => {
      server.off('error', failed);
      resolve();
    });
  });
}
