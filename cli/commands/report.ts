import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { renderHtmlReport } from '../../coordinator/index.js';
import { printJson } from '../output.js';
import { readStatus } from '../status-source.js';
import { DEFAULT_STORE } from './study.js';

type Run = (fn: () => Promise<void>, json?: boolean) => Promise<void>;

export function registerReport(program: Command, run: Run): void {
  program
    .command('report')
    .description('write a self-contained HTML report of a study (SVG plots and tables; opens offline)')
    .argument('<study>', 'the study name')
    .option('--store <dir>', 'the study store', DEFAULT_STORE)
    .option('--nats <url>', 'ask the running coordinator over NATS instead of reading the store')
    .option('--out <file>', 'where to write it (default: <study>-report.html)')
    .option('--json', 'print where it was written as JSON')
    .action((study: string, o) =>
      run(async () => {
        const { status } = await readStatus({ store: o.store, ...(o.nats ? { nats: o.nats } : {}) }, study);
        const out = resolve(o.out ?? `${study}-report.html`);
        const html = renderHtmlReport(status);
        await writeFile(out, html);
        if (o.json) printJson({ study, out, bytes: Buffer.byteLength(html) });
        else process.stdout.write(`wrote ${out}\n`);
      }, o.json),
    );
}
