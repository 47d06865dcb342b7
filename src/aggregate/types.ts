/**
 * Types of the aggregation layer: pure math over sparse next-token distributions.
 * Nothing here knows about the network.
 */

/** One expert's sparse next-token distribution (the content of a wire frame). */
export interface SparseDist {
  /** listed token ids, any order, distinct, each < vocabSize */
  ids: Uint32Array
  /** natural-log probabilities of the listed ids in the expert's full distribution, same order */
  logprobs: Float32Array
  /** probability mass of every token that is not listed, in [0, 1] */
  tailMass: number
}

export interface WeightedDist {
  dist: SparseDist
  /** non-negative; weights are normalised by the aggregator */
  weight: number
}

/**
 * mixture: Σ w_e p_e; product: weighted geometric mean; median / trimmed: per-token weighted
 * median / trimmed mean of the experts' log-probabilities (robust: docs/aggregation.md §3)
 */
export type AggregationRule = 'mixture' | 'product' | 'median' | 'trimmed'

/**
 * The aggregated distribution over the whole vocabulary, stored sparsely:
 * tokens in `ids` have probability `probs[i]`; each of the `restCount` other tokens of
 * the vocabulary has probability `restProb`. sum(probs) + restCount * restProb = 1.
 * `ids` are sorted by descending probability (ties by ascending id).
 */
export interface Aggregated {
  ids: Uint32Array
  probs: Float64Array
  restProb: number
  restCount: number
  /**
   * Only with a non-uniform tail ('unigram', 'bounded'): the rest tokens are NOT equally
   * probable; rest token t has probability restProb · weights[t] / mean (mean = the average
   * weight over the rest tokens), so restCount · restProb is still the rest's total mass.
   * Consumers that ignore it (sampling) treat the rest block as uniform with the same mass;
   * `probabilityOf()` applies it.
   */
  restShape?: { weights: Float64Array, mean: number }
}

export interface SamplingOptions {
  /** 0 = greedy (argmax, ties to lowest id) */
  temperature: number
  /** 0 = disabled */
  topK: number
  /** 1 = disabled */
  topP: number
}

/** A seeded uniform random source in [0, 1). */
export type Rng = () => number
