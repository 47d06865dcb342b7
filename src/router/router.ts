/**
 * The router: per output token it selects K of the N known experts, sends each the tokens it
 * has not seen yet (catch-up in one batch), aggregates the frames and samples the next token.
 *
 * Robustness: a per-step deadline derived from observed latency, hedging (a spare expert is
 * asked when a chosen one is late), replacement of failed experts (the replacement is
 * prefilled with the whole context), a circuit breaker per expert, and graceful operation
 * with fewer than K experts (down to 1), reported in the result.
 */
import type { Logger } from '@libp2p/interface'
import { defaultLogger } from '@libp2p/logger'
import type { MeshNode } from '../node/node.js'
import type { ExpertRecord } from '../wire/record.js'
import type { Frame } from '../wire/types.js'
import { aggregate } from '../aggregate/aggregate.js'
import type { TailModel } from '../aggregate/general.js'
import { CONTEXT_WINDOW } from '../aggregate/context-tail.js'
import { perplexityWeights } from '../aggregate/weighting.js'
import { createRng, sample, speculativeStep, speculativeStepSampled, type Proposal } from '../aggregate/sampling.js'
import type { Aggregated, AggregationRule, Rng, SamplingOptions } from '../aggregate/types.js'
import type { Drafter } from './drafter.js'
import { ContextOverflowError, HaltedError, IncompatibleTokenizerError, NoExpertsError } from '../util/errors.js'
import { discoverExperts } from './discovery.js'
import { ExpertHaltedError, ExpertSession } from './expert-client.js'
import { HealthTable, LruMap, MAX_TRACKED_EXPERTS } from './health.js'
import { invalidFrame, ReputationTable, robustAggregate, type ReputationOptions } from './reputation.js'
import type { RouterTokenizer } from './tokenizer.js'
import { GENERATE_DEFAULTS, robustByDefault, validateGenerateOptions } from './options.js'
import { addressGroup, colocationFactors, observedGroups, selectExperts, type SelectionPolicy } from './selection.js'
import type { ExpertHealth } from './health.js'

/**
 * Generation options. Defaults and bounds are defined once, in the schema of
 * src/router/options.ts (GENERATE_DEFAULTS, GENERATE_LIMITS, STOP_LIMITS); every interface and
 * `Router.generate` itself check them there (InvalidGenerateOptionError).
 */
export interface GenerateOptions {
  /** experts per token: integer in [1, 64], default 3 */
  k?: number
  /** tokens to generate: integer ≥ 1, default 64 (the APIs and --via bound it by their max_tokens limit, default 2048) */
  maxTokens?: number
  /** sampling temperature: number in [0, 10], default 0.8; 0 = greedy */
  temperature?: number
  /** top-k sampling: integer in [0, 256], default 0 = off */
  topK?: number
  /** nucleus sampling: number in (0, 1], default 0.95; 1 = off */
  topP?: number
  /** sampling seed: integer in [0, 2^53 − 1], default random */
  seed?: number
  /** stop strings: at most 16, each 1–256 characters; the text ends before the first one found (default none) */
  stop?: string[]
  /** aggregation rule: mixture | product | median | trimmed, default mixture */
  rule?: AggregationRule
  /**
   * Byzantine robustness (docs/quality.md "Byzantine experts"): per-step screening of outlier
   * frames, every expert's frame compared with the aggregate, its aggregation weight scaled by
   * its reputation, persistent outliers banned. Default: on for every rule whenever the
   * generation has K ≥ 3 experts (ROBUST_MIN_K, src/router/options.ts), off below.
   * Bans are router-wide: a banned expert is never selected, whatever this option says.
   * A boolean (checked by the schema).
   */
  reputation?: boolean
  /**
   * per-prompt expert weights (docs/quality.md): 'perplexity' asks every expert to score the
   * prompt when its session opens (Open.score_prompt) and weighs it by
   * w_e ∝ exp(−β · NLL_e / (n_e + n₀)), multiplied with `weights`; 'uniform' | 'perplexity', default 'uniform'
   */
  weighting?: 'uniform' | 'perplexity'
  /** β of the perplexity weighting (default DEFAULT_PERPLEXITY_BETA) */
  perplexityBeta?: number
  /** how each expert's tail mass is spread (aggregate's `tail`): uniform | unigram | bounded | context, default 'uniform' */
  tail?: TailModel
  /** how the K experts of each step are chosen (src/router/selection.ts): weighted | fastest | random, default 'weighted' */
  policy?: SelectionPolicy
  /** aggregation weight per expert peer id (default 1) */
  weights?: Record<string, number>
  /** restrict to these expert peer ids */
  experts?: string[]
  /**
   * lossless speculative decoding (needs a router drafter): a draft of several tokens is
   * scored by the same K experts in one batched request per round, the ensemble keeps the
   * longest prefix speculative sampling accepts; the output distribution is unchanged
   */
  speculative?: boolean
  /** fixed draft length (default: adaptive) */
  draftLength?: number
  /**
   * constrained decoding: called before each token is sampled with the aggregated
   * distribution and the tokens generated so far; returns the distribution to sample from
   * (e.g. with tokens a grammar forbids removed and the rest renormalised). Speculation is
   * not used for constrained generations.
   */
  constrain?: (agg: Aggregated, generated: number[]) => Aggregated
  /** benchmark/test mode: never end at an end-of-generation token (the best other listed token is taken instead) */
  ignoreEos?: boolean
  signal?: AbortSignal
  onToken?: (ev: TokenEvent) => void
}

export interface TokenEvent {
  token: number
  /** text newly completed by this token (may be empty mid-character) */
  text: string
  /** expert peer ids whose frames were aggregated for this token */
  experts: string[]
  index: number
}

export interface StepTrace {
  experts: string[]
  /** experts asked that did not count (late, failed) */
  dropped: string[]
  ms: number
}

export interface GenerateResult {
  text: string
  tokens: number
  promptTokens: number
  elapsedMs: number
  tokensPerSecond: number
  k: number
  /** K actually achievable (fewer experts than asked → lower) */
  effectiveK: number
  experts: string[]
  bytesPerExpertToken: number
  finishReason: 'stop' | 'length' | 'eos' | 'context'
  steps: StepTrace[]
  warnings: string[]
  /** present when the generation ran speculatively */
  speculation?: SpeculationStats
}

/** the fields of a result that every client interface reports (gRPC summary, --via Done event) */
export function resultSummary (r: GenerateResult): Pick<GenerateResult, 'text' | 'tokens' | 'promptTokens' | 'elapsedMs' | 'k' | 'effectiveK' | 'experts' | 'bytesPerExpertToken' | 'finishReason' | 'warnings'> {
  return {
    text: r.text,
    tokens: r.tokens,
    promptTokens: r.promptTokens,
    elapsedMs: r.elapsedMs,
    k: r.k,
    effectiveK: r.effectiveK,
    experts: r.experts,
    bytesPerExpertToken: r.bytesPerExpertToken,
    finishReason: r.finishReason,
    warnings: r.warnings
  }
}

export interface SpeculationStats {
  drafter: string
  /** rounds (one batched request per chosen expert each) */
  rounds: number
  /** draft tokens proposed and accepted */
  drafted: number
  accepted: number
  /** mean draft length used */
  meanDraftLength: number
}

export interface RouterOptions {
  /** minimum per-step deadline (ms) before proceeding with fewer than K frames */
  minStepDeadlineMs?: number
  /** hard limit for one expert request (ms): past it the expert is dropped */
  requestTimeoutMs?: number
  /** how long discovery results are reused (ms) */
  discoveryTtlMs?: number
  discoveryTimeoutMs?: number
  /** this router's own (verified) governance state: the halt reason while halted */
  haltReason?: () => string | undefined
  /**
   * Verifies and applies a signed HALT envelope an expert sent with its HALTED answer, through
   * this router's own governance (`verifyHaltWith(governanceService)`); true when this router
   * is halted afterwards. Without it, or when it says false, an expert's HALTED is that
   * expert's failure (UnverifiedHaltError): only the router's own governance may halt it.
   */
  verifyHalt?: (envelope: Uint8Array) => Promise<boolean>
  /** drafter for speculative decoding (GenerateOptions.speculative) */
  drafter?: Drafter
  /** reputation and ban parameters (src/router/reputation.ts) */
  reputation?: ReputationOptions
  /**
   * identities per address group before the Sybil colocation penalty applies
   * (src/router/selection.ts, default COLOCATION_THRESHOLD = 3; Infinity turns it off)
   */
  colocationThreshold?: number
}

/**
 * Observes every generation a router runs (API metrics, dashboards), whoever asked for it
 * (`Router.generate` callers, `--via` clients). Called synchronously; errors are ignored.
 */
export interface RouterObserver {
  /** one expert request settled: a frame arrived (ok) or the expert failed */
  /** errorName: the failure's error class name (MalformedMessageError, InvalidFrameError, TimeoutError, …) */
  onExpertRequest?: (ev: { expert: string, ms: number, ok: boolean, error?: string, errorName?: string }) => void
  /** a token was sampled (same event as GenerateOptions.onToken) */
  onToken?: (ev: TokenEvent) => void
  /** a generation ended; perExpert: traffic of each expert session it used (both directions, framing included) */
  onGeneration?: (ev: { result?: GenerateResult, error?: unknown, perExpert: Array<{ expert: string, bytes: number, frames: number }> }) => void
}

interface Selection {
  select: (pool: Candidate[], n: number) => Candidate[]
  /** health as selection sees it now (the measured-median floor computed once per call) */
  health: () => (c: Candidate) => ExpertHealth
  /** colocation multiplier per expert id */
  colocation: Map<string, number>
}

interface Candidate {
  record: ExpertRecord
  id: string
  session?: ExpertSession
  /** a request is in flight on this session */
  pending?: Promise<void>
  failed?: boolean
}

export class Router {
  readonly health = new HealthTable()
  /** per-expert reputation and bans (docs/quality.md "Byzantine experts") */
  readonly reputation: ReputationTable
  private readonly log: Logger
  private known: ExpertRecord[] = []
  private knownAt = 0
  private incompatible: ExpertRecord[] = []
  /** provider peer id → until when its record is fetched last (it could not be fetched); bounded */
  private readonly recordFailures = new LruMap<string, number>(MAX_TRACKED_EXPERTS)
  readonly stats = { generations: 0, tokens: 0, bytes: 0, expertSteps: 0, lastTokensPerSecond: 0 }
  private readonly live = new Set<AbortController>()
  /** observers of every generation (additive hook for metrics; see RouterObserver) */
  readonly observers = new Set<RouterObserver>()

  constructor (readonly node: MeshNode, readonly tokenizer: RouterTokenizer, private readonly opts: RouterOptions = {}) {
    this.log = defaultLogger().forComponent('meshllm:router')
    this.reputation = new ReputationTable(opts.reputation)
    observedAddressGroups(node)
  }

  /** selectable: circuit closed or half-open, and not banned */
  private available (id: string): boolean {
    return this.health.available(id) && !this.reputation.banned(id)
  }

  /** experts currently known (compatible), refreshed from the DHT when stale */
  async experts (force = false, signal?: AbortSignal): Promise<{ compatible: ExpertRecord[], incompatible: ExpertRecord[] }> {
    const ttl = this.opts.discoveryTtlMs ?? 10_000
    const now = Date.now()
    if (force || now - this.knownAt > ttl || this.known.length === 0) {
      // unknown providers first (a new expert is seen at once), known ones next (refresh; kept
      // anyway until their records expire), recently failed ones last
      const knownIds = new Set(this.known.map(x => x.peerId.toString()))
      const priority = (id: string): number => (this.recordFailures.peek(id) ?? 0) > now ? 2 : knownIds.has(id) ? 1 : 0
      const r = await discoverExperts(this.node, this.tokenizer.fingerprint, { timeoutMs: this.opts.discoveryTimeoutMs ?? 4_000, signal, priority })
      const after = Date.now()
      for (const id of r.missing ?? []) this.recordFailures.set(id, after + RECORD_RETRY_MS)
      for (const x of r.compatible) this.recordFailures.delete(x.peerId.toString())
      // a signed record stays valid until it expires: one that this round did not get to (or
      // could not fetch) is kept until then; the circuit breaker handles a dead expert
      const fresh = new Map(r.compatible.map(x => [x.peerId.toString(), x]))
      for (const x of this.known) if (!fresh.has(x.peerId.toString())) fresh.set(x.peerId.toString(), x)
      // bounded (identities are free): this round's records first, then the kept ones
      this.known = [...fresh.values()].filter(x => x.expiresAtMs > after).slice(0, MAX_TRACKED_EXPERTS)
      this.incompatible = r.incompatible
      this.knownAt = after
    }
    return { compatible: this.known, incompatible: this.incompatible }
  }

  /** Ends every in-flight generation (governance HALT). */
  abortAll (reason: string): void {
    for (const c of this.live) c.abort(new HaltedError(`halted by governance: ${reason}`))
  }

  private notify<K extends keyof RouterObserver> (name: K, ev: Parameters<NonNullable<RouterObserver[K]>>[0]): void {
    for (const o of this.observers) {
      try { (o[name] as ((e: typeof ev) => void) | undefined)?.(ev) } catch {}
    }
  }

  private checkHalt (): void {
    const reason = this.opts.haltReason?.()
    if (reason != null) throw new HaltedError(`halted by governance: ${reason}`)
  }

  /**
   * An expert answered HALTED. Only this router's own governance may say "halted": the HALT
   * envelope the expert sent along is verified and applied by it (opts.verifyHalt), and only
   * then does the generation end halted (HaltedError). Otherwise (no envelope, a forged or
   * stale one, no governance here) it is a failure of that expert (UnverifiedHaltError): it is
   * replaced and the failure counted, like any other expert error.
   */
  private async expertHalted (err: ExpertHaltedError): Promise<Error> {
    let verified = false
    if (err.envelope != null && this.opts.verifyHalt != null) {
      try { verified = await this.opts.verifyHalt(err.envelope) } catch {}
    }
    if (verified) return new HaltedError(`halted by governance: ${this.opts.haltReason?.() ?? 'a HALT relayed by an expert, verified by this router'}`)
    return new UnverifiedHaltError(`answered HALTED ${err.envelope == null ? 'without a signed HALT' : 'with a HALT this router does not accept'}${err.message.length > 0 ? ` (${err.message.slice(0, 120)})` : ''}`)
  }

  async generate (prompt: string | number[], opts: GenerateOptions = {}): Promise<GenerateResult> {
    this.checkHalt()
    const started = performance.now()
    const ctrl = new AbortController()
    this.live.add(ctrl)
    const signal = opts.signal != null ? AbortSignal.any([opts.signal, ctrl.signal]) : ctrl.signal
    // the one validation every interface shares (src/router/options.ts)
    validateGenerateOptions(opts)
    const k = opts.k ?? GENERATE_DEFAULTS.k
    const rule: AggregationRule = opts.rule ?? GENERATE_DEFAULTS.rule
    const maxTokens = opts.maxTokens ?? GENERATE_DEFAULTS.maxTokens
    const rng: Rng = createRng(opts.seed ?? Math.floor(Math.random() * 2 ** 32))
    const warnings: string[] = []
    const candidates: Candidate[] = []
    try {
      let { compatible, incompatible } = await this.experts(false, signal)
      if (compatible.length === 0) ({ compatible, incompatible } = await this.experts(true, signal))
      if (opts.experts != null) compatible = compatible.filter(r => opts.experts?.includes(r.peerId.toString()))
      if (compatible.length === 0) {
        if (incompatible.length > 0) {
          throw new IncompatibleTokenizerError(`found ${incompatible.length} expert(s) but none with this router's tokenizer (fingerprint ${hex(this.tokenizer.fingerprint)}): ${incompatible.map(r => `${r.modelName} ${hex(r.tokenizerFingerprint)}`).join(', ')}`)
        }
        throw new NoExpertsError('no experts found on the mesh')
      }
      for (const r of compatible) candidates.push({ record: r, id: r.peerId.toString() })

      const context = typeof prompt === 'string' ? this.tokenizer.encodePrompt(prompt) : [...prompt]
      const promptTokens = context.length
      const maxContext = Math.min(...compatible.map(r => r.contextLength))
      if (promptTokens >= maxContext - 1) {
        throw new ContextOverflowError(`prompt of ${promptTokens} tokens is longer than the experts' context (${maxContext} tokens, 1 needed for generation)`)
      }
      if (compatible.length < k) warnings.push(`only ${compatible.length} compatible expert(s) for K=${k}: generating with K=${compatible.length}`)
      const effectiveK = Math.min(k, compatible.length)
      // screening and reputation: on by default for every rule at K ≥ 3 (robust by default)
      const byReputation = robustByDefault(effectiveK, opts.reputation)
      const sel = this.selection(candidates, opts.policy)

      const generated: number[] = []
      const steps: StepTrace[] = []
      const used = new Set<string>()
      let emitted = ''
      let finishReason: GenerateResult['finishReason'] = 'length'
      let text = ''
      const samplingOpts = { temperature: opts.temperature ?? GENERATE_DEFAULTS.temperature, topK: opts.topK ?? GENERATE_DEFAULTS.topK, topP: opts.topP ?? GENERATE_DEFAULTS.topP }
      const byPerplexity = opts.weighting === 'perplexity'
      /** the prompt scores of the experts' sessions → weights (uniform ones when none scored) */
      const promptWeights = (ids: string[]): number[] => {
        if (!byPerplexity) return ids.map(() => 1)
        return perplexityWeights(ids.map(id => {
          const info = candidates.find(c => c.id === id)?.session?.info
          return { logprob: info?.promptLogprob, count: info?.promptScored }
        }), { beta: opts.perplexityBeta })
      }
      /** `ahead`: tokens after `context` that the frames' position already includes (speculative draft) */
      const aggregateFrames = (frames: Array<{ id: string, frame: Frame }>, ahead: number[] = []): Aggregated => {
        const pw = promptWeights(frames.map(f => f.id))
        const tokensSoFar = opts.tail === 'context' ? [...context.slice(-CONTEXT_WINDOW), ...ahead] : undefined
        const run = (keep: (j: number) => boolean, rw: number[]): Aggregated => aggregate(frames.flatMap((f, j) => keep(j) ? [{ dist: f.frame, weight: (opts.weights?.[f.id] ?? 1) * pw[j] * rw[j] }] : []), { rule, vocabSize: this.tokenizer.vocabSize, tail: opts.tail, context: tokensSoFar })
        // robust: reputation-scaled weights, gross outliers of this step (K ≥ 3) screened out, every frame observed
        return byReputation ? robustAggregate(frames, this.reputation, this.tokenizer.vocabSize, run) : run(() => true, frames.map(() => 1))
      }
      /** appends a sampled token and streams it; true when the generation must end */
      const emit = (token: number, experts: string[]): boolean => {
        context.push(token)
        generated.push(token)
        text = this.tokenizer.decode(generated)
        let stopHit = false
        if (opts.stop != null && opts.stop.length > 0) {
          for (const s of opts.stop) {
            const at = s.length > 0 ? text.indexOf(s) : -1
            if (at >= 0) { text = text.slice(0, at); stopHit = true }
          }
        }
        // emit only completed characters (a token may end inside a UTF-8 sequence)
        const ready = stopHit ? text : text.slice(0, ((end: number) => { while (end > 0 && text.charCodeAt(end - 1) === 0xfffd) end--; return end })(text.length)) // trailing U+FFFD trimmed by a loop from the end (a regex is quadratic on long U+FFFD runs)
        const piece = ready.startsWith(emitted) ? ready.slice(emitted.length) : ''
        if (piece.length > 0 || stopHit) emitted = ready
        const tokenEvent: TokenEvent = { token, text: piece, experts, index: generated.length - 1 }
        opts.onToken?.(tokenEvent)
        if (this.observers.size > 0) this.notify('onToken', tokenEvent)
        if (stopHit) { finishReason = 'stop'; return true }
        if (context.length >= maxContext - 1 && generated.length < maxTokens) { finishReason = 'context'; return true }
        return generated.length >= maxTokens
      }
      /** an end-of-generation token ends the generation (undefined) unless ignoreEos */
      const resolveEog = (token: number, agg: Aggregated): number | undefined => {
        if (!this.tokenizer.isEndOfGeneration(token)) return token
        if (opts.ignoreEos !== true) { finishReason = 'eos'; return undefined }
        return [...agg.ids].find(t => !this.tokenizer.isEndOfGeneration(t)) ?? token
      }
      let speculation: SpeculationStats | undefined
      if (opts.speculative === true && opts.constrain == null && this.opts.drafter != null && generated.length < maxTokens && context.length < maxContext - 1) {
        speculation = await this.speculativeLoop(candidates, context, effectiveK, maxTokens - generated.length, maxContext, signal, steps, used, aggregateFrames, samplingOpts, rng, emit, resolveEog, byPerplexity, sel)
      } else {
        while (generated.length < maxTokens) {
          this.checkHalt()
          signal.throwIfAborted()
          if (context.length >= maxContext - 1) { finishReason = 'context'; break }
          const t0 = performance.now()
          const { frames, trace } = await this.step(candidates, context, effectiveK, signal, byPerplexity, sel)
          trace.ms = performance.now() - t0
          steps.push(trace)
          for (const id of trace.experts) used.add(id)
          const raw = aggregateFrames(frames)
          const agg = opts.constrain != null ? opts.constrain(raw, generated) : raw
          const token = resolveEog(sample(agg, samplingOpts, rng), agg)
          if (token === undefined || emit(token, trace.experts)) break
        }
      }
      const elapsedMs = performance.now() - started
      let bytes = 0
      let expertSteps = 0
      for (const c of candidates) {
        if (c.session == null) continue
        bytes += c.session.bytesSent + c.session.bytesReceived
        expertSteps += c.session.frames
      }
      this.stats.generations++
      this.stats.tokens += generated.length
      this.stats.bytes += bytes
      this.stats.expertSteps += expertSteps
      const expertTokens = steps.reduce((a, st) => a + st.experts.length, 0)
      this.stats.lastTokensPerSecond = generated.length / (elapsedMs / 1000)
      const result: GenerateResult = {
        text,
        tokens: generated.length,
        promptTokens,
        elapsedMs,
        tokensPerSecond: generated.length / (elapsedMs / 1000),
        k,
        effectiveK,
        experts: [...used],
        // all bytes of every session (hedged, late and rejected-draft frames included) per
        // (generated token × expert that served it)
        bytesPerExpertToken: expertTokens > 0 ? bytes / expertTokens : 0,
        finishReason,
        steps,
        warnings,
        ...(speculation != null ? { speculation } : {})
      }
      if (this.observers.size > 0) this.notify('onGeneration', { result, perExpert: sessionTraffic(candidates) })
      return result
    } catch (err: any) {
      const e = signal.aborted && signal.reason instanceof HaltedError ? signal.reason : err
      if (this.observers.size > 0) this.notify('onGeneration', { error: e, perExpert: sessionTraffic(candidates) })
      throw e
    } finally {
      this.live.delete(ctrl)
      await Promise.allSettled(candidates.map(async c => {
        await c.pending?.catch(() => {})
        await c.session?.close()
      }))
    }
  }

  /** true when this router has a drafter (GenerateOptions.speculative works) */
  get supportsSpeculation (): boolean {
    return this.opts.drafter != null
  }

  /**
   * Speculative rounds: draft → the same K experts score every draft position in one
   * batched request each → per position the ensemble distribution decides (speculative
   * sampling: accept with the probability the target gives the draft token, else draw
   * from the target without it, and end the round). Identical output to token-by-token
   * decoding at temperature 0, the same distribution above it (docs/speculative.md).
   */
  private async speculativeLoop (
    candidates: Candidate[], context: number[], want: number, budget: number, maxContext: number, signal: AbortSignal,
    steps: StepTrace[], used: Set<string>,
    aggregateFrames: (f: Array<{ id: string, frame: Frame }>, ahead?: number[]) => Aggregated,
    samplingOpts: SamplingOptions, rng: Rng,
    emit: (token: number, experts: string[]) => boolean,
    resolveEog: (token: number, agg: Aggregated) => number | undefined,
    scorePrompt = false,
    sel: Selection = this.selection(candidates)
  ): Promise<SpeculationStats> {
    const drafter = this.opts.drafter as Drafter
    const stats: SpeculationStats = { drafter: drafter.name, rounds: 0, drafted: 0, accepted: 0, meanDraftLength: 0 }
    let acceptEwma = 0.6
    let emittedCount = 0
    const hardTimeout = this.opts.requestTimeoutMs ?? 30_000
    while (emittedCount < budget) {
      this.checkHalt()
      signal.throwIfAborted()
      // adaptive draft length: maximise expected tokens per unit time
      const pool = candidates.filter(c => c.failed !== true && this.available(c.id))
      if (pool.length === 0) throw new NoExpertsError('every expert failed during this generation')
      const healthNow = sel.health()
      const rtt = Math.min(...pool.map(c => healthNow(c).latencyMs))
      const room = Math.min(budget - emittedCount - 1, maxContext - 2 - context.length, 16)
      let n = 0
      if (room > 0) {
        const a = Math.min(0.95, Math.max(0.05, acceptEwma))
        let best = -1
        for (let L = 1; L <= room; L++) {
          const rate = ((1 - a ** (L + 1)) / (1 - a)) / (rtt + 3 * L + 3)
          if (rate > best) { best = rate; n = L }
        }
      }
      const t0 = performance.now()
      // temperature > 0: a sampling drafter proposes from its own distribution (acceptance
      // Σ min(p, q)); otherwise a deterministic draft (acceptance p(x))
      let draft: number[] = []
      let proposals: Proposal[] | undefined
      if (n > 0 && samplingOpts.temperature > 0 && drafter.proposeSampled != null) {
        const d = await drafter.proposeSampled(context, n, samplingOpts, rng)
        draft = d.tokens.slice(0, n)
        proposals = d.proposals
      } else if (n > 0) {
        draft = (await drafter.propose(context, n)).slice(0, n)
      }
      const chosen = sel.select(pool, Math.min(want, pool.length))
      const ctx = Uint32Array.from(context)
      const dr = Uint32Array.from(draft)
      const reqSignal = AbortSignal.any([signal, AbortSignal.timeout(hardTimeout)])
      const results = await Promise.all(chosen.map(async c => {
        const s0 = performance.now()
        try {
          c.session ??= await ExpertSession.connect(this.node, c.record.peerId, reqSignal)
          const frames = await c.session.speculate(ctx, dr, this.tokenizer.fingerprint, reqSignal, { scorePrompt: scorePrompt === true })
          frames.forEach((f, i) => {
            if (f.position !== ctx.length + i) throw new Error(`frame for position ${f.position}, expected ${ctx.length + i}`)
            const bad = invalidFrame(f, this.tokenizer.vocabSize)
            if (bad != null) throw new InvalidFrameError(`invalid frame: ${bad}`)
          })
          this.health.success(c.id, performance.now() - s0)
          if (this.observers.size > 0) this.notify('onExpertRequest', { expert: c.id, ms: performance.now() - s0, ok: true })
          return { id: c.id, frames }
        } catch (e: any) {
          const err = e instanceof ExpertHaltedError ? await this.expertHalted(e) : e
          if (err instanceof HaltedError) throw err
          if (signal.aborted) throw signal.reason
          this.log('expert %s failed: %s', c.id, err.message)
          this.health.failure(c.id, String(err.message ?? err))
          if (err instanceof InvalidFrameError) this.reputation.penalize(c.id)
          if (this.observers.size > 0) this.notify('onExpertRequest', { expert: c.id, ms: performance.now() - s0, ok: false, error: String(err.message ?? err), errorName: String(err?.name ?? 'Error') })
          c.failed = true
          c.session?.abort(err)
          c.session = undefined
          return undefined
        }
      }))
      const ok = results.filter((r): r is { id: string, frames: Frame[] } => r != null)
      const trace: StepTrace = { experts: ok.map(r => r.id), dropped: chosen.map(c => c.id).filter(id => !ok.some(r => r.id === id)), ms: performance.now() - t0 }
      if (ok.length === 0) continue // every chosen expert failed: the next round picks others
      for (const id of trace.experts) used.add(id)
      stats.rounds++
      stats.drafted += draft.length
      stats.meanDraftLength += draft.length
      let acceptedHere = 0
      let ended = false
      for (let i = 0; i <= draft.length; i++) {
        const agg = aggregateFrames(ok.map(r => ({ id: r.id, frame: r.frames[i] })), draft.slice(0, i))
        let token: number | undefined
        let accepted = false
        if (i < draft.length) {
          const r = proposals != null ? speculativeStepSampled(agg, samplingOpts, draft[i], proposals[i], rng) : speculativeStep(agg, samplingOpts, draft[i], rng)
          token = r.token
          accepted = r.accepted
        } else {
          token = sample(agg, samplingOpts, rng)
        }
        const resolved = resolveEog(token, agg)
        if (resolved === undefined) { ended = true; break }
        if (resolved !== token) accepted = false // ignoreEos replaced it: the draft diverges here
        if (accepted) acceptedHere++
        steps.push(i === 0 ? trace : { experts: trace.experts, dropped: [], ms: 0 })
        emittedCount++
        if (emit(resolved, trace.experts)) { ended = true; break }
        if (!accepted) break
      }
      stats.accepted += acceptedHere
      if (draft.length > 0) acceptEwma = 0.7 * acceptEwma + 0.3 * (acceptedHere / draft.length)
      if (ended) break
    }
    if (stats.rounds > 0) stats.meanDraftLength /= stats.rounds
    return stats
  }

  /**
   * How one generation chooses among its candidates (src/router/selection.ts): the policy,
   * the Sybil colocation penalty by address group (computed once per generation from the
   * remote addresses of the open connections only, never from what a record claims; experts
   * without a connection form one "unverified" group), and health where an unmeasured
   * expert's latency prior (its advertised speed) is never better than the median measured
   * latency of the others: a claim cannot outweigh a measurement.
   */
  private selection (candidates: Candidate[], policy?: SelectionPolicy): Selection {
    const seen = observedAddressGroups(this.node)
    const groups = observedGroups(candidates.map(c => ({ id: c.id, connections: this.node.getConnections(c.record.peerId), lastObserved: seen.peek(c.id) })))
    const factors = colocationFactors(groups, this.opts.colocationThreshold)
    const healthOf = (c: Candidate, floor = 0): ExpertHealth => {
      const h = this.health.get(c.id, priorLatency(c.record))
      return h.samples > 0 ? h : { ...h, latencyMs: Math.max(priorLatency(c.record), floor) }
    }
    const measuredMedian = (): number => {
      const m: number[] = []
      for (const c of candidates) { const h = this.health.peek(c.id); if (h != null && h.samples > 0) m.push(h.latencyMs) }
      m.sort((a, b) => a - b)
      return m.length > 0 ? m[(m.length - 1) >> 1] : 0
    }
    return {
      colocation: factors,
      health: () => { const floor = measuredMedian(); return (c) => healthOf(c, floor) },
      select: (pool, n) => {
        const floor = measuredMedian()
        return selectExperts(pool, n, c => healthOf(c, floor), c => c.record, { policy, colocation: c => factors.get(c.id) ?? 1 }, Math.random)
      }
    }
  }

  /**
   * per-step deadline: a multiple of the chosen experts' lower-median latency EWMA (the
   * slower half, a stalling expert included, cannot hold the step: it is hedged and dropped)
   */
  private deadlineFor (chosen: Candidate[], sel: Selection): number {
    const healthNow = sel.health()
    const lats = chosen.map(c => healthNow(c).latencyMs).sort((a, b) => a - b)
    const lat = lats[(lats.length - 1) >> 1]
    return Math.max(this.opts.minStepDeadlineMs ?? 1_500, 4 * lat + 100)
  }

  private async step (candidates: Candidate[], context: number[], want: number, signal: AbortSignal, scorePrompt = false, sel: Selection = this.selection(candidates)): Promise<{ frames: Array<{ id: string, frame: Frame }>, trace: StepTrace }> {
    const usable = (): Candidate[] => candidates.filter(c => c.failed !== true && c.pending == null && this.available(c.id))
    let pool = usable()
    if (pool.length === 0) {
      // every usable expert is busy with a late request: wait for one to settle
      const busy = candidates.filter(c => c.pending != null)
      if (busy.length > 0) await Promise.race(busy.map(async c => c.pending?.catch(() => {})))
      pool = usable()
      if (pool.length === 0) {
        // half-open circuits: give the least recently failed experts another try
        pool = candidates.filter(c => c.failed !== true && c.pending == null && !this.reputation.banned(c.id))
      }
      if (pool.length === 0) throw new NoExpertsError('every expert failed during this generation')
    }
    const need = Math.min(want, pool.length)
    const chosen = sel.select(pool, need)
    const frames: Array<{ id: string, frame: Frame }> = []
    const trace: StepTrace = { experts: [], dropped: [], ms: 0 }
    const contextNow = Uint32Array.from(context)
    const hardTimeout = this.opts.requestTimeoutMs ?? 30_000

    return await new Promise((resolve, reject) => {
      let settled = false
      let outstanding = 0
      const asked = new Set<string>()
      const finish = (): void => {
        if (settled) return
        settled = true
        clearTimeout(deadlineTimer)
        clearTimeout(hedgeTimer)
        for (const id of asked) if (!trace.experts.includes(id)) trace.dropped.push(id)
        if (frames.length === 0) reject(new NoExpertsError('no expert answered this step'))
        else resolve({ frames: frames.slice(0, need), trace })
      }
      const spare = (): Candidate | undefined => {
        const rest = usable().filter(c => !asked.has(c.id))
        if (rest.length === 0) return undefined
        return sel.select(rest, 1)[0]
      }
      const launch = (c: Candidate): void => {
        asked.add(c.id)
        outstanding++
        const t0 = performance.now()
        const reqSignal = AbortSignal.any([signal, AbortSignal.timeout(hardTimeout)])
        const run = (async (): Promise<Frame> => {
          let frame: Frame
          try {
            if (c.session == null) {
              c.session = await ExpertSession.connect(this.node, c.record.peerId, reqSignal)
              frame = await c.session.open(contextNow, this.tokenizer.fingerprint, reqSignal, { scorePrompt })
            } else {
              frame = await c.session.step(contextNow.subarray(c.session.synced), reqSignal)
            }
          } catch (err) {
            throw err instanceof ExpertHaltedError ? await this.expertHalted(err) : err
          }
          if (frame.position !== contextNow.length) throw new Error(`frame for position ${frame.position}, expected ${contextNow.length}`)
          const bad = invalidFrame(frame, this.tokenizer.vocabSize)
          if (bad != null) throw new InvalidFrameError(`invalid frame: ${bad}`)
          return frame
        })()
        c.pending = run.then(() => {}, () => {})
        run.then(frame => {
          c.pending = undefined
          outstanding--
          const ms = performance.now() - t0
          this.health.success(c.id, ms)
          if (this.observers.size > 0) this.notify('onExpertRequest', { expert: c.id, ms, ok: true })
          if (!settled && frames.length < need) {
            frames.push({ id: c.id, frame })
            trace.experts.push(c.id)
            if (frames.length >= need) finish()
          }
        }).catch((err: any) => {
          c.pending = undefined
          outstanding--
          if (err instanceof HaltedError) { settled = true; clearTimeout(deadlineTimer); clearTimeout(hedgeTimer); reject(err); return }
          if (signal.aborted) { if (!settled) { settled = true; clearTimeout(deadlineTimer); clearTimeout(hedgeTimer); reject(signal.reason) } return }
          this.log('expert %s failed: %s', c.id, err.message)
          this.health.failure(c.id, String(err.message ?? err))
          if (err instanceof InvalidFrameError) this.reputation.penalize(c.id)
          if (this.observers.size > 0) this.notify('onExpertRequest', { expert: c.id, ms: performance.now() - t0, ok: false, error: String(err.message ?? err), errorName: String(err?.name ?? 'Error') })
          c.failed = true
          c.session?.abort(err)
          c.session = undefined
          if (settled) return
          const r = spare()
          if (r != null) launch(r)
          else if (outstanding === 0) finish()
        })
      }
      const deadline = this.deadlineFor(chosen, sel)
      const hedgeTimer = setTimeout(() => {
        // hedge: one spare expert when the chosen ones are late
        if (!settled && frames.length < need) { const r = spare(); if (r != null) launch(r) }
      }, Math.max(200, deadline / 2))
      const deadlineTimer = setTimeout(() => {
        if (frames.length > 0) finish()
        // otherwise keep waiting: the hard per-request timeout ends it
      }, deadline)
      for (const c of chosen) launch(c)
    })
  }
}

/**
 * An expert answered HALTED without a HALT this router's governance verified and applied: a
 * failure of that expert, never a halt (docs/quality.md "Byzantine experts").
 */
export class UnverifiedHaltError extends Error {
  static override name = 'UnverifiedHaltError'
  override name = 'UnverifiedHaltError'
}

/**
 * `RouterOptions.verifyHalt` through a node's governance: the envelope is verified and applied
 * like a gossiped message (`GovernanceService.ingest(bytes, 'expert')`: an expired HALT relayed
 * by an expert is refused, so an expert cannot replay an old halt onto a router that has not
 * caught up), then the router's own state decides.
 */
export function verifyHaltWith (gov: { ingest: (bytes: Uint8Array, via: string, catchUp?: boolean) => Promise<boolean>, readonly haltReason: string | undefined }): (envelope: Uint8Array) => Promise<boolean> {
  return async (envelope) => {
    await gov.ingest(envelope, 'expert')
    return gov.haltReason != null
  }
}

/** a frame that decoded but fails invalidFrame(): a failure of the expert that sent it */
class InvalidFrameError extends Error {
  override name = 'InvalidFrameError'
}

function sessionTraffic (candidates: Candidate[]): Array<{ expert: string, bytes: number, frames: number }> {
  const out: Array<{ expert: string, bytes: number, frames: number }> = []
  for (const c of candidates) {
    if (c.session == null) continue
    out.push({ expert: c.id, bytes: c.session.bytesSent + c.session.bytesReceived, frames: c.session.frames })
  }
  return out
}

/**
 * Per node (shared by its routers): peer id → address group of the last connection this node
 * had with it, open or since closed (a connection's remote address is an observation; a
 * record's is a claim). Bounded; filled from every connection the node opens or accepts.
 */
const observedByNode = new WeakMap<MeshNode, LruMap<string, string>>()
function observedAddressGroups (node: MeshNode): LruMap<string, string> {
  let m = observedByNode.get(node)
  if (m == null) {
    const map = new LruMap<string, string>(MAX_TRACKED_EXPERTS)
    const note = (conn: { remotePeer: { toString: () => string }, remoteAddr: Parameters<typeof addressGroup>[0] }): void => {
      const g = addressGroup(conn.remoteAddr)
      if (g != null) map.set(conn.remotePeer.toString(), g)
    }
    for (const conn of node.getConnections()) note(conn)
    node.addEventListener('connection:open', (e: CustomEvent<any>) => { note(e.detail) })
    observedByNode.set(node, map)
    m = map
  }
  return m
}

/** how long a provider whose record could not be fetched goes to the end of the fetch order */
const RECORD_RETRY_MS = 60_000

function priorLatency (r: ExpertRecord): number {
  return r.tokensPerSecond > 0 ? 1000 / r.tokensPerSecond + 5 : 100
}

function hex (b: Uint8Array): string {
  return Buffer.from(b).toString('hex').slice(0, 16)
}
