import { join } from 'node:path';
import protobuf from 'protobufjs';
import { z } from 'zod';
import { OptimerError } from './errors.js';
import { METRIC_NAMES } from './metrics/registry.js';
import { packageRoot } from './package-root.js';
import { formatIssues } from './validate.js';

/**
 * Codecs for the NATS payloads of proto/optimer.proto. Every decode validates: a message from
 * the network is hostile until checked, and a bad one becomes a BAD_MESSAGE error, never a crash.
 */
export const OPTIMER_PROTO = join(packageRoot, 'proto', 'optimer.proto');
const root = protobuf.loadSync(OPTIMER_PROTO);

export const studyNameSchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "expected 1-64 letters, digits, '-' or '_'");
const sha256 = z.string().regex(/^[0-9a-f]{64}$/, 'expected a lowercase hex sha256');
const blobRef = z.object({ sha256, bytes: z.number().int().nonnegative() });
const finite = z.number().finite();
const name = z.string().min(1).max(256);
const count = z.number().int().nonnegative();

const announcementSchema = z.object({
  study: studyNameSchema,
  direction: z.enum(['minimize', 'maximize']),
  manifest: blobRef,
  sets: z
    .array(
      z.object({
        name,
        metric: z.enum(METRIC_NAMES),
        weight: finite.nonnegative(),
        dev: blobRef,
        test: z.union([blobRef, z.object({ sha256: z.literal(''), bytes: z.literal(0) })]),
      }),
    )
    .min(1),
  seeders: z.array(z.string().min(1)).min(1),
  provider: z.string(),
  batchTokens: z.number().int().positive(),
  generation: z.number().int().nonnegative(),
  requirements: z.object({ provider: z.string().max(64), minMemoryGb: finite.nonnegative() }).nullish(),
  /** 0 or absent: 1 */
  priority: finite.nonnegative().optional(),
  department: z.string().max(64).optional(),
});

const kind = z.enum(['TRIAL', 'TEST']);
/** What identifies a job's attempt: proposals and results both carry it. */
const jobAttempt = z.object({
  study: studyNameSchema,
  generation: z.number().int().nonnegative(),
  kind,
  trial: z.number().int().nonnegative(),
  label: z.string().max(128),
  attempt: z.number().int().positive(),
  /** when the job's record was made, ms: tells a re-created job from the one it replaced (0: not sent) */
  created: z.number().int().nonnegative(),
  /**
   * The attempt's token, made by the coordinator (a MAC of the fields above under a secret of the
   * study): a proposal carries it, its result echoes it. Only a worker that pulled the proposal
   * knows it, so a result from anyone else, for any attempt, is told apart ('' or absent: none).
   */
  token: z.string().max(128).optional(),
});

const proposalSchema = jobAttempt.extend({
  weights: z.record(name, finite),
  /** the study's announcement in the bucket when it was proposed (0 or absent: not said) */
  announcementRevision: z.number().int().nonnegative().optional(),
});

const resultSchema = jobAttempt.extend({
  worker: z.string().min(1).max(256),
  // scores may be NaN or infinite (a diverged merge): the coordinator records such a trial as failed
  scores: z.array(z.object({ name, score: z.number(), tokens: z.number().int().nonnegative() })),
  timings: z.object({ fetchMs: finite.nonnegative(), mergeMs: finite.nonnegative(), evalMs: finite.nonnegative() }),
  error: z.object({ code: z.string(), message: z.string(), retryable: z.boolean() }).nullable(),
  provider: z.string(),
});

const workerStatusSchema = z.object({
  worker: z.string().min(1).max(256),
  state: z.enum(['idle', 'busy', 'stopped']),
  provider: z.string().max(64),
  study: z.union([studyNameSchema, z.literal('')]),
  generation: z.number().int().nonnegative(),
  kind,
  trial: z.number().int().nonnegative(),
  attempt: z.number().int().nonnegative(),
  heartbeatMs: z.number().int().positive(),
  /** absent from older workers */
  capabilities: z
    .object({
      provider: z.string().max(64),
      deviceName: z.string().max(256),
      memoryGb: finite.nonnegative(),
      concurrency: z.number().int().nonnegative(),
      trialsPerMinute: finite.nonnegative(),
      tokensPerSecond: finite.nonnegative(),
      onlyWhenIdle: z.boolean(),
      gpuIdle: z.boolean(),
      studies: z.array(z.string().max(64)).max(256),
      departments: z.array(z.string().max(64)).max(256),
    })
    .nullish(),
  /** absent from older workers */
  cache: z
    .object({
      usedBytes: count,
      limitBytes: count,
      blobs: count,
      pinnedBytes: count,
      evictedBlobs: count,
      evictedBytes: count,
    })
    .nullish(),
  /** empty from older workers */
  transfers: z
    .array(
      z.object({
        blob: z.string().regex(/^[0-9a-f]{0,64}$/),
        bytes: count,
        doneBytes: count,
        bytesPerSecond: finite.nonnegative(),
        fromPeers: count,
        fromSeeders: count,
        peers: count,
        seconds: finite.nonnegative(),
      }),
    )
    .max(64)
    .optional(),
});

const holderSchema = z
  .object({
    address: z.string().min(1).max(256),
    pieces: z
      .number()
      .int()
      .positive()
      .max(1 << 24),
    have: z.instanceof(Uint8Array),
    seeding: z.instanceof(Uint8Array),
  })
  .refine((h) => h.have.length === Math.ceil(h.pieces / 8), { message: 'have: expected one bit per piece', path: ['have'] })
  .refine((h) => h.seeding.length === 0 || h.seeding.length === Math.ceil(h.pieces / 8), {
    message: 'seeding: expected one bit per piece, or nothing',
    path: ['seeding'],
  });

export type Holder = z.infer<typeof holderSchema>;
export type StudyAnnouncement = z.infer<typeof announcementSchema>;
export type WorkerStatus = z.infer<typeof workerStatusSchema>;
export type WorkerCapabilities = NonNullable<WorkerStatus['capabilities']>;
export type WorkerCacheStatus = NonNullable<WorkerStatus['cache']>;
export type WorkerTransfer = NonNullable<WorkerStatus['transfers']>[number];
export type StudyRequirements = NonNullable<StudyAnnouncement['requirements']>;
export type Proposal = z.infer<typeof proposalSchema>;
export type Result = z.infer<typeof resultSchema>;
export type JobKind = z.infer<typeof kind>;

function codec<T>(typeName: string, schema: z.ZodType<T>, nullable: string[] = []) {
  const type = root.lookupType(typeName);
  return {
    encode(value: T): Uint8Array {
      const obj = { ...(value as Record<string, unknown>) };
      for (const k of nullable) if (obj[k] === null) delete obj[k];
      return type.encode(type.fromObject(obj)).finish();
    },
    decode(bytes: Uint8Array, where: string): T {
      let obj: Record<string, unknown>;
      try {
        obj = type.toObject(type.decode(bytes), { longs: Number, enums: String, defaults: true, arrays: true, objects: true }) as Record<
          string,
          unknown
        >;
      } catch (e) {
        throw new OptimerError('BAD_MESSAGE', `${where}: not a ${typeName} (${(e as Error).message})`, { cause: e });
      }
      for (const k of nullable) if (!(k in obj) || obj[k] === undefined) obj[k] = null;
      const r = schema.safeParse(obj);
      if (!r.success) throw new OptimerError('BAD_MESSAGE', formatIssues(where, r.error));
      return r.data;
    },
  };
}

/** What a worker says it works on: enough for another worker's fair share. */
export interface WorkerActivity {
  worker: string;
  state: WorkerStatus['state'];
  /** the study it is busy with ('' when not busy) */
  study: string;
  /** identifies the attempt it is busy with (null when not busy) */
  job: string | null;
}

const statusType = root.lookupType('optimer.v1.WorkerStatus');
const STATES: ReadonlySet<string> = new Set(['idle', 'busy', 'stopped']);
const STUDY_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * The few fields of a worker status a worker's fair share reads, each checked, without the
 * full validation of `workerStatusCodec` (every worker reads every status of the mesh, two per
 * trial: the full one cost a worker as much as the rest of a no-op trial). Null for a malformed
 * status.
 */
export function workerActivity(bytes: Uint8Array): WorkerActivity | null {
  let m: Record<string, unknown>;
  try {
    m = statusType.decode(bytes) as unknown as Record<string, unknown>;
  } catch {
    return null;
  }
  const { worker, state, study } = m;
  if (typeof worker !== 'string' || worker.length === 0 || worker.length > 256) return null;
  if (typeof state !== 'string' || !STATES.has(state)) return null;
  if (typeof study !== 'string' || (study !== '' && !STUDY_NAME.test(study))) return null;
  if (state !== 'busy' || study === '') return { worker, state: state as WorkerActivity['state'], study: '', job: null };
  // uint64 decodes as a Long (or a number); the others are plain numbers
  const job = `${String(m.generation ?? 0)}|${m.kind === 1 ? 'TEST' : 'TRIAL'}|${Number(m.trial ?? 0)}|${Number(m.attempt ?? 0)}`;
  return { worker, state: 'busy', study, job };
}

export const announcementCodec = codec('optimer.v1.StudyAnnouncement', announcementSchema);
export const proposalCodec = codec('optimer.v1.Proposal', proposalSchema);
export const resultCodec = codec('optimer.v1.Result', resultSchema, ['error']);
export const workerStatusCodec = codec('optimer.v1.WorkerStatus', workerStatusSchema);
export const holderCodec = codec('optimer.v1.Holder', holderSchema as unknown as z.ZodType<Holder>);

/** NATS subjects and JetStream names, versioned so a v2 protocol can run beside v1. */
export const subjects = {
  trials: (study: string) => `optimer.v1.trials.${study}`,
  allTrials: 'optimer.v1.trials.>',
  results: (study: string) => `optimer.v1.results.${study}`,
  allResults: 'optimer.v1.results.>',
  /** worker status messages (core NATS: a lost one is replaced by the next) */
  workers: 'optimer.v1.workers',
  /** request/reply (JSON): the status of one study, answered by the coordinator running it */
  status: (study: string) => `optimer.v1.status.study.${study}`,
  /** request/reply (JSON): every running coordinator answers with the studies of its store */
  statusList: 'optimer.v1.status.list',
  /** what a viewer may request: both of the above */
  allStatus: 'optimer.v1.status.>',
};
export const TRIALS_STREAM = 'OPTIMER_TRIALS';
export const RESULTS_STREAM = 'OPTIMER_RESULTS';
export const STUDIES_BUCKET = 'optimer_studies';
/** One key per study: the coordinator running it (refreshed while it runs, expires after it stops). */
export const LOCKS_BUCKET = 'optimer_locks';
/** The durable consumer workers pull a study's proposals from: one per study, with its own lease. */
export const workConsumer = (study: string) => `optimer-workers-${study}`;
/** Before studies had their own: one consumer over every study's proposals (removed on sight). */
export const LEGACY_WORK_CONSUMER = 'optimer-workers';
/** Who holds which piece of which blob: key `holderKey(sha256, holder)`, entries expire unless refreshed. */
export const HOLDERS_BUCKET = 'optimer_holders';
/** A holder entry lives this long unless refreshed (the bucket's TTL). */
export const HOLDER_TTL_MS = 30_000;
export const holderKey = (sha256: string, holderHex: string) => `${sha256}.${holderHex}`;
export const resultsConsumer = (study: string) => `optimer-coordinator-${study}`;
