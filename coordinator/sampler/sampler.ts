import type { Direction, Rng } from '../../shared/index.js';
import type { ChoiceValue, SearchSpace } from './space.js';

export type Params = Record<string, ChoiceValue>;

/** What a sampler sees of a trial: nothing of storage, only what it needs to propose. */
export interface TrialView {
  number: number;
  state: 'complete' | 'running' | 'failed';
  params: Params;
  /** the objective, for complete trials */
  value?: number;
}

export type { Direction };

/**
 * A sampler proposes the parameters of the next trial from the space and the history. It keeps
 * no state between calls (as Optuna's samplers rebuild their model from the trials each time):
 * the same history and random stream give the same proposal.
 */
export interface Sampler {
  readonly name: string;
  propose(space: SearchSpace, trials: readonly TrialView[], direction: Direction, rng: Rng): Params;
}
