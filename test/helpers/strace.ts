import { spawnSync } from 'node:child_process';
import { describe } from 'vitest';

const haveStrace = spawnSync('strace', ['-V']).status === 0;
/** Tests that watch or delay system calls with strace; CI installs it, so there they run, never skip. */
export const describeStrace: typeof describe = haveStrace || process.env.CI ? describe : (describe.skip as typeof describe);
