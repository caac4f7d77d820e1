import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { studyProgress, transfersText } from '../../cli/progress.js';
import type { TransferSummary } from '../../coordinator/index.js';

describe('progress display', () => {
  it('progress - says what the workers are fetching, and stops saying it when they are done', async () => {
    expect(transfersText(null)).toBe('');
    expect(transfersText({ workers: 1, bytes: 4 * 2 ** 30, doneBytes: 2 ** 30, bytesPerSecond: 2 ** 20 })).toBe(
      'fetching 1.00 GiB of 4.00 GiB (25%), 1.00 MiB/s, 1 worker',
    );
    const out = new PassThrough();
    let text = '';
    out.on('data', (b: Buffer) => {
      text += b.toString();
    });
    const display = studyProgress({ study: 's', budget: 4, mode: 'lines', everyMs: 50, stream: out });
    let now: TransferSummary | null = { workers: 2, bytes: 2 ** 30, doneBytes: 2 ** 29, bytesPerSecond: 3 * 2 ** 20 };
    display.onEvent({ type: 'phase', study: 's', phase: 'trials' }, { finished: 0, total: 4, running: 0, phase: 'trials' });
    display.followTransfers(() => now);
    const waitFor = async (re: RegExp) => {
      for (let i = 0; i < 60 && !re.test(text); i++) await new Promise((r) => setTimeout(r, 50));
      return text;
    };
    expect(await waitFor(/fetching/)).toMatch(/trials 0\/4, .*, fetching 512\.0 MiB of 1\.00 GiB \(50%\), 3\.00 MiB\/s, 2 workers\n/);
    now = null;
    text = '';
    expect(await waitFor(/\n/)).toMatch(/^optimer: study s: trials 0\/4, 0 running, best -, ETA \?, 0 workers\n/);
    display.stop();
  });
});
