import { existsSync } from 'node:fs';
import { afterAll } from 'vitest';
import { type Browser, chromium } from 'playwright-core';

/** Debian's Chromium (installed by `scripts/setup.sh --for-tests`), or $OPTIMER_CHROMIUM. */
const CHROMIUM = process.env.OPTIMER_CHROMIUM ?? '/usr/bin/chromium';
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** A headless Chromium for the file's tests, closed after them. Missing, it fails the test, never skips it. */
export function useBrowser(): () => Promise<Browser> {
  let browser: Browser | undefined;
  afterAll(async () => {
    await browser?.close();
  });
  return async () => {
    if (!existsSync(CHROMIUM))
      throw new Error(
        `no Chromium at ${CHROMIUM}: run 'bash scripts/setup.sh --for-tests' (apt-get install chromium), or set OPTIMER_CHROMIUM`,
      );
    browser ??= await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, timeout: 30_000 });
    return browser;
  };
}
