import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { parseStudyConfig } from '../../coordinator/study/config.js';
import { isOptimerError } from '../../shared/errors.js';
import { readEvalSet } from '../../shared/eval-set.js';
import { openOnnxModel } from '../../shared/onnx/model-file.js';
import { parseManifest } from '../../shared/pool/manifest.js';
import { parseWeights } from '../../shared/weights.js';
import { announcementCodec, proposalCodec, resultCodec, workerStatusCodec } from '../../shared/wire.js';
import { buildFamilyPool, limits } from '../helpers/family.js';
import { useTempDir } from '../helpers/temp.js';

const family = inject('family');
const tmp = useTempDir('fuzz');
const seed = 12;

/** Inputs tried per parser, printed at the end (the README's reliability report quotes them). */
const tried: Record<string, number> = {};
afterAll(() => console.log(`fuzz inputs tried: ${JSON.stringify(tried)}`));

/** `f` returns a value or throws an OptimerError; anything else (TypeError, RangeError, …) fails. */
function refusesCleanly(what: string, f: () => unknown): void {
  tried[what] = (tried[what] ?? 0) + 1;
  try {
    f();
  } catch (e) {
    if (!isOptimerError(e)) throw new Error(`${what}: not an OptimerError: ${(e as Error)?.stack ?? e}`);
    expect(e.message.length).toBeGreaterThan(0);
  }
}
async function refusesCleanlyAsync(what: string, f: () => Promise<unknown>): Promise<void> {
  tried[what] = (tried[what] ?? 0) + 1;
  try {
    await f();
  } catch (e) {
    if (!isOptimerError(e)) throw new Error(`${what}: not an OptimerError: ${(e as Error)?.stack ?? e}`);
  }
}

/** A valid byte string with a few bytes overwritten, cut or extended. */
function mutated(valid: Uint8Array): fc.Arbitrary<Uint8Array> {
  return fc
    .record({
      edits: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
      cut: fc.option(fc.nat(), { nil: undefined }),
      tail: fc.uint8Array({ maxLength: 16 }),
    })
    .map(({ edits, cut, tail }) => {
      const b = Uint8Array.from(valid);
      for (const [i, v] of edits) if (b.length > 0) b[i % b.length] = v;
      const c = cut === undefined ? b : b.subarray(0, cut % (b.length + 1));
      return Uint8Array.from([...c, ...tail]);
    });
}

const job = { study: 's', generation: 1, kind: 'TRIAL' as const, trial: 3, label: 'tpe', attempt: 1, created: 5 };
const validMessages = {
  proposal: proposalCodec.encode({ ...job, weights: { ja: 0.5, zh: -1 } }),
  result: resultCodec.encode({
    ...job,
    worker: 'w',
    scores: [{ name: 'ja', score: 1.5, tokens: 10 }],
    timings: { fetchMs: 1, mergeMs: 2, evalMs: 3 },
    error: null,
    provider: 'cpu',
  }),
  announcement: announcementCodec.encode({
    study: 's',
    direction: 'minimize',
    manifest: { sha256: 'a'.repeat(64), bytes: 10 },
    sets: [{ name: 'ja', metric: 'nll', weight: 1, dev: { sha256: 'b'.repeat(64), bytes: 3 }, test: { sha256: '', bytes: 0 } }],
    seeders: ['127.0.0.1:1'],
    provider: 'cpu',
    batchTokens: 100,
    generation: 1,
  }),
  workerStatus: workerStatusCodec.encode({
    worker: 'w',
    state: 'busy',
    provider: 'cpu',
    study: 's',
    generation: 1,
    kind: 'TRIAL',
    trial: 1,
    attempt: 1,
    heartbeatMs: 2000,
  }),
};
const codecs = { proposal: proposalCodec, result: resultCodec, announcement: announcementCodec, workerStatus: workerStatusCodec };

describe('fuzz - decoders and parsers', () => {
  it('fuzz - every NATS message decoder: random bytes and mutated valid messages decode or give BAD_MESSAGE', () => {
    for (const [name, codec] of Object.entries(codecs)) {
      const valid = validMessages[name as keyof typeof validMessages];
      expect(() => codec.decode(valid, name)).not.toThrow();
      fc.assert(
        fc.property(fc.oneof(fc.uint8Array({ maxLength: 512 }), mutated(valid)), (bytes) =>
          refusesCleanly(`${name} message`, () => codec.decode(bytes, name)),
        ),
        { numRuns: 400, seed },
      );
    }
  });

  it('fuzz - study configs: random JSON gives BAD_CONFIG', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => refusesCleanly('study config (random JSON)', () => parseStudyConfig(v, 'fuzz.json', tmp))),
      { numRuns: 400, seed },
    );
  });

  it('fuzz - the manifest parser: random JSON and mutated manifests parse or give an OptimerError', async () => {
    const poolDir = join(tmp, 'pool');
    await buildFamilyPool(family, poolDir);
    const text = await readFile(join(poolDir, 'manifest.json'), 'utf8');
    const valid = new TextEncoder().encode(text);
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), mutated(valid)), (v) =>
        refusesCleanly('manifest', () => {
          if (!(v instanceof Uint8Array)) return parseManifest(v, 'manifest.json');
          let json: unknown;
          try {
            json = JSON.parse(new TextDecoder().decode(v));
          } catch {
            return undefined; // readManifest reports unparsable JSON itself
          }
          return parseManifest(json, 'manifest.json');
        }),
      ),
      { numRuns: 400, seed },
    );
  });

  it('fuzz - study configs: mutated valid configs parse or give BAD_CONFIG', () => {
    const valid = { name: 'x', pool: 'p', trials: 3, objective: { sets: [{ name: 'a', path: 'a.jsonl' }] } };
    const keys = ['name', 'pool', 'trials', 'bounds', 'sampler', 'lease', 'failFast', 'objective', 'baselines', 'vectors'];
    fc.assert(
      fc.property(fc.constantFrom(...keys), fc.jsonValue(), (k, v) =>
        refusesCleanly('study config (mutated)', () => parseStudyConfig({ ...valid, [k]: v }, 'fuzz.json', tmp)),
      ),
      { numRuns: 400, seed },
    );
  });

  it('fuzz - the --weights parser: random strings parse or give BAD_ARGUMENT', () => {
    const names = ['ja', 'zh', 'math', 'code'];
    const spec = fc.oneof(
      fc.string({ maxLength: 64 }),
      fc
        .array(fc.tuple(fc.constantFrom(...names, 'x', ''), fc.oneof(fc.double().map(String), fc.string({ maxLength: 8 }))))
        .map((a) => a.map(([n, w]) => `${n}=${w}`).join(',')),
    );
    fc.assert(
      fc.property(spec, (s) => refusesCleanly('--weights', () => parseWeights(s, names))),
      { numRuns: 500, seed },
    );
  });

  it('fuzz - JSONL eval sets: random and mutated files read or give BAD_EVAL_SET', async () => {
    const valid = new Uint8Array(await readFile(family.dev.ja!));
    const path = join(tmp, 'fuzz.jsonl');
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.uint8Array({ maxLength: 256 }), mutated(valid.subarray(0, 2048))), async (bytes) => {
        await writeFile(path, bytes);
        await refusesCleanlyAsync('JSONL eval set', () => readEvalSet(path, limits));
      }),
      { numRuns: 200, seed },
    );
  });

  it('fuzz - the ONNX protobuf parser: random and mutated model files open or give BAD_ONNX', async () => {
    const valid = new Uint8Array(await readFile(family.base));
    const path = join(tmp, 'fuzz.onnx');
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.uint8Array({ maxLength: 256 }), mutated(valid)), async (bytes) => {
        await writeFile(path, bytes);
        await refusesCleanlyAsync('ONNX model', () => openOnnxModel(path));
      }),
      { numRuns: 200, seed },
    );
  });
});
