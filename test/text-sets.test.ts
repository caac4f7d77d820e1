import { execFile } from 'node:child_process';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.js';
import { MemoryStudyStore } from '../coordinator/store/memory-store.js';
import { loadStudyConfig } from '../coordinator/study/config.js';
import { loadEvalSets } from '../shared/eval-set.js';
import { uniformWeighting } from '../shared/genome.js';
import { silentLogger } from '../shared/logging.js';
import type { LanguageModel } from '../shared/metrics/metric.js';
import { METRICS } from '../shared/metrics/registry.js';
import { contextWindows } from '../shared/metrics/text.js';
import { buildPool } from '../shared/pool/build.js';
import { Pool } from '../shared/pool/reader.js';
import { evaluateMerge } from '../worker/eval/evaluate.js';
import { limits, readSeqs } from './helpers/family.js';
import { useNatsServer } from './helpers/nats.js';
import { Processes, writeStudyConfig } from './helpers/study.js';
import { useTempDir } from './helpers/temp.js';

const family = inject('family');
const cli = inject('cli');
const tmp = useTempDir('text-sets');

/**
 * One character per token id of the family's 64-token vocabulary, two of them outside ASCII (so
 * bytes and characters differ): a text of these characters is exactly its token-id sequence.
 */
const CHARS = [...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789é日'];
const toText = (ids: number[]): string => ids.map((i) => CHARS[i]!).join('');
const bytesOf = (s: string): number => Buffer.byteLength(s, 'utf8');

/** A Hugging Face tokenizer.json: every character is split off and looked up in a WordLevel vocabulary. */
function tokenizerJson(chars: string[]): string {
  return JSON.stringify({
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: { type: 'Split', pattern: { Regex: '.' }, behavior: 'Isolated', invert: false },
    post_processor: null,
    decoder: null,
    model: { type: 'WordLevel', vocab: Object.fromEntries(chars.map((c, i) => [c, i])), unk_token: '[UNK]' },
  });
}

const poolOptions = (out: string, tokenizer?: string) => ({
  base: family.base,
  vectors: Object.entries(family.checkpoints).map(([name, path]) => ({ name, path })),
  out,
  ...(tokenizer ? { tokenizer } : {}),
});

let pool: Pool;
let plainPool: Pool;
let tokenizerPath: string;
let idsPath: string;
let textPath: string;
let texts: string[];

beforeAll(async () => {
  tokenizerPath = join(tmp, 'tokenizer.json');
  await writeFile(tokenizerPath, tokenizerJson(CHARS));
  await buildPool(poolOptions(join(tmp, 'pool'), tokenizerPath));
  await buildPool(poolOptions(join(tmp, 'plain')));
  pool = await Pool.open(join(tmp, 'pool'));
  plainPool = await Pool.open(join(tmp, 'plain'));
  const seqs = await readSeqs(family.dev.ja!);
  idsPath = join(tmp, 'ids.jsonl');
  textPath = join(tmp, 'text.jsonl');
  texts = seqs.map(toText);
  await writeFile(idsPath, seqs.map((s) => `${JSON.stringify({ input_ids: s })}\n`).join(''));
  await writeFile(textPath, texts.map((t) => `${JSON.stringify({ text: t })}\n`).join(''));
  return async () => {
    await pool.close();
    await plainPool.close();
  };
});

const weighting = uniformWeighting(
  new Map([
    ['ja', 0.6],
    ['code', 0.3],
  ]),
);

describe('text sets', () => {
  it('text - pool build stores the tokenizer as a shard, listed with the others and verified; a tokenizer beyond the vocabulary is refused', async () => {
    const ref = pool.manifest.tokenizer!;
    expect(ref.bytes).toBe(bytesOf(tokenizerJson(CHARS)));
    expect(pool.allShards()).toContainEqual({ sha256: ref.sha256, bytes: ref.bytes });
    await pool.verify();
    expect((await pool.tokenizer())!.encode('ab日', 'x')).toEqual(Int32Array.of(0, 1, 63));
    expect(plainPool.manifest.tokenizer).toBeUndefined();
    expect(await plainPool.tokenizer()).toBeNull();
    const wide = join(tmp, 'wide.json');
    await writeFile(wide, tokenizerJson([...CHARS, '!']));
    await expect(buildPool(poolOptions(join(tmp, 'wide'), wide))).rejects.toThrow(
      `pool build: --tokenizer ${wide} has token ids up to 64, the model's vocabulary is 64`,
    );
  });

  it('text - nll of a text set equals nll of the same token ids, and bpb is nll·tokens/(ln 2·bytes)', async () => {
    const sets = await loadEvalSets(
      [
        { name: 'ids', path: idsPath },
        { name: 'text', path: textPath },
        { name: 'bytes', path: textPath, metric: 'bpb' },
      ],
      pool.evalSetContext(),
    );
    const r = await evaluateMerge(pool, weighting, sets);
    const [ids, text, bpb] = r.scores;
    expect(text!.score).toBe(ids!.score);
    expect(text!.tokens).toBe(ids!.tokens);
    expect(bpb!.tokens).toBe(ids!.tokens);
    expect(bpb!.sequences).toBe(texts.length);
    const bytes = texts.reduce((a, t) => a + bytesOf(t), 0);
    expect(bytes).toBeGreaterThan(texts.reduce((a, t) => a + t.length, 0)); // 'é' and '日' are 2 and 3 bytes
    expect(bpb!.score).toBeCloseTo((ids!.score * ids!.tokens) / (Math.LN2 * bytes), 10);
    expect(METRICS.bpb.direction).toBe('minimize');
  });

  it('text - a text longer than the context is cut into windows: none longer than the context, every token but the first scored once', async () => {
    const L = limits.contextLength;
    const seqs = await readSeqs(family.dev.zh!);
    const long = seqs.slice(0, 8).flat();
    expect(long.length).toBeGreaterThan(2 * L);
    const longPath = join(tmp, 'long.jsonl');
    await writeFile(longPath, `${JSON.stringify({ text: toText(long) })}\n`);

    const [nll, bpb] = await loadEvalSets(
      [
        { name: 'long', path: longPath },
        { name: 'long-bpb', path: longPath, metric: 'bpb' },
      ],
      pool.evalSetContext(),
    );
    if (nll!.metric !== 'nll' || bpb!.metric !== 'bpb') throw new Error('unexpected metrics');
    const windows = nll!.items;
    expect(windows.length).toBeGreaterThan(2);
    expect(windows.every((w) => w.length <= L && w.length >= 2)).toBe(true);
    // each window starts on the last token of the one before: together they are the text
    for (let i = 1; i < windows.length; i++) expect(windows[i]![0]).toBe(windows[i - 1]![windows[i - 1]!.length - 1]);
    expect(windows.flatMap((w, i) => Array.from(i === 0 ? w : w.subarray(1)))).toEqual(long);
    expect(bpb!.items[0]!.windows).toEqual(windows);

    const r = await evaluateMerge(pool, weighting, [nll!, bpb!]);
    expect(r.scores[0]!.tokens).toBe(long.length - 1);
    expect(r.scores[1]!.tokens).toBe(long.length - 1);
    expect(r.scores[1]!.score).toBeCloseTo((r.scores[0]!.score * (long.length - 1)) / (Math.LN2 * bytesOf(toText(long))), 10);

    // the windows themselves, and what bpb makes of a model that puts ln p = −1 on every token
    expect(
      contextWindows(
        Int32Array.from({ length: 10 }, (_, i) => i),
        4,
      ).map((w) => Array.from(w)),
    ).toEqual([
      [0, 1, 2, 3],
      [3, 4, 5, 6],
      [6, 7, 8, 9],
    ]);
    const flat: LanguageModel = { tokenLogProbs: async (s) => s.map((x) => new Float64Array(x.length - 1).fill(-1)) };
    const scored = await METRICS.bpb.evaluate(flat, bpb!.items);
    expect(scored.tokens).toBe(long.length - 1);
    expect(scored.score).toBeCloseTo((long.length - 1) / (Math.LN2 * bytesOf(toText(long))), 12);
  });

  it("text - a text set on a pool without a tokenizer is refused, naming the set and 'pool build --tokenizer'", async () => {
    for (const metric of ['nll', 'bpb'] as const) {
      await expect(loadEvalSets([{ name: 'prose', path: textPath, metric }], plainPool.evalSetContext())).rejects.toThrow(
        `evaluation set 'prose' (${textPath}): has lines of text, but the pool has no tokenizer: build the pool with 'optimer pool build --tokenizer path/to/tokenizer.json'`,
      );
    }
    // token ids need none
    await expect(loadEvalSets([{ name: 'ids', path: idsPath }], plainPool.evalSetContext())).resolves.toHaveLength(1);
    // bpb needs text; a text the tokenizer cannot read is refused with its line
    await expect(loadEvalSets([{ name: 'ids', path: idsPath, metric: 'bpb' }], pool.evalSetContext())).rejects.toThrow(
      `${idsPath}:1: bpb needs {"text": "..."} lines`,
    );
    const odd = join(tmp, 'odd.jsonl');
    await writeFile(odd, `${JSON.stringify({ text: 'abc' })}\n${JSON.stringify({ text: 'ab?' })}\n`);
    await expect(loadEvalSets([{ name: 'odd', path: odd }], pool.evalSetContext())).rejects.toThrow(
      `${odd}:2: the tokenizer has no id for "?"`,
    );
  });
});

function optimer(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { timeout: 120_000, cwd: tmp }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('text sets from the CLI', () => {
  it('text - pool build --tokenizer, then eval --metric bpb scores the text set as the API does', async () => {
    const out = join(tmp, 'cli-pool');
    const vectors = Object.entries(family.checkpoints).flatMap(([n, p]) => ['--vector', `${n}=${p}`]);
    const built = await optimer('pool', 'build', '--base', family.base, ...vectors, '--out', out, '--tokenizer', tokenizerPath);
    expect(built.stderr).toBe('');
    expect(built.stdout).toMatch(/tokenizer: tokenizer\.json/);
    const r = await optimer(
      'eval',
      '--pool',
      out,
      '--weights',
      'ja=0.6,code=0.3',
      '--set',
      `prose=${textPath}`,
      '--metric',
      'bpb',
      '--json',
    );
    expect(r.stderr).toBe('');
    const j = JSON.parse(r.stdout);
    expect(j.metric).toBe('bpb');
    const api = await evaluateMerge(
      pool,
      weighting,
      await loadEvalSets([{ name: 'prose', path: textPath, metric: 'bpb' }], pool.evalSetContext()),
    );
    expect(j.scores[0].score).toBeCloseTo(api.scores[0]!.score, 6);
    const plain = await optimer('eval', '--pool', join(tmp, 'plain'), '--set', `prose=${textPath}`, '--metric', 'bpb');
    expect(plain.code).toBe(2);
    expect(plain.stderr).toMatch(/evaluation set 'prose'.*pool build --tokenizer/);
  });
});

describe('text sets on workers', () => {
  const nats = useNatsServer();
  const procs = new Processes();
  afterAll(() => procs.stopAll());

  it('text - a bpb study: the worker fetches the tokenizer with the pool and scores the text set', async () => {
    const testPath = join(tmp, 'text-test.jsonl');
    const testSeqs = await readSeqs(family.test.ja!);
    await writeFile(testPath, testSeqs.map((s) => `${JSON.stringify({ text: toText(s) })}\n`).join(''));
    const config = await loadStudyConfig(
      await writeStudyConfig(join(tmp, 'study.json'), family, join(tmp, 'pool'), {
        name: 'prose',
        trials: 4,
        objective: { sets: [{ name: 'prose', path: textPath, test: testPath, metric: 'bpb' }] },
      }),
    );
    const store = new MemoryStudyStore();
    procs.startWorkers(cli, nats.url, join(tmp, 'cache'), 1);
    const coordinator = await Coordinator.start({ config, store, natsUrl: nats.url, log: silentLogger() });
    await coordinator.done();
    expect(coordinator.complete).toBe(true);
    await coordinator.close();
    const trials = await store.listJobs('prose', 'TRIAL');
    expect(trials).toHaveLength(4);
    expect(trials.every((t) => t.state === 'complete' && Number.isFinite(t.value) && t.value! > 0)).toBe(true);
    const ref = pool.manifest.tokenizer!;
    expect((await stat(join(tmp, 'cache', 'w0', ref.sha256))).size).toBe(ref.bytes);
    // the worker's score is the one this process computes for the same merge
    const last = trials[trials.length - 1]!;
    const here = await evaluateMerge(
      pool,
      uniformWeighting(new Map(Object.entries(last.params))),
      await loadEvalSets([{ name: 'prose', path: textPath, metric: 'bpb' }], pool.evalSetContext()),
    );
    expect(last.scores![0]!.tokens).toBe(here.scores[0]!.tokens);
    expect(last.value!).toBeCloseTo(here.scores[0]!.score, 6);
  });
});
