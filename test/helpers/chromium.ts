import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
import { describe } from 'vitest';

/**
 * Real Chromium (Debian's `chromium` package) driven by playwright-core, which never downloads a
 * browser. Off CI a machine without it skips these tests; under CI (CI=true) they run regardless, so
 * a missing browser fails the build instead of hiding.
 */
export const CHROMIUM = '/usr/bin/chromium';
export const haveChromium = existsSync(CHROMIUM);
export const describeChromium: typeof describe = haveChromium || process.env.CI ? describe : (describe.skip as typeof describe);

/** A headless browser with a fresh temporary profile; close it when done. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}
