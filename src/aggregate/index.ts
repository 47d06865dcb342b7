/** Aggregation layer: pure math over sparse next-token distributions (docs/aggregation.md). */
export type { SparseDist, WeightedDist, AggregationRule, Aggregated, SamplingOptions, Rng } from './types.js'
export { aggregate, AggregationError, PRODUCT_EPSILON } from './aggregate.js'
export type { AggregateOptions } from './aggregate.js'
export { createRng, sample, argmax, distributionAfterSampling, nthUnlisted, SamplingError, samplingProbability, speculativeStep } from './sampling.js'
export type { SamplingDist } from './sampling.js'
export { benchAggregate } from './bench.js'
export type { BenchResult, BenchOptions } from './bench.js'
