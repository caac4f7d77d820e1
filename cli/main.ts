#!/usr/bin/env node
import { Command } from 'commander';
import { registerDashboard } from './commands/dashboard.js';
import { registerDemo } from './commands/demo.js';
import { registerEval } from './commands/eval.js';
import { registerInit } from './commands/init.js';
import { registerPool } from './commands/pool.js';
import { registerReport } from './commands/report.js';
import { registerRun } from './commands/run.js';
import { registerSample } from './commands/sample.js';
import { registerStudy } from './commands/study.js';
import { reportError } from './output.js';
import { registerSecurityOptions } from './security.js';

/** Runs a command body, turning every failure into a clear message and an exit code. */
async function run(fn: () => Promise<void>, json = false): Promise<void> {
  try {
    await fn();
  } catch (e) {
    reportError(e, json);
  }
}

const program = new Command('optimer')
  .description('Find the best merge of continually pre-trained LLMs (OptiMer): pools of distribution vectors, merges, evaluation')
  .version('0.1.0')
  .showHelpAfterError()
  .exitOverride((err) => {
    process.exit(err.exitCode === 0 ? 0 : 2);
  });

registerSecurityOptions(program);
registerPool(program, run);
registerEval(program, run);
registerInit(program, run);
registerRun(program, run);
registerStudy(program, run);
registerDashboard(program, run);
registerReport(program, run);
registerSample(program, run);
registerDemo(program, run);

await program.parseAsync(process.argv);
