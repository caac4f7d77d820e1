/**
 * optimer against PyTorch on the same merge and dev set: a Llama-style causal LM (RMSNorm, RoPE,
 * grouped-query attention, SwiGLU) built and exported by PyTorch's own `torch.onnx.export`
 * (`reference.py make`), pooled with `optimer pool build`, then the same merge evaluated by
 * `optimer eval` (native merge, ONNX Runtime with the loss graph) and by PyTorch (state-dict merge,
 * eager forward, log-softmax + gather), at the same thread count, each in its own process, run in
 * turn. Each side times its own merge, model load / session creation and evaluation (process start
 * and imports excluded); the NLLs must agree.
 * Usage: npm run bench:torch -- [--dim 512] [--layers 8] [--heads 8] [--kv-heads 4] [--ffn 1408]
 *   [--vocab 32000] [--vectors 2] [--seqs 16] [--seq-len 128] [--threads 1,2] [--repeat 2]
 *   [--out bench/torch/out]
 * Needs Debian's python3-torch and python3-onnx (run with /usr/bin/python3), and an optimised BLAS
 * for PyTorch: Debian's torch calls whatever libblas.so.3 points to, and the reference BLAS that
 * comes by default is about 100× slower than OpenBLAS (apt-get install libopenblas0-pthread).
 */
import { execFile } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { table } from '../../cli/output.js';

const { values } = parseArgs({
  options: {
    dim: { type: 'string', default: '512' },
    layers: { type: 'string', default: '8' },
    heads: { type: 'string', default: '8' },
    'kv-heads': { type: 'string', default: '4' },
    ffn: { type: 'string', default: '1408' },
    vocab: { type: 'string', default: '32000' },
    vectors: { type: 'string', default: '2' },
    seqs: { type: 'string', default: '16' },
    'seq-len': { type: 'string', default: '128' },
    threads: { type: 'string', default: '1,2' },
    repeat: { type: 'string', default: '2' },
    out: { type: 'string', default: 'bench/torch/out' },
  },
});
const PYTHON = process.env.OPTIMER_TORCH_PYTHON ?? '/usr/bin/python3';
const HERE = resolve('bench/torch');
const CLI = resolve('dist/cli/main.js');
const OUT = resolve(String(values.out));
const SHAPE = ['dim', 'layers', 'heads', 'kv-heads', 'ffn', 'vocab', 'vectors', 'seqs', 'seq-len'] as const;
const THREADS = String(values.threads).split(',').map(Number);
const REPEAT = Number(values.repeat);
const K = Number(values.vectors);
// distinct, some negative: the merge is not a plain average
const WEIGHTS = Array.from({ length: K }, (_, i) => `v${i + 1}=${[0.6, 0.3, -0.2, 0.45, 0.15, -0.1][i % 6]}`).join(',');

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((res, rej) => {
    execFile(cmd, args, { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) rej(new Error(`${cmd} ${args.join(' ')}: ${stderr.trim().split('\n').slice(-5).join('\n') || err.message}`));
      else res(stdout);
    });
  });
}

/** The checkpoints and the pool, made once per shape (kept in --out). */
async function prepare(): Promise<void> {
  const shapeArgs = SHAPE.flatMap((k) => [`--${k}`, String(values[k])]);
  const stamp = join(OUT, 'args.json');
  if (existsSync(stamp) && (await readFile(stamp, 'utf8')) === JSON.stringify(shapeArgs)) return;
  await rm(OUT, { recursive: true, force: true });
  await run(PYTHON, ['-c', 'import torch, onnx']).catch(() => {
    throw new Error(`${PYTHON} cannot import torch and onnx: apt-get install python3-torch python3-onnx (or set OPTIMER_TORCH_PYTHON)`);
  });
  process.stderr.write(`making the checkpoints with PyTorch (${shapeArgs.join(' ')}) ...\n`);
  process.stderr.write(await run(PYTHON, [join(HERE, 'reference.py'), 'make', OUT, ...shapeArgs]));
  const vectors = Array.from({ length: K }, (_, i) => ['--vector', `v${i + 1}=${join(OUT, `v${i + 1}`, 'model.onnx')}`]).flat();
  process.stderr.write('optimer pool build ...\n');
  await run(process.execPath, [
    CLI,
    'pool',
    'build',
    '--base',
    join(OUT, 'base', 'model.onnx'),
    ...vectors,
    '--out',
    join(OUT, 'pool'),
    '--context-length',
    String(values['seq-len']),
  ]);
  await import('node:fs/promises').then((fs) => fs.writeFile(stamp, JSON.stringify(shapeArgs)));
}

interface Timed {
  nll: number;
  mergeMs: number;
  loadMs: number;
  evalMs: number;
}

/** `optimer eval` with the merged weights as graph inputs (the CPU default) or as a session's initializers. */
async function optimer(threads: number, weightsAs: 'inputs' | 'initializers'): Promise<Timed> {
  const r = JSON.parse(
    await run(process.execPath, [
      CLI,
      'eval',
      '--pool',
      join(OUT, 'pool'),
      '--weights',
      WEIGHTS,
      '--set',
      `dev=${join(OUT, 'dev.jsonl')}`,
      '--threads',
      String(threads),
      '--weights-as',
      weightsAs,
      '--no-verify',
      '--json',
    ]),
  ) as { mean: number; timings: { mergeMs: number; sessionMs: number; evalMs: number } };
  return { nll: r.mean, mergeMs: r.timings.mergeMs, loadMs: r.timings.sessionMs, evalMs: r.timings.evalMs };
}

async function torch(threads: number): Promise<Timed> {
  return JSON.parse(
    await run(PYTHON, [join(HERE, 'reference.py'), 'eval', OUT, '--weights', WEIGHTS, '--threads', String(threads)]),
  ) as Timed;
}

const total = (t: Timed) => t.mergeMs + t.loadMs + t.evalMs;
const best = (ts: Timed[]) => ts.reduce((a, b) => (total(b) < total(a) ? b : a));
const s = (ms: number) => (ms / 1000).toFixed(2);

const blas = (() => {
  try {
    return realpathSync('/usr/lib/x86_64-linux-gnu/libblas.so.3');
  } catch {
    return 'unknown';
  }
})();
if (/\/blas\/libblas/.test(blas))
  process.stderr.write(`warning: PyTorch would use the reference BLAS (${blas}), not a fair peer: apt-get install libopenblas0-pthread\n`);
await prepare();
const rows: (string | number)[][] = [
  [
    'threads',
    'side',
    'merge s',
    'load/session s',
    'forward+loss s',
    'total s',
    'optimer / torch (total)',
    'optimer / torch (forward+loss)',
    'NLL',
  ],
];
let maxDiff = 0;
for (const threads of THREADS) {
  const o: Timed[] = [];
  const oi: Timed[] = [];
  const p: Timed[] = [];
  // in turn, so that all three see the same load
  for (let r = 0; r < REPEAT; r++) {
    o.push(await optimer(threads, 'inputs'));
    oi.push(await optimer(threads, 'initializers'));
    p.push(await torch(threads));
  }
  const [bo, boi, bp] = [best(o), best(oi), best(p)];
  for (const t of [...o, ...oi, ...p]) maxDiff = Math.max(maxDiff, Math.abs(t.nll - bp.nll));
  for (const [side, b] of [
    ['optimer, weights as inputs', bo],
    ['optimer, as initializers', boi],
  ] as const) {
    rows.push([
      threads,
      side,
      s(b.mergeMs),
      s(b.loadMs),
      s(b.evalMs),
      s(total(b)),
      (total(b) / total(bp)).toFixed(2),
      (b.evalMs / bp.evalMs).toFixed(2),
      b.nll.toFixed(6),
    ]);
  }
  rows.push([threads, 'PyTorch', s(bp.mergeMs), s(bp.loadMs), s(bp.evalMs), s(total(bp)), '', '', bp.nll.toFixed(6)]);
}
const shape = JSON.parse(await readFile(join(OUT, 'shape.json'), 'utf8')) as Record<string, number>;
const dev = (await readFile(join(OUT, 'dev.jsonl'), 'utf8')).trim().split('\n').length;
process.stdout.write(
  `Llama-style LM ${JSON.stringify(shape)}, fp32, merge ${WEIGHTS}, ${dev} dev sequences of up to ${values['seq-len']} tokens; ` +
    `best of ${REPEAT} by total; PyTorch's BLAS: ${blas}\n${table(rows)}\nlargest |NLL optimer − NLL PyTorch| over all runs: ${maxDiff.toExponential(2)}\n`,
);
