/**
 * One generation of a router (`Router.generate`): its state (context tokens, candidates and
 * their sessions, steps, rng, the chosen experts, its signal) and the two ways it advances,
 * token by token (`step`: K experts per token, hedged, with a per-step deadline) and
 * speculatively (`speculativeLoop`: rounds sent by `startRound` / `extendRounds`, checked by
 * `verifyRound`, one batched request per expert each). Both ask experts through
 * one method (`ask`), so a failed expert is handled in one place (`handleFailure`): counted
 * against its health, penalised when its frame was invalid, reported to the observers, its
 * session dropped and the expert not asked again by this generation; a BUSY expert is asked
 * again after a backoff, and a step with no frame but BUSY experts left waits for them
 * (at most RouterOptions.busyWaitMs without a token) instead of failing.
 */
import { setTimeout as delay } from 'node:timers/promises'
import { MAX_DRAFT_TOKENS, Status, type Frame } from '../wire/types.js'
import { AggregationError, aggregate, probabilityOf, sparseProbability } from '../aggregate/aggregate.js'
import { CONTEXT_WINDOW } from '../aggregate/context-tail.js'
import { perplexityWeights } from '../aggregate/weighting.js'
import { OnlineWeights } from './online-weights.js'
import { createRng, sample, speculativeStep, speculativeStepSampled, type Proposal } from '../aggregate/sampling.js'
import type { Aggregated, AggregationRule, Rng, SamplingOptions } from '../aggregate/types.js'
import { BusyError, ContextOverflowError, ExpertError, HaltedError, IncompatibleTokenizerError, NoExpertsError, asError, errorMessage, errorName } from '../util/errors.js'
import type { Drafter } from './drafter.js'
import type { FrameEncoding } from '../wire/frame.js'
import { ExpertHaltedError, ExpertSession } from './expert-client.js'
import { robustAggregate } from './reputation.js'
import { GENERATE_DEFAULTS, InvalidGenerateOptionError, defaultTail, robustByDefault } from './options.js'
import type { TailModel } from '../aggregate/general.js'
import type { TailPrior } from '../aggregate/prior.js'
import { DEFAULT_DISCOVERY_SAMPLE, candidatePool, candidateSelection, checkFrame, InvalidFrameError, sessionTraffic, stepDeadline, type Candidate, type RouterCore, type Selection } from './candidates.js'
import type { GenerateOptions, GenerateResult, SpeculationStats, StepTrace, TokenEvent } from './router.js'

interface Framed { id: string, frame: Frame }

/** how long a generation waits without a token while every expert it may use is BUSY (RouterOptions.busyWaitMs) */
export const DEFAULT_BUSY_WAIT_MS = 120_000

/** the wait before asking an expert again after its `n`-th BUSY in a row: 250 ms doubling to 4 s, ±50 % jitter */
export function busyBackoff (n: number, random = Math.random): number {
  return Math.min(4_000, 250 * 2 ** Math.max(0, n - 1)) * (0.5 + random())
}

/** the state of a speculative generation's rounds */
interface Speculation {
  drafter: Drafter
  stats: SpeculationStats
  /** tokens this generation may still emit when the rounds began */
  budget: number
  emitted: number
  /** draft tokens accepted and rejected, each round's counts added to the earlier ones × ACCEPTANCE_DECAY */
  acceptedCount: number
  rejectedCount: number
}

/** a speculative round in flight: the chosen experts score `draft` after `base`, one batched request each */
interface Round {
  chosen: Candidate[]
  /** the context the round was sent with (a pipelined round's ends in drafted tokens not verified when it was sent) */
  base: number[]
  draft: number[]
  /** the drafter's proposal distributions (a sampled draft, temperature > 0) */
  proposals?: Proposal[]
  /** the 'local' tail's prior at each of its draft.length + 1 positions, computed while it is in flight (none without that tail) */
  priors: Array<Promise<TailPrior> | undefined>
  /** per chosen expert its frames, undefined where it failed */
  results: Promise<Array<{ id: string, frames: Frame[] } | undefined>>
  settled: boolean
  sentAt: number
}

/**
 * RouterOptions.maxFramesPerToken's default: the expected frames per emitted token that cost
 * each expert about this many bytes, at its sessions' measured bytes per frame (1.6 full
 * frames, ≈ 2.3 compact ones)
 */
export const DRAFT_BYTES_PER_TOKEN = 1400
/** a frame's bytes before a session has measured any: 256 entries, full (uint16 logprobs) or compact (one byte each) */
export const FRAME_BYTES_ESTIMATE: Readonly<Record<FrameEncoding, number>> = Object.freeze({ full: 870, compact: 600 })

/** the mean bytes of the frames `sessions` received so far (every byte of their responses), else the estimate for `encoding` */
export function frameBytes (sessions: Array<{ bytesReceived: number, frames: number } | undefined>, encoding: FrameEncoding): number {
  let bytes = 0
  let frames = 0
  for (const s of sessions) {
    if (s == null || s.frames === 0) continue
    bytes += s.bytesReceived
    frames += s.frames
  }
  return frames > 0 ? bytes / frames : FRAME_BYTES_ESTIMATE[encoding]
}

/** the acceptance estimate before any round: 0.6 (3 accepted, 2 rejected) */
const PRIOR_ACCEPTED = 3
const PRIOR_REJECTED = 2
/** each round's weight against the earlier ones in the acceptance estimate */
const ACCEPTANCE_DECAY = 0.85
/** a generation starts from its router's measured acceptance, weighed as this many draft tokens at most */
const ACCEPTANCE_MEMORY = 10
/** the first round of a pipeline (temperature 0): its draft's length at most (its drafting delays the first frames) */
export const FIRST_CHUNK = 4
/** a pipelined round's draft tokens at most (after its guess) */
export const CHUNK = 8
/** rounds in flight at once at most */
export const MAX_PIPELINED_ROUNDS = 4
/** a pipelined token is drafted only while the chance that every token before it is accepted is at least this */
export const PIPELINE_REACH = 0.1
/** unverified tokens in flight at most (MAX_DRAFT_TOKENS, one request's bound) */
export const MAX_AHEAD = MAX_DRAFT_TOKENS

/**
 * How many drafted tokens may be in flight unverified at per-token acceptance `a`: the most
 * for which every one is reached with probability ≥ PIPELINE_REACH (a^n ≥ 0.1: 3 at 0.5,
 * 10 at 0.8, 21 at 0.9, 32 at 0.95), at least 1, at most MAX_AHEAD.
 */
export function pipelineAhead (a: number): number {
  if (!(a > 0)) return 1
  if (a >= 1) return MAX_AHEAD
  return Math.max(1, Math.min(MAX_AHEAD, Math.floor(Math.log(PIPELINE_REACH) / Math.log(a))))
}

/** a round's draft tokens at most (not pipelined) */
export const MAX_DRAFT = 16

/**
 * Adaptive draft length: the n in [1, room] maximising expected tokens per unit time,
 * E(n) / (RTT + 3 ms · (n + 1)) with E(n) = (1 − a^(n+1)) / (1 − a) at acceptance a (clamped
 * to [0.05, 0.95]), among the lengths whose expected frames per emitted token, (n + 1) / E(n)
 * (growing with n), stay within `maxFramesPerToken`. One draft token is always allowed (at
 * most 2 frames per token): without a draft the acceptance could never be measured again.
 * 0 only when there is no room.
 */
export function draftLengthFor (o: { acceptance: number, rttMs: number, room: number, maxFramesPerToken: number }): number {
  const a = Math.min(0.95, Math.max(0.05, Number.isFinite(o.acceptance) ? o.acceptance : 0.05))
  let n = 0
  let best = -1
  for (let L = 1; L <= o.room; L++) {
    const expected = (1 - a ** (L + 1)) / (1 - a)
    if (L > 1 && (L + 1) / expected > o.maxFramesPerToken) break
    const rate = expected / (o.rttMs + 3 * L + 3)
    if (rate > best) { best = rate; n = L }
  }
  return n
}

function sameTokens (a: number[], b: number[]): boolean {
  if (a.length !== b.length) return false
  for (let i = a.length - 1; i >= 0; i--) if (a[i] !== b[i]) return false
  return true
}

export class Generation {
  readonly candidates: Candidate[] = []
  readonly generated: number[] = []
  readonly steps: StepTrace[] = []
  /** experts whose frames were aggregated for at least one token */
  readonly used = new Set<string>()
  readonly warnings: string[] = []
  readonly rng: Rng
  private context: number[] = []
  private promptTokens = 0
  private maxContext = 0
  private effectiveK = 0
  private readonly k: number
  private readonly rule: AggregationRule
  private readonly maxTokens: number
  private readonly samplingOpts: SamplingOptions
  private readonly byPerplexity: boolean
  /** 'online' weighting: what the router remembers of each expert plus this generation's tokens (src/router/online-weights.ts) */
  private readonly online: OnlineWeights | undefined
  private readonly tail: TailModel
  private byReputation = false
  private sel?: Selection
  /** candidates one generation may have (the discovery sample) */
  private sample = 0
  private text = ''
  private emitted = ''
  private finishReason: GenerateResult['finishReason'] = 'length'
  /** ms from the call to the first emitted token */
  private ttftMs: number | undefined
  /** aborted when the generation ends: its late and queued requests end with it (not the experts' fault) */
  private readonly ending = new AbortController()
  /** since when every expert this generation may use has been BUSY (performance.now() ms) */
  private busySince: number | undefined

  constructor (private readonly core: RouterCore, private readonly prompt: string | number[], private readonly opts: GenerateOptions, readonly signal: AbortSignal, private readonly started: number) {
    this.k = opts.k ?? GENERATE_DEFAULTS.k
    this.rule = opts.rule ?? GENERATE_DEFAULTS.rule
    this.maxTokens = opts.maxTokens ?? GENERATE_DEFAULTS.maxTokens
    this.rng = createRng(opts.seed ?? Math.floor(Math.random() * 2 ** 32))
    this.samplingOpts = { temperature: opts.temperature ?? GENERATE_DEFAULTS.temperature, topK: opts.topK ?? GENERATE_DEFAULTS.topK, topP: opts.topP ?? GENERATE_DEFAULTS.topP }
    const weighting = opts.weighting ?? GENERATE_DEFAULTS.weighting
    this.byPerplexity = weighting === 'perplexity'
    this.online = weighting === 'online' ? new OnlineWeights(core.expertMemory, { beta: opts.perplexityBeta }) : undefined
    this.tail = opts.tail ?? defaultTail(core.options.localModel != null)
  }

  /** runs the generation to its end; observers hear of its result or error; every session is closed */
  async run (): Promise<GenerateResult> {
    try {
      if (this.tail === 'local' && this.core.options.localModel == null) throw new InvalidGenerateOptionError('tail', "the 'local' tail needs a router with a local model (--local-model)")
      // (localPrior relies on this check)
      await this.selectExperts()
      const drafter = this.core.options.drafter
      let speculation: SpeculationStats | undefined
      if (this.opts.speculative === true && this.opts.constrain == null && drafter != null && this.generated.length < this.maxTokens && this.context.length < this.maxContext - 1) {
        speculation = await this.speculativeLoop(drafter)
      } else {
        await this.tokenLoop()
      }
      return this.finish(speculation)
    } catch (err) {
      const e = this.signal.aborted && this.signal.reason instanceof HaltedError ? this.signal.reason : err
      if (this.core.observers.size > 0) this.core.notify('onGeneration', { error: e, perExpert: sessionTraffic(this.candidates) })
      throw e
    } finally {
      await this.close()
    }
  }

  /** the candidates (compatible experts, restricted to opts.experts), the prompt's tokens, the effective K */
  async selectExperts (): Promise<void> {
    const { core, opts } = this
    // a sample of the mesh: K experts and spares (RouterOptions.discoverySample, at least 2K)
    const sample = Math.max(2 * this.k, core.options.discoverySample ?? DEFAULT_DISCOVERY_SAMPLE)
    // the first token waits for K experts, not for the whole sample nor for spares (unless the
    // caller named its experts: those may not be among the first found); the rest of the
    // sample arrives in the background and joins the candidates at later steps (refreshCandidates)
    const first = opts.experts != null ? sample : this.k
    let { compatible, incompatible } = await core.experts(false, this.signal, sample, first)
    if (compatible.length === 0) ({ compatible, incompatible } = await core.experts(true, this.signal, sample, first))
    if (opts.experts != null) compatible = compatible.filter(r => opts.experts?.includes(r.peerId.toString()))
    compatible = candidatePool(compatible, sample, core.health, core.available, core.options.local?.peerId.toString())
    if (compatible.length === 0) {
      if (incompatible.length > 0) {
        throw new IncompatibleTokenizerError(`found ${incompatible.length} expert(s) but none with this router's tokenizer (fingerprint ${hex(core.tokenizer.fingerprint)}): ${incompatible.map(r => `${r.modelName} ${hex(r.tokenizerFingerprint)}`).join(', ')}`)
      }
      throw new NoExpertsError('no experts found on the mesh')
    }
    for (const r of compatible) this.candidates.push({ record: r, id: r.peerId.toString() })
    this.sample = sample

    this.context = typeof this.prompt === 'string' ? core.tokenizer.encodePrompt(this.prompt) : [...this.prompt]
    this.promptTokens = this.context.length
    this.maxContext = Math.min(...compatible.map(r => r.contextLength))
    if (this.promptTokens >= this.maxContext - 1) {
      throw new ContextOverflowError(`prompt of ${this.promptTokens} tokens is longer than the experts' context (${this.maxContext} tokens, 1 needed for generation)`)
    }
    if (compatible.length < this.k) this.warnings.push(`only ${compatible.length} compatible expert(s) for K=${this.k}: generating with K=${compatible.length}`)
    this.effectiveK = Math.min(this.k, compatible.length)
    // screening and reputation: on by default for every rule at K ≥ 3 (robust by default)
    this.byReputation = robustByDefault(this.effectiveK, opts.reputation)
    this.sel = candidateSelection(core.node, core.health, this.candidates, { policy: opts.policy, colocationThreshold: core.options.colocationThreshold, localId: core.options.local?.peerId.toString() })
  }

  /**
   * Experts a background discovery found since the generation began join its candidates (as
   * spares: hedging, replacements), up to the sample; the selection (its colocation groups)
   * is computed again when any joined.
   */
  private refreshCandidates (): void {
    if (this.candidates.length >= this.sample) return
    const { core, opts } = this
    const have = new Set(this.candidates.map(c => c.id))
    let added = 0
    for (const r of core.known()) {
      if (this.candidates.length >= this.sample) break
      const id = r.peerId.toString()
      if (have.has(id) || (opts.experts != null && !opts.experts.includes(id))) continue
      // its context must hold what this generation may still reach
      if (r.contextLength < this.maxContext) continue
      this.candidates.push({ record: r, id })
      have.add(id)
      added++
    }
    if (added > 0) this.sel = candidateSelection(core.node, core.health, this.candidates, { policy: opts.policy, colocationThreshold: core.options.colocationThreshold, localId: core.options.local?.peerId.toString() })
  }

  private get selection (): Selection {
    if (this.sel == null) throw new Error('selectExperts() first')
    return this.sel
  }

  /** token by token: one step (K frames) per token */
  private async tokenLoop (): Promise<void> {
    const { opts } = this
    while (this.generated.length < this.maxTokens) {
      this.core.checkHalt()
      this.signal.throwIfAborted()
      if (this.context.length >= this.maxContext - 1) { this.finishReason = 'context'; break }
      const t0 = performance.now()
      // the local model's distribution is computed while the experts' frames are on their way
      const local = this.localPrior()
      local?.catch(() => {})
      const { frames, trace } = await this.step(this.effectiveK)
      trace.ms = performance.now() - t0
      this.steps.push(trace)
      for (const id of trace.experts) this.used.add(id)
      const raw = this.aggregate(frames, await local)
      const agg = opts.constrain != null ? opts.constrain(raw, this.generated) : raw
      const token = this.resolveEog(sample(agg, this.samplingOpts, this.rng), agg)
      if (token !== undefined) this.observe(frames, token, await local)
      if (token === undefined || this.emit(token, trace.experts)) break
    }
  }

  /**
   * One request to one expert, the same for both loops: opens its session on first use
   * (`opened`), runs `request` on it, and settles the bookkeeping of the outcome here (health,
   * observers; a failure through handleFailure). Resolves with the answer, or undefined when
   * the expert failed; rejects only when the whole generation must end (a verified halt, the
   * generation's signal).
   */
  private async ask<T>(c: Candidate, signal: AbortSignal, request: (session: ExpertSession, opened: boolean) => Promise<T>, on?: ExpertSession): Promise<T | undefined> {
    const t0 = performance.now()
    // a pipelined request goes over the session of the requests before it, or not at all
    if (on != null && c.session !== on) return undefined
    let value: T
    const opened = c.session == null
    let used: ExpertSession | undefined
    try {
      c.session ??= await this.core.connect(c.record.peerId, { signal })
      used = c.session
      value = await request(used, opened)
    } catch (e) {
      const err = e instanceof ExpertHaltedError ? await this.core.expertHalted(e) : e
      if (err instanceof HaltedError) throw err
      if (this.signal.aborted) throw this.signal.reason
      // an earlier request on the same session (pipelined rounds) failed first: handled once
      if (used != null && c.session !== used) return undefined
      if (this.ending.signal.aborted) {
        // the generation is over: its late request ends with it, held against nobody
        c.session?.abort(asError(err))
        c.session = undefined
        return undefined
      }
      this.handleFailure(c, err, performance.now() - t0)
      return undefined
    }
    const ms = performance.now() - t0
    c.busyCount = 0
    c.busyUntil = undefined
    // an open's time (dial, prefill, a wait for a slot) is no sample of the per-token latency
    this.core.health.success(c.id, opened ? undefined : ms)
    if (this.core.observers.size > 0) this.core.notify('onExpertRequest', { expert: c.id, ms, ok: true })
    return value
  }

  /**
   * An expert failed (error, timeout, invalid frame, unverified halt): it is not asked again
   * by this generation. BUSY is not a failure: the expert is at its session limit (its queue
   * full, or no slot freed in time) or this peer at its quota there; it is asked again after a
   * backoff (busyBackoff) and its circuit stays closed (opening it on BUSY made 50 concurrent
   * generations starve the ones already served).
   */
  handleFailure (c: Candidate, err: unknown, ms: number): void {
    const { core } = this
    const message = errorMessage(err)
    core.log('expert %s failed: %s', c.id, message)
    if (isBusy(err)) {
      c.busyCount = (c.busyCount ?? 0) + 1
      c.busyUntil = performance.now() + busyBackoff(c.busyCount)
    } else {
      core.health.failure(c.id, message)
      c.failed = true
    }
    if (err instanceof InvalidFrameError) core.reputation.penalize(c.id)
    if (core.observers.size > 0) core.notify('onExpertRequest', { expert: c.id, ms, ok: false, error: message, errorName: errorName(err) ?? 'Error', ...(err instanceof ExpertError && err.status != null ? { status: err.status } : {}) })
    c.session?.abort(asError(err))
    c.session = undefined
  }

  /** candidates waiting out a BUSY backoff (not failed) */
  private busyCandidates (): Candidate[] {
    return this.candidates.filter(c => c.failed !== true && c.busyUntil != null)
  }

  /**
   * Every expert this generation may use is BUSY: waits until the first may be asked again;
   * BusyError once the generation has waited RouterOptions.busyWaitMs without a token.
   */
  private async waitForBusy (): Promise<void> {
    const busy = this.busyCandidates()
    if (busy.length === 0) return
    const now = performance.now()
    this.busySince ??= now
    const budget = this.core.options.busyWaitMs ?? DEFAULT_BUSY_WAIT_MS
    if (now - this.busySince >= budget) {
      throw new BusyError(`every expert stayed busy for ${((now - this.busySince) / 1000).toFixed(1)} s (${busy.length} at their session limit; RouterOptions.busyWaitMs ${budget} ms)`)
    }
    // until the first may be asked again, at most to the end of the budget (one last try then)
    const until = Math.min(...busy.map(c => c.busyUntil ?? now), this.busySince + budget)
    try {
      await delay(Math.max(0, until - now), undefined, { signal: this.signal })
    } catch (err) {
      throw this.signal.aborted ? this.signal.reason : err
    }
  }

  /** whether `c` is waiting out a BUSY backoff now */
  private static backingOff (c: Candidate, now = performance.now()): boolean {
    return c.busyUntil != null && c.busyUntil > now
  }

  /**
   * One token step: `want` experts are sent the tokens they have not seen yet; a failed one is
   * replaced by a spare (prefilled with the whole context), a spare is asked when the chosen
   * ones are late (hedging), and past the step's deadline the step goes on with the frames it has.
   */
  async step (want: number): Promise<{ frames: Framed[], trace: StepTrace }> {
    while (true) {
      const r = await this.stepOnce(want)
      if (r !== undefined) {
        this.busySince = undefined
        return r
      }
      // no frame, and the experts left are BUSY: ask again once one may be
      await this.waitForBusy()
    }
  }

  /** one try at a step; undefined when no frame came and BUSY experts remain to ask again */
  private async stepOnce (want: number): Promise<{ frames: Framed[], trace: StepTrace } | undefined> {
    this.refreshCandidates()
    const { candidates, core } = this
    const sel = this.selection
    const usable = (): Candidate[] => candidates.filter(c => c.failed !== true && c.pending == null && !Generation.backingOff(c) && core.available(c.id))
    let pool = usable()
    if (pool.length === 0) {
      // every usable expert is busy with a late request: wait for one to settle
      const late = candidates.filter(c => c.pending != null)
      if (late.length > 0) await Promise.race(late.map(async c => c.pending?.catch(() => {})))
      pool = usable()
      if (pool.length === 0) {
        // half-open circuits: give the least recently failed experts another try
        pool = candidates.filter(c => c.failed !== true && c.pending == null && !Generation.backingOff(c) && !core.reputation.banned(c.id))
      }
      if (pool.length === 0 && this.busyCandidates().length > 0) return undefined
      if (pool.length === 0) throw new NoExpertsError('every expert failed during this generation')
    }
    const need = Math.min(want, pool.length)
    const chosen = sel.select(pool, need)
    const frames: Framed[] = []
    const trace: StepTrace = { experts: [], dropped: [], ms: 0 }
    const contextNow = Uint32Array.from(this.context)
    const hardTimeout = core.options.requestTimeoutMs ?? 30_000
    const scorePrompt = this.byPerplexity

    return await new Promise<{ frames: Framed[], trace: StepTrace } | undefined>((resolve, reject) => {
      let settled = false
      let outstanding = 0
      /** the step's deadline passed with no frame yet: the first frame to arrive ends the step */
      let overdue = false
      const asked = new Set<string>()
      const settle = (): void => {
        settled = true
        clearTimeout(deadlineTimer)
        clearTimeout(hedgeTimer)
      }
      const finish = (): void => {
        if (settled) return
        settle()
        for (const id of asked) if (!trace.experts.includes(id)) trace.dropped.push(id)
        if (frames.length > 0) resolve({ frames: frames.slice(0, need), trace })
        else if (this.busyCandidates().length > 0) resolve(undefined)
        else reject(new NoExpertsError('no expert answered this step'))
      }
      const spare = (): Candidate | undefined => {
        const rest = usable().filter(c => !asked.has(c.id))
        if (rest.length === 0) return undefined
        return sel.select(rest, 1)[0]
      }
      const launch = (c: Candidate): void => {
        asked.add(c.id)
        outstanding++
        const reqSignal = AbortSignal.any([this.signal, this.ending.signal, AbortSignal.timeout(hardTimeout)])
        const run = this.ask(c, reqSignal, async (session, opened) => {
          const frame = opened
            ? await session.open(contextNow, core.tokenizer.fingerprint, { signal: reqSignal, scorePrompt })
            : await session.step(contextNow.subarray(session.synced), { signal: reqSignal })
          checkFrame(frame, contextNow.length, core.tokenizer.vocabSize)
          return frame
        })
        c.pending = run.then(() => {}, () => {})
        run.then(frame => {
          c.pending = undefined
          outstanding--
          if (frame === undefined) {
            // the expert failed: a spare takes its place
            if (settled) return
            const r = spare()
            if (r != null) launch(r)
            else if (outstanding === 0) finish()
            return
          }
          if (!settled && frames.length < need) {
            frames.push({ id: c.id, frame })
            trace.experts.push(c.id)
            // enough frames; or past the deadline; or nobody else left to answer
            if (frames.length >= need || overdue || outstanding === 0) finish()
          }
        }, (err: unknown) => {
          // a verified halt or the generation's signal: the step ends with it
          c.pending = undefined
          outstanding--
          if (!settled) { settle(); reject(err) }
        })
      }
      const deadline = stepDeadline(chosen, sel, core.options.minStepDeadlineMs)
      const hedgeTimer = setTimeout(() => {
        // hedge: one spare expert when the chosen ones are late
        if (!settled && frames.length < need) { const r = spare(); if (r != null) launch(r) }
      }, Math.max(200, deadline / 2))
      const deadlineTimer = setTimeout(() => {
        if (frames.length > 0) finish()
        // otherwise the first frame ends the step (or the hard per-request timeout does)
        else overdue = true
      }, deadline)
      for (const c of chosen) launch(c)
    })
  }

  /**
   * Speculative rounds: draft → the same K experts score every draft position in one
   * batched request each → per position the ensemble distribution decides (speculative
   * sampling: accept with the probability the target gives the draft token, else draw
   * from the target without it, and end the round). Identical output to token-by-token
   * decoding at temperature 0, the same distribution above it (docs/speculative.md).
   *
   * At temperature 0 the rounds are pipelined: while a round is in flight the drafter goes on
   * from its draft (its next token, a guess, then a chunk after it) and that continuation is
   * sent to the same experts as the next round, up to a number of unverified tokens the
   * measured acceptance makes likely to be used (pipelineAhead). A round's frames are used
   * only when every token before them was accepted, i.e. when the context they were computed
   * on is the one the generation reached; at the first rejection the rounds behind it are
   * discarded (their frames still read, so the sessions stay in step) and the next round
   * starts from the corrected context with a rollback.
   */
  private async speculativeLoop (drafter: Drafter): Promise<SpeculationStats> {
    // the acceptance measured by this router's earlier generations (at most ACCEPTANCE_MEMORY rounds' weight), else the prior
    const kind = this.samplingOpts.temperature === 0 ? 'greedy' : 'sampled'
    const before = this.core.acceptance.get(kind)
    const scale = before != null ? Math.min(1, ACCEPTANCE_MEMORY / (before.accepted + before.rejected)) : 1
    const spec: Speculation = {
      drafter,
      stats: { drafter: drafter.name, rounds: 0, drafted: 0, accepted: 0, meanDraftLength: 0, pipelined: 0, discarded: 0, draftMs: 0, waitMs: 0, verifyMs: 0 },
      budget: this.maxTokens - this.generated.length,
      emitted: 0,
      acceptedCount: before != null ? before.accepted * scale : PRIOR_ACCEPTED,
      rejectedCount: before != null ? before.rejected * scale : PRIOR_REJECTED
    }
    const pipeline = this.samplingOpts.temperature === 0 && this.core.options.pipelineRounds !== false
    const rounds: Round[] = []
    try {
      while (spec.emitted < spec.budget) {
        this.core.checkHalt()
        this.signal.throwIfAborted()
        if (rounds.length === 0) {
          const round = await this.startRound(spec, pipeline)
          if (round != null) rounds.push(round)
          continue
        }
        if (pipeline && !rounds[0].settled) {
          const next = await this.extendRounds(spec, rounds)
          if (next != null) {
            rounds.push(next)
            continue
          }
        }
        const head = rounds.shift() as Round
        const outcome = await this.verifyRound(spec, head, rounds[0])
        if (outcome === 'ended') break
        if (outcome === 'restart') {
          spec.stats.discarded += rounds.length
          rounds.length = 0
        }
      }
    } finally {
      // rounds drafted past the end: their frames are not needed (close() ends their requests)
      spec.stats.discarded += rounds.length
    }
    if (spec.stats.rounds > 0) {
      spec.stats.meanDraftLength /= spec.stats.rounds
      this.core.acceptance.set(kind, { accepted: spec.acceptedCount, rejected: spec.rejectedCount })
    }
    return spec.stats
  }

  /** the measured per-token acceptance probability (decayed counts, Speculation) */
  private static acceptance (spec: Speculation): number {
    return spec.acceptedCount / (spec.acceptedCount + spec.rejectedCount)
  }

  /** adaptive draft length (draftLengthFor) at this generation's measured acceptance and its experts' latency */
  private draftLength (spec: Speculation, pool: Candidate[]): number {
    const healthNow = this.selection.health()
    return draftLengthFor({
      acceptance: Generation.acceptance(spec),
      rttMs: Math.min(...pool.map(c => healthNow(c).latencyMs)),
      room: Math.min(spec.budget - spec.emitted - 1, this.maxContext - 2 - this.context.length, MAX_DRAFT),
      maxFramesPerToken: this.core.options.maxFramesPerToken ?? DRAFT_BYTES_PER_TOKEN / frameBytes(pool.map(c => c.session), this.core.options.frames ?? 'compact')
    })
  }

  /**
   * A round from the generation's context (the first of a pipeline at temperature 0: a short
   * chunk, so the first frames come back soon; the rest follow in extendRounds). Undefined
   * when no expert may be asked now (then it has waited for a BUSY one).
   */
  private async startRound (spec: Speculation, pipeline: boolean): Promise<Round | undefined> {
    this.refreshCandidates()
    const { core } = this
    const pool = this.candidates.filter(c => c.failed !== true && !Generation.backingOff(c) && core.available(c.id))
    if (pool.length === 0) {
      if (this.busyCandidates().length === 0) throw new NoExpertsError('every expert failed during this generation')
      await this.waitForBusy()
      return undefined
    }
    let n = this.draftLength(spec, pool)
    if (pipeline) n = Math.min(n, FIRST_CHUNK)
    // temperature > 0: a sampling drafter proposes from its own distribution (acceptance
    // Σ min(p, q)); otherwise a deterministic draft (acceptance p(x))
    let draft: number[] = []
    let proposals: Proposal[] | undefined
    const t0 = performance.now()
    if (n > 0 && this.samplingOpts.temperature > 0 && spec.drafter.proposeSampled != null) {
      const d = await spec.drafter.proposeSampled(this.context, n, this.samplingOpts, this.rng)
      draft = d.tokens.slice(0, n)
      proposals = d.proposals
    } else if (n > 0) {
      draft = (await spec.drafter.propose(this.context, n)).slice(0, n)
    }
    spec.stats.draftMs += performance.now() - t0
    // experts whose sessions are open first: one without costs the round a stream negotiation
    // and a prefill (a round trip more); the others catch up in the round's own batch
    const want = Math.min(this.effectiveK, pool.length)
    const open = pool.filter(c => c.session?.info != null)
    const chosen = open.length >= want ? this.selection.select(open, want) : [...open, ...this.selection.select(pool.filter(c => c.session?.info == null), want - open.length)]
    return this.sendRound(chosen, [...this.context], draft, proposals, false)
  }

  /**
   * While the first round is in flight: the drafter's continuation of the last round (its next
   * token, a guess the last round's final frame will verify, and a chunk after it) as one more
   * round to the same experts, when their sessions are open and the unverified tokens stay
   * within pipelineAhead of the measured acceptance. Undefined when no round is added.
   */
  private async extendRounds (spec: Speculation, rounds: Round[]): Promise<Round | undefined> {
    const last = rounds[rounds.length - 1]
    if (rounds.length >= MAX_PIPELINED_ROUNDS) return undefined
    if (last.chosen.some(c => c.failed === true || c.session?.info == null)) return undefined
    // unverified tokens in flight: every draft, and each later round's guess
    const unverified = rounds.reduce((sum, r) => sum + r.draft.length, 0) + rounds.length - 1
    const base = [...last.base, ...last.draft]
    const n = Math.min(
      CHUNK,
      pipelineAhead(Generation.acceptance(spec)) - unverified - 1,
      // the guess and its chunk are tokens this generation may still emit (the last one's frame samples a bonus)
      spec.budget - spec.emitted - unverified - 2,
      this.maxContext - 3 - base.length
    )
    if (n < 1) return undefined
    const more = (await spec.drafter.propose(base, n + 1)).slice(0, n + 1)
    if (more.length < 2) return undefined
    this.signal.throwIfAborted()
    spec.stats.pipelined++
    return this.sendRound(last.chosen, [...base, more[0]], more.slice(1), undefined, true)
  }

  /**
   * Sends one round: each chosen expert scores `draft` after `base` (speculate). A pipelined
   * round goes only over the session the rounds before it use: an expert whose session failed
   * meanwhile is not asked (and not reconnected) by it.
   */
  private sendRound (chosen: Candidate[], base: number[], draft: number[], proposals: Proposal[] | undefined, pipelined: boolean): Round {
    const { core } = this
    const ctx = Uint32Array.from(base)
    const dr = Uint32Array.from(draft)
    const reqSignal = AbortSignal.any([this.signal, this.ending.signal, AbortSignal.timeout(core.options.requestTimeoutMs ?? 30_000)])
    const scorePrompt = this.byPerplexity
    // the local model's distribution at every draft position ('local' tail), computed during the round trip
    const priors = this.tail === 'local' ? Array.from({ length: draft.length + 1 }, (_, i) => this.localPrior([...base, ...draft.slice(0, i)])) : []
    for (const p of priors) p?.catch(() => {})
    const results = Promise.all(chosen.map(async c => {
      const on = c.session
      if (pipelined && on == null) return undefined
      const frames = await this.ask(c, reqSignal, async (session) => {
        const frames = await session.speculate(ctx, dr, core.tokenizer.fingerprint, { signal: reqSignal, scorePrompt })
        frames.forEach((f, i) => { checkFrame(f, ctx.length + i, core.tokenizer.vocabSize) })
        return frames
      }, pipelined ? on : undefined)
      return frames === undefined ? undefined : { id: c.id, frames }
    }))
    const round: Round = { chosen, base, draft, proposals, priors, results, settled: false, sentAt: performance.now() }
    results.then(() => { round.settled = true }, () => { round.settled = true })
    return round
  }

  /**
   * Verifies a round's draft and emits what the ensemble accepts. `next`: the round pipelined
   * behind it, whose first token (a guess) this round's last frame verifies. 'continue': every
   * token was accepted, `next` goes on from here; 'restart': a token was rejected (or the
   * bonus token sampled, or no expert answered): the next round starts from the context.
   */
  private async verifyRound (spec: Speculation, head: Round, next?: Round): Promise<'ended' | 'continue' | 'restart'> {
    const t0 = performance.now()
    const settled = await head.results
    const t1 = performance.now()
    spec.stats.waitMs += t1 - t0
    try {
      return await this.verifyFrames(spec, head, settled, next)
    } finally {
      spec.stats.verifyMs += performance.now() - t1
    }
  }

  private async verifyFrames (spec: Speculation, head: Round, settled: Awaited<Round['results']>, next?: Round): Promise<'ended' | 'continue' | 'restart'> {
    const ok = settled.filter((r): r is { id: string, frames: Frame[] } => r != null)
    const trace: StepTrace = { experts: ok.map(r => r.id), dropped: head.chosen.map(c => c.id).filter(id => !ok.some(r => r.id === id)), ms: performance.now() - head.sentAt }
    // every chosen expert failed (or was BUSY): the next round picks others (or waits); a
    // pipelined round whose context is not the one reached is never used
    if (ok.length === 0 || !sameTokens(this.context, head.base)) return 'restart'
    this.busySince = undefined
    for (const id of trace.experts) this.used.add(id)
    const { stats } = spec
    // the tokens this round's frames verify: its draft, then the next round's guess
    const drafted = next != null ? [...head.draft, next.base[next.base.length - 1]] : head.draft
    stats.rounds++
    stats.drafted += drafted.length
    stats.meanDraftLength += drafted.length
    let acceptedHere = 0
    let rejected = 0
    let outcome: 'ended' | 'continue' | 'restart' = 'continue'
    for (let i = 0; i <= head.draft.length; i++) {
      const framed = ok.map(r => ({ id: r.id, frame: r.frames[i] }))
      const prior = await head.priors[i]
      const agg = this.aggregate(framed, prior)
      let token: number
      let accepted = false
      if (i < drafted.length) {
        const r = head.proposals != null ? speculativeStepSampled(agg, this.samplingOpts, drafted[i], head.proposals[i], this.rng) : speculativeStep(agg, this.samplingOpts, drafted[i], this.rng)
        token = r.token
        accepted = r.accepted
        if (!accepted) rejected++
      } else {
        token = sample(agg, this.samplingOpts, this.rng)
      }
      const resolved = this.resolveEog(token, agg)
      if (resolved === undefined) { outcome = 'ended'; break }
      if (resolved !== token) accepted = false // ignoreEos replaced it: the draft diverges here
      this.observe(framed, resolved, prior)
      if (accepted) acceptedHere++
      this.steps.push(i === 0 ? trace : { experts: trace.experts, dropped: [], ms: 0 })
      spec.emitted++
      if (this.emit(resolved, trace.experts)) { outcome = 'ended'; break }
      if (!accepted) { outcome = 'restart'; break }
    }
    stats.accepted += acceptedHere
    spec.acceptedCount = ACCEPTANCE_DECAY * spec.acceptedCount + acceptedHere
    spec.rejectedCount = ACCEPTANCE_DECAY * spec.rejectedCount + rejected
    return outcome
  }

  /** 'online' weighting: each expert's probability of the emitted token, from the frame it sent before knowing it */
  private observe (frames: Framed[], token: number, prior: TailPrior | undefined): void {
    if (this.online == null) return
    const V = this.core.tokenizer.vocabSize
    // a set of experts' probability of the token: the aggregate this step would have sampled from with only them
    // (NaN where that set has no aggregate, e.g. the caller's fixed weights are all 0 there: no evidence then)
    const probability = (members: number[], ws: number[]): number => {
      try {
        return probabilityOf(this.aggregateWith(members.map(j => frames[j]), ws, prior), token)
      } catch (err) {
        if (err instanceof AggregationError) return NaN
        throw err
      }
    }
    this.online.observe(frames.map(f => ({ id: f.id, p: sparseProbability(f.frame, token, V) })), probability)
  }

  /** the prompt scores of the experts' sessions (or, 'online', their record so far) → weights (uniform ones when none scored) */
  private promptWeights (ids: string[]): number[] {
    if (this.online != null) return this.online.weights(ids)
    if (!this.byPerplexity) return ids.map(() => 1)
    return perplexityWeights(ids.map(id => {
      const info = this.candidates.find(c => c.id === id)?.session?.info
      return { logprob: info?.promptLogprob, count: info?.promptScored }
    }), { beta: this.opts.perplexityBeta })
  }

  /** the 'local' tail's prior after `tokens` (default: the context) from the router's local model, else undefined */
  private localPrior (tokens: number[] = this.context): Promise<TailPrior> | undefined {
    if (this.tail !== 'local') return undefined
    const local = this.core.options.localModel as NonNullable<RouterCore['options']['localModel']> // checked by run()
    // the CLI hands over a model still loading (loaded beside the mesh start)
    return local instanceof Promise ? local.then(async m => await m.prior(tokens)) : local.prior(tokens)
  }

  /** the ensemble distribution after the context (speculation emits each accepted token before the next position is aggregated) */
  private aggregate (frames: Framed[], prior?: TailPrior): Aggregated {
    const { core } = this
    const pw = this.promptWeights(frames.map(f => f.id))
    const run = (keep: (j: number) => boolean, rw: number[]): Aggregated => this.aggregateWith(frames.filter((_, j) => keep(j)), pw.map((w, j) => w * rw[j]).filter((_, j) => keep(j)), prior)
    // robust: reputation-scaled weights, gross outliers of this step (K ≥ 3) screened out, every frame observed
    return this.byReputation ? robustAggregate(frames, core.reputation, core.tokenizer.vocabSize, run) : run(() => true, frames.map(() => 1))
  }

  /** the step's aggregate of `frames` with weights `ws` (times the caller's fixed weights): rule, tail, prior and context of this generation */
  private aggregateWith (frames: Framed[], ws: number[], prior?: TailPrior): Aggregated {
    const { opts, core, tail } = this
    const tokensSoFar = tail === 'context' || tail === 'local' ? this.context.slice(-CONTEXT_WINDOW) : undefined
    return aggregate(frames.map((f, j) => ({ dist: f.frame, weight: (opts.weights?.[f.id] ?? 1) * ws[j] })), { rule: this.rule, vocabSize: core.tokenizer.vocabSize, tail, context: tokensSoFar, prior })
  }

  /** appends a sampled token and streams it; true when the generation must end */
  private emit (token: number, experts: string[]): boolean {
    const { opts, core } = this
    this.context.push(token)
    this.generated.push(token)
    this.ttftMs ??= performance.now() - this.started
    let text = core.tokenizer.decode(this.generated)
    let stopHit = false
    if (opts.stop != null && opts.stop.length > 0) {
      for (const s of opts.stop) {
        const at = s.length > 0 ? text.indexOf(s) : -1
        if (at >= 0) { text = text.slice(0, at); stopHit = true }
      }
    }
    this.text = text
    // emit only completed characters (a token may end inside a UTF-8 sequence)
    const ready = stopHit ? text : text.slice(0, ((end: number) => { while (end > 0 && text.charCodeAt(end - 1) === 0xfffd) end--; return end })(text.length)) // trailing U+FFFD trimmed by a loop from the end (a regex is quadratic on long U+FFFD runs)
    const piece = ready.startsWith(this.emitted) ? ready.slice(this.emitted.length) : ''
    if (piece.length > 0 || stopHit) this.emitted = ready
    const tokenEvent: TokenEvent = { token, text: piece, experts, index: this.generated.length - 1 }
    opts.onToken?.(tokenEvent)
    if (core.observers.size > 0) core.notify('onToken', tokenEvent)
    if (stopHit) { this.finishReason = 'stop'; return true }
    if (this.context.length >= this.maxContext - 1 && this.generated.length < this.maxTokens) { this.finishReason = 'context'; return true }
    return this.generated.length >= this.maxTokens
  }

  /** an end-of-generation token ends the generation (undefined) unless ignoreEos */
  private resolveEog (token: number, agg: Aggregated): number | undefined {
    const { tokenizer } = this.core
    if (!tokenizer.isEndOfGeneration(token)) return token
    if (this.opts.ignoreEos !== true) { this.finishReason = 'eos'; return undefined }
    return [...agg.ids].find(t => !tokenizer.isEndOfGeneration(t)) ?? token
  }

  /** the result; the router's totals and the observers updated */
  finish (speculation?: SpeculationStats): GenerateResult {
    const { core, generated, steps } = this
    const elapsedMs = performance.now() - this.started
    let bytes = 0
    let expertSteps = 0
    for (const c of this.candidates) {
      if (c.session == null) continue
      bytes += c.session.bytesSent + c.session.bytesReceived
      expertSteps += c.session.frames
    }
    core.stats.generations++
    core.stats.tokens += generated.length
    core.stats.bytes += bytes
    core.stats.expertSteps += expertSteps
    const expertTokens = steps.reduce((a, st) => a + st.experts.length, 0)
    core.stats.lastTokensPerSecond = generated.length / (elapsedMs / 1000)
    const result: GenerateResult = {
      text: this.text,
      tokens: generated.length,
      tokenIds: [...generated],
      promptTokens: this.promptTokens,
      elapsedMs,
      ...(this.ttftMs !== undefined ? { ttftMs: this.ttftMs } : {}),
      tokensPerSecond: generated.length / (elapsedMs / 1000),
      k: this.k,
      effectiveK: this.effectiveK,
      experts: [...this.used],
      // all bytes of every session (hedged, late and rejected-draft frames included) per
      // (generated token × expert that served it)
      bytesPerExpertToken: expertTokens > 0 ? bytes / expertTokens : 0,
      finishReason: this.finishReason,
      steps,
      warnings: this.warnings,
      ...(speculation != null ? { speculation } : {})
    }
    if (core.observers.size > 0) core.notify('onGeneration', { result, perExpert: sessionTraffic(this.candidates) })
    return result
  }

  /** ends late and queued requests, then closes every session */
  private async close (): Promise<void> {
    this.ending.abort(new Error('the generation ended'))
    this.online?.commit() // what this generation learnt of its experts, for the router's next ones
    await Promise.allSettled(this.candidates.map(async c => {
      await c.pending?.catch(() => {})
      await c.session?.close()
    }))
  }
}

function hex (b: Uint8Array): string {
  return Buffer.from(b).toString('hex').slice(0, 16)
}

/** an expert's BUSY answer (ExpertError with status BUSY) */
export function isBusy (err: unknown): boolean {
  return err instanceof ExpertError && err.status === Status.BUSY
}
