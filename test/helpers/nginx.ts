import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { tempDir } from './nix.js';

export const NGINX = '/usr/sbin/nginx';

export interface RunningNginx {
  /** http://127.0.0.1:<port>, no trailing slash. */
  url: string;
  port: number;
  /** Stops nginx and removes its temp prefix (not `root`). Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Starts Debian's nginx as a foreground child on 127.0.0.1 and a free port, serving the static
 * files under `root`, with pid, logs and temp folders in a temp prefix. `serverConfig` is pasted
 * into the server block, e.g. `location / { return 500; }` for a failing peer; `root` is set at
 * server level, so it must not add a second `location /` unless it replaces serving files.
 */
export async function startNginx(options: { root: string; serverConfig?: string }): Promise<RunningNginx> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(options, await freePort());
    } catch (err) {
      // Another process may take the port between our probe and nginx's bind.
      if (attempt >= 5 || !String(err).includes('Address already in use')) throw err;
    }
  }
}

async function startOnce(options: { root: string; serverConfig?: string }, port: number): Promise<RunningNginx> {
  const prefix = tempDir('nginx');
  const config = join(prefix, 'nginx.conf');
  const errorLog = join(prefix, 'error.log');
  writeFileSync(
    config,
    `daemon off;
master_process off;
${process.getuid?.() === 0 ? 'user root root;' : ''}
pid ${prefix}/nginx.pid;
error_log ${errorLog} warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${prefix}/client_body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  default_type application/octet-stream;
  types { text/x-nix-narinfo narinfo; }
  server {
    listen 127.0.0.1:${port};
    root ${options.root};
    ${options.serverConfig ?? ''}
  }
}
`,
  );
  // -e: the startup error log, before the config is read (else it is /var/log/nginx/error.log).
  const child = spawn(NGINX, ['-p', prefix, '-c', config, '-e', errorLog], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const stop = async (): Promise<void> => {
    await kill(child);
    rmSync(prefix, { recursive: true, force: true });
  };
  try {
    await waitForPort(port, child);
  } catch (err) {
    const log = readFileSync(errorLog, { encoding: 'utf8', flag: 'a+' });
    await stop();
    throw new Error(`nginx did not start: ${(err as Error).message}\n${stderr}${log}`);
  }
  return { url: `http://127.0.0.1:${port}`, port, stop };
}

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function waitForPort(port: number, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`nginx exited (${child.exitCode ?? child.signalCode})`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    await sleep(50);
  }
  throw new Error(`nothing listens on 127.0.0.1:${port} after 10 s`);
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  await exited;
}
