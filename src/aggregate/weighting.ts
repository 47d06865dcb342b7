/**
 * Per-prompt expert weights from the experts' own log-likelihood of the prompt
 * (docs/quality.md "Perplexity weighting"):
 *
 *     w_e ∝ exp(−β · NLL_e / (n_e + n₀))          NLL_e = −Σ log p_e(prompt token)
 *
 * a softmax over the experts' per-token log-likelihood with inverse temperature β, where
 * n_e tokens were scored and n₀ pseudo-tokens of zero loss-difference shrink short prompts
 * towards uniform weights. An expert without a score (an old expert, the fallback path, a
 * one-token prompt) gets the mean weight of the scored ones; with none scored, all weights
 * are equal.
 */

/** the part of an OpenInfo this needs: Σ logprob over `count` prompt tokens */
export interface PromptScore {
  logprob?: number
  count?: number
}

/**
 * β: the softmax's inverse temperature, per nat of per-token NLL. Chosen on held-out
 * documents disjoint from the ones docs/quality.md reports (β ∈ {1, 2, 3, 4, 6} ×
 * n₀ ∈ {0, 8, 32}: 3 and 8 were best or within 0.3 % of it). With per-token NLLs of 4.44 /
 * 4.81 / 5.28 (meshtest-a / b / c) it gives about 0.70 / 0.24 / 0.06.
 */
export const DEFAULT_PERPLEXITY_BETA = 3
/** n₀: pseudo-tokens added to each expert's count */
export const DEFAULT_PERPLEXITY_PRIOR_TOKENS = 8

export interface PerplexityWeightOptions {
  beta?: number
  priorTokens?: number
}

/** Normalised weights (Σ = 1), one per score, in the same order. */
export function perplexityWeights (scores: PromptScore[], opts: PerplexityWeightOptions = {}): number[] {
  const beta = opts.beta ?? DEFAULT_PERPLEXITY_BETA
  const n0 = opts.priorTokens ?? DEFAULT_PERPLEXITY_PRIOR_TOKENS
  if (!(beta >= 0 && beta < Infinity)) throw new RangeError(`bad beta ${beta}`)
  if (!(n0 >= 0 && n0 < Infinity)) throw new RangeError(`bad priorTokens ${n0}`)
  const K = scores.length
  if (K === 0) return []
  const logits: Array<number | undefined> = scores.map(s => {
    if (s.logprob === undefined || s.count === undefined || !(s.count > 0) || !Number.isFinite(s.logprob)) return undefined
    return beta * Math.min(0, s.logprob) / (s.count + n0)
  })
  const known = logits.filter((x): x is number => x !== undefined)
  if (known.length === 0) return scores.map(() => 1 / K)
  const mx = Math.max(...known)
  const raw = logits.map(x => x === undefined ? NaN : Math.exp(x - mx))
  const meanKnown = known.reduce((a, x) => a + Math.exp(x - mx), 0) / known.length
  const filled = raw.map(x => Number.isNaN(x) ? meanKnown : x)
  const sum = filled.reduce((a, x) => a + x, 0)
  return filled.map(x => x / sum)
}
