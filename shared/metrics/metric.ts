import type { Direction } from '../objective.js';

/** Limits an evaluation set must respect, from the pool's model. */
export interface SequenceLimits {
  vocab: number | null;
  contextLength: number | null;
}

/**
 * What a metric may ask of the model under evaluation: the seam between metrics (shared/) and
 * the runtime (the worker's ONNX Runtime session). A metric never sees logits, batches or tensors.
 */
export interface LanguageModel {
  /**
   * For each sequence ids (at least 2 tokens), ln p(ids[t] | ids[<t]) for t = 1..len−1 as float64,
   * in the order of `seqs`: result[i].length === seqs[i].length − 1.
   */
  tokenLogProbs(seqs: readonly Int32Array[]): Promise<Float64Array[]>;
}

/** A metric's score on one evaluation set. */
export interface MetricResult {
  score: number;
  /** tokens scored */
  tokens: number;
  /** set items (lines) scored */
  sequences: number;
}

/**
 * One metric: how a line of its evaluation sets looks, how it scores a model on them, and
 * which way is better. `Item` is what a line parses to; only this metric's parseLine makes
 * the items its evaluate gets.
 */
export interface Metric<Item, Name extends string = string> {
  /** the name in study configs, announcements, reports and `--metric` (its key in METRICS) */
  readonly name: Name;
  /** what the score is, for help text */
  readonly description: string;
  /** what one JSONL line looks like, for help text and errors, e.g. {"input_ids": [...]} */
  readonly lineFormat: string;
  /** which way is better; a study's objective.direction defaults to it */
  readonly direction: Direction;
  /**
   * Checks one parsed JSON line; throws OptimerError('BAD_EVAL_SET', `${where}: …`) if it is
   * not a valid item. `where` is "file:line".
   */
  parseLine(obj: unknown, where: string, limits: SequenceLimits): Item;
  /** Scores the model on a set's items (in file order). */
  evaluate(model: LanguageModel, items: readonly Item[]): Promise<MetricResult>;
}
