/** Finishes the pace is taken over: recent enough to follow a change of the mesh, enough to smooth it. */
export const ETA_WINDOW = 20;

/**
 * Time left for `remaining` jobs at the pace of the recent finishes (`finishedMs`, any order):
 * the last ETA_WINDOW finishes over the time they took, parallel workers included. Null until
 * two jobs have finished. The time since the last finish counts too, so a stalled study's ETA
 * grows rather than standing still.
 */
export function estimateEta(
  finishedMs: readonly number[],
  remaining: number,
  nowMs: number,
): { seconds: number; jobsPerMinute: number } | null {
  if (remaining <= 0) return { seconds: 0, jobsPerMinute: 0 };
  const recent = [...finishedMs].sort((a, b) => a - b).slice(-ETA_WINDOW);
  if (recent.length < 2) return null;
  const first = recent[0]!;
  const span = Math.max(recent[recent.length - 1]! - first, nowMs - first, 1);
  // n finishes after the first one, over the span: jobs per ms
  const rate = (recent.length - 1) / span;
  return { seconds: remaining / rate / 1000, jobsPerMinute: rate * 60_000 };
}
