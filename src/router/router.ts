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
import { createRng, sample } from '../aggregate/sampling.js'
import type { AggregationRule, Rng } from '../aggregate/types.js'
import { ContextOverflowError, HaltedError, IncompatibleTokenizerError, NoExpertsError } from '../util/errors.js'
import { discoverExperts } from './discovery.js'
import { ExpertSession } from './expert-client.js'
import { HealthTable } from './health.js'
import type { RouterTokenizer } from './tokenizer.js'
import { selectExperts, type SelectionPolicy } from './selection.js'

export interface GenerateOptions {
  /** experts per token (default 3) */
  k?: number
  maxTokens?: number
  /** 0 = greedy */
  temperature?: number
  topK?: number
  topP?: number
  seed?: number
  stop?: string[]
  rule?: AggregationRule
  policy?: SelectionPolicy
  /** aggregation weight per expert peer id (default 1) */
  weights?: Record<string, number>
  /** restrict to these expert peer ids */
  experts?: string[]
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
}

export interface RouterOptions {
  /** minimum per-step deadline (ms) before proceeding with fewer than K frames */
  minStepDeadlineMs?: number
  /** hard limit for one expert request (ms): past it the expert is dropped */
  requestTimeoutMs?: number
  /** how long discovery results are reused (ms) */
  discoveryTtlMs?: number
  discoveryTimeoutMs?: number
  haltReason?: () => string | undefined
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
  private readonly log: Logger
  private known: ExpertRecord[] = []
  private knownAt = 0
  private incompatible: ExpertRecord[] = []
  readonly stats = { generations: 0, tokens: 0, bytes: 0, expertSteps: 0, lastTokensPerSecond: 0 }
  private readonly live = new Set<AbortController>()

  constructor (readonly node: MeshNode, readonly tokenizer: RouterTokenizer, private readonly opts: RouterOptions = {}) {
    this.log = defaultLogger().forComponent('meshllm:router')
  }

  /** experts currently known (compatible), refreshed from the DHT when stale */
  async experts (force = false, signal?: AbortSignal): Promise<{ compatible: ExpertRecord[], incompatible: ExpertRecord[] }> {
    const ttl = this.opts.discoveryTtlMs ?? 10_000
    const now = Date.now()
    if (force || now - this.knownAt > ttl || this.known.length === 0) {
      const r = await discoverExperts(this.node, this.tokenizer.fingerprint, { timeoutMs: this.opts.discoveryTimeoutMs ?? 4_000, signal })
      this.known = r.compatible.filter(x => x.expiresAtMs > now)
      this.incompatible = r.incompatible
      this.knownAt = Date.now()
    }
    return { compatible: this.known, incompatible: this.incompatible }
  }

  /** Ends every in-flight generation (governance HALT). */
  abortAll (reason: string): void {
    for (const c of this.live) c.abort(new HaltedError(`halted by governance: ${reason}`))
  }

  private checkHalt (): void {
    const reason = this.opts.haltReason?.()
    if (reason != null) throw new HaltedError(`halted by governance: ${reason}`)
  }

  async generate (prompt: string | number[], opts: GenerateOptions = {}): Promise<GenerateResult> {
    this.checkHalt()
    const started = performance.now()
    const ctrl = new AbortController()
    this.live.add(ctrl)
    const signal = opts.signal != null ? AbortSignal.any([opts.signal, ctrl.signal]) : ctrl.signal
    const k = Math.max(1, opts.k ?? 3)
    const maxTokens = opts.maxTokens ?? 64
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

      const generated: number[] = []
      const steps: StepTrace[] = []
      const used = new Set<string>()
      let emitted = ''
      let finishReason: GenerateResult['finishReason'] = 'length'
      let text = ''
      while (generated.length < maxTokens) {
        this.checkHalt()
        signal.throwIfAborted()
        if (context.length >= maxContext - 1) { finishReason = 'context'; break }
        const t0 = performance.now()
        const { frames, trace } = await this.step(candidates, context, effectiveK, signal)
        trace.ms = performance.now() - t0
        steps.push(trace)
        for (const id of trace.experts) used.add(id)
        const agg = aggregate(frames.map(f => ({ dist: f.frame, weight: opts.weights?.[f.id] ?? 1 })), { rule: opts.rule ?? 'mixture', vocabSize: this.tokenizer.vocabSize })
        let token = sample(agg, { temperature: opts.temperature ?? 0.8, topK: opts.topK ?? 0, topP: opts.topP ?? 0.95 }, rng)
        if (this.tokenizer.isEndOfGeneration(token)) {
          if (opts.ignoreEos !== true) { finishReason = 'eos'; break }
          token = [...agg.ids].find(t => !this.tokenizer.isEndOfGeneration(t)) ?? token
        }
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
        const ready = stopHit ? text : text.replace(/\uFFFD+$/, '')
        const piece = ready.startsWith(emitted) ? ready.slice(emitted.length) : ''
        if (piece.length > 0 || stopHit) emitted = ready
        opts.onToken?.({ token, text: piece, experts: trace.experts, index: generated.length - 1 })
        if (stopHit) { finishReason = 'stop'; break }
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
      this.stats.lastTokensPerSecond = generated.length / (elapsedMs / 1000)
      return {
        text,
        tokens: generated.length,
        promptTokens,
        elapsedMs,
        tokensPerSecond: generated.length / (elapsedMs / 1000),
        k,
        effectiveK,
        experts: [...used],
        bytesPerExpertToken: expertSteps > 0 ? bytes / expertSteps : 0,
        finishReason,
        steps,
        warnings
      }
    } catch (err: any) {
      if (signal.aborted && signal.reason instanceof HaltedError) throw signal.reason
      throw err
    } finally {
      this.live.delete(ctrl)
      await Promise.allSettled(candidates.map(async c => {
        await c.pending?.catch(() => {})
        await c.session?.close()
      }))
    }
  }

  /** per-step deadline: a multiple of the slowest chosen expert's latency EWMA */
  private deadlineFor (chosen: Candidate[]): number {
    const lat = Math.max(...chosen.map(c => this.health.get(c.id, priorLatency(c.record)).latencyMs))
    return Math.max(this.opts.minStepDeadlineMs ?? 1_500, 4 * lat + 100)
  }

  private async step (candidates: Candidate[], context: number[], want: number, signal: AbortSignal): Promise<{ frames: Array<{ id: string, frame: Frame }>, trace: StepTrace }> {
    const usable = (): Candidate[] => candidates.filter(c => c.failed !== true && c.pending == null && this.health.available(c.id))
    let pool = usable()
    if (pool.length === 0) {
      // every usable expert is busy with a late request: wait for one to settle
      const busy = candidates.filter(c => c.pending != null)
      if (busy.length > 0) await Promise.race(busy.map(async c => c.pending?.catch(() => {})))
      pool = usable()
      if (pool.length === 0) {
        // half-open circuits: give the least recently failed experts another try
        pool = candidates.filter(c => c.failed !== true && c.pending == null)
      }
      if (pool.length === 0) throw new NoExpertsError('every expert failed during this generation')
    }
    const need = Math.min(want, pool.length)
    const chosen = selectExperts(pool, need, c => this.health.get(c.id, priorLatency(c.record)), (c) => c.record, this.opts as any, Math.random)
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
        return selectExperts(rest, 1, c => this.health.get(c.id, priorLatency(c.record)), (c) => c.record, this.opts as any, Math.random)[0]
      }
      const launch = (c: Candidate): void => {
        asked.add(c.id)
        outstanding++
        const t0 = performance.now()
        const reqSignal = AbortSignal.any([signal, AbortSignal.timeout(hardTimeout)])
        const run = (async (): Promise<Frame> => {
          if (c.session == null) {
            c.session = await ExpertSession.connect(this.node, c.record.peerId, reqSignal)
            return await c.session.open(contextNow, this.tokenizer.fingerprint, reqSignal)
          }
          return await c.session.step(contextNow.subarray(c.session.synced), reqSignal)
        })()
        c.pending = run.then(() => {}, () => {})
        run.then(frame => {
          c.pending = undefined
          outstanding--
          this.health.success(c.id, performance.now() - t0)
          if (frame.position !== contextNow.length) throw new Error(`frame for position ${frame.position}, expected ${contextNow.length}`)
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
          c.failed = true
          c.session?.abort(err)
          c.session = undefined
          if (settled) return
          const r = spare()
          if (r != null) launch(r)
          else if (outstanding === 0) finish()
        })
      }
      const deadline = this.deadlineFor(chosen)
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

function priorLatency (r: ExpertRecord): number {
  return r.tokensPerSecond > 0 ? 1000 / r.tokensPerSecond + 5 : 100
}

function hex (b: Uint8Array): string {
  return Buffer.from(b).toString('hex').slice(0, 16)
}
