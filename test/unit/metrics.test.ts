import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseStudyConfig } from '../../coordinator/study/config.js';
import { readEvalSet } from '../../shared/eval-set.js';
import type { LanguageModel } from '../../shared/metrics/metric.js';
import { DEFAULT_METRIC, METRIC_NAMES, METRICS, metricNamed } from '../../shared/metrics/registry.js';
import { announcementCodec } from '../../shared/wire.js';
import { Rng } from '../../shared/rng.js';
import { useTempDir } from '../helpers/temp.js';

const tmp = useTempDir('metrics');
const limits = { vocab: 64, contextLength: 64 };

/** A model that answers fixed log-probs per sequence, looked up by the sequence's first token. */
function fakeModel(byFirstToken: Map<number, Float64Array>): LanguageModel & { calls: number } {
  const m = {
    calls: 0,
    async tokenLogProbs(seqs: readonly Int32Array[]) {
      m.calls++;
      return seqs.map((s) => byFirstToken.get(s[0]!)!);
    },
  };
  return m;
}

describe('metric registry', () => {
  it('metrics - the registry lists nll, the default, under its own name', () => {
    expect(METRIC_NAMES).toContain('nll');
    expect(DEFAULT_METRIC).toBe('nll');
    for (const n of METRIC_NAMES) expect(METRICS[n].name).toBe(n);
    expect(metricNamed('nll', '--metric')).toBe(METRICS.nll);
  });

  it('metrics - an unknown name is refused naming where and the known metrics', () => {
    expect(() => metricNamed('bleu', '--metric')).toThrow(`--metric: unknown metric 'bleu' (known: ${METRIC_NAMES.join(', ')})`);
    try {
      metricNamed('toString', 'x');
      expect.unreachable();
    } catch (e) {
      expect((e as { code: string }).code).toBe('BAD_ARGUMENT');
    }
  });

  it('metrics - nll is minimized and describes its lines', () => {
    expect(METRICS.nll.direction).toBe('minimize');
    expect(METRICS.nll.lineFormat).toBe('{"input_ids": [...]} or {"text": "..."}');
  });
});

describe('nll metric over a LanguageModel', () => {
  it('metrics - nll is the token-weighted mean of −log p', async () => {
    const model = fakeModel(
      new Map([
        [1, Float64Array.of(-1)],
        [3, Float64Array.of(-0.5, -0.25, -2)],
      ]),
    );
    const r = await METRICS.nll.evaluate(model, [Int32Array.of(1, 2), Int32Array.of(3, 4, 5, 6)]);
    expect(r).toEqual({ score: (1 + 2.75) / 4, tokens: 4, sequences: 2 });
    expect(model.calls).toBe(1);
  });

  it('metrics - nll adds per-sequence sums in file order, bit for bit', async () => {
    const rng = new Rng(7);
    const seqs: Int32Array[] = [];
    const lps = new Map<number, Float64Array>();
    for (let i = 0; i < 50; i++) {
      const len = 2 + Math.floor(rng.uniform() * 30);
      seqs.push(Int32Array.from({ length: len }, (_, t) => (t === 0 ? i : 1)));
      lps.set(
        i,
        Float64Array.from({ length: len - 1 }, () => Math.log(rng.uniform() + 1e-3)),
      );
    }
    // the accumulation the ONNX Runtime path always did: sum += term per position, then Σ sums
    let total = 0;
    let tokens = 0;
    for (const s of seqs) {
      let sum = 0;
      for (const lp of lps.get(s[0]!)!) sum += -lp;
      total += sum;
      tokens += s.length - 1;
    }
    const r = await METRICS.nll.evaluate(fakeModel(lps), seqs);
    expect(r.score).toBe(total / tokens);
    expect(r.tokens).toBe(tokens);
  });

  it('metrics - a model answering the wrong number of log-probs is an error, not a score', async () => {
    const model = fakeModel(new Map([[1, Float64Array.of(-1, -1)]]));
    await expect(METRICS.nll.evaluate(model, [Int32Array.of(1, 2)])).rejects.toThrow(
      'the model scored 2 tokens of a 2-token sequence, expected 1',
    );
  });

  it('metrics - a set is read through its metric (nll by default)', async () => {
    const path = join(tmp, 'set.jsonl');
    await writeFile(path, '{"input_ids": [1, 2, 3]}\n\n{"input_ids": [4, 5]}\n');
    const byDefault = await readEvalSet(path, limits);
    expect(byDefault).toEqual([Int32Array.of(1, 2, 3), Int32Array.of(4, 5)]);
    expect(await readEvalSet(path, limits, 'nll')).toEqual(byDefault);
    await writeFile(path, '[1, 2]\n');
    await expect(readEvalSet(path, limits, 'nll')).rejects.toThrow(`${path}:1: expected an object {"input_ids": [...]}`);
  });
});

describe('metric in configs and on the wire', () => {
  const config = (objective: Record<string, unknown>) =>
    parseStudyConfig({ name: 's', pool: './p', objective, trials: 3 }, 'study.yaml', '/w');

  it("metrics - a study's direction defaults to its metric's, and an explicit one is kept", () => {
    const sets = [{ name: 'a', path: 'a.jsonl' }];
    const c = config({ sets });
    expect(c.objective.direction).toBe(METRICS.nll.direction);
    expect(c.objective.direction).toBe('minimize');
    expect(c.objective.sets[0]!.metric).toBe('nll');
    expect(Object.keys(c.objective)).toEqual(['direction', 'sets']);
    expect(config({ direction: 'maximize', sets }).objective.direction).toBe('maximize');
  });

  it('metrics - an announcement naming an unknown metric is refused', () => {
    const blob = { sha256: 'a'.repeat(64), bytes: 1 };
    const ann = {
      study: 's',
      direction: 'minimize' as const,
      manifest: blob,
      sets: [{ name: 'a', metric: 'nll' as const, weight: 1, dev: blob, test: { sha256: '', bytes: 0 } }],
      seeders: ['127.0.0.1:1'],
      provider: '',
      batchTokens: 8,
      generation: 0,
    };
    expect(announcementCodec.decode(announcementCodec.encode(ann), 'kv').sets[0]!.metric).toBe('nll');
    const bad = announcementCodec.encode({ ...ann, sets: [{ ...ann.sets[0]!, metric: 'bleu' as 'nll' }] });
    expect(() => announcementCodec.decode(bad, 'kv')).toThrow(/kv: sets\[0\]\.metric/);
  });
});
