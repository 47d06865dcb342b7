/**
 * Per-expert reputation (docs/quality.md "Byzantine experts"). After every aggregated step
 * each contributing expert's frame is compared with the ensemble result:
 *
 *   d_e = ½ · TV(p_e, P) + ½ · [argmax p_e ≠ argmax P]
 *
 * where TV is the total-variation distance over the union of the listed ids plus one bucket
 * for everything else (an expert's tail mass is spread uniformly over its unlisted ids).
 * D_e is the running mean of d_e over the first 1/alpha observations, then an EWMA. An expert is an *outlier* at a step when, with at least `minSamples`
 * observations of its own and at least two other experts with `minSamples` observations,
 *
 *   D_e > ratio · R_e  and  D_e − M_e > margin,      M_e = median of the other experts' D,
 *                                                    R_e = max(M_e, floor)
 *
 * Comparing with the median of the others (not an absolute threshold) keeps honest but weak
 * small models, which all disagree with the ensemble a fair amount, from being flagged. The
 * floor keeps an honest model that is merely *different* from being flagged when the others
 * agree with each other perfectly: two copies of one model (common: donors run popular
 * models) have D ≈ 0 and would make every other model an outlier of a "majority" of one
 * model (measured: meshtest-a and -b, honest, D 0.45–0.54 next to two meshtest-c, D ≈ 0.00,
 * were banned without it; the four liars of test/integration/byzantine.spec.ts measure D
 * 0.81–0.98, honest experts 0.08–0.29 beside them). Aggregation weight, with T = ratio · R_e:
 * 1 while D_e ≤ T (or while not enough is known), else ((1 − D_e) / (1 − T))², falling to 0
 * as D_e reaches its maximum 1 (a liar at D 0.95 next to a floor-level T 0.7 keeps 3 % of its
 * weight until it is banned). Every outlier
 * observation adds a strike, every normal one removes one; at `banStrikes` strikes the
 * expert is banned (not selectable) for banBaseMs · 2^(bans−1) (capped at banMaxMs), and its
 * EWMA and strikes start over when the ban ends.
 */
import type { Aggregated } from '../aggregate/types.js'
import type { Frame } from '../wire/types.js'
import { LruMap, MAX_TRACKED_EXPERTS } from './health.js'

export interface ReputationOptions {
  /** EWMA factor of D_e (default 0.1) */
  alpha?: number
  /** own observations before an expert can be judged (default 4) */
  minSamples?: number
  /** D_e must exceed ratio × the others' median (default 2) */
  ratio?: number
  /** … and the others' median by this much (default 0.4) */
  margin?: number
  /**
   * the disagreement an honest expert of a different model may show however closely the
   * others agree: R_e never goes below it (default REPUTATION_FLOOR = 0.35, so with ratio 2 an
   * outlier has D_e > 0.7)
   */
  floor?: number
  /** strikes that ban (default 6) */
  banStrikes?: number
  /** first ban (ms), doubled with every further ban (default 30 s) */
  banBaseMs?: number
  /** longest ban (ms, default 1 h) */
  banMaxMs?: number
  now?: () => number
  /** experts tracked at most (least recently used dropped first, banned ones last; default MAX_TRACKED_EXPERTS) */
  maxEntries?: number
}

export interface ExpertReputation {
  /** EWMA of the per-step disagreement d_e in [0, 1] */
  disagreement: number
  samples: number
  /** frames observed in total (never reset) */
  frames: number
  strikes: number
  bans: number
  bannedUntil: number
  /** frames observed when the first ban started (undefined: never banned) */
  framesAtFirstBan?: number
  /** the last aggregation weight computed */
  weight: number
  /** steps at which per-step screening left its frame out (never reset) */
  screened: number
}

const MIN_SAMPLES = 4
const BAN_STRIKES = 6
/** ReputationOptions.floor's default */
export const REPUTATION_FLOOR = 0.35

export class ReputationTable {
  private readonly table: LruMap<string, ExpertReputation>
  constructor (private readonly opts: ReputationOptions = {}) {
    // identities are free: bounded, and a ban in force is the last thing forgotten
    this.table = new LruMap(opts.maxEntries ?? MAX_TRACKED_EXPERTS, (_id, r) => !(r.bannedUntil > this.now()))
  }

  get size (): number { return this.table.size }

  private now (): number { return (this.opts.now ?? Date.now)() }

  get (id: string): ExpertReputation {
    let r = this.table.get(id)
    if (r == null) {
      r = { disagreement: 0, samples: 0, frames: 0, strikes: 0, bans: 0, bannedUntil: 0, weight: 1, screened: 0 }
      this.table.set(id, r)
    }
    return r
  }

  /** the entry, without creating or refreshing one */
  peek (id: string): ExpertReputation | undefined {
    return this.table.peek(id)
  }

  /** no track record yet (fewer than minSamples frames judged) or judged an outlier recently (strikes > 0) */
  suspect (id: string): boolean {
    const r = this.table.peek(id)
    return r == null || r.samples < (this.opts.minSamples ?? MIN_SAMPLES) || r.strikes > 0
  }

  banned (id: string): boolean {
    const r = this.table.peek(id)
    if (r == null || r.bannedUntil === 0) return false
    if (r.bannedUntil > this.now()) return true
    // ban over: start over with a clean EWMA (the ban count stays)
    r.bannedUntil = 0
    r.samples = 0
    r.disagreement = 0
    r.strikes = 0
    r.weight = 1
    return false
  }

  /** M_e: median of the other judged experts' disagreement (undefined when fewer than 2) */
  private othersMedian (id: string): number | undefined {
    const min = this.opts.minSamples ?? MIN_SAMPLES
    const vals: number[] = []
    for (const [k, r] of this.table) if (k !== id && r.samples >= min && !this.banned(k)) vals.push(r.disagreement)
    if (vals.length < 2) return undefined
    vals.sort((a, b) => a - b)
    const m = vals.length >> 1
    return vals.length % 2 === 1 ? vals[m] : (vals[m - 1] + vals[m]) / 2
  }

  /** R_e: the others' median, never below the floor */
  private reference (m: number): number {
    return Math.max(m, this.opts.floor ?? REPUTATION_FLOOR, 1e-3)
  }

  /** aggregation weight multiplier in (0, 1] */
  weight (id: string): number {
    const r = this.table.peek(id)
    if (r == null || r.samples < (this.opts.minSamples ?? MIN_SAMPLES)) return 1
    const m = this.othersMedian(id)
    if (m === undefined || r.disagreement <= 0) return 1
    const t = (this.opts.ratio ?? 2) * this.reference(m)
    const w = r.disagreement <= t || t >= 1 ? 1 : ((1 - Math.min(1, r.disagreement)) / (1 - t)) ** 2
    r.weight = Math.max(1e-3, w)
    return r.weight
  }

  /** per-step screening (screenOutliers) left this expert's frame out of a step */
  noteScreened (id: string): void {
    this.get(id).screened++
  }

  /** an expert failed validation or misbehaved outright: one full disagreement observation */
  penalize (id: string): void {
    this.record(id, 1)
  }

  /** records one step: each contributing expert's frame against the aggregate P */
  observe (frames: Array<{ id: string, frame: Frame }>, agg: Aggregated, vocabSize: number): void {
    if (frames.length < 2) return // one expert is its own ensemble: nothing to compare
    const q = new Map<number, number>()
    for (let i = 0; i < agg.ids.length; i++) q.set(agg.ids[i], agg.probs[i])
    const top = agg.ids.length > 0 ? agg.ids[0] : -1
    for (const { id, frame } of frames) this.record(id, disagreement(frame, q, agg.restProb, top, vocabSize))
  }

  private record (id: string, d: number): void {
    if (this.banned(id)) return
    const r = this.get(id)
    const a = this.opts.alpha ?? 0.1
    // a running mean until 1/alpha samples exist (one unlucky first step does not dominate), then the EWMA
    const w = Math.max(a, 1 / (r.samples + 1))
    r.disagreement = (1 - w) * r.disagreement + w * d
    r.samples++
    r.frames++
    const min = this.opts.minSamples ?? MIN_SAMPLES
    if (r.samples < min) return
    const m = this.othersMedian(id)
    if (m === undefined) return
    const outlier = r.disagreement > (this.opts.ratio ?? 2) * this.reference(m) && r.disagreement - m > (this.opts.margin ?? 0.4)
    r.strikes = outlier ? r.strikes + 1 : Math.max(0, r.strikes - 1)
    if (r.strikes >= (this.opts.banStrikes ?? BAN_STRIKES)) {
      r.bans++
      r.framesAtFirstBan ??= r.frames
      const ms = Math.min(this.opts.banMaxMs ?? 3_600_000, (this.opts.banBaseMs ?? 30_000) * 2 ** (r.bans - 1))
      r.bannedUntil = this.now() + ms
      r.strikes = 0
    }
  }

  entries (): Array<[string, ExpertReputation]> {
    return [...this.table.entries()]
  }
}

/** d_e = ½ TV(p_e, P) + ½ [argmax p_e ≠ argmax P] */
export function disagreement (frame: Frame, q: Map<number, number>, restProb: number, aggTop: number, vocabSize: number): number {
  const n = frame.ids.length
  const unlisted = vocabSize - n
  const pUnlisted = unlisted > 0 ? frame.tailMass / unlisted : 0
  const own = new Map<number, number>()
  let best = -1
  let bestLp = -Infinity
  for (let i = 0; i < n; i++) {
    const lp = frame.logprobs[i]
    own.set(frame.ids[i], Math.exp(lp))
    if (lp > bestLp || (lp === bestLp && frame.ids[i] < best)) { bestLp = lp; best = frame.ids[i] }
  }
  let abs = 0
  let massP = 0
  let massQ = 0
  for (const [t, qt] of q) {
    const p = own.get(t) ?? pUnlisted
    abs += Math.abs(p - qt)
    massP += p
    massQ += qt
  }
  for (const [t, p] of own) {
    if (q.has(t)) continue
    abs += Math.abs(p - restProb)
    massP += p
    massQ += restProb
  }
  const tv = Math.min(1, Math.max(0, 0.5 * (abs + Math.abs(massQ - massP))))
  return 0.5 * tv + 0.5 * (best === aggTop ? 0 : 1)
}

/**
 * Checks a frame beyond what the wire decoder enforces; returns the reason it is invalid or
 * undefined. A frame that fails is treated as a failure of the expert that sent it.
 */
export function invalidFrame (frame: Frame, vocabSize: number): string | undefined {
  const n = frame.ids.length
  if (n === 0) return 'empty frame'
  if (frame.logprobs.length !== n) return 'ids/logprobs length mismatch'
  if (!Number.isFinite(frame.tailMass) || frame.tailMass < 0 || frame.tailMass > 1 + 1e-6) return `bad tail mass ${frame.tailMass}`
  let mass = frame.tailMass
  for (let i = 0; i < n; i++) {
    if (frame.ids[i] >= vocabSize) return `id ${frame.ids[i]} outside the vocabulary`
    if (i > 0 && frame.ids[i] <= frame.ids[i - 1]) return 'ids not strictly ascending'
    const lp = frame.logprobs[i]
    if (!(lp <= 1e-3) || Number.isNaN(lp)) return `bad logprob ${lp}`
    mass += Math.exp(lp)
  }
  if (!(mass > 0.8 && mass < 1.2)) return `probability mass ${mass.toFixed(3)} ≠ 1`
  return undefined
}

/** per-step screening: an expert this far from its nearest fellow expert is left out of the step */
export const SCREEN_RATIO = 1.5
/** margin for any expert: only gross outliers (a weak honest expert is often 0.15–0.4 further from the others) */
export const SCREEN_MARGIN = 0.45
/** margin for a suspect: an expert with no track record yet (fewer than minSamples frames) or judged an outlier recently (strikes > 0) */
export const SCREEN_MARGIN_SUSPECT = 0.15
/**
 * the median the ratio test compares with never goes below this: when the other frames come
 * from copies of one model (nearest distance ≈ 0) an honest different model is not screened
 * for being different (so with SCREEN_RATIO 1.5 a frame is screened only beyond TV 0.45)
 */
export const SCREEN_FLOOR = 0.3

/** total-variation distance of two frames (union of listed ids + one bucket for the rest) */
export function frameTV (f: Frame, g: Frame, vocabSize: number): number {
  const pf = new Map<number, number>()
  for (let i = 0; i < f.ids.length; i++) pf.set(f.ids[i], Math.exp(f.logprobs[i]))
  const gu = vocabSize > g.ids.length ? g.tailMass / (vocabSize - g.ids.length) : 0
  const fu = vocabSize > f.ids.length ? f.tailMass / (vocabSize - f.ids.length) : 0
  let abs = 0
  let mf = 0
  let mg = 0
  const seen = new Set<number>()
  for (let i = 0; i < g.ids.length; i++) {
    const t = g.ids[i]
    const pg = Math.exp(g.logprobs[i])
    const p = pf.get(t) ?? fu
    abs += Math.abs(p - pg); mf += p; mg += pg
    seen.add(t)
  }
  for (const [t, p] of pf) {
    if (seen.has(t)) continue
    abs += Math.abs(p - gu); mf += p; mg += gu
  }
  return Math.min(1, 0.5 * (abs + Math.abs(mf - mg)))
}

/**
 * Per-step outlier screening (K ≥ 3): n_e = the TV distance from frame e to its nearest other
 * frame; frame e is left out of this step's aggregate when n_e > SCREEN_RATIO × max(m,
 * SCREEN_FLOOR) and n_e > SCREEN_MARGIN + m, m the median of the other frames' n. Never
 * screens half or more.
 */
export function screenOutliers (frames: Frame[], vocabSize: number, ratio = SCREEN_RATIO, margin: number | ((j: number) => number) = SCREEN_MARGIN, floor = SCREEN_FLOOR): number[] {
  const k = frames.length
  if (k < 3) return []
  const d = frames.map(() => new Array<number>(k).fill(0))
  for (let i = 0; i < k; i++) for (let j = i + 1; j < k; j++) d[i][j] = d[j][i] = frameTV(frames[i], frames[j], vocabSize)
  const nn = d.map((row, i) => Math.min(...row.filter((_x, j) => j !== i)))
  const out: number[] = []
  for (let j = 0; j < k; j++) {
    const others = nn.filter((_x, i) => i !== j).sort((x, y) => x - y)
    const h = others.length >> 1
    const m = others.length % 2 === 1 ? others[h] : (others[h - 1] + others[h]) / 2
    if (nn[j] > ratio * Math.max(m, floor) && nn[j] - m > (typeof margin === 'number' ? margin : margin(j))) out.push(j)
  }
  return 2 * out.length < k ? out : []
}

/**
 * One step of the router's robust aggregation (docs/quality.md "Byzantine experts"), shared by
 * `Router.generate` and the evaluation (src/eval/eval.ts) so that both measure the same thing:
 * each frame's aggregation weight is multiplied by its reputation weight, gross outliers of
 * this step are screened out (K ≥ 3), and every frame is then observed against the result.
 * `run(keep, reputationWeights)` aggregates the frames `keep` selects.
 */
export function robustAggregate (frames: Array<{ id: string, frame: Frame }>, table: ReputationTable, vocabSize: number, run: (keep: (j: number) => boolean, reputationWeights: number[]) => Aggregated): Aggregated {
  const rw = frames.map(f => table.weight(f.id))
  // gross outliers always; an expert without a track record or with strikes already at a smaller distance
  const out = screenOutliers(frames.map(f => f.frame), vocabSize, SCREEN_RATIO, j => table.suspect(frames[j].id) ? SCREEN_MARGIN_SUSPECT : SCREEN_MARGIN)
  for (const j of out) table.noteScreened(frames[j].id)
  const agg = run(j => !out.includes(j), rw)
  table.observe(frames, agg, vocabSize)
  return agg
}
