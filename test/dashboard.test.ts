import { execFile } from 'node:child_process';
import { copyFile, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Page } from 'playwright-core';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { DashboardServer, type StudyStatus } from '../coordinator/index.js';
import { listItem } from '../coordinator/status/status.js';
import { stopProcess } from '../shared/process.js';
import { silentLogger } from '../shared/logging.js';
import { useBrowser } from './helpers/browser.js';
import { buildFamilyPool } from './helpers/family.js';
import { useNatsServer } from './helpers/nats.js';
import { exited, outputOf, Processes, writeStudyConfig } from './helpers/study.js';
import { useTempDir } from './helpers/temp.js';
import { waitFor } from './helpers/wait.js';

const family = inject('family');
const cli = inject('cli');
const tmp = useTempDir('dashboard');
const nats = useNatsServer();
const browser = useBrowser();
const procs = new Processes();
afterAll(() => procs.stopAll());

/** Screenshots land here (gitignored); OPTIMER_UPDATE_SCREENSHOT=1 also refreshes the README's. */
const ROOT = join(import.meta.dirname, '..');
const ARTIFACTS = join(ROOT, 'test-artifacts');
const TOKEN = 'viewer-token-7f3a';

function optimer(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { timeout: 60_000, cwd: tmp }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** Console errors and uncaught exceptions of a page. */
function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  return errors;
}

describe('web dashboard', () => {
  it('dashboard - a running study loads in Chromium, a completed trial arrives live without a reload, the table sorts and filters, the token is required, hostile text stays text, and the HTML report opens offline', async () => {
    const poolDir = join(tmp, 'pool');
    await buildFamilyPool(family, poolDir);
    const config = await writeStudyConfig(join(tmp, 'dash.json'), family, poolDir, { name: 'dash', trials: 60 });
    const store = join(tmp, 'store');
    const run = procs.start(cli, ['run', config, '--nats', nats.url, '--workers', '0', '--store', store, '--dashboard', '127.0.0.1:0'], {
      ...process.env,
      OPTIMER_DASHBOARD_TOKEN: TOKEN,
    });
    const url = await waitFor(() => /dashboard at (\S+)/.exec(outputOf(run).err)?.[1], 30_000, 'the dashboard URL');
    expect(url).toMatch(new RegExp(`^http://127\\.0\\.0\\.1:\\d+/\\?token=${TOKEN}$`));
    const base = url.slice(0, url.indexOf('?'));

    // the token: required for the data and the event stream (the page's own files are code, not data)
    expect((await fetch(base)).status).toBe(200);
    expect((await fetch(`${base}api/studies`)).status).toBe(401);
    expect((await fetch(`${base}api/events`)).status).toBe(401);
    expect((await fetch(`${base}api/studies`, { headers: { Authorization: 'Bearer viewer-token-0000' } })).status).toBe(401);
    const listed = await fetch(`${base}api/studies`, { headers: { Authorization: `Bearer ${TOKEN}` } });
    expect(listed.status).toBe(200);
    expect(listed.headers.get('content-security-policy')).toContain("default-src 'self'");
    expect(((await listed.json()) as { studies: { study: string; live: boolean }[] }).studies).toContainEqual(
      expect.objectContaining({ study: 'dash', live: true }),
    );
    expect((await fetch(`${base}api/studies/..%2F..%2Fetc`, { headers: { Authorization: `Bearer ${TOKEN}` } })).status).toBe(400);

    // the page of the running study, before any worker has joined
    const page = await (await browser()).newPage({ viewport: { width: 1400, height: 1100 } });
    const errors = watchErrors(page);
    await page.goto(url);
    await page.waitForSelector('body[data-draws]', { timeout: 15_000 });
    await page.waitForSelector('#connection[data-state="live"]', { timeout: 15_000 });
    expect(await page.textContent('#title')).toContain('dash');
    const completeRows = () => page.locator('#trials td.state-complete').count();
    expect(await completeRows()).toBe(0);
    await page.evaluate(() => {
      (globalThis as unknown as { sameDocument: boolean }).sameDocument = true;
    });

    // a worker joins: completed trials reach the page over the event stream, no reload
    const [worker] = procs.startWorkers(cli, nats.url, join(tmp, 'cache'), 1);
    await waitFor(async () => (await completeRows()) >= 1, 60_000, 'a completed trial on the page');
    expect(await page.evaluate(() => (globalThis as unknown as { sameDocument?: boolean }).sameDocument)).toBe(true);
    await waitFor(async () => (await completeRows()) >= 10, 60_000, '10 completed trials on the page');
    expect(await page.textContent('#workers')).toContain('test-1');
    // with what the worker advertises (provider, device, memory, throughput)
    await waitFor(
      async () => /trials\/min/.test((await page.textContent('#workers')) ?? ''),
      10_000,
      'the worker capabilities on the page',
    );
    // and its cache (bytes held, no limit, blob count) in the pool table
    await waitFor(
      async () => /\/ no limit, \d+ blobs/.test((await page.textContent('#workers')) ?? ''),
      10_000,
      'the worker cache on the page',
    );
    // stop the worker: the study stays live, half done, while the table is checked
    await stopProcess(worker!);
    // results the worker published before it stopped may still arrive: wait until the page is quiet
    let draws = '';
    let quietSince = Date.now();
    await waitFor(
      async () => {
        const now = (await page.getAttribute('body', 'data-draws')) ?? '';
        if (now !== draws) [draws, quietSince] = [now, Date.now()];
        return Date.now() - quietSince > 1500;
      },
      30_000,
      'the page to stop redrawing',
    );

    // filter: complete only; sort by the objective, ascending then descending
    await page.selectOption('#filter-state', 'complete');
    const states = await page.locator('#trials tr td:nth-child(2)').allTextContents();
    expect(states.length).toBeGreaterThanOrEqual(10);
    expect(new Set(states)).toEqual(new Set(['complete']));
    const objective = page.locator('#trials th[data-key="objective"]');
    const values = async () => (await page.locator('#trials tr td:nth-child(3)').allTextContents()).map(Number);
    await objective.click();
    const up = await values();
    expect(up.every(Number.isFinite)).toBe(true);
    expect(up).toEqual([...up].sort((a, b) => a - b));
    expect(await objective.getAttribute('aria-sort')).toBe('ascending');
    await objective.click();
    const down = await values();
    expect(down).toEqual([...down].sort((a, b) => b - a));
    expect(down).toEqual([...up].reverse());
    expect(await objective.getAttribute('aria-sort')).toBe('descending');
    // the best row is the study's best (minimize: the first ascending)
    const status = (await (
      await fetch(`${base}api/studies/dash`, { headers: { Authorization: `Bearer ${TOKEN}` } })
    ).json()) as StudyStatus;
    expect(status.summary.best?.objective).toBeCloseTo(up[0]!, 4);
    expect(await page.locator('#trials tr.best td:first-child').textContent()).toBe(String(status.summary.best?.trial));
    await page.selectOption('#filter-state', '');
    await objective.click(); // back to ascending for the picture

    await mkdir(ARTIFACTS, { recursive: true });
    const shot = join(ARTIFACTS, 'dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });
    if (process.env.OPTIMER_UPDATE_SCREENSHOT) await copyFile(shot, join(ROOT, 'docs', 'dashboard.png'));
    expect(errors).toEqual([]);

    // hostile text in the data (a study name and an error message are untrusted): shown as text
    const evil = '<img src=x onerror="window.pwned=1">';
    const hostile: StudyStatus = structuredClone(status);
    hostile.summary.study = 'evil';
    hostile.trials.items[0] = { ...hostile.trials.items[0]!, state: 'failed', error: { code: 'RUNTIME', message: evil }, worker: evil };
    hostile.summary.failure = { code: 'RUNTIME', message: evil, trials: [0], at: hostile.at };
    const fake = await DashboardServer.start({
      source: { list: async () => [listItem(hostile.summary)], status: async () => hostile },
      port: 0,
      log: silentLogger(),
    });
    try {
      const p2 = await (await browser()).newPage();
      const p2Errors = watchErrors(p2);
      await p2.goto(fake.url);
      await p2.waitForSelector('body[data-draws]', { timeout: 15_000 });
      expect(await p2.textContent('#trials')).toContain(evil);
      expect(await p2.textContent('#failure')).toContain(evil);
      expect(await p2.locator('img').count()).toBe(0);
      expect(await p2.evaluate(() => (globalThis as unknown as { pwned?: number }).pwned)).toBeUndefined();
      expect(p2Errors).toEqual([]);
      await p2.close();
    } finally {
      await fake.close();
    }

    // a second worker finishes the study; the coordinator ends and its dashboard with it
    procs.startWorkers(cli, nats.url, join(tmp, 'cache2'), 1);
    expect(await exited(run, 120_000)).toBe(0);
    await expect(fetch(base)).rejects.toThrow();

    // the HTML report of the finished study: self-contained, the best trial's numbers, opens offline
    const out = join(tmp, 'dash.html');
    const r = await optimer('report', 'dash', '--store', store, '--out', out);
    expect(r.code).toBe(0);
    const html = await readFile(out, 'utf8');
    const final = (JSON.parse((await optimer('study', 'best', 'dash', '--store', store, '--json')).stdout) as StudyStatus['summary']).best!;
    expect(html).toContain(`Best: trial ${final.trial}, nll ${final.objective!.toFixed(4)}`);
    expect(html).not.toMatch(/\b(src|href)=|https?:\/\/|<script/i);
    const p3 = await (await browser()).newPage();
    const reportErrors = watchErrors(p3);
    await p3.goto(pathToFileURL(out).href);
    expect(await p3.locator('svg').count()).toBeGreaterThanOrEqual(2);
    expect(await p3.locator('svg circle').count()).toBeGreaterThanOrEqual(50);
    expect(reportErrors).toEqual([]);
    await p3.close();
  }, 240_000);
});
