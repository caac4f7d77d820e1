import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { z } from 'zod';
import {
  DEFAULT_ACK_WAIT_SECONDS,
  DEFAULT_BATCH_TOKENS,
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_CANARY_TRIALS,
  DEFAULT_FAILURE_STREAK,
  DEFAULT_METRIC,
  DEFAULT_TRIAL_TIMEOUT_SECONDS,
  type Direction,
  EXECUTION_PROVIDERS,
  formatIssues,
  METRIC_NAMES,
  METRICS,
  OptimerError,
  studyNameSchema,
} from '../../shared/index.js';

/**
 * The study config (YAML or JSON), validated once at start and frozen. Unknown keys are errors
 * (a typo must not silently fall back to a default); relative paths are relative to the file.
 */
const range = z
  .tuple([z.number().finite(), z.number().finite()])
  .refine(([lo, hi]) => lo < hi, { message: 'expected [low, high] with low < high' });

const evalSet = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "expected 1-64 letters, digits, '.', '_' or '-'"),
    path: z.string().min(1),
    test: z.string().min(1).optional(),
    metric: z.enum(METRIC_NAMES).default(DEFAULT_METRIC),
    weight: z.number().finite().nonnegative().default(1),
  })
  .strict();

const samplerSchema = z.discriminatedUnion('name', [
  z
    .object({
      name: z.literal('tpe'),
      seed: z.number().int().nonnegative().default(0),
      nStartupTrials: z.number().int().nonnegative().optional(),
      nEiCandidates: z.number().int().positive().optional(),
      gammaFactor: z.number().finite().positive().max(1).optional(),
      multivariate: z.boolean().optional(),
      constantLiar: z.boolean().optional(),
      priorWeight: z.number().finite().positive().optional(),
      magicClip: z.boolean().optional(),
      minBandwidthFactor: z.number().finite().positive().max(1).optional(),
      endpoints: z.boolean().optional(),
      bandwidth: z.enum(['neighbor', 'scott']).optional(),
    })
    .strict(),
  z.object({ name: z.literal('random'), seed: z.number().int().nonnegative().default(0) }).strict(),
  z.object({ name: z.literal('qmc'), seed: z.number().int().nonnegative().default(0) }).strict(),
]);

export const BASELINE_KINDS = ['base', 'single', 'average'] as const;

const configSchema = z
  .object({
    name: studyNameSchema,
    pool: z.string().min(1),
    vectors: z.array(z.string().min(1)).min(1).optional(),
    bounds: z.union([range, z.record(z.string(), range)]).default([-1, 2]),
    objective: z
      .object({
        /** default: the direction of the sets' metric */
        direction: z.enum(['minimize', 'maximize']).optional(),
        sets: z.array(evalSet).min(1),
      })
      .strict(),
    trials: z.number().int().positive(),
    sampler: samplerSchema.default({ name: 'tpe', seed: 0 }),
    baselines: z.union([z.boolean(), z.array(z.enum(BASELINE_KINDS))]).default(true),
    execution: z
      .object({
        provider: z.enum(EXECUTION_PROVIDERS).optional(),
        batchTokens: z.number().int().positive().default(DEFAULT_BATCH_TOKENS),
      })
      .strict()
      .default({ batchTokens: DEFAULT_BATCH_TOKENS }),
    lease: z
      .object({
        /** how long a proposal stays leased to a silent worker before JetStream redelivers it */
        ackWaitSeconds: z.number().positive().default(DEFAULT_ACK_WAIT_SECONDS),
        /** a trial still unanswered after this long is issued again (attempt + 1) */
        trialTimeoutSeconds: z.number().positive().default(DEFAULT_TRIAL_TIMEOUT_SECONDS),
        /** attempts before a trial is recorded as failed */
        maxAttempts: z.number().int().positive().default(DEFAULT_MAX_ATTEMPTS),
      })
      .strict()
      .default({
        ackWaitSeconds: DEFAULT_ACK_WAIT_SECONDS,
        trialTimeoutSeconds: DEFAULT_TRIAL_TIMEOUT_SECONDS,
        maxAttempts: DEFAULT_MAX_ATTEMPTS,
      }),
    /** what a worker must be to take this study's trials; one that is not never pulls its queue */
    requirements: z
      .object({ provider: z.enum(EXECUTION_PROVIDERS).optional(), minMemoryGb: z.number().finite().positive().optional() })
      .strict()
      .optional(),
    /** this study's share of a pool shared with other studies, relative to theirs (default 1) */
    priority: z.number().finite().positive().optional(),
    /** who runs the study: workers may be limited to some departments */
    department: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,64}$/, "expected 1-64 letters, digits, '.', '_' or '-'")
      .optional(),
    /** when a failure that will repeat stops the study (as `failed`, resumable) instead of spending its budget */
    failFast: z
      .object({
        /** trials run first, alone, until one completes; 0: no canary */
        canary: z.number().int().nonnegative().default(DEFAULT_CANARY_TRIALS),
        /** trials failing in a row with the same error stop the study (diverged merges excepted); 0: never */
        streak: z.number().int().nonnegative().default(DEFAULT_FAILURE_STREAK),
      })
      .strict()
      .default({ canary: DEFAULT_CANARY_TRIALS, streak: DEFAULT_FAILURE_STREAK }),
  })
  .strict();

/** A study config's `sampler` alone (e.g. a benchmark's options for our TPE), checked the same way. */
export function parseSamplerConfig(json: unknown, where: string): StudyConfig['sampler'] {
  const r = samplerSchema.safeParse(json);
  if (!r.success) throw new OptimerError('BAD_CONFIG', formatIssues(where, r.error));
  return r.data;
}

export type StudyConfigInput = z.input<typeof configSchema>;
type Parsed = z.infer<typeof configSchema>;

/** A validated config with absolute paths, the vector list resolved and bounds per vector. */
export interface StudyConfig extends Omit<Parsed, 'bounds' | 'vectors' | 'baselines' | 'objective'> {
  vectors: string[] | null; // null: every vector of the pool
  bounds: Record<string, [number, number]> | [number, number];
  baselines: (typeof BASELINE_KINDS)[number][];
  objective: Omit<Parsed['objective'], 'direction'> & { direction: Direction };
}

/** The direction the sets' metrics agree on; refused when they disagree. */
function metricDirection(sets: Parsed['objective']['sets'], where: string): Direction {
  const direction = METRICS[sets[0]!.metric].direction;
  if (sets.every((s) => METRICS[s.metric].direction === direction)) return direction;
  const list = (d: Direction) =>
    sets
      .filter((s) => METRICS[s.metric].direction === d)
      .map((s) => `${s.name} (${s.metric})`)
      .join(', ');
  throw new OptimerError(
    'BAD_CONFIG',
    `${where}: objective.direction: the sets' metrics disagree (minimize: ${list('minimize')}; maximize: ${list('maximize')}); give objective.direction, or use sets of one direction`,
  );
}

export function parseStudyConfig(json: unknown, where: string, baseDir: string): StudyConfig {
  const r = configSchema.safeParse(json);
  if (!r.success) throw new OptimerError('BAD_CONFIG', formatIssues(where, r.error));
  const c = r.data;
  const names = new Set<string>();
  for (const [i, s] of c.objective.sets.entries()) {
    if (names.has(s.name)) throw new OptimerError('BAD_CONFIG', `${where}: objective.sets[${i}].name: '${s.name}' is used twice`);
    names.add(s.name);
  }
  if (c.objective.sets.every((s) => s.weight === 0))
    throw new OptimerError('BAD_CONFIG', `${where}: objective.sets: at least one set needs a weight above 0`);
  if (c.vectors && new Set(c.vectors).size !== c.vectors.length)
    throw new OptimerError('BAD_CONFIG', `${where}: vectors: a vector is listed twice`);
  const abs = (p: string): string => resolve(baseDir, p);
  // direction first, as it always was: a stored config is compared field by field in key order
  const { direction, ...objective } = c.objective;
  return {
    ...c,
    pool: abs(c.pool),
    vectors: c.vectors ?? null,
    baselines: c.baselines === true ? [...BASELINE_KINDS] : c.baselines === false ? [] : c.baselines,
    objective: {
      direction: direction ?? metricDirection(objective.sets, where),
      ...objective,
      sets: c.objective.sets.map((s) => ({ ...s, path: abs(s.path), ...(s.test ? { test: abs(s.test) } : {}) })),
    },
  };
}

export async function loadStudyConfig(path: string): Promise<StudyConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new OptimerError('BAD_CONFIG', `${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, {
      cause: e,
    });
  }
  let json: unknown;
  try {
    json = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text, { prettyErrors: true });
  } catch (e) {
    const pos = e instanceof YAMLParseError && e.linePos ? ` at line ${e.linePos[0].line}, column ${e.linePos[0].col}` : '';
    throw new OptimerError(
      'BAD_CONFIG',
      `${path}: not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}${pos}: ${(e as Error).message.split('\n')[0]}`,
      { cause: e },
    );
  }
  return parseStudyConfig(json, path, dirname(resolve(path)));
}

/** The vectors a study searches over and each one's bounds, checked against the pool. */
export function resolveVectors(
  config: StudyConfig,
  poolVectors: string[],
  where: string,
): { vectors: string[]; bounds: Record<string, [number, number]> } {
  const vectors = config.vectors ?? poolVectors;
  for (const v of vectors) {
    if (!poolVectors.includes(v))
      throw new OptimerError('BAD_CONFIG', `${where}: vectors: '${v}' is not in the pool (it has: ${poolVectors.join(', ')})`);
  }
  const bounds: Record<string, [number, number]> = {};
  if (Array.isArray(config.bounds)) for (const v of vectors) bounds[v] = config.bounds;
  else {
    for (const key of Object.keys(config.bounds)) {
      if (!vectors.includes(key))
        throw new OptimerError('BAD_CONFIG', `${where}: bounds.${key}: not one of the study's vectors (${vectors.join(', ')})`);
    }
    for (const v of vectors) {
      const b = config.bounds[v];
      if (!b)
        throw new OptimerError('BAD_CONFIG', `${where}: bounds.${v}: missing (give bounds for every vector, or one [low, high] for all)`);
      bounds[v] = b;
    }
  }
  return { vectors, bounds };
}
