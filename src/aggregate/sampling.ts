/**
 * Token sampling from an Aggregated distribution: greedy, or temperature -> top-k -> top-p.
 * The "rest" tokens (restCount unlisted ids, restProb each) are handled analytically;
 * see docs/aggregation.md.
 */
import type { Aggregated, Rng, SamplingOptions } from './types.js'

export class SamplingError extends Error {
  static override name = 'SamplingError'
  override name = 'SamplingError'
}

/** The exact distribution `sample` draws from. */
export interface SamplingDist {
  /** kept listed ids, in rank order (descending probability, ties by ascending id) */
  ids: Uint32Array
  /** their probabilities, same order */
  probs: Float64Array
  /** probability of each kept rest token */
  restProb: number
  /**
   * number of kept rest tokens: the `restCount` lowest ids NOT in `agg.ids`
   * (all unlisted tokens unless top-k / top-p cut the rest block)
   */
  restCount: number
}

// ---------------------------------------------------------------------------------------
// PRNG: sfc32 (Chris Doty-Humphrey's Small Fast Counting generator, PractRand-clean),
// its 128-bit state seeded by splitmix32.

function splitmix32 (a: number): () => number {
  return () => {
    a = (a + 0x9e3779b9) | 0
    let t = a ^ (a >>> 16)
    t = Math.imul(t, 0x21f0aaad)
    t ^= t >>> 15
    t = Math.imul(t, 0x735a2d97)
    return (t ^ (t >>> 15)) >>> 0
  }
}

/** Deterministic uniform [0, 1) source (32-bit resolution); the seed's integer part counts. */
export function createRng (seed: number): Rng {
  if (!Number.isFinite(seed)) throw new SamplingError(`bad seed ${seed}`)
  const hi = Math.floor(seed / 4294967296) >>> 0
  const sm = splitmix32((seed >>> 0) ^ Math.imul(hi, 0x85ebca6b))
  let a = sm() | 0
  let b = sm() | 0
  let c = sm() | 0
  let d = sm() | 0
  const next = (): number => {
    const t = (((a + b) | 0) + d) | 0
    d = (d + 1) | 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) | 0
    c = (c << 21) | (c >>> 11)
    c = (c + t) | 0
    return (t >>> 0) / 4294967296
  }
  for (let i = 0; i < 12; i++) next() // warm up, as the reference implementation does
  return next
}

// ---------------------------------------------------------------------------------------

/**
 * Greedy token: the most probable listed id (ties: lowest id). A rest token is returned
 * only when restProb strictly exceeds every listed probability: then the lowest unlisted id.
 */
export function argmax (agg: Aggregated): number {
  const { ids, probs } = agg
  let best = -1
  let bestP = -Infinity
  for (let i = 0; i < ids.length; i++) {
    const p = probs[i]
    if (p > bestP || (p === bestP && ids[i] < ids[best])) { best = i; bestP = p }
  }
  if (agg.restCount > 0 && (best < 0 || agg.restProb > bestP)) return nthUnlisted(sortedIds(agg.ids), 0)
  if (best < 0) throw new SamplingError('empty distribution')
  return ids[best]
}

/** Draws a token id from `distributionAfterSampling(agg, opts)`; greedy (T = 0) does not consume rng. */
export function sample (agg: Aggregated, opts: SamplingOptions, rng: Rng): number {
  if (opts.temperature === 0) { checkOptions(opts); return argmax(agg) }
  const d = distributionAfterSampling(agg, opts)
  let u = rng()
  let last = -1
  for (let i = 0; i < d.ids.length; i++) {
    const p = d.probs[i]
    if (u < p) return d.ids[i]
    u -= p
    if (p > 0) last = i
  }
  if (d.restCount > 0 && d.restProb > 0) {
    // rest token: uniform among the restCount lowest unlisted ids
    const k = Math.min(d.restCount - 1, Math.floor(u / d.restProb))
    return nthUnlisted(sortedIds(agg.ids), k)
  }
  return d.ids[last] // u landed past the end by rounding
}

/**
 * The distribution `sample` draws from: temperature (p^(1/T), renormalised, rest bucket
 * included analytically), then top-k, then top-p, renormalised. Ranking: listed tokens
 * with p >= restProb, then the rest tokens (by ascending id), then the other listed ones.
 * Temperature preserves the ranking, so top-k is applied first and p^(1/T) is computed
 * only for the tokens top-k keeps (identical result, much cheaper for small k).
 */
export function distributionAfterSampling (agg: Aggregated, opts: SamplingOptions): SamplingDist {
  checkOptions(opts)
  if (opts.temperature === 0) {
    return { ids: Uint32Array.of(argmax(agg)), probs: Float64Array.of(1), restProb: 0, restCount: 0 }
  }
  const { ids, probs } = ranked(agg)
  const n = ids.length
  const restN = agg.restCount > 0 && agg.restProb > 0 ? agg.restCount : 0

  // ranked list = A: listed [0, a) | R: restN rest tokens | B: listed [a, n)
  let a = n
  if (restN > 0) { a = 0; while (a < n && probs[a] >= agg.restProb) a++ }
  const pmax = a > 0 || restN === 0 ? probs[0] : agg.restProb
  if (!(pmax > 0)) throw new SamplingError('distribution has no positive mass')

  // top-k: the k first of the ranked list
  let keepA = a
  let keepR = restN
  let keepB = n - a
  const k = opts.topK
  if (k > 0) {
    keepA = Math.min(k, a)
    keepR = Math.min(k - keepA, restN)
    keepB = Math.min(k - keepA - keepR, n - a)
  }

  // temperature on the kept tokens: q = (p / pmax)^(1/T), in rank order (A then B)
  const invT = 1 / opts.temperature
  const pow = (p: number): number => invT === 1 ? p / pmax : Math.pow(p / pmax, invT)
  const q = new Float64Array(keepA + keepB)
  for (let i = 0; i < keepA; i++) q[i] = pow(probs[i])
  for (let i = 0; i < keepB; i++) q[keepA + i] = pow(probs[a + i])
  const qr = keepR > 0 ? pow(agg.restProb) : 0
  const qa = keepA // B's values start at q[qa]

  // top-p: smallest ranked prefix whose mass reaches topP of the kept mass
  if (opts.topP < 1) {
    let mass = keepR * qr
    for (let i = 0; i < q.length; i++) mass += q[i]
    const thr = opts.topP * mass * (1 - 1e-12) // slack: do not add a token for a rounding error
    let cum = 0
    let done = false
    for (let i = 0; i < keepA && !done; i++) {
      cum += q[i]
      if (cum >= thr) { keepA = i + 1; keepR = 0; keepB = 0; done = true }
    }
    if (!done && keepR > 0) {
      if (cum + keepR * qr >= thr) {
        keepR = Math.min(keepR, Math.max(1, Math.ceil((thr - cum) / qr)))
        keepB = 0
        done = true
      } else cum += keepR * qr
    }
    for (let i = 0; i < keepB && !done; i++) {
      cum += q[qa + i]
      if (cum >= thr) { keepB = i + 1; done = true }
    }
  }
  if (qr === 0) keepR = 0 // underflowed at a low temperature: probability 0

  // renormalise over the kept tokens
  const outIds = new Uint32Array(keepA + keepB)
  const outProbs = new Float64Array(keepA + keepB)
  let z = keepR * qr
  for (let i = 0; i < keepA; i++) { outIds[i] = ids[i]; z += (outProbs[i] = q[i]) }
  for (let i = 0; i < keepB; i++) { outIds[keepA + i] = ids[a + i]; z += (outProbs[keepA + i] = q[qa + i]) }
  const inv = 1 / z
  for (let i = 0; i < outProbs.length; i++) outProbs[i] *= inv
  return { ids: outIds, probs: outProbs, restProb: keepR > 0 ? qr * inv : 0, restCount: keepR }
}

// ---------------------------------------------------------------------------------------

function checkOptions (o: SamplingOptions): void {
  if (!Number.isFinite(o.temperature) || o.temperature < 0) throw new SamplingError(`bad temperature ${o.temperature}`)
  if (!Number.isInteger(o.topK) || o.topK < 0) throw new SamplingError(`bad topK ${o.topK}`)
  if (!(o.topP > 0 && o.topP <= 1)) throw new SamplingError(`bad topP ${o.topP}`)
}

/** agg's listed tokens by descending probability, ties by ascending id (no copy if already so). */
function ranked (agg: Aggregated): { ids: Uint32Array, probs: Float64Array } {
  const { ids, probs } = agg
  const before = (i: number, j: number): boolean => probs[i] > probs[j] || (probs[i] === probs[j] && ids[i] < ids[j])
  let sorted = true
  for (let i = 1; i < ids.length && sorted; i++) sorted = before(i - 1, i)
  if (sorted) return { ids, probs }
  const idx = Array.from(ids, (_, i) => i).sort((i, j) => probs[j] - probs[i] || ids[i] - ids[j])
  return { ids: Uint32Array.from(idx, i => ids[i]), probs: Float64Array.from(idx, i => probs[i]) }
}

function sortedIds (ids: Uint32Array): Uint32Array {
  return Uint32Array.from(ids).sort()
}

/**
 * The k-th (0-based) non-negative integer not in `sorted` (ascending, distinct):
 * with c = #{i : sorted[i] - i <= k} (a prefix, found by binary search), it is k + c.
 */
export function nthUnlisted (sorted: Uint32Array, k: number): number {
  let lo = 0
  let hi = sorted.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (sorted[mid] - mid <= k) lo = mid + 1
    else hi = mid
  }
  return k + lo
}

// ---------------------------------------------------------------------------------------
// Speculative decoding (lossless): accept a proposed token with the probability the target
// distribution gives it (a deterministic drafter proposes with probability 1), and on
// rejection draw from the target with that token removed, renormalised (Leviathan et al.
// 2023, Chen et al. 2023, with a one-hot draft distribution). The emitted token is then
// distributed exactly as `sample` would draw it. See docs/speculative.md.

/** probability that `sample(agg, opts, ·)` returns `token` */
export function samplingProbability (agg: Aggregated, opts: SamplingOptions, token: number): number {
  const d = distributionAfterSampling(agg, opts)
  for (let i = 0; i < d.ids.length; i++) if (d.ids[i] === token) return d.probs[i]
  if (d.restCount > 0 && d.restProb > 0) {
    const sorted = sortedIds(agg.ids)
    if (!isListed(sorted, token) && unlistedRank(sorted, token) < d.restCount) return d.restProb
  }
  return 0
}

/**
 * Speculative check of one proposed token. Returns `{ accepted: true, token }` with
 * probability P(token), else `{ accepted: false, token: t }` with t drawn from the target
 * without `token`. At temperature 0: accepted iff `token` is the argmax, else the argmax.
 */
export function speculativeStep (agg: Aggregated, opts: SamplingOptions, proposed: number, rng: Rng): { accepted: boolean, token: number } {
  if (opts.temperature === 0) {
    const best = argmax(agg)
    return best === proposed ? { accepted: true, token: proposed } : { accepted: false, token: best }
  }
  const d = distributionAfterSampling(agg, opts)
  const sorted = sortedIds(agg.ids)
  let pProposed = 0
  let listedIndex = -1
  for (let i = 0; i < d.ids.length; i++) if (d.ids[i] === proposed) { pProposed = d.probs[i]; listedIndex = i; break }
  const restKept = d.restCount > 0 && d.restProb > 0
  const proposedIsRest = listedIndex < 0 && restKept && !isListed(sorted, proposed) && unlistedRank(sorted, proposed) < d.restCount
  if (proposedIsRest) pProposed = d.restProb
  if (rng() < pProposed) return { accepted: true, token: proposed }
  // residual: the target without the proposed token
  let u = rng() * (1 - pProposed)
  let last = -1
  for (let i = 0; i < d.ids.length; i++) {
    if (i === listedIndex) continue
    const p = d.probs[i]
    if (u < p) return { accepted: false, token: d.ids[i] }
    u -= p
    if (p > 0) last = i
  }
  if (restKept) {
    const n = d.restCount - (proposedIsRest ? 1 : 0)
    if (n > 0) {
      let k = Math.min(n - 1, Math.floor(u / d.restProb))
      if (proposedIsRest && k >= unlistedRank(sorted, proposed)) k++
      return { accepted: false, token: nthUnlisted(sorted, k) }
    }
  }
  return { accepted: false, token: last >= 0 ? d.ids[last] : argmax(agg) }
}

function isListed (sorted: Uint32Array, token: number): boolean {
  let lo = 0; let hi = sorted.length - 1
  while (lo <= hi) { const m = (lo + hi) >> 1; if (sorted[m] === token) return true; if (sorted[m] < token) lo = m + 1; else hi = m - 1 }
  return false
}

/** rank of an unlisted token among the unlisted ids (0 = lowest unlisted id) */
function unlistedRank (sorted: Uint32Array, token: number): number {
  let lo = 0; let hi = sorted.length
  while (lo < hi) { const m = (lo + hi) >> 1; if (sorted[m] < token) lo = m + 1; else hi = m }
  return token - lo
}

/**
 * A drafter's proposal distribution for one position: explicit ids with probabilities summing
 * to 1 (zero everywhere else). Build it with `proposalDistribution`.
 */
export interface Proposal {
  ids: Uint32Array
  probs: Float64Array
}

/**
 * The proposal of a drafter whose own next-token frame lists `ids` with `logprobs`: its listed
 * tokens only (renormalised), after the same temperature / top-k / top-p as the target, so
 * that it overlaps the target as much as the drafter's model allows. Temperature must be > 0.
 */
export function proposalDistribution (ids: Uint32Array, logprobs: Float32Array, opts: SamplingOptions, vocabSize: number): Proposal {
  if (!(opts.temperature > 0)) throw new SamplingError('a sampled proposal needs temperature > 0')
  let mx = -Infinity
  for (let i = 0; i < logprobs.length; i++) if (logprobs[i] > mx) mx = logprobs[i]
  const ws = Float64Array.from(logprobs, lp => Math.exp(lp - mx))
  const s = ws.reduce((a, b) => a + b, 0)
  const order = [...ids.keys()].sort((a, b) => ws[b] - ws[a] || ids[a] - ids[b])
  const agg: Aggregated = { ids: Uint32Array.from(order, i => ids[i]), probs: Float64Array.from(order, i => ws[i] / s), restProb: 0, restCount: Math.max(0, vocabSize - ids.length) }
  const d = distributionAfterSampling(agg, opts)
  return { ids: d.ids, probs: d.probs }
}

/** draws a token from a proposal */
export function sampleProposal (q: Proposal, rng: Rng): number {
  let u = rng()
  for (let i = 0; i < q.ids.length; i++) {
    if (u < q.probs[i]) return q.ids[i]
    u -= q.probs[i]
  }
  return q.ids[q.ids.length - 1]
}

/**
 * Speculative check of a token `proposed` that was drawn from the proposal `q` (a sampling
 * drafter): accepted with probability min(1, p(x) / q(x)), else a token drawn from the
 * residual max(0, p − q), renormalised (Leviathan et al. 2023, Chen et al. 2023). p is the
 * target after temperature / top-k / top-p. The emitted token is distributed exactly as
 * `sample` would draw it, and the acceptance rate is Σ min(p, q) = 1 − TV(p, q) instead of
 * p(x) for a greedy draft. At temperature 0 it is `speculativeStep`.
 */
export function speculativeStepSampled (agg: Aggregated, opts: SamplingOptions, proposed: number, q: Proposal, rng: Rng): { accepted: boolean, token: number } {
  if (opts.temperature === 0) return speculativeStep(agg, opts, proposed, rng)
  const d = distributionAfterSampling(agg, opts)
  const sorted = sortedIds(agg.ids)
  const restKept = d.restCount > 0 && d.restProb > 0
  const inRest = (t: number): boolean => restKept && !isListed(sorted, t) && unlistedRank(sorted, t) < d.restCount
  const qOf = new Map<number, number>()
  for (let i = 0; i < q.ids.length; i++) if (q.probs[i] > 0) qOf.set(q.ids[i], q.probs[i])
  let px = 0
  for (let i = 0; i < d.ids.length; i++) if (d.ids[i] === proposed) { px = d.probs[i]; break }
  if (px === 0 && inRest(proposed)) px = d.restProb
  const qx = qOf.get(proposed) ?? 0
  if (qx > 0 && rng() * qx < px) return { accepted: true, token: proposed }
  // residual r(t) = max(0, p(t) − q(t)): the target's listed ids, the rest tokens the proposal
  // covers, and the other rest tokens (q = 0 there: r = p)
  const covered: number[] = []
  for (const t of qOf.keys()) if (inRest(t)) covered.push(t)
  covered.sort((a, b) => a - b)
  let z = 0
  for (let i = 0; i < d.ids.length; i++) z += Math.max(0, d.probs[i] - (qOf.get(d.ids[i]) ?? 0))
  for (const t of covered) z += Math.max(0, d.restProb - (qOf.get(t) ?? 0))
  const plainRest = restKept ? d.restCount - covered.length : 0
  z += plainRest * (restKept ? d.restProb : 0)
  if (!(z > 0)) return { accepted: false, token: sample(agg, opts, rng) } // p = q: unreachable (x was accepted)
  let u = rng() * z
  let last = -1
  for (let i = 0; i < d.ids.length; i++) {
    const r = Math.max(0, d.probs[i] - (qOf.get(d.ids[i]) ?? 0))
    if (u < r) return { accepted: false, token: d.ids[i] }
    u -= r
    if (r > 0) last = d.ids[i]
  }
  for (const t of covered) {
    const r = Math.max(0, d.restProb - (qOf.get(t) ?? 0))
    if (u < r) return { accepted: false, token: t }
    u -= r
    if (r > 0) last = t
  }
  if (plainRest > 0) {
    // the k-th rest token the proposal does not cover: unlisted by agg.ids ∪ covered
    const k = Math.min(plainRest - 1, Math.floor(u / d.restProb))
    const both = Uint32Array.from([...sorted, ...covered]).sort()
    return { accepted: false, token: nthUnlisted(both, k) }
  }
  return { accepted: false, token: last >= 0 ? last : argmax(agg) }
}
