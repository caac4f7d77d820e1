import { OptimerError } from '../errors.js';
import type { Metric } from './metric.js';
import { bpbMetric } from './bpb.js';
import { nllMetric } from './nll.js';

/** Every metric, by name. A new metric is one file and one entry here. */
const DEFINED = {
  nll: nllMetric,
  bpb: bpbMetric,
} as const;

export type MetricName = keyof typeof DEFINED;
/** What a `N` set's lines become once prepared: the items its metric scores. */
export type MetricItem<N extends MetricName> = (typeof DEFINED)[N] extends Metric<infer I, N, infer _L> ? I : never;
/** What a line of a `N` set parses to. */
export type MetricLine<N extends MetricName> = (typeof DEFINED)[N] extends Metric<infer _I, N, infer L> ? L : never;

/** (typed so that each metric's `name` is its key, and its lines and items are its own) */
export const METRICS: { readonly [N in MetricName]: Metric<MetricItem<N>, N, MetricLine<N>> } = DEFINED;
/** Any one of the metrics (a union: narrow on `name` to reach its items' type). */
export type AnyMetric = (typeof METRICS)[MetricName];
/** The names, for zod enums and help. */
export const METRIC_NAMES = Object.keys(DEFINED) as [MetricName, ...MetricName[]];
/** the metric of a set that names none */
export const DEFAULT_METRIC = 'nll' satisfies MetricName;

export function isMetricName(name: string): name is MetricName {
  return Object.hasOwn(METRICS, name);
}

/** The metric called `name`; a clear BAD_ARGUMENT (naming `where` and the known metrics) if none is. */
export function metricNamed(name: string, where: string): AnyMetric {
  if (!isMetricName(name)) throw new OptimerError('BAD_ARGUMENT', `${where}: unknown metric '${name}' (known: ${METRIC_NAMES.join(', ')})`);
  return METRICS[name];
}
