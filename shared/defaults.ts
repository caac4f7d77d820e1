/**
 * Runtime knobs and their defaults, in one place: the CLI's option defaults, the study config's
 * defaults and the components' own fall-backs all read these.
 */

/** Where `optimer run` and `optimer study` keep the record, the JetStream store and the cache. */
export const DEFAULT_STORE_DIR = '.optimer';
/** Tokens (batch × padded length) per ONNX Runtime call; bounds the logits buffer. */
export const DEFAULT_BATCH_TOKENS = 8192;
/** Shard size of a pool (`pool build --shard-mb`). */
export const DEFAULT_SHARD_BYTES = 64 * 1024 * 1024;
/** Piece size of a shard (`pool build --piece-mb`): the unit peers verify, serve and fetch. */
export const DEFAULT_PIECE_BYTES = 4 * 1024 * 1024;
/**
 * Largest part of a pool's merged-weights layout (`pool build --weights-part-mb`): a worker
 * merges each part into its own buffer and hands them to ONNX Runtime together, so models larger
 * than one JavaScript buffer (4 GiB) are evaluated from memory all the same.
 */
export const DEFAULT_WEIGHTS_PART_BYTES = 1024 * 1024 * 1024;

// ---- study leases (a study config's `lease`) -------------------------------------------------
/** How long a proposal stays leased to a silent worker before JetStream redelivers it. */
export const DEFAULT_ACK_WAIT_SECONDS = 60;
/** A trial still unanswered after this long is issued again (attempt + 1). */
export const DEFAULT_TRIAL_TIMEOUT_SECONDS = 3600;
/** Attempts before a trial is recorded as failed. */
export const DEFAULT_MAX_ATTEMPTS = 3;
/** trials a study runs alone before the rest: a fault that fails every trial costs only these */
export const DEFAULT_CANARY_TRIALS = 2;
/** trials failing in a row with the same error that stop a study */
export const DEFAULT_FAILURE_STREAK = 8;

// ---- coordinator -----------------------------------------------------------------------------
/** How often the coordinator checks timeouts and lost workers, and writes what waited for a write, ms. */
export const DEFAULT_TICK_MS = 100;
/**
 * How often the coordinator asks JetStream how many proposals wait in the queue and how many
 * workers wait for one, ms: a check behind the proposals it keeps ahead from the workers'
 * statuses (a lost status, a worker that sends none), not the way proposals are normally made.
 */
export const DEFAULT_QUEUE_CHECK_MS = 1000;
/**
 * Proposals kept waiting in a study's queue beyond those idle workers ask for: at least this
 * many, and more with more workers (`DEFAULT_AHEAD_PER_WORKER`), so that a worker finishing a
 * trial finds the next one there instead of waiting for the coordinator's turn.
 */
export const DEFAULT_QUEUE_DEPTH = 1;
/**
 * Proposals kept ahead per live worker that may serve the study (rounded up). Each is sampled
 * this much earlier than it is taken (it misses the results that come in meanwhile), so it stays
 * a fraction: at 16 workers, 4 proposals ahead.
 */
export const DEFAULT_AHEAD_PER_WORKER = 0.25;
/** Results a crashed coordinator had fetched come back this soon; a repeat is dropped anyway. */
export const DEFAULT_RESULT_ACK_WAIT_MS = 10_000;
/**
 * Results the coordinator asks JetStream for at once, and the most it handles (and records, in
 * one write) in one turn.
 */
export const DEFAULT_RESULT_BATCH = 64;
/** How long one pull for results stays open before the coordinator pulls again, ms. */
export const DEFAULT_RESULT_PULL_EXPIRES_MS = 5_000;
/**
 * How often the server says a results pull is alive while no result comes, ms. Two missed and
 * the coordinator pulls again at once: a pull lost with the cluster node that led the results
 * consumer is replaced within seconds (nats.js's defaults, a 15 s heartbeat then a consumer-info
 * check and a back-off, left a study unrecorded 15-40 s after such a node died).
 */
export const DEFAULT_RESULT_PULL_HEARTBEAT_MS = 1_000;
/** JetStream's de-duplication window for proposals and results, ms. */
export const DEFAULT_DUPLICATE_WINDOW_MS = 120_000;
/** How long results wait in JetStream for a coordinator that is down, ms. */
export const DEFAULT_RESULTS_MAX_AGE_MS = 30 * 24 * 3600 * 1000;

/**
 * A study's lock in NATS (bucket optimer_locks) expires this long after its coordinator stopped
 * refreshing it (refreshed every third of it); a coordinator killed outright frees its study then.
 */
export const DEFAULT_LOCK_TTL_MS = 10_000;
/** How much longer than the lock's TTL a starting coordinator waits for a stale lock to expire. */
export const DEFAULT_LOCK_WAIT_MARGIN_MS = 3_000;

// ---- worker ----------------------------------------------------------------------------------
/** How long one pull for a proposal waits before the worker looks at its other studies, ms. */
export const DEFAULT_PULL_EXPIRES_MS = 1000;
/** How long a worker trusts its list of announced studies before reading it again, ms. */
export const DEFAULT_STUDY_LIST_MS = 2000;
/** How often an idle-only worker (--only-when-idle) checks whether its GPU is idle, ms. */
export const DEFAULT_IDLE_POLL_MS = 3000;
/** How often a worker tells the mesh it is alive (and what it is doing), ms. */
export const DEFAULT_HEARTBEAT_MS = 2000;
/** A worker silent for this many heartbeats is reported lost. */
export const DEFAULT_LOST_AFTER_HEARTBEATS = 3;
/** Studies whose pool, sets and merge buffer a worker keeps ready at once. */
export const DEFAULT_STUDY_CONTEXTS = 2;
/**
 * How far behind its fair share (in its own trials) a study must fall, at least, before a worker
 * takes it when that means letting a kept study's pool go from its cache limit (the pools do not
 * fit together): each switch costs a pool fetch, so a worker serving two such studies runs one
 * for a while and then the other, instead of fetching a pool at every trial. More with many
 * workers, and spread among them (`FairShare.switchMargin`).
 */
export const DEFAULT_SWITCH_MARGIN_TRIALS = 8;
/** One blob transfer may take this long before it is abandoned, ms. */
export const DEFAULT_FETCH_TIMEOUT_MS = 10 * 60_000;

/** Pieces a worker uploads to its peers at once (see Seeder); more askers are told to come back. */
export const PEER_UPLOAD_SLOTS = 4;
/**
 * Pieces the coordinator uploads at once: each worker asks it for one piece at a time while it
 * knows any peer, so this many workers are served at once and the rest get those pieces from them.
 * Few, so each piece leaves at a good share of the uplink and peers can pass it on early (a slot
 * is held until the piece is half delivered, see Seeder): 16 slots on a 5 Mbit/s uplink took ~7 s
 * per 256 KiB piece, and nothing could be relayed meanwhile.
 */
export const SEEDER_UPLOAD_SLOTS = 4;
