/**
 * Polls `get` every 100 ms until it gives something other than `undefined` or `false`, and
 * returns that; bounded: after `timeoutMs` it throws naming `what`.
 */
export async function waitFor<T>(
  get: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs: number,
  what: string,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await get();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
