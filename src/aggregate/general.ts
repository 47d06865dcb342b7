/**
 * The general aggregation path (docs/aggregation.md §1 "Tails", §3 "Robust rules"): any rule
 * (mixture, product, median, trimmed) with any tail model (uniform, unigram, bounded).
 * `aggregate()` sends here everything but the uniform-tail mixture and product, which keep
 * their allocation-free fast path; for those two with the uniform tail both give the same
 * distribution (tests check it).
 *
 * Each expert e becomes: explicit values v_e(t) on a set E_e (its listed ids, plus, with the
 * 'bounded' tail, the unlisted ids whose prior share hits the cap), and v_e(t) = c_e · π(t)
 * on every other id, where π is the tail prior (mean 1; π ≡ 1 for the uniform tail).
 * Every rule then gives each id of the union U of the E_e its own value and every id outside
 * U the value R · π(t) (mixture: R = Σ w_e c_e; log rules: log R = rule over e of log c_e,
 * because shifting all values by log π(t) commutes with weighted sums, medians and trimmed
 * means), normalised over the whole vocabulary.
 */
import type { Aggregated, AggregationRule, WeightedDist } from './types.js'
import { AggregationError, PRODUCT_EPSILON } from './common.js'
import { priorHead, priorOrder, type TailPrior } from './prior.js'

/** how an expert's unlisted mass is shaped per expert (this file) */
export type ShapeTail = 'uniform' | 'unigram' | 'bounded'
/**
 * every tail model of aggregate(): the shapes, 'context' (src/aggregate/context-tail.ts) and
 * 'local' (the 'bounded' shape with, at every step, the router's own model's distribution as
 * the prior: src/router/local-model.ts)
 */
export type TailModel = ShapeTail | 'context' | 'local'

/**
 * 'bounded' tail: an id that another expert lists but this one does not gets this fraction of
 * this expert's least probable listed id (measured on held-out text: such tokens sit about
 * 1.1 nats below it on average, docs/quality.md)
 */
export const BOUNDED_COLISTED = Math.exp(-1)

/** default fraction of the total weight trimmed from each end by the 'trimmed' rule */
export const DEFAULT_TRIM = 0.25

export interface GeneralOptions {
  rule: AggregationRule
  vocabSize: number
  tail: ShapeTail
  /** required for 'unigram' and 'bounded' */
  prior?: TailPrior
  /** 'trimmed': fraction of the weight cut from each end, in [0, 0.5) */
  trim?: number
}

let markCap = 0
let mark = new Int32Array(0)
let stamp = 0

function marks (V: number): Int32Array {
  if (markCap < V) { markCap = V; mark = new Int32Array(V); stamp = 0 }
  if (++stamp > 0x7ffffff0) { mark.fill(0); stamp = 1 }
  return mark
}

interface Prepared {
  /** normalised weight */
  w: number
  /** explicit ids and their probabilities (already divided by S_e) */
  ids: number[]
  vals: number[]
  /** unlisted: p(t) = c · π(t) */
  c: number
}

/**
 * The bounded tail: the unlisted ids share `tail` in proportion to π, but none may exceed
 * `cap` (an unlisted token is never more probable than the least probable listed one).
 * Water-filling down the prior order: the ids that would exceed the cap get exactly the cap
 * (returned as explicit entries), the rest share what is left. Infeasible (the cap times the
 * number of unlisted ids is below the tail): no cap.
 */
function boundedTail (prior: TailPrior, listed: Int32Array, st: number, tail: number, cap: number, unlistedWeight: number, unlisted: number,
  outIds: number[], outVals: number[]): number {
  const head = priorHead(prior)
  if (head.bound > 0) {
    // a per-step prior ordered only at its head: enough unless the cap reaches past it
    const start = outIds.length
    const c = boundedTailOver(head.order, head.bound, prior, listed, st, tail, cap, unlistedWeight, unlisted, outIds, outVals)
    if (c !== undefined) return c
    for (let i = start; i < outIds.length; i++) listed[outIds[i]] = -1
    outIds.length = start
    outVals.length = start
  }
  return boundedTailOver(priorOrder(prior), 0, prior, listed, st, tail, cap, unlistedWeight, unlisted, outIds, outVals) as number
}

/**
 * boundedTail over `order` (the full order, bound 0; or a head holding every id heavier than
 * `bound`): undefined when a head ran out before the cap stopped binding
 */
function boundedTailOver (order: Uint32Array, bound: number, prior: TailPrior, listed: Int32Array, st: number, tail: number, cap: number, unlistedWeight: number, unlisted: number,
  outIds: number[], outVals: number[]): number | undefined {
  const pi = prior.weights
  let left = tail
  let R = unlistedWeight
  let c = R > 0 ? left / R : 0
  const start = outIds.length
  let seen = 0
  let k = 0
  let broke = false
  for (; k < order.length && seen < unlisted; k++) {
    const t = order[k]
    if (listed[t] === st) continue
    seen++
    if (c * pi[t] <= cap) return c // the remaining ids (lower π) are under the cap too
    outIds.push(t)
    outVals.push(cap)
    listed[t] = st
    left -= cap
    R -= pi[t]
    // R is a difference of much larger sums: recompute it when cancellation could bite
    if (R < 1e-6 * prior.total) R = unmarkedWeight(pi, listed, st)
    if (left <= 0 || R <= 0) { broke = true; break }
    c = left / R
  }
  if (bound > 0 && !broke && k === order.length && seen < unlisted) {
    // the head is used up: every other id weighs at most `bound`
    if (c * bound <= cap) return c
    return undefined
  }
  // every unlisted id would be capped: no shape satisfies the cap, keep the plain prior shape
  for (let i = start; i < outIds.length; i++) listed[outIds[i]] = -1
  outIds.length = start
  outVals.length = start
  return unlistedWeight > 0 ? tail / unlistedWeight : 0
}

/** Σ π(t) over the ids not marked with `st` (exact, O(V): only where a difference of sums would cancel) */
function unmarkedWeight (pi: Float64Array, marked: Int32Array, st: number): number {
  let s = 0
  for (let t = 0; t < pi.length; t++) if (marked[t] !== st) s += pi[t]
  return s
}

/** weighted median of values (weights > 0, Σ = 1): the mean of the two middle values at an exact half */
function weightedMedian (vals: Float64Array, ws: Float64Array, n: number, idx: Int32Array): number {
  sortIdx(vals, idx, n)
  let cum = 0
  for (let j = 0; j < n; j++) {
    cum += ws[idx[j]]
    if (cum > 0.5 + 1e-12) return vals[idx[j]]
    if (cum >= 0.5 - 1e-12) return j + 1 < n ? (vals[idx[j]] + vals[idx[j + 1]]) / 2 : vals[idx[j]]
  }
  return vals[idx[n - 1]]
}

/** weighted mean after cutting `trim` of the weight from each end (partial weights allowed) */
function trimmedMean (vals: Float64Array, ws: Float64Array, n: number, idx: Int32Array, trim: number): number {
  if (trim <= 0) {
    let s = 0
    for (let j = 0; j < n; j++) s += ws[j] * vals[j]
    return s
  }
  sortIdx(vals, idx, n)
  const lo = trim
  const hi = 1 - trim
  let cum = 0
  let s = 0
  let kept = 0
  for (let j = 0; j < n; j++) {
    const w = ws[idx[j]]
    const a = Math.max(cum, lo)
    const b = Math.min(cum + w, hi)
    if (b > a) { s += (b - a) * vals[idx[j]]; kept += b - a }
    cum += w
  }
  return kept > 0 ? s / kept : weightedMedian(vals, ws, n, idx)
}

/** insertion sort of idx[0..n) by vals ascending (n = K, small) */
function sortIdx (vals: Float64Array, idx: Int32Array, n: number): void {
  for (let j = 0; j < n; j++) idx[j] = j
  for (let j = 1; j < n; j++) {
    const x = idx[j]
    let i = j - 1
    while (i >= 0 && vals[idx[i]] > vals[x]) { idx[i + 1] = idx[i]; i-- }
    idx[i + 1] = x
  }
}

export function aggregateGeneral (inputs: WeightedDist[], opts: GeneralOptions): Aggregated {
  const V = opts.vocabSize
  const { rule, tail: tailModel } = opts
  const K = inputs.length
  const prior = tailModel === 'uniform' ? undefined : opts.prior
  if (tailModel !== 'uniform' && prior == null) throw new AggregationError(`the ${tailModel} tail needs a prior`)
  if (prior != null && prior.weights.length !== V) throw new AggregationError(`prior of ${prior.weights.length} tokens for a vocabulary of ${V}`)
  const trim = opts.trim ?? DEFAULT_TRIM
  if (rule === 'trimmed' && !(trim >= 0 && trim < 0.5)) throw new AggregationError(`bad trim ${trim}`)
  const pi = prior?.weights
  const piTotal = prior != null ? prior.total : V

  // validation (same rules and messages as the fast path) and per-expert preparation
  let wSum = 0
  for (let e = 0; e < K; e++) {
    const wt = inputs[e].weight
    if (!Number.isFinite(wt) || wt < 0) throw new AggregationError(`bad weight ${wt} (expert ${e})`)
    wSum += wt
  }
  const prepared: Prepared[] = []
  const pre: Array<{ tail: number, minP: number, listedWeight: number, unlisted: number }> = []
  for (let e = 0; e < K; e++) {
    const { dist, weight } = inputs[e]
    const { ids, logprobs, tailMass } = dist
    const n = ids.length
    if (logprobs.length !== n) throw new AggregationError(`ids/logprobs length mismatch (expert ${e})`)
    if (n > V) throw new AggregationError(`more ids than vocabSize (expert ${e})`)
    if (!Number.isFinite(tailMass) || tailMass < 0 || tailMass > 1 + 1e-6) throw new AggregationError(`bad tailMass ${tailMass} (expert ${e})`)
    const m = marks(V)
    const st = stamp
    let s = 0
    let listedWeight = 0
    let minP = Infinity
    const ex = new Array<number>(n)
    for (let i = 0; i < n; i++) {
      const id = ids[i]
      if (id >= V) throw new AggregationError(`id ${id} >= vocabSize ${V} (expert ${e})`)
      if (m[id] === st) throw new AggregationError(`duplicate id ${id}`)
      m[id] = st
      const lp = logprobs[i]
      if (Number.isNaN(lp) || lp === Infinity) throw new AggregationError(`bad logprob ${lp} (expert ${e})`)
      s += (ex[i] = Math.exp(lp))
      if (ex[i] < minP) minP = ex[i]
      listedWeight += pi != null ? pi[id] : 1
    }
    const unlisted = V - n
    const tail = unlisted > 0 ? tailMass : 0
    s += tail
    if (!(s > 0)) throw new AggregationError(`expert ${e} has zero total probability`)
    if (!(wSum > 0 && wSum < Infinity)) continue // reported below
    const w = weight / wSum
    if (w === 0) continue
    prepared.push({ w, ids: Array.from(ids), vals: ex.map(x => x / s), c: 0 })
    pre.push({ tail: tail / s, minP: minP / s, listedWeight, unlisted })
  }
  if (!(wSum > 0 && wSum < Infinity)) throw new AggregationError(`weights must sum to a positive finite number (got ${wSum})`)

  // tails: c_e, and with 'bounded' the explicit values of co-listed and capped ids
  const listedAny: number[] = []
  if (tailModel === 'bounded' && prepared.length > 1) {
    const m = marks(V)
    for (const x of prepared) for (const id of x.ids) if (m[id] !== stamp) { m[id] = stamp; listedAny.push(id) }
  }
  for (let e = 0; e < prepared.length; e++) {
    const x = prepared[e]
    const { tail, minP, listedWeight, unlisted } = pre[e]
    if (unlisted === 0 || tail === 0) { x.c = 0; continue }
    const m = marks(V)
    const st = stamp
    for (const id of x.ids) m[id] = st
    let unlistedWeight = piTotal - listedWeight
    if (pi != null && unlistedWeight < 1e-6 * piTotal) unlistedWeight = unmarkedWeight(pi, m, st)
    if (tailModel !== 'bounded' || x.ids.length === 0) { x.c = unlistedWeight > 0 ? tail / unlistedWeight : 0; continue }
    // ids other experts list but this one does not: just below its least probable listed id
    // (BOUNDED_COLISTED · cap), taking at most half of its tail
    let left = tail
    let unl = unlisted
    const co: number[] = []
    for (const id of listedAny) if (m[id] !== st) co.push(id)
    if (co.length > 0) {
      const each = Math.min(BOUNDED_COLISTED * minP, tail / (2 * co.length))
      for (const id of co) {
        m[id] = st
        x.ids.push(id)
        x.vals.push(each)
        unlistedWeight -= pi != null ? pi[id] : 1
      }
      left -= each * co.length
      unl -= co.length
      if (unlistedWeight < 1e-6 * piTotal) unlistedWeight = unmarkedWeight(pi as Float64Array, m, st)
    }
    x.c = unl > 0 ? boundedTail(prior as TailPrior, m, st, left, minP, unlistedWeight, unl, x.ids, x.vals) : 0
  }

  // union of the explicit ids
  const P = prepared.length
  const slot = new Map<number, number>()
  const unionIds: number[] = []
  for (const x of prepared) {
    for (const id of x.ids) if (!slot.has(id)) { slot.set(id, unionIds.length); unionIds.push(id) }
  }
  const U = unionIds.length
  // value per (slot, expert): explicit, else NaN (= the expert's tail value at that id)
  const table = new Float64Array(U * P).fill(NaN)
  for (let e = 0; e < P; e++) {
    const x = prepared[e]
    for (let i = 0; i < x.ids.length; i++) table[(slot.get(x.ids[i]) as number) * P + e] = x.vals[i]
  }
  const piOf = (t: number): number => pi != null ? pi[t] : 1
  let unionWeight = 0
  for (let s = 0; s < U; s++) unionWeight += piOf(unionIds[s])
  const restCount = V - U
  let restWeight = restCount > 0 ? Math.max(0, piTotal - unionWeight) : 0
  if (pi != null && restCount > 0 && restWeight < 1e-6 * piTotal) {
    restWeight = 0
    for (let t = 0; t < V; t++) if (!slot.has(t)) restWeight += pi[t]
  }

  const probs = new Float64Array(U)
  let restValue: number // probability (before normalisation) of a rest id per unit of π
  let sum = 0
  if (rule === 'mixture') {
    let R = 0
    for (const x of prepared) R += x.w * x.c
    for (let s = 0; s < U; s++) {
      const t = unionIds[s]
      let p = 0
      for (let e = 0; e < P; e++) {
        const v = table[s * P + e]
        p += prepared[e].w * (Number.isNaN(v) ? prepared[e].c * piOf(t) : v)
      }
      sum += (probs[s] = p)
    }
    restValue = R
    sum += restValue * restWeight
  } else {
    // log rules: floored log values, combined per id, then exp relative to the maximum
    const logEps = Math.log(PRODUCT_EPSILON / V)
    const floorLog = (p: number): number => { const l = Math.log(p); return l > logEps ? l : logEps }
    const ws = new Float64Array(P)
    for (let e = 0; e < P; e++) ws[e] = prepared[e].w
    const vals = new Float64Array(P)
    const idx = new Int32Array(P)
    const combine = (): number => {
      if (rule === 'product') { let a = 0; for (let e = 0; e < P; e++) a += ws[e] * vals[e]; return a }
      if (rule === 'median') return weightedMedian(vals, ws, P, idx)
      if (rule === 'trimmed') return trimmedMean(vals, ws, P, idx, trim)
      throw new AggregationError(`unknown rule ${String(rule)}`)
    }
    const logC = prepared.map(x => floorLog(x.c))
    const L = new Float64Array(U)
    let mx = -Infinity
    for (let s = 0; s < U; s++) {
      const lpi = Math.log(piOf(unionIds[s]))
      for (let e = 0; e < P; e++) {
        const v = table[s * P + e]
        // the tail value is floored on its scale c_e, then shaped by π (see the file comment)
        vals[e] = Number.isNaN(v) ? logC[e] + lpi : floorLog(v)
      }
      L[s] = combine()
      if (L[s] > mx) mx = L[s]
    }
    for (let e = 0; e < P; e++) vals[e] = logC[e]
    const Lrest = combine()
    if (restCount > 0 && Lrest > mx) mx = Lrest
    for (let s = 0; s < U; s++) sum += (probs[s] = Math.exp(L[s] - mx))
    restValue = restCount > 0 ? Math.exp(Lrest - mx) : 0
    sum += restValue * restWeight
  }
  if (!(sum > 0)) throw new AggregationError('aggregated distribution has zero total probability')
  const inv = 1 / sum
  for (let s = 0; s < U; s++) probs[s] *= inv
  // ids by descending probability, ties by ascending id
  const order = Array.from({ length: U }, (_, i) => i).sort((a, b) => probs[b] - probs[a] || unionIds[a] - unionIds[b])
  const outIds = new Uint32Array(U)
  const outProbs = new Float64Array(U)
  for (let i = 0; i < U; i++) { outIds[i] = unionIds[order[i]]; outProbs[i] = probs[order[i]] }
  const restMass = restValue * restWeight * inv
  const agg: Aggregated = { ids: outIds, probs: outProbs, restProb: restCount > 0 ? restMass / restCount : 0, restCount }
  if (pi != null && restCount > 0 && restWeight > 0) agg.restShape = { weights: pi, mean: restWeight / restCount }
  return agg
}
