/** A progress bar on stderr when it is a terminal; nothing otherwise (logs, CI and pipes stay clean). */
export interface Progress {
  update(done: number, total: number): void;
  stop(): void;
}

export async function progressBar(label: string, unit = ''): Promise<Progress> {
  if (!process.stderr.isTTY) return { update() {}, stop() {} };
  // Loaded on demand: the post-build hook shares this CLI and must start fast.
  const { default: cliProgress } = await import('cli-progress');
  const bar = new cliProgress.SingleBar(
    { stream: process.stderr, format: `${label} [{bar}] {percentage}% {value}/{total}${unit ? ` ${unit}` : ''} eta {eta_formatted}`, hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update(done, total) {
      if (!started) bar.start(total, done);
      started = true;
      bar.setTotal(total);
      bar.update(done);
    },
    stop() {
      if (started) bar.stop();
    },
  };
}
