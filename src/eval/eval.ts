/**
 * Teacher-forced evaluation through the real protocol path (docs/quality.md).
 *
 * `evaluateMesh()` opens one /meshllm/infer/1.0.0 session per expert and window and steps
 * through held-out documents with the TRUE tokens, each request carrying the known next token
 * as `target`: every expert answers every position with its top-256 frame plus the exact
 * full-vocabulary logprob of the true token (Frame.targetLogprob). `scoreEvaluation()` (pure,
 * no network) then computes, on exactly the same positions:
 *   - per expert: the perplexity through its frames (each tail model, as the aggregator
 *     spreads it) and its exact perplexity (from targetLogprob);
 *   - per ensemble variant (expert subset × rule × weighting × tail): the perplexity of
 *     `aggregate()`'s distribution, P(true token) = its listed probability or the rest
 *     probability (`probabilityOf`).
 *
 * Windows: each document is cut into windows of at most `window` tokens (BOS + up to
 * window − 1 document tokens); each window is a fresh session, so every position is predicted
 * from BOS and the preceding tokens of its window only.
 */
import { readFileSync } from 'node:fs'
import { gunzipSync } from 'node:zlib'
import type { Router } from '../router/router.js'
import { ExpertSession } from '../router/expert-client.js'
import type { ExpertRecord } from '../wire/record.js'
import type { Frame } from '../wire/types.js'
import { aggregate, probabilityOf, sparseProbability } from '../aggregate/aggregate.js'
import type { AggregationRule, WeightedDist } from '../aggregate/types.js'
import type { TailModel } from '../aggregate/general.js'
import { defaultTailPrior, localTailPrior, type TailPrior } from '../aggregate/prior.js'
import type { LocalModel } from '../router/local-model.js'
import type { FrameEncoding } from '../wire/frame.js'
import { GENERATE_DEFAULTS, ROBUST_MIN_K, defaultTail, robustByDefault } from '../router/options.js'
import { errorMessage } from '../util/errors.js'
import { perplexityWeights, DEFAULT_PERPLEXITY_BETA, DEFAULT_PERPLEXITY_PRIOR_TOKENS } from '../aggregate/weighting.js'
import { ExpertMemory, OnlineWeights } from '../router/online-weights.js'
import { NoExpertsError } from '../util/errors.js'
import { ReputationTable, robustAggregate } from '../router/reputation.js'

export type Weighting = 'uniform' | 'fixed' | 'perplexity' | 'online'

export const DEFAULT_RULES: AggregationRule[] = ['mixture', 'product', 'median']
export const DEFAULT_WEIGHTINGS: Weighting[] = ['uniform', 'fixed', 'perplexity', 'online']
export const DEFAULT_TAILS: TailModel[] = ['uniform', 'unigram', 'bounded', 'context']
export const MAX_WINDOW = 256

export interface ScoreOptions {
  /** aggregation rules to compare (default mixture, product, median) */
  rules?: AggregationRule[]
  /** expert weightings to compare (default uniform, fixed, perplexity) */
  weighting?: Weighting[]
  /** tail models to compare (default uniform, unigram, bounded) */
  tails?: TailModel[]
  /**
   * 'fixed' weights by peer id or model name (missing: 1). Without them 'fixed' uses the
   * hindsight weights w_e ∝ exp(−β · NLL_e / n) from each expert's exact NLL over ALL
   * evaluated positions (an upper reference, not something a router knows in advance).
   */
  fixedWeights?: Record<string, number>
  /** β and n₀ of the perplexity weighting (src/aggregate/weighting.ts) */
  beta?: number
  priorTokens?: number
  /** also every subset of two or more experts (default: only the whole set) */
  subsets?: boolean
  /** prior of the unigram / bounded tails (default: the shipped one) */
  prior?: TailPrior
  /** 'trimmed' rule: fraction trimmed from each end */
  trim?: number
  /**
   * with and/or without the router's robust aggregation (screening, reputation weights and
   * bans, src/router/reputation.ts `robustAggregate`), replayed position by position with a
   * fresh reputation table per variant; robust variants only for sets of ≥ ROBUST_MIN_K
   * experts, where it is the router's default (default: [false, true])
   */
  robust?: boolean[]
}

export interface EvalOptions extends ScoreOptions {
  router: Router
  /** documents (text) */
  heldout: string[]
  /** experts in the ensemble (default: every expert found or listed, at most 8) */
  k?: number
  /** use these experts (peer ids), in this order */
  experts?: string[]
  /** positions to evaluate in all (default 1500) */
  maxPositions?: number
  /** window length in tokens, BOS included, ≤ 256 (default 256) */
  window?: number
  /**
   * document tokens at the start of each window that go into the Open (prefilled with
   * score_prompt, not evaluated; their exact log-likelihood seeds the perplexity weights):
   * default 0 (every document token is evaluated)
   */
  prompt?: number
  /**
   * windows per document (default 1: every document contributes its first window, so the
   * positions spread over many documents; Infinity: each document to its end)
   */
  windowsPerDocument?: number
  /**
   * documents [first, last] (0-based, inclusive) of the held-out file to take windows from
   * (default: all, in file order). docs/quality.md: report 0–30, tuning 31–59, unseen 60–91
   */
  documents?: [number, number]
  /**
   * the router's own model for the 'local' tail (src/router/local-model.ts): its full
   * next-token distribution at every position, computed here beside the experts' frames
   */
  localModel?: LocalModel
  /** per-request deadline, ms (default 30 s) */
  requestTimeoutMs?: number
  /** how long an expert may take to accept a session before it counts as unreachable (default 5 s) */
  probeTimeoutMs?: number
  /** how the experts are asked to write frames: 'compact' (default, what a router's generations read) or 'full' (RouterOptions.frames) */
  frames?: FrameEncoding
  signal?: AbortSignal
  /** called after each window with the positions collected so far */
  onProgress?: (positions: number, total: number) => void
}

/** What the network part collects: per expert, per position, its frame; and the true tokens. */
export interface Collected {
  experts: Array<{ id: string, model: string }>
  /** the true token of every position */
  targets: Uint32Array
  /** window index of every position */
  windowOf: Uint32Array
  /** [expert][position] */
  frames: Frame[][]
  /** [expert][window]: the Open's prompt score (prompt > 0 only) */
  promptScores?: Array<Array<{ logprob?: number, count?: number }>>
  /** bytes each expert session sent + received, per expert */
  bytes: number[]
  windows: number
  documents: number
  /** experts found but not evaluated: unreachable, or failed during the collection */
  skipped?: Array<{ id: string, model: string, error: string }>
  /** the 'local' tail: the local model's name and, per position, its distribution (sparse, see LocalDist) */
  local?: { model: string, exact: boolean, dists: LocalDist[] }
}

/**
 * The local model's distribution at one position, kept sparse: exact weights (mean 1 over the
 * vocabulary, localTailPrior's scale) of its heaviest ids (sorted, every id heavier than
 * `bound`), of every id an expert listed there and of the true token; every other id gets
 * `fill` = the rest of the total, evenly. Aggregation only reads weights at listed ids, the
 * true token and the head, so the 'local' tail scores exactly as the router computes it.
 */
export interface LocalDist {
  head: Uint32Array
  bound: number
  ids: Uint32Array
  weights: Float64Array
  fill: number
}

function sparseLocal (prior: TailPrior, keep: Iterable<number>): LocalDist {
  const set = new Set<number>(keep)
  const head = prior.head ?? new Uint32Array(0)
  for (const t of head) set.add(t)
  const ids = Uint32Array.from(set)
  const weights = new Float64Array(ids.length)
  let sum = 0
  for (let i = 0; i < ids.length; i++) sum += (weights[i] = prior.weights[ids[i]])
  const V = prior.weights.length
  return { head, bound: prior.headBound ?? Infinity, ids, weights, fill: V > ids.length ? Math.max(0, V - sum) / (V - ids.length) : 0 }
}

function priorOfLocal (d: LocalDist, V: number, name: string): TailPrior {
  const w = new Float64Array(V).fill(d.fill > 0 ? d.fill : 1e-300)
  for (let i = 0; i < d.ids.length; i++) w[d.ids[i]] = d.weights[i]
  const prior: TailPrior = { weights: w, total: V, name }
  if (Number.isFinite(d.bound)) { prior.head = d.head; prior.headBound = Math.max(d.bound, d.fill) }
  return prior
}

export interface ExpertQuality {
  model: string
  /** through its frames with the uniform tail (what a router sees) */
  perplexity: number
  /** through its full distribution (Frame.targetLogprob); null when any position lacks it */
  exactPerplexity: number | null
  /** through its frames, per tail model */
  perplexityByTail: Partial<Record<TailModel, number>>
  /** share of positions whose true token the frame lists */
  listedRate: number
  /** positions without targetLogprob */
  missingExact: number
}

export interface Variant {
  experts: string[]
  models: string[]
  rule: AggregationRule
  weighting: Weighting
  tail: TailModel
  /** the router's robust aggregation (screening, reputation) was on */
  robust: boolean
  perplexity: number
  /** robust only: frames screened out of their step, and experts banned during the run */
  screened?: number
  banned?: string[]
}

export interface EvalResult {
  positions: number
  windows: number
  documents: number
  /**
   * the router's default configuration over the whole expert set: what `meshllm generate` uses
   * with no flags (rule, weighting, tail and robustness of GENERATE_DEFAULTS, the 'local' tail
   * only with a local model); `best` is the best variant, for reference
   */
  ensemble: Variant
  best: Variant
  variants: Variant[]
  experts: Record<string, ExpertQuality>
  /** bytes per expert per evaluated position, both directions, framing included */
  bytesPerExpertToken: number
  /** how the experts were asked to write frames (evaluateMesh; compact ones from an expert that predates them are full) */
  frames?: FrameEncoding
  elapsedMs?: number
  /** experts found but not evaluated, and why */
  skipped: Array<{ id: string, model: string, error: string }>
  /** the local model of the 'local' tail (never one of the experts), null without one */
  localModel: { model: string, exact: boolean } | null
  weightingParams: { beta: number, priorTokens: number, fixed: 'given' | 'hindsight' }
}

/** held-out file (gzip or plain text, NUL-separated documents) → non-empty documents */
export function readHeldout (path: string): string[] {
  let buf: Buffer = readFileSync(path)
  if (buf[0] === 0x1f && buf[1] === 0x8b) buf = gunzipSync(buf)
  return buf.toString('utf8').split('\0').map(d => d.trim()).filter(d => d.length > 0)
}

/** The network part: teacher-forced frames of every chosen expert at every position. */
export async function collectFrames (opts: EvalOptions): Promise<Collected> {
  const { router } = opts
  const window = opts.window ?? MAX_WINDOW
  if (!Number.isInteger(window) || window < 2 || window > MAX_WINDOW) throw new RangeError(`window must be an integer in [2, ${MAX_WINDOW}], got ${window}`)
  const maxPositions = opts.maxPositions ?? 1500
  if (!Number.isInteger(maxPositions) || maxPositions < 1) throw new RangeError(`maxPositions must be a positive integer, got ${maxPositions}`)
  const prompt = opts.prompt ?? 0
  if (!Number.isInteger(prompt) || prompt < 0 || prompt > window - 2) throw new RangeError(`prompt must be an integer in [0, ${window - 2}]`)
  const signal = opts.signal ?? new AbortController().signal
  const tok = router.tokenizer
  const bos = tok.bos ?? 128000

  let { compatible } = await router.experts(true, signal)
  let found: ExpertRecord[]
  if (opts.experts != null && opts.experts.length > 0) {
    found = opts.experts.map(id => compatible.find(r => r.peerId.toString() === id)).filter((r): r is ExpertRecord => r != null)
    const missing = opts.experts.filter(id => !found.some(r => r.peerId.toString() === id))
    if (missing.length > 0) throw new NoExpertsError(`expert(s) not found on the mesh: ${missing.join(', ')}`)
  } else {
    compatible = [...compatible].sort((a, b) => a.modelName.localeCompare(b.modelName) || a.peerId.toString().localeCompare(b.peerId.toString()))
    found = compatible
  }
  // an expert that left keeps its record in the DHT for a while: ask each for a session first,
  // skip (and name) the ones that do not answer, and take K of the rest
  const skipped: Array<{ id: string, model: string, error: string }> = []
  const probeTimeout = opts.probeTimeoutMs ?? 5_000
  const reachable = await Promise.all(found.map(async r => {
    try {
      const s = await ExpertSession.connect(router.node, r.peerId, { signal: AbortSignal.any([signal, AbortSignal.timeout(probeTimeout)]) })
      await s.close()
      return true
    } catch (err) {
      signal.throwIfAborted()
      skipped.push({ id: r.peerId.toString(), model: r.modelName, error: errorMessage(err) })
      return false
    }
  }))
  let chosen = found.filter((_, i) => reachable[i]).slice(0, Math.max(1, opts.k ?? 8))
  if (chosen.length === 0) throw new NoExpertsError(found.length === 0 ? 'no experts found on the mesh' : `none of the ${found.length} expert(s) found answered: ${skipped.map(x => `${x.model} ${x.id} (${x.error})`).join('; ')}`)

  // windows: [BOS, prompt tokens…, evaluated tokens…] of at most `window` tokens
  const [firstDoc, lastDoc] = opts.documents ?? [0, Number.MAX_SAFE_INTEGER]
  if (!(Number.isInteger(firstDoc) && Number.isInteger(lastDoc) && firstDoc >= 0 && lastDoc >= firstDoc)) throw new RangeError(`documents must be [first, last] with 0 ≤ first ≤ last, got [${firstDoc}, ${lastDoc}]`)
  const wins: Array<{ prompt: number[], tokens: number[] }> = []
  let documents = 0
  let positions = 0
  for (let d = firstDoc; d < opts.heldout.length && d <= lastDoc; d++) {
    const doc = opts.heldout[d]
    if (positions >= maxPositions) break
    const ids = tok.model.tokenize(doc) as number[]
    if (ids.length <= prompt) continue
    documents++
    const perDoc = opts.windowsPerDocument ?? 1
    for (let at = 0, n = 0; at + prompt < ids.length && positions < maxPositions && n < perDoc; at += window - 1, n++) {
      const chunk = ids.slice(at, at + window - 1)
      if (chunk.length <= prompt) break
      const tokens = chunk.slice(prompt, prompt + (maxPositions - positions))
      wins.push({ prompt: chunk.slice(0, prompt), tokens })
      positions += tokens.length
    }
  }
  if (positions === 0) throw new RangeError(`no positions in documents ${firstDoc}–${Math.min(lastDoc, opts.heldout.length - 1)} of ${opts.heldout.length}`)
  const targets = new Uint32Array(positions)
  const windowOf = new Uint32Array(positions)
  const firstOf = new Uint32Array(wins.length)
  for (let w = 0, p = 0; w < wins.length; w++) {
    firstOf[w] = p
    for (const t of wins[w].tokens) { targets[p] = t; windowOf[p++] = w }
  }

  const timeout = opts.requestTimeoutMs ?? 30_000
  let frames: Frame[][] = chosen.map(() => new Array<Frame>(positions))
  let promptScores = prompt > 0 ? chosen.map(() => new Array<{ logprob?: number, count?: number }>(wins.length)) : undefined
  let bytes = chosen.map(() => 0)
  const failed = chosen.map(() => false)
  let done = 0
  const progress = (): void => { opts.onProgress?.(done, positions) }
  await Promise.all(chosen.map(async (r, e) => {
    let p = 0
    try {
      for (let w = 0; w < wins.length; w++) {
        signal.throwIfAborted()
        const { prompt: pr, tokens } = wins[w]
        const reqSignal = (): AbortSignal => AbortSignal.any([signal, AbortSignal.timeout(timeout)])
        const session = await ExpertSession.connect(router.node, r.peerId, { signal: reqSignal(), frames: opts.frames ?? 'compact' })
        try {
          let frame = await session.open(Uint32Array.from([bos, ...pr]), tok.fingerprint, { signal: reqSignal(), target: tokens[0], scorePrompt: pr.length > 0 })
          if (promptScores != null) promptScores[e][w] = { logprob: session.info?.promptLogprob, count: session.info?.promptScored }
          for (let i = 0; i < tokens.length; i++) {
            if (i > 0) frame = await session.step(Uint32Array.of(tokens[i - 1]), { signal: reqSignal(), target: tokens[i] })
            if (frame.position !== 1 + pr.length + i) throw new Error(`expert ${r.peerId.toString()}: frame for position ${frame.position}, expected ${1 + pr.length + i}`)
            frames[e][p++] = frame
          }
        } catch (err) {
          session.abort(err as Error)
          throw err
        } finally {
          await session.close()
          bytes[e] += session.bytesSent + session.bytesReceived
        }
        if (e === chosen.findIndex((_, j) => !failed[j])) { done = firstOf[w] + tokens.length; progress() }
      }
    } catch (err) {
      // an expert that fails during the collection (it left, it broke) is skipped and named;
      // the others go on, on the same positions
      signal.throwIfAborted()
      failed[e] = true
      skipped.push({ id: r.peerId.toString(), model: r.modelName, error: errorMessage(err) })
    }
  }))
  if (failed.some(f => f)) {
    const keep = (_: unknown, e: number): boolean => !failed[e]
    chosen = chosen.filter(keep)
    frames = frames.filter(keep)
    promptScores = promptScores?.filter(keep)
    bytes = bytes.filter(keep)
    if (chosen.length === 0) throw new NoExpertsError(`every expert failed: ${skipped.map(x => `${x.model} ${x.id} (${x.error})`).join('; ')}`)
  }
  // the local model's distribution at every position, once the frames are in: kept sparse
  // (its head, the listed ids, the true token), so memory stays ≈ 30 KB per position
  const local = opts.localModel
  const localDists: LocalDist[] = new Array(positions)
  if (local != null) {
    for (let w = 0; w < wins.length; w++) {
      const ctx = [bos, ...wins[w].prompt]
      for (let i = 0; i < wins[w].tokens.length; i++) {
        signal.throwIfAborted()
        const p = firstOf[w] + i
        const keep: number[] = [targets[p]]
        for (const f of frames) for (const id of f[p].ids) keep.push(id)
        localDists[p] = sparseLocal(localTailPrior(await local.distribution(ctx)), keep)
        ctx.push(wins[w].tokens[i])
      }
    }
  }
  return {
    experts: chosen.map(r => ({ id: r.peerId.toString(), model: r.modelName })),
    targets,
    windowOf,
    frames,
    promptScores,
    bytes,
    windows: wins.length,
    documents,
    skipped,
    ...(local != null ? { local: { model: local.name, exact: local.exact, dists: localDists } } : {})
  }
}

/** every subset of {0..K-1} with at least `min` members, the whole set first */
function subsetsOf (K: number, min: number): number[][] {
  const out: number[][] = []
  for (let mask = (1 << K) - 1; mask > 0; mask--) {
    const s: number[] = []
    for (let e = 0; e < K; e++) if ((mask & (1 << e)) !== 0) s.push(e)
    if (s.length >= min) out.push(s)
  }
  return out
}

const ppl = (nll: number, n: number): number => Math.exp(nll / n)
/** probabilities below this count as this (a log of 0 would make every perplexity infinite) */
const MIN_P = 1e-300

/** the router's default configuration for K experts (what `meshllm generate` uses with no flags), with or without a local model */
export function defaultVariant (K: number, local: boolean): { rule: AggregationRule, weighting: Weighting, tail: TailModel, robust: boolean } {
  return { rule: GENERATE_DEFAULTS.rule, weighting: GENERATE_DEFAULTS.weighting, tail: defaultTail(local), robust: robustByDefault(K) }
}

/** The pure part: perplexities of every expert and every ensemble variant on the collected positions. */
export function scoreEvaluation (c: Collected, opts: ScoreOptions = {}): EvalResult {
  const K = c.experts.length
  const N = c.targets.length
  if (N === 0) throw new RangeError('no positions to score')
  // the router's default configuration is always among the variants: it is `ensemble`
  const d = defaultVariant(K, c.local != null)
  const withDefault = <T>(xs: T[], x: T): T[] => xs.includes(x) ? xs : [...xs, x]
  const rules = withDefault(opts.rules ?? DEFAULT_RULES, d.rule)
  const weightings = withDefault(opts.weighting ?? DEFAULT_WEIGHTINGS, d.weighting)
  const tails = withDefault<TailModel>(opts.tails ?? (c.local != null ? [...DEFAULT_TAILS, 'local'] : DEFAULT_TAILS), d.tail)
  const robustList = withDefault(opts.robust ?? [false, true], d.robust)
  const beta = opts.beta ?? DEFAULT_PERPLEXITY_BETA
  const n0 = opts.priorTokens ?? DEFAULT_PERPLEXITY_PRIOR_TOKENS
  const V = 128256
  const needsPrior = tails.some(t => t !== 'uniform' && t !== 'local')
  const prior = needsPrior ? (opts.prior ?? defaultTailPrior(V)) : undefined
  if (tails.includes('local') && c.local == null) throw new RangeError("the 'local' tail needs a local model (EvalOptions.localModel, --local-model)")
  const localName = c.local != null ? `local:${c.local.model}` : 'local'
  /** the prior of `tail` at position i: this position's local distribution for 'local' */
  const priorAt = (tail: TailModel, i: number): TailPrior | undefined => tail === 'local' ? priorOfLocal((c.local as NonNullable<Collected['local']>).dists[i], V, localName) : prior
  const dist = (e: number, i: number): WeightedDist => ({ dist: c.frames[e][i], weight: 1 })
  // the 'context' tail's tokens before position i: the window's earlier (true) tokens
  const windowStart = new Uint32Array(N)
  for (let i = 0; i < N; i++) windowStart[i] = i > 0 && c.windowOf[i] === c.windowOf[i - 1] ? windowStart[i - 1] : i
  const contextOf = (tail: TailModel, i: number): Uint32Array | undefined => tail === 'context' || tail === 'local' ? c.targets.subarray(windowStart[i], i) : undefined

  // per expert: frame perplexity per tail, exact perplexity
  const experts: Record<string, ExpertQuality> = {}
  const exactNll = new Float64Array(K)
  const missing = new Array<number>(K).fill(0)
  /** exact logprob of the true token, or (missing) the frame's uniform-tail value: the perplexity weights need one */
  const exactLp: Float64Array[] = c.experts.map(() => new Float64Array(N))
  for (let e = 0; e < K; e++) {
    const byTail: Partial<Record<TailModel, number>> = {}
    let listed = 0
    for (const tail of new Set<TailModel>(['uniform', ...tails])) {
      let nll = 0
      for (let i = 0; i < N; i++) {
        const agg = aggregate([dist(e, i)], { vocabSize: V, tail, prior: priorAt(tail, i), context: contextOf(tail, i) })
        const p = probabilityOf(agg, c.targets[i])
        nll -= Math.log(Math.max(p, MIN_P))
        if (tail === 'uniform') {
          const f = c.frames[e][i]
          if (f.ids.includes(c.targets[i])) listed++
          const lp = f.targetLogprob
          if (lp === undefined) { missing[e]++; exactLp[e][i] = Math.log(Math.max(p, MIN_P)) } else { exactLp[e][i] = lp; exactNll[e] -= lp }
        }
      }
      byTail[tail] = ppl(nll, N)
    }
    experts[c.experts[e].id] = {
      model: c.experts[e].model,
      perplexity: byTail.uniform as number,
      exactPerplexity: missing[e] === 0 ? ppl(exactNll[e], N) : null,
      perplexityByTail: byTail,
      listedRate: listed / N,
      missingExact: missing[e]
    }
  }

  // weights
  const fixedGiven = opts.fixedWeights != null
  const fixedOf = (e: number): number => {
    if (opts.fixedWeights != null) return opts.fixedWeights[c.experts[e].id] ?? opts.fixedWeights[c.experts[e].model] ?? 1
    let nll = 0
    for (let i = 0; i < N; i++) nll -= exactLp[e][i]
    return Math.exp(-beta * nll / N) // hindsight: over every position
  }
  const fixed = c.experts.map((_, e) => fixedOf(e))
  // perplexity weighting: the window's prompt score (if any) + the exact logprobs of the
  // window's earlier positions: [expert][position] → (Σ logprob, count) before position i
  const prefixLp: Float64Array[] = c.experts.map(() => new Float64Array(N))
  const prefixN: Float64Array[] = c.experts.map(() => new Float64Array(N))
  for (let e = 0; e < K; e++) {
    let w = -1
    let sum = 0
    let n = 0
    for (let i = 0; i < N; i++) {
      if (c.windowOf[i] !== w) {
        w = c.windowOf[i]
        const ps = c.promptScores?.[e]?.[w]
        sum = ps?.logprob ?? 0
        n = ps?.count ?? 0
      }
      prefixLp[e][i] = sum
      prefixN[e][i] = n
      sum += exactLp[e][i]
      n++
    }
  }

  const subsets = opts.subsets === true ? subsetsOf(K, 2) : [c.experts.map((_, e) => e)]
  const variants: Variant[] = []
  for (const sub of subsets) {
    for (const robust of robustList.filter(r => !r || sub.length >= ROBUST_MIN_K)) {
      for (const rule of rules) {
        for (const weighting of weightings) {
          for (const tail of tails) {
            let nll = 0
            // robust: the router's own step (robustAggregate) with a reputation table that lives
            // through the positions in order; a banned expert is left out, as the router would
            const table = robust ? new ReputationTable() : undefined
            // 'online': the router's procedure (OnlineWeights), each window a generation of one
            // router whose memory of the experts lives through the windows in order
            const memory = weighting === 'online' ? new ExpertMemory() : undefined
            let online: OnlineWeights | undefined
            const ids = sub.map(e => c.experts[e].id)
            for (let i = 0; i < N; i++) {
              if (memory != null && (online == null || windowStart[i] === i)) {
                online?.commit()
                online = new OnlineWeights(memory, { beta, priorTokens: n0 })
              }
              const lp = priorAt(tail, i)
              let ws: number[]
              if (weighting === 'uniform') ws = sub.map(() => 1)
              else if (weighting === 'fixed') ws = sub.map(e => fixed[e])
              else if (online != null) ws = online.weights(ids)
              else ws = perplexityWeights(sub.map(e => ({ logprob: prefixLp[e][i], count: prefixN[e][i] })), { beta, priorTokens: n0 })
              // the step's aggregate of some members of `sub` with the given weights
              const aggregateOf = (members: number[], weights: number[]): ReturnType<typeof aggregate> =>
                aggregate(members.map((m, j) => ({ dist: c.frames[sub[m]][i], weight: weights[j] })), { rule, vocabSize: V, tail, prior: lp, trim: opts.trim, context: contextOf(tail, i) })
              const run = (members: number[], keep: (j: number) => boolean = () => true, rw?: number[]): ReturnType<typeof aggregate> => {
                const kept = members.filter((_, j) => keep(j))
                return aggregateOf(kept, members.flatMap((m, j) => keep(j) ? [ws[m] * (rw?.[j] ?? 1)] : []))
              }
              let agg
              if (table == null) agg = run(sub.map((_, m) => m))
              else {
                const members = sub.map((_, m) => m).filter(m => !table.banned(c.experts[sub[m]].id))
                agg = robustAggregate(members.map(m => ({ id: c.experts[sub[m]].id, frame: c.frames[sub[m]][i] })), table, V, (keep, rw) => run(members, keep, rw))
              }
              nll -= Math.log(Math.max(probabilityOf(agg, c.targets[i]), MIN_P))
              online?.observe(sub.map(e => ({ id: c.experts[e].id, p: sparseProbability(c.frames[e][i], c.targets[i], V) })),
                (members, w) => probabilityOf(aggregateOf(members, w), c.targets[i]))
            }
            const v: Variant = { experts: sub.map(e => c.experts[e].id), models: sub.map(e => c.experts[e].model), rule, weighting, tail, robust, perplexity: ppl(nll, N) }
            if (table != null) {
              v.screened = table.entries().reduce((n, [, r]) => n + r.screened, 0)
              v.banned = table.entries().filter(([, r]) => r.bans > 0).map(([id]) => id)
            }
            variants.push(v)
          }
        }
      }
    }
  }
  const full = variants.filter(v => v.experts.length === K)
  const best = full.reduce((a, b) => (b.perplexity < a.perplexity ? b : a), full[0])
  const ensemble = full.find(v => v.rule === d.rule && v.weighting === d.weighting && v.tail === d.tail && v.robust === d.robust)
  if (ensemble == null) throw new RangeError(`the router's default (${d.rule} / ${d.weighting} / ${d.tail}${d.robust ? ' / robust' : ''}) is not among the variants asked for`)
  const totalBytes = c.bytes.reduce((a, b) => a + b, 0)
  return {
    positions: N,
    windows: c.windows,
    documents: c.documents,
    ensemble,
    best,
    variants,
    experts,
    bytesPerExpertToken: totalBytes / (N * K),
    skipped: c.skipped ?? [],
    localModel: c.local != null ? { model: c.local.model, exact: c.local.exact } : null,
    weightingParams: { beta, priorTokens: n0, fixed: fixedGiven ? 'given' : 'hindsight' }
  }
}

/**
 * Teacher-forced evaluation of the mesh on held-out text: collects every expert's frame at
 * every position through the protocol, then scores experts and ensemble variants on exactly
 * those positions.
 */
export async function evaluateMesh (opts: EvalOptions): Promise<EvalResult> {
  const t0 = performance.now()
  const collected = await collectFrames(opts)
  const result = scoreEvaluation(collected, opts)
  result.elapsedMs = performance.now() - t0
  result.frames = opts.frames ?? 'compact'
  return result
}
