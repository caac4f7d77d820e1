/**
 * Runs close steps in order, each one even when an earlier one failed (a failed drain must not
 * leave a server listening); the failures go to `onError`.
 */
export async function runAll(steps: readonly (() => unknown)[], onError: (e: unknown) => void = () => undefined): Promise<void> {
  for (const step of steps) {
    try {
      await step();
    } catch (e) {
      onError(e);
    }
  }
}
