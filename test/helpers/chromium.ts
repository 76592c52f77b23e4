import { existsSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';
import { describe } from 'vitest';

/**
 * Real Chromium (Debian's `chromium` package) driven by playwright-core, which never downloads a
 * browser. Off CI a machine without it skips these tests; under CI (CI=true) they run regardless, so
 * a missing browser fails the build instead of hiding.
 */
export const CHROMIUM = '/usr/bin/chromium';
export const haveChromium = existsSync(CHROMIUM);
export const describeChromium: typeof describe = haveChromium || process.env.CI ? describe : (describe.skip as typeof describe);

/** A headless browser with a fresh temporary profile, and `extraArgs` (e.g. host mappings); close it when done. */
export function launchChromium(extraArgs: string[] = []): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', ...extraArgs],
  });
}

/** Waits until the path page's script has finished checking every row; each row's builder, state and text. */
export async function verification(page: Page): Promise<Array<{ builder: string; state: string; text: string }>> {
  await page.waitForFunction(() => document.querySelectorAll('tr[data-leaf]').length > 0 && [...document.querySelectorAll('tr[data-leaf]')].every((r) => r.getAttribute('data-verified') === 'ok' || r.getAttribute('data-verified') === 'fail'), undefined, { timeout: 60_000 });
  return page.$$eval('tr[data-leaf]', (rows) =>
    rows.map((r) => ({ builder: r.querySelector('[data-field="builder"]')!.textContent!, state: r.getAttribute('data-verified')!, text: r.querySelector('[data-verify]')!.textContent! })),
  );
}
