/**
 * Aggregation of K sparse expert distributions into one distribution over the whole
 * vocabulary (formulas and rationale: docs/aggregation.md). Pure math, synchronous,
 * allocation-light: it runs once per generated token.
 */
import type { AggregationRule, Aggregated, SparseDist, WeightedDist } from './types.js'
import { aggregateGeneral, type TailModel } from './general.js'
import { AggregationError, PRODUCT_EPSILON } from './common.js'
import { defaultTailPrior, type TailPrior } from './prior.js'
import { applyContextTail } from './context-tail.js'
import { errorMessage } from '../util/errors.js'

export { AggregationError, PRODUCT_EPSILON }

export interface AggregateOptions {
  /** default 'mixture' */
  rule?: AggregationRule
  vocabSize: number
  /**
   * how an expert's tail mass is spread over the ids it did not list (docs/aggregation.md §1):
   * 'uniform' (default), 'unigram' (in proportion to `prior`), 'bounded' (like 'unigram', but
   * no unlisted id above the expert's least probable listed id), 'context' ('bounded', then the
   * unlisted mass favours tokens of `context`: src/aggregate/context-tail.ts), 'local'
   * ('bounded' with `prior` = the next-token distribution of the router's own model at this
   * step, then the 'context' boost when `context` is given)
   */
  tail?: TailModel
  /** the 'context' tail (and 'local', optional): the tokens so far (prompt and generated), oldest first */
  context?: ArrayLike<number>
  /**
   * the prior of the 'unigram' and 'bounded' tails (default: the shipped
   * models/tail-prior.bin.gz); the 'local' tail requires it: this step's `localTailPrior()`
   */
  prior?: TailPrior
  /** rule 'trimmed': fraction of the total weight cut from each end (default 0.25) */
  trim?: number
}

// ---------------------------------------------------------------------------------------
// Reusable scratch. `slotOf[id]` is the union slot of a token id or -1; only touched
// entries are reset after each call, so a call costs O(sum n_e), never O(V).

const slotMaps = new Map<number, Int32Array>()
const MAX_SLOT_MAPS = 4

function slotMapFor (vocabSize: number): Int32Array {
  let m = slotMaps.get(vocabSize)
  if (m === undefined) {
    if (slotMaps.size >= MAX_SLOT_MAPS) slotMaps.clear()
    m = new Int32Array(vocabSize).fill(-1)
    slotMaps.set(vocabSize, m)
  }
  return m
}

let cap = 0
let slotIds = new Uint32Array(0) // token id of each union slot
let acc = new Float64Array(0) // per-slot accumulator
let seenBy = new Int32Array(0) // last expert that listed the slot (duplicate detection)
let ex = new Float64Array(0) // exp(logprob) of every input entry, cached by pass 1
let touched = 0 // slots created by the current call so far

function ensureCapacity (n: number): void {
  if (n <= cap) return
  cap = Math.max(n, cap * 2, 1024)
  slotIds = new Uint32Array(cap)
  acc = new Float64Array(cap)
  seenBy = new Int32Array(cap)
  ex = new Float64Array(cap)
}

let kCap = 0
let expertScale = new Float64Array(0) // mixture: 1/S_e; product: log S_e
let expertBase = new Float64Array(0) // an unlisted token's p (mixture) or floored log p (product)

function ensureExperts (k: number): void {
  if (k <= kCap) return
  kCap = Math.max(k, kCap * 2, 16)
  expertScale = new Float64Array(kCap)
  expertBase = new Float64Array(kCap)
}

// ---------------------------------------------------------------------------------------

/**
 * Aggregates K weighted sparse distributions over a vocabulary of `vocabSize` tokens.
 * Each expert is first normalised (S_e = sum exp(lp) + tailMass, which absorbs wire
 * quantisation); its tail is spread uniformly over the V - n_e ids it did not list.
 * Throws AggregationError on invalid input.
 */
export function aggregate (inputs: WeightedDist[], opts: AggregateOptions): Aggregated {
  const V = opts.vocabSize
  const rule = opts.rule ?? 'mixture'
  const mixture = rule === 'mixture'
  const tail = opts.tail ?? 'uniform'
  if (!Number.isInteger(V) || V < 1) throw new AggregationError(`bad vocabSize ${V}`)
  if (!mixture && rule !== 'product' && rule !== 'median' && rule !== 'trimmed') throw new AggregationError(`unknown rule ${String(rule)}`)
  if (tail === 'context') {
    if (opts.context == null) throw new AggregationError("the 'context' tail needs the context tokens")
    return applyContextTail(aggregate(inputs, { ...opts, tail: 'bounded' }), opts.context)
  }
  if (tail === 'local') {
    // the 'bounded' shape with this step's distribution of the router's own model as the
    // prior, then (given the context) the 'context' boost of tokens the context holds
    if (opts.prior == null) throw new AggregationError("the 'local' tail needs the local model's distribution (prior)")
    if (inputs.length === 0) throw new AggregationError('no inputs')
    const agg = aggregateGeneral(inputs, { rule, vocabSize: V, tail: 'bounded', prior: opts.prior, trim: opts.trim })
    return opts.context != null ? applyContextTail(agg, opts.context) : agg
  }
  if (tail !== 'uniform' && tail !== 'unigram' && tail !== 'bounded') throw new AggregationError(`unknown tail ${String(tail)}`)
  const K = inputs.length
  if (K === 0) throw new AggregationError('no inputs')
  if (tail !== 'uniform' || (rule !== 'mixture' && rule !== 'product')) {
    let prior = opts.prior
    if (tail !== 'uniform' && prior == null) {
      try {
        prior = defaultTailPrior(V)
      } catch (err) {
        throw new AggregationError(`the ${tail} tail needs a prior: ${errorMessage(err)}`)
      }
    }
    return aggregateGeneral(inputs, { rule, vocabSize: V, tail, prior, trim: opts.trim })
  }

  // Pass 1: validate; weights; per-expert normaliser S_e and unlisted value.
  let total = 0
  for (let e = 0; e < K; e++) total += inputs[e].dist.ids.length
  ensureCapacity(total)
  ensureExperts(K)
  let wSum = 0
  for (let e = 0, off = 0; e < K; e++) {
    const { dist, weight } = inputs[e]
    if (!Number.isFinite(weight) || weight < 0) throw new AggregationError(`bad weight ${weight} (expert ${e})`)
    wSum += weight
    const { ids, logprobs, tailMass } = dist
    const n = ids.length
    if (logprobs.length !== n) throw new AggregationError(`ids/logprobs length mismatch (expert ${e})`)
    if (n > V) throw new AggregationError(`more ids than vocabSize (expert ${e})`)
    if (!Number.isFinite(tailMass) || tailMass < 0 || tailMass > 1 + 1e-6) {
      throw new AggregationError(`bad tailMass ${tailMass} (expert ${e})`)
    }
    let s = 0
    for (let i = 0; i < n; i++) {
      if (ids[i] >= V) throw new AggregationError(`id ${ids[i]} >= vocabSize ${V} (expert ${e})`)
      const lp = logprobs[i]
      if (Number.isNaN(lp) || lp === Infinity) throw new AggregationError(`bad logprob ${lp} (expert ${e})`)
      s += (ex[off + i] = Math.exp(lp))
    }
    off += n
    const unlisted = V - n
    const tail = unlisted > 0 ? tailMass : 0 // a full listing has nowhere to put a tail
    s += tail
    if (!(s > 0)) throw new AggregationError(`expert ${e} has zero total probability`)
    if (mixture) {
      expertScale[e] = 1 / s
      expertBase[e] = unlisted > 0 ? tail / (s * unlisted) : 0
    } else {
      expertScale[e] = Math.log(s)
      expertBase[e] = unlisted > 0 && tail > 0 ? Math.log(tail / (s * unlisted)) : -Infinity
    }
  }
  if (!(wSum > 0 && wSum < Infinity)) throw new AggregationError(`weights must sum to a positive finite number (got ${wSum})`)

  // Pass 2: union of listed ids into slots. acc[slot] sums each listing expert's weighted
  // deviation from its own unlisted value, so that value(t) = rest + acc[slot].
  const slotOf = slotMapFor(V)
  const logEps = Math.log(PRODUCT_EPSILON / V)
  let rest = 0 // mixture: sum w_e base_e; product: sum w_e max(log base_e, logEps)
  let u = 0
  let dup = -1
  touched = 0
  // live experts first: their ids are the union slots [0, U)
  for (let e = 0, off = 0; e < K && dup < 0; off += inputs[e].dist.ids.length, e++) {
    const w = inputs[e].weight / wSum
    if (w === 0) continue
    const base = mixture ? expertBase[e] : Math.max(expertBase[e], logEps)
    rest += w * base
    u = listExpert(slotOf, inputs[e].dist, e, off, u, w, mixture, expertScale[e], base, logEps)
    if (u < 0) dup = ~u
  }
  const U = u
  // experts of weight 0 are absent: only checked for duplicate ids (slots >= U, discarded)
  for (let e = 0; e < K && dup < 0; e++) {
    if (inputs[e].weight / wSum !== 0) continue
    u = listExpert(slotOf, inputs[e].dist, e, 0, u, 0, true, 0, 0, 0)
    if (u < 0) dup = ~u
  }
  // reset the touched entries of the shared map (also on the error path)
  for (let s = 0; s < touched; s++) slotOf[slotIds[s]] = -1
  if (dup >= 0) throw new AggregationError(`duplicate id ${dup}`)

  // Values -> probabilities, normalised over the whole vocabulary.
  const restCount = V - U
  const outIds = new Uint32Array(U)
  const outProbs = new Float64Array(U)
  let restProb: number
  let sum = 0
  if (mixture) {
    for (let s = 0; s < U; s++) {
      const p = rest + acc[s]
      outProbs[s] = p > 0 ? p : 0 // clamp rounding below zero
      sum += outProbs[s]
    }
    restProb = restCount > 0 ? rest : 0
  } else {
    // P = exp(L - m) / Z with m the max log value, for stability
    let m = restCount > 0 ? rest : -Infinity
    for (let s = 0; s < U; s++) m = Math.max(m, rest + acc[s])
    for (let s = 0; s < U; s++) sum += (outProbs[s] = Math.exp(rest + acc[s] - m))
    restProb = restCount > 0 ? Math.exp(rest - m) : 0
  }
  const inv = 1 / (sum + restCount * restProb)
  for (let s = 0; s < U; s++) outProbs[s] *= inv
  outIds.set(slotIds.subarray(0, U))
  sortByProb(outProbs, outIds, 0, U)
  return { ids: outIds, probs: outProbs, restProb: restProb * inv, restCount }
}

/**
 * The probability of one token in an aggregated distribution: its listed probability, else
 * the rest probability (shaped by restShape for the non-uniform tails).
 */
/**
 * One expert's probability of `token` as `aggregate([{ dist, weight: 1 }], { vocabSize })`
 * (uniform tail) gives it, in O(n) without building the aggregate: its listed value, else its
 * tail spread evenly, normalised by S = Σ exp(logprob) + tail ('online' weights, eval).
 */
export function sparseProbability (dist: SparseDist, token: number, vocabSize: number): number {
  const { ids, logprobs } = dist
  const n = ids.length
  const tail = vocabSize > n ? dist.tailMass : 0
  let s = tail
  let hit = -1
  for (let i = 0; i < n; i++) {
    s += Math.exp(logprobs[i])
    if (ids[i] === token) hit = i
  }
  if (!(s > 0)) return 0
  return hit >= 0 ? Math.exp(logprobs[hit]) / s : tail / s / (vocabSize - n)
}

export function probabilityOf (agg: Aggregated, token: number): number {
  const { ids, probs } = agg
  for (let i = 0; i < ids.length; i++) if (ids[i] === token) return probs[i]
  if (agg.restCount === 0) return 0
  const shape = agg.restShape
  return shape != null ? agg.restProb * shape.weights[token] / shape.mean : agg.restProb
}

/**
 * Adds one expert's listed ids to the union, which has `u` slots so far; with w > 0 also
 * accumulates w * (v - base) per listed id (v = p, or floored log p for the product rule).
 * Returns the new slot count, or ~id of a duplicate id.
 */
function listExpert (slotOf: Int32Array, dist: WeightedDist['dist'], e: number, off: number, u: number,
  w: number, mixture: boolean, scale: number, base: number, logEps: number): number {
  const { ids, logprobs } = dist
  for (let i = 0, n = ids.length; i < n; i++) {
    const id = ids[i]
    let s = slotOf[id]
    if (s < 0) {
      s = u++
      slotOf[id] = s
      slotIds[s] = id
      acc[s] = 0
      touched = u
    } else if (seenBy[s] === e) {
      return ~id
    }
    seenBy[s] = e
    if (w === 0) continue
    const v = mixture ? ex[off + i] * scale : Math.max(logprobs[i] - scale, logEps)
    acc[s] += w * (v - base)
  }
  return u
}

/**
 * In-place sort of parallel arrays on [lo, hi): descending p, ties by ascending id.
 * Quicksort (median of three) + insertion sort; several times faster than
 * Array.prototype.sort with a comparator at these sizes.
 */
function sortByProb (P: Float64Array, I: Uint32Array, lo: number, hi: number): void {
  while (hi - lo > 16) {
    const mid = (lo + hi) >>> 1
    let pa = P[lo]; let ia = I[lo]
    let pb = P[mid]; let ib = I[mid]
    let pc = P[hi - 1]; let ic = I[hi - 1]
    let t: number
    if (pb > pa || (pb === pa && ib < ia)) { t = pa; pa = pb; pb = t; t = ia; ia = ib; ib = t }
    if (pc > pb || (pc === pb && ic < ib)) {
      t = pb; pb = pc; pc = t; t = ib; ib = ic; ic = t
      if (pb > pa || (pb === pa && ib < ia)) { t = pa; pa = pb; pb = t; t = ia; ia = ib; ib = t }
    }
    const pp = pb // pivot: median of the three
    const pi = ib
    let i = lo
    let j = hi - 1
    while (i <= j) {
      while (P[i] > pp || (P[i] === pp && I[i] < pi)) i++
      while (pp > P[j] || (pp === P[j] && pi < I[j])) j--
      if (i <= j) {
        t = P[i]; P[i] = P[j]; P[j] = t
        t = I[i]; I[i] = I[j]; I[j] = t
        i++; j--
      }
    }
    // recurse into the smaller part, loop on the larger
    if (j - lo < hi - i) { sortByProb(P, I, lo, j + 1); lo = i } else { sortByProb(P, I, i, hi); hi = j + 1 }
  }
  for (let i = lo + 1; i < hi; i++) {
    const p = P[i]
    const id = I[i]
    let j = i - 1
    while (j >= lo && (p > P[j] || (p === P[j] && id < I[j]))) { P[j + 1] = P[j]; I[j + 1] = I[j]; j-- }
    P[j + 1] = p
    I[j + 1] = id
  }
}
