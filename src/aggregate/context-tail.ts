/**
 * The 'context' tail (docs/aggregation.md §1, docs/quality.md §3): a token that already
 * occurred in the context is far more likely than its prior share among the tokens no expert
 * listed (names, identifiers and rare words repeat: the cache language model of Kuhn & De Mori,
 * 1990). After aggregation with the 'bounded' tail, every *rest* token (listed by no expert)
 * that occurs in the context gets CONTEXT_BOOST × its share of the rest mass, capped at the
 * least probable listed token (never below its share without the boost), and becomes an explicit entry (so sampling sees it); the other
 * rest tokens share what is left in their prior shape. Listed probabilities and the rest's
 * total mass are unchanged: only how the unlisted mass is spread changes.
 */
import type { Aggregated } from './types.js'

/** boost of a context token's share of the unlisted mass (tuned on documents 31–47, docs/quality.md) */
export const CONTEXT_BOOST = 1000
/** the most recent tokens that count as context */
export const CONTEXT_WINDOW = 1024

export function applyContextTail (agg: Aggregated, context: ArrayLike<number>, boost = CONTEXT_BOOST): Aggregated {
  const restMass = agg.restCount * agg.restProb
  if (!(restMass > 0) || context.length === 0 || boost === 1) return agg
  const shape = agg.restShape
  const explicit = new Set<number>(agg.ids)
  const cand = new Set<number>()
  const V = shape?.weights.length ?? Infinity
  for (let i = Math.max(0, context.length - CONTEXT_WINDOW); i < context.length; i++) {
    const t = context[i]
    if (!explicit.has(t) && t >= 0 && t < V) cand.add(t)
  }
  if (cand.size === 0 || cand.size >= agg.restCount) return agg
  const pRest = (t: number): number => shape != null ? agg.restProb * shape.weights[t] / shape.mean : agg.restProb
  let candMass = 0
  let candWeight = 0
  for (const t of cand) { candMass += pRest(t); candWeight += shape != null ? shape.weights[t] : 1 }
  // boosted shares of the rest mass, before the cap
  const z = 1 + (boost - 1) * candMass / restMass
  const cap = agg.probs.length > 0 ? agg.probs[agg.probs.length - 1] : Infinity
  const ids: number[] = []
  const probs: number[] = []
  let given = 0
  for (const t of cand) {
    // boosted up to the cap; never below what the prior shape already gave it
    const p = Math.max(pRest(t), Math.min(cap, pRest(t) * boost / z))
    ids.push(t)
    probs.push(p)
    given += p
  }
  const restCount = agg.restCount - cand.size
  const left = Math.max(0, restMass - given)
  // the other rest tokens keep their prior shape and share what is left
  const mean = shape != null ? (shape.mean * agg.restCount - candWeight) / restCount : 1
  const restProb = left / restCount
  // merge the new explicit entries into the listed ones: descending probability, ties by id
  const order = ids.map((_t, i) => i).sort((a, b) => probs[b] - probs[a] || ids[a] - ids[b])
  const n = agg.ids.length + ids.length
  const outIds = new Uint32Array(n)
  const outProbs = new Float64Array(n)
  let a = 0
  let b = 0
  for (let k = 0; k < n; k++) {
    const takeOld = b >= order.length || (a < agg.ids.length && (agg.probs[a] > probs[order[b]] || (agg.probs[a] === probs[order[b]] && agg.ids[a] < ids[order[b]])))
    if (takeOld) { outIds[k] = agg.ids[a]; outProbs[k] = agg.probs[a]; a++ } else { outIds[k] = ids[order[b]]; outProbs[k] = probs[order[b]]; b++ }
  }
  return {
    ids: outIds,
    probs: outProbs,
    restProb,
    restCount,
    ...(shape != null && mean > 0 ? { restShape: { weights: shape.weights, mean } } : {})
  }
}
