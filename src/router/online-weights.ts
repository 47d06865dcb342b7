/**
 * The 'online' weighting (docs/quality.md §5 "Online weights"): what a router learns of its
 * experts from the tokens it emits, within a generation (OnlineWeights) and, bounded, across
 * its generations (ExpertMemory). `meshllm eval` runs the same code on held-out text.
 */
import { perplexityWeights, DEFAULT_PERPLEXITY_BETA, DEFAULT_PERPLEXITY_PRIOR_TOKENS } from '../aggregate/weighting.js'
import { LruMap, MAX_TRACKED_EXPERTS } from './health.js'
/**
 * tokens of an expert's record a router keeps between generations: a generation starts from
 * ≤ this many tokens of history per expert (older ones scaled down), then adds its own.
 * Chosen on the tuning documents (0 / 64 / 256 / unbounded: 256 best on 8,000 positions).
 */
export const DEFAULT_ONLINE_MEMORY_TOKENS = 256
/**
 * nats: the most evidence a router holds for or against leaving one expert out (see
 * OnlineWeights); bounded so that an expert that gets better (or a mesh that changes) is
 * weighed again within a few dozen tokens. 5 / 10 / 20 were within 0.05 % on the tuning documents.
 */
export const DEFAULT_ONLINE_EVIDENCE_CAP = 10
/**
 * the sets' evidence is taken from every this-many-th emitted token of a generation (its 1st,
 * 9th, 17th, …): each costs K + 1 aggregations on the token's path (≈ 1.8 ms at K = 4 on the
 * 2-core bench machine, which cost greedy speculation 10 % when taken at every token). A
 * deterministic function of the token's index, so speculative and token-by-token generation
 * weigh every position alike. 1 / 2 / 4 / 8 on the tuning documents: within 0.4 %, 8 best on
 * the first 1,500 positions and as good as 4 on the 8,000.
 */
export const DEFAULT_ONLINE_EVIDENCE_STRIDE = 8
/** prior probability of "every expert of the step"; the K leave-one-out sets share the rest */
export const DEFAULT_ONLINE_FULL_PRIOR = 0.5
/** the fewest experts of a step for which leaving one out is weighed (two left to mix) */
export const ONLINE_LEAVE_ONE_OUT_MIN = 3
/**
 * the most: weighing the sets costs K + 1 aggregations per emitted token (≈ 0.3 ms each at
 * K = 3, 0.7 ms at K = 8 on this project's 2-core bench machine); with more experts one of
 * them matters less, and a step uses the base weights
 */
export const ONLINE_LEAVE_ONE_OUT_MAX = 8

/** an expert's record: −Σ log p over `n` emitted tokens, and the evidence for leaving it out */
export interface ExpertScore {
  /** −Σ log p_e(token), p_e from the frame e sent before the token was known */
  nll: number
  /** tokens counted in nll */
  n: number
  /**
   * Σ over the steps it took part in of log p_without(token) − log p_all(token), nats,
   * clamped to ±evidenceCap: > 0 when the ensemble predicted better without it
   */
  evidence: number
}

export interface OnlineWeightOptions {
  /** β (default DEFAULT_PERPLEXITY_BETA) */
  beta?: number
  /** n₀ (default DEFAULT_PERPLEXITY_PRIOR_TOKENS) */
  priorTokens?: number
  /** default DEFAULT_ONLINE_EVIDENCE_CAP */
  evidenceCap?: number
  /** default DEFAULT_ONLINE_FULL_PRIOR, in (0, 1] (1: no leave-one-out sets) */
  fullPrior?: number
  /** default DEFAULT_ONLINE_EVIDENCE_STRIDE, an integer ≥ 1 */
  evidenceStride?: number
}

export interface ExpertMemoryOptions {
  /** default DEFAULT_ONLINE_MEMORY_TOKENS (0: remember nothing) */
  memoryTokens?: number
  /** default DEFAULT_ONLINE_EVIDENCE_CAP */
  evidenceCap?: number
  /** experts remembered, least recently used forgotten first (default MAX_TRACKED_EXPERTS) */
  maxExperts?: number
}

/** What a router remembers of each expert between generations: bounded in experts, tokens and evidence. */
export class ExpertMemory {
  private readonly scores: LruMap<string, ExpertScore>
  readonly memoryTokens: number
  readonly evidenceCap: number

  constructor (opts: ExpertMemoryOptions = {}) {
    this.memoryTokens = opts.memoryTokens ?? DEFAULT_ONLINE_MEMORY_TOKENS
    this.evidenceCap = opts.evidenceCap ?? DEFAULT_ONLINE_EVIDENCE_CAP
    if (!(this.memoryTokens >= 0 && this.memoryTokens < Infinity)) throw new RangeError(`bad memoryTokens ${this.memoryTokens}`)
    if (!(this.evidenceCap >= 0 && this.evidenceCap < Infinity)) throw new RangeError(`bad evidenceCap ${this.evidenceCap}`)
    this.scores = new LruMap(opts.maxExperts ?? MAX_TRACKED_EXPERTS)
  }

  get size (): number { return this.scores.size }

  /** a copy of what is remembered of `id` */
  get (id: string): ExpertScore | undefined {
    const s = this.scores.peek(id)
    return s != null ? { ...s } : undefined
  }

  /** adds what a generation observed of `id` (a difference of records): the sum is scaled to ≤ memoryTokens tokens, its evidence clamped */
  add (id: string, d: ExpertScore): void {
    if (this.memoryTokens === 0) return
    if (!(Number.isFinite(d.nll) && Number.isFinite(d.n) && Number.isFinite(d.evidence))) return
    const s = this.scores.peek(id) ?? { nll: 0, n: 0, evidence: 0 }
    let nll = s.nll + d.nll
    let n = s.n + d.n
    if (n > this.memoryTokens) { nll *= this.memoryTokens / n; n = this.memoryTokens }
    const evidence = Math.max(-this.evidenceCap, Math.min(this.evidenceCap, s.evidence + d.evidence))
    this.scores.set(id, { nll: Math.max(0, nll), n: Math.max(0, n), evidence })
  }
}

/**
 * One generation's 'online' weights. Each expert's base weight is perplexityWeights over its
 * record (the router's memory of it plus this generation's tokens), from the probability its
 * frame gave each emitted token before the token was known: nothing an expert says about
 * itself enters. On top, with 3–8 experts in a step, Bayesian model averaging over the step's
 * sets of experts: all of them (prior `fullPrior`) and each set without one expert e (prior
 * (1 − fullPrior) / K, times exp(evidence_e)); the weights used are the average of the sets'
 * renormalised base weights. The evidence of "without e" is how much better the aggregate
 * without e predicted the emitted tokens than the aggregate of all (the caller's
 * `probability`: the generation's own rule, tail and context), taken at every
 * `evidenceStride`th token and clamped to ±evidenceCap, so an expert that only dilutes the
 * others fades out. (Were the sets' predictions mixed rather than their weights averaged,
 * and without the clamp, the regret against the best set would be at most log(2K) nats over
 * a router's life.)
 */
export class OnlineWeights {
  /** records when first seen by this generation (from memory) and now */
  private readonly start = new Map<string, ExpertScore>()
  private readonly now = new Map<string, ExpertScore>()
  private readonly beta: number
  private readonly priorTokens: number
  private readonly evidenceCap: number
  private readonly fullPrior: number
  private readonly evidenceStride: number
  /** tokens observed by this generation */
  private observed = 0

  constructor (private readonly memory?: ExpertMemory, opts: OnlineWeightOptions = {}) {
    this.beta = opts.beta ?? DEFAULT_PERPLEXITY_BETA
    this.priorTokens = opts.priorTokens ?? DEFAULT_PERPLEXITY_PRIOR_TOKENS
    this.evidenceCap = opts.evidenceCap ?? memory?.evidenceCap ?? DEFAULT_ONLINE_EVIDENCE_CAP
    this.fullPrior = opts.fullPrior ?? DEFAULT_ONLINE_FULL_PRIOR
    this.evidenceStride = opts.evidenceStride ?? DEFAULT_ONLINE_EVIDENCE_STRIDE
    if (!(Number.isInteger(this.evidenceStride) && this.evidenceStride >= 1)) throw new RangeError(`bad evidenceStride ${this.evidenceStride}`)
    if (!(this.evidenceCap >= 0 && this.evidenceCap < Infinity)) throw new RangeError(`bad evidenceCap ${this.evidenceCap}`)
    if (!(this.fullPrior > 0 && this.fullPrior <= 1)) throw new RangeError(`bad fullPrior ${this.fullPrior}`)
  }

  private score (id: string): ExpertScore {
    let s = this.now.get(id)
    if (s == null) {
      const m = this.memory?.get(id) ?? { nll: 0, n: 0, evidence: 0 }
      this.start.set(id, { ...m })
      s = { ...m }
      this.now.set(id, s)
    }
    return s
  }

  /** the base weights (Σ = 1): perplexityWeights over the records */
  private base (ids: string[]): number[] {
    return perplexityWeights(ids.map(id => {
      const s = this.score(id)
      return s.n > 0 ? { logprob: -s.nll, count: s.n } : {}
    }), { beta: this.beta, priorTokens: this.priorTokens })
  }

  private weighsSets (K: number): boolean {
    return K >= ONLINE_LEAVE_ONE_OUT_MIN && K <= ONLINE_LEAVE_ONE_OUT_MAX && this.fullPrior < 1
  }

  /** the weights (Σ = 1) of a step's experts, in the order of `ids` (distinct) */
  weights (ids: string[]): number[] {
    const ws = this.base(ids)
    const K = ids.length
    if (!this.weighsSets(K)) return ws
    // log posterior of each set: [all, without ids[0], without ids[1], …]
    const logPost = [Math.log(this.fullPrior), ...ids.map(id => Math.log((1 - this.fullPrior) / K) + this.score(id).evidence)]
    const mx = Math.max(...logPost)
    const post = logPost.map(x => Math.exp(x - mx))
    const Z = post.reduce((a, x) => a + x, 0)
    const out = ws.map(w => w * post[0] / Z)
    for (let e = 0; e < K; e++) {
      const rest = 1 - ws[e]
      if (!(rest > 0)) { out[e] += post[e + 1] / Z; continue } // (cannot happen with K ≥ 2 finite weights)
      for (let f = 0; f < K; f++) if (f !== e) out[f] += ws[f] / rest * post[e + 1] / Z
    }
    return out
  }

  /**
   * The emitted token: each expert's probability of it from the frame it sent for this step
   * (sparseProbability, the uniform tail: its record), and `probability(members, weights)`,
   * the probability of the token in the aggregate of only those entries with those weights
   * (Σ = 1) — the distribution the step would have sampled from with that set of experts
   * (default: the mixture of the entries' `p`). Call after the step's weights(), before the
   * next step's.
   */
  observe (entries: Array<{ id: string, p: number }>, probability?: (members: number[], weights: number[]) => number): void {
    const K = entries.length
    const ps = entries.map(x => Math.max(Number.isFinite(x.p) ? x.p : 0, 1e-12))
    const sampled = this.observed++ % this.evidenceStride === 0
    if (sampled && this.weighsSets(K)) {
      const ws = this.base(entries.map(x => x.id))
      const all = entries.map((_, e) => e)
      // log p of a set; undefined where the caller has no probability for it (not a finite number in [0, 1])
      const prob = (members: number[], w: number[]): number | undefined => {
        const p = probability != null ? probability(members, w) : members.reduce((a, m, j) => a + w[j] * ps[m], 0)
        return p >= 0 && p <= 1 + 1e-9 ? Math.log(Math.max(p, 1e-300)) : undefined
      }
      const lpAll = prob(all, ws)
      for (let e = 0; e < K; e++) {
        const rest = 1 - ws[e]
        if (lpAll === undefined || !(rest > 1e-12)) continue
        const members = all.filter(m => m !== e)
        const lp = prob(members, members.map(m => ws[m] / rest))
        if (lp === undefined) continue
        const s = this.score(entries[e].id)
        s.evidence = Math.max(-this.evidenceCap, Math.min(this.evidenceCap, s.evidence + lp - lpAll))
      }
    }
    for (let e = 0; e < K; e++) {
      const s = this.score(entries[e].id)
      s.nll -= Math.log(ps[e])
      s.n++
    }
  }

  /** hands what this generation observed to the router's memory (once, at the generation's end) */
  commit (): void {
    if (this.memory == null) return
    for (const [id, s] of this.now) {
      const s0 = this.start.get(id) as ExpertScore
      if (s.n === s0.n && s.evidence === s0.evidence) continue
      this.memory.add(id, { nll: s.nll - s0.nll, n: s.n - s0.n, evidence: s.evidence - s0.evidence })
    }
    this.start.clear()
    this.now.clear()
  }
}
