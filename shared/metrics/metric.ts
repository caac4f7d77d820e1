import type { Direction } from '../objective.js';
import type { TextTokenizer } from '../tokenizer.js';

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

/** What a metric's prepare step gets, once per set, where the set is loaded. */
export interface PrepareContext {
  /** the set, for errors: "evaluation set 'NAME' (PATH)" */
  where: string;
  limits: SequenceLimits;
  /**
   * The pool's tokenizer (loaded on first call). Throws BAD_EVAL_SET naming the set and
   * `pool build --tokenizer` when the pool has none.
   */
  tokenizer(): Promise<TextTokenizer>;
}

/** A line of text, with where it was read (for errors found when it is tokenised). */
export interface TextLine {
  text: string;
  where: string;
}

/**
 * One metric: how a line of its evaluation sets looks, how it scores a model on them, and
 * which way is better. `Line` is what a line parses to, `Item` what prepare makes of a set's
 * lines (token windows of texts, say); only this metric's parseLine and prepare make the items
 * its evaluate gets.
 */
export interface Metric<Item, Name extends string = string, Line = Item> {
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
  parseLine(obj: unknown, where: string, limits: SequenceLimits): Line;
  /**
   * Turns a set's lines (in file order) into the items evaluate scores: run once wherever a set
   * is loaded (the coordinator checking it, each worker using it). Texts are tokenised here.
   */
  prepare(lines: Line[], ctx: PrepareContext): Promise<Item[]>;
  /** Scores the model on a set's items (in file order). */
  evaluate(model: LanguageModel, items: readonly Item[]): Promise<MetricResult>;
}
