/**
 * The router: per output token it selects K of the N known experts, sends each the tokens it
 * has not seen yet (catch-up in one batch), aggregates the frames and samples the next token.
 * The router holds what outlives a generation (known experts, health, reputation, observers,
 * totals); each generation is an object of its own (src/router/generation.ts), its candidates
 * and their selection in src/router/candidates.ts.
 *
 * Robustness: a per-step deadline derived from observed latency, hedging (a spare expert is
 * asked when a chosen one is late), replacement of failed experts (the replacement is
 * prefilled with the whole context), a circuit breaker per expert, and graceful operation
 * with fewer than K experts (down to 1), reported in the result.
 */
import type { AbortOptions, ComponentLogger, Logger, PeerId, Stream } from '@libp2p/interface'
import { defaultLogger } from '@libp2p/logger'
import { equals } from 'uint8arrays/equals'
import type { MeshNode } from '../node/node.js'
import type { ExpertRecord } from '../wire/record.js'
import type { TailModel } from '../aggregate/general.js'
import type { Aggregated, AggregationRule } from '../aggregate/types.js'
import type { Drafter } from './drafter.js'
import type { LocalModel } from './local-model.js'
import { HaltedError } from '../util/errors.js'
import { discoverExperts } from './discovery.js'
import type { RecordCache } from './record-cache.js'
import type { FrameEncoding } from '../wire/frame.js'
import { ExpertSession, type ExpertHaltedError } from './expert-client.js'
import { HealthTable, LruMap, MAX_TRACKED_EXPERTS } from './health.js'
import { ReputationTable, type ReputationOptions } from './reputation.js'
import type { RouterTokenizer } from './tokenizer.js'
import { validateGenerateOptions } from './options.js'
import type { SelectionPolicy } from './selection.js'
import { DEFAULT_DISCOVERY_SAMPLE, observedAddressGroups, type RouterCore } from './candidates.js'
import { Generation } from './generation.js'
import { ExpertMemory, type ExpertMemoryOptions } from './online-weights.js'

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
   * w_e ∝ exp(−β · NLL_e / (n_e + n₀)), multiplied with `weights`; 'online': the same formula
   * over the tokens generated so far, NLL_e from the frames expert e sent BEFORE it saw each
   * token (nothing it reports about itself: a liar cannot raise its weight without predicting
   * well), starting from the router's memory of it (`expertMemory`) and, with 3–8 experts,
   * averaged over the step's set and its leave-one-out sets by how well each set predicted
   * (src/router/online-weights.ts); 'uniform' | 'perplexity' | 'online', default 'online'
   */
  weighting?: 'uniform' | 'perplexity' | 'online'
  /** β of the perplexity weighting (default DEFAULT_PERPLEXITY_BETA) */
  perplexityBeta?: number
  /**
   * how each expert's tail mass is spread (aggregate's `tail`): uniform | unigram | bounded |
   * context | local; default 'local' when the router has a local model, else 'context'
   */
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
  /** the generated token ids, in order (tokens === tokenIds.length) */
  tokenIds: number[]
  promptTokens: number
  elapsedMs: number
  /**
   * time to first token (ms): from the call to the first sampled token, discovery, dials,
   * opens and the prefill included; absent when no token was generated. Through `--via`,
   * measured by the client (its dial and the routing peer's work included).
   */
  ttftMs?: number
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
export function resultSummary (r: GenerateResult): Pick<GenerateResult, 'text' | 'tokens' | 'promptTokens' | 'elapsedMs' | 'k' | 'effectiveK' | 'experts' | 'bytesPerExpertToken' | 'finishReason' | 'warnings'> & { ttftMs: number } {
  return {
    text: r.text,
    tokens: r.tokens,
    promptTokens: r.promptTokens,
    elapsedMs: r.elapsedMs,
    // 0 on the wire (proto3: no presence) when no token was generated
    ttftMs: r.ttftMs ?? 0,
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
  /** mean number of draft tokens a round verified (a pipelined round's guess included) */
  meanDraftLength: number
  /** rounds sent while an earlier round was in flight (temperature 0: pipelined rounds) */
  pipelined: number
  /** pipelined rounds whose frames were not used: a token before them was rejected, or the generation ended first */
  discarded: number
  /** where the generation's time went (ms): awaiting the drafter on the rounds' path, awaiting the experts' frames, verifying (aggregation, sampling, emitting) */
  draftMs: number
  waitMs: number
  verifyMs: number
}

export interface RouterOptions {
  /** minimum per-step deadline (ms) before proceeding with fewer than K frames */
  minStepDeadlineMs?: number
  /** hard limit for one expert request (ms): past it the expert is dropped */
  requestTimeoutMs?: number
  /**
   * how long one generation waits, without a token, while every expert it may use answers
   * BUSY (each at its session limit, its queue full) before it fails with BusyError (ms,
   * default 120 s). A busy expert is asked again after a backoff, not dropped.
   */
  busyWaitMs?: number
  /** how long discovery results are used before a refresh (ms, default 10 s) */
  discoveryTtlMs?: number
  /** one discovery's bound (ms, default 4 s) */
  discoveryTimeoutMs?: number
  /**
   * how many compatible experts a discovery fetches records for before it stops, and how many
   * candidates one generation chooses among (default DEFAULT_DISCOVERY_SAMPLE, 32; at least 2K)
   */
  discoverySample?: number
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
  /**
   * speculative rounds at temperature 0 are pipelined: the drafter's continuation is sent
   * while a round is in flight (docs/speculative.md). Default true; false sends one round at a
   * time (the text is the same either way).
   */
  pipelineRounds?: boolean
  /**
   * an on-disk cache of expert records across runs (src/router/record-cache.ts): read at the
   * first discovery (the cached experts are dialled beside the DHT lookup, those reached serve
   * at once), written after every discovery (saveRecordCache). Default none.
   */
  recordCache?: RecordCache
  /**
   * a speculative round's draft is no longer than keeps the expected frames per emitted token
   * (draft length + 1 over the tokens the measured acceptance makes it yield) at or below this:
   * each rejected draft position costs every expert's upload a frame (≈ 600 bytes compact,
   * ≈ 870 full). Default: DRAFT_BYTES_PER_TOKEN (1 400) over the bytes per frame the chosen
   * experts' sessions measured (before any: FRAME_BYTES_ESTIMATE), i.e. ≈ 1.4 KB per expert
   * per token whatever the encoding (≈ 2.3 compact frames, 1.6 full ones); Infinity lets the
   * draft length maximise tokens per second alone.
   */
  maxFramesPerToken?: number
  /**
   * how experts are asked to write frames (src/router/expert-client.ts SessionOptions):
   * 'compact' (default; one byte per logprob at a per-frame step, ≈ 30 % fewer bytes) or
   * 'full' (uint16 logprobs, 1/1024 nat). Experts that predate compact frames send full ones.
   */
  frames?: FrameEncoding
  /**
   * the 'online' weighting's memory across this router's generations (src/router/online-weights.ts,
   * docs/quality.md §5): each expert's record over its last ≤ memoryTokens emitted tokens and
   * the evidence for leaving it out, which the next generation starts from. Default
   * { memoryTokens: DEFAULT_ONLINE_MEMORY_TOKENS (256), evidenceCap: 10, maxExperts: 4096 };
   * { memoryTokens: 0 } starts every generation afresh (two identical greedy requests then give
   * the same text; with memory a router that learnt between them may not).
   */
  expertMemory?: ExpertMemoryOptions
  /**
   * the router's own model for the 'local' tail (src/router/local-model.ts, docs/quality.md §3):
   * with one, a generation's default tail is 'local'; without, 'context' (the best wire-only
   * tail). Never one of the experts; the caller owns it (closes it after the router). A
   * promise is awaited at the first step that needs it (a model still loading; if it rejects,
   * generations with the 'local' tail fail with its error)
   */
  localModel?: LocalModel | Promise<LocalModel>
  /** reputation and ban parameters (src/router/reputation.ts) */
  reputation?: ReputationOptions
  /**
   * identities per address group before the Sybil colocation penalty applies
   * (src/router/selection.ts, default COLOCATION_THRESHOLD = 3; Infinity turns it off)
   */
  colocationThreshold?: number
  /**
   * this node's own expert, used in process (no dial) like any discovered expert: its record
   * and an in-process /meshllm/infer stream (InferService.openLocal). Default: none (a
   * routing-only peer). Discovery never lists the node itself (libp2p does not dial itself).
   */
  local?: LocalExpert
  /**
   * where the router logs (component 'meshllm:router'); default: the node's logger
   * (`node.logger`, libp2p's ComponentLogger), else @libp2p/logger's default one
   */
  logger?: ComponentLogger
}

/** RouterOptions.local: this node's own expert */
export interface LocalExpert {
  peerId: PeerId
  /** its current record (as it advertises it) */
  record: () => ExpertRecord
  /** an in-process /meshllm/infer stream to it */
  openStream: (options: AbortOptions) => Promise<Stream>
}

/**
 * Observes every generation a router runs (API metrics, dashboards), whoever asked for it
 * (`Router.generate` callers, `--via` clients). Called synchronously; errors are ignored.
 */
export interface RouterObserver {
  /** one expert request settled: a frame arrived (ok) or the expert failed */
  /** errorName: the failure's error class name (MalformedMessageError, InvalidFrameError, TimeoutError, …) */
  /** status: the expert's answer status when it refused (protocols/infer.md: 3 BUSY, 4 HALTED, …) */
  onExpertRequest?: (ev: { expert: string, ms: number, ok: boolean, error?: string, errorName?: string, status?: number }) => void
  /** a token was sampled (same event as GenerateOptions.onToken) */
  onToken?: (ev: TokenEvent) => void
  /** a generation ended; perExpert: traffic of each expert session it used (both directions, framing included) */
  onGeneration?: (ev: { result?: GenerateResult, error?: unknown, perExpert: Array<{ expert: string, bytes: number, frames: number }> }) => void
}

export class Router {
  readonly health = new HealthTable()
  /** per-expert reputation and bans (docs/quality.md "Byzantine experts") */
  readonly reputation: ReputationTable
  /** what the 'online' weighting learnt of each expert across this router's generations (docs/quality.md §5) */
  readonly expertMemory: ExpertMemory
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
  /** what this router's generations (src/router/generation.ts) use of it */
  private readonly core: RouterCore

  constructor (readonly node: MeshNode, readonly tokenizer: RouterTokenizer, private readonly opts: RouterOptions = {}) {
    this.log = (opts.logger ?? node.logger ?? defaultLogger()).forComponent('meshllm:router')
    this.reputation = new ReputationTable(opts.reputation)
    this.expertMemory = new ExpertMemory(opts.expertMemory)
    observedAddressGroups(node)
    this.core = {
      node,
      tokenizer,
      health: this.health,
      reputation: this.reputation,
      log: this.log,
      options: opts,
      observers: this.observers,
      stats: this.stats,
      acceptance: new Map(),
      expertMemory: this.expertMemory,
      available: (id) => this.available(id),
      checkHalt: () => { this.checkHalt() },
      notify: (name, ev) => { this.notify(name, ev) },
      expertHalted: async (err) => await this.expertHalted(err),
      experts: async (force, signal, want, first) => await this.experts(force, signal, want, first),
      known: () => this.withLocal(this.known.filter(x => x.expiresAtMs > Date.now())),
      connect: async (peerId, options) => {
        const local = opts.local
        const frames = opts.frames ?? 'compact'
        if (local != null && peerId.equals(local.peerId)) return ExpertSession.local(peerId, await local.openStream(options), { frames })
        return await ExpertSession.connect(node, peerId, { ...options, frames })
      }
    }
  }

  /** selectable: circuit closed or half-open, and not banned */
  private available (id: string): boolean {
    return this.health.available(id) && !this.reputation.banned(id)
  }

  /**
   * Experts currently known (compatible). A router samples the mesh, it does not enumerate it:
   * a discovery stops once `want` compatible records are in (default RouterOptions
   * .discoverySample), and one discovery at a time runs for all of this router's generations.
   * Known records are used while they are valid; past `discoveryTtlMs` a full sample is
   * refreshed in the background (the generation goes on with what is known) when what is known
   * covers `first` (default `want`), else before answering (a small mesh, or one still being found).
   */
  async experts (force = false, signal?: AbortSignal, want?: number, first?: number): Promise<{ compatible: ExpertRecord[], incompatible: ExpertRecord[] }> {
    const ttl = this.opts.discoveryTtlMs ?? 10_000
    const sample = Math.max(want ?? 0, this.opts.discoverySample ?? DEFAULT_DISCOVERY_SAMPLE)
    const background = (): void => { this.discover(sample).catch(err => { this.log('background discovery failed: %e', err) }) }
    if (this.opts.recordCache != null && !this.cacheTried) {
      // the first discovery of a router with a record cache: the experts an earlier run found
      // are dialled while the DHT lookup runs, and those reached serve at once
      this.cacheTried = true
      const n = Math.min(sample, Math.max(1, first ?? sample))
      const lookup = this.discover(n)
      lookup.then(more => { if (more && n < sample) background() }, err => { this.log('discovery failed: %e', err) })
      // whichever gives n first: the dials, or a lookup that found n (one that found fewer waits for the dials)
      const reach = this.reachCached(n, signal)
      await Promise.race([reach, lookup.then(async () => { if (this.known.length < n) await reach }, async () => { await reach })])
      if (!force && this.known.length >= n) return { compatible: this.withLocal(this.known), incompatible: this.incompatible }
    }
    const now = Date.now()
    this.known = this.known.filter(x => x.expiresAtMs > now)
    const stale = now - this.knownAt > ttl
    // nothing known: ask at once, unless this node's own expert can serve meanwhile
    const nothing = this.known.length === 0 && this.opts.local == null
    // a caller that can start with `first` experts waits for those only; the rest of the
    // sample is filled in the background when the discovery stopped short of the mesh
    const n = Math.min(sample, Math.max(1, first ?? sample))
    // stale and short of what the caller needs: refreshed before answering; stale but enough
    // for it (a generation needs K, not the sample): refreshed in the background, off its path
    if (force || nothing || (stale && this.withLocal(this.known).length < n)) {
      const more = await this.discover(n, signal)
      if (n < sample && more) background()
    } else if (stale) {
      background()
    }
    return { compatible: this.withLocal(this.known), incompatible: this.incompatible }
  }

  /** RouterOptions.recordCache: read once, at the first discovery */
  private cacheTried = false
  /** the last write of the record cache */
  private cacheSaved: Promise<void> = Promise.resolve()

  /**
   * Dials the cached experts (RouterOptions.recordCache) with this router's tokenizer, at most
   * the discovery sample, and adds each one reached to the known experts: its record is signed
   * and unexpired, and the handshake proved its peer id. Returns once `want` are reached, every
   * dial ended, CACHED_DIAL_MS passed or `signal` aborted (dials still under way may add theirs later).
   */
  private async reachCached (want: number, signal?: AbortSignal): Promise<void> {
    const cache = this.opts.recordCache
    if (cache == null) return
    const { records, rejected } = await cache.load().catch(() => ({ records: [] as ExpertRecord[], rejected: 0 }))
    const sample = this.opts.discoverySample ?? DEFAULT_DISCOVERY_SAMPLE
    const usable = records.filter(r => equals(r.tokenizerFingerprint, this.tokenizer.fingerprint) && !r.peerId.equals(this.node.peerId) && !this.reputation.banned(r.peerId.toString())).slice(0, sample)
    this.log('record cache: %d usable record(s), %d rejected', usable.length, rejected)
    if (usable.length === 0) return
    const stop = AbortSignal.any([AbortSignal.timeout(CACHED_DIAL_MS), ...(signal != null ? [signal] : [])])
    let reached = 0
    let onStop: (() => void) | undefined
    try {
      await new Promise<void>(resolve => {
        let left = usable.length
        onStop = resolve
        stop.addEventListener('abort', onStop, { once: true })
        for (const r of usable) {
          void (async () => {
            await this.node.peerStore.merge(r.peerId, { multiaddrs: r.addrs })
            await this.node.dial(r.peerId, { signal: stop })
            if (r.expiresAtMs <= Date.now() || this.known.some(k => k.peerId.equals(r.peerId))) return
            this.known.push(r)
            if (++reached >= want) resolve()
          })().catch(err => { this.log('cached expert %p not reached: %e', r.peerId, err) }).finally(() => { if (--left === 0) resolve() })
        }
      })
    } finally {
      if (onStop != null) stop.removeEventListener('abort', onStop)
    }
  }

  /**
   * Writes the known experts' records to RouterOptions.recordCache (after the writes before
   * it); resolves when written. Every discovery saves them; a short-lived process (`meshllm
   * generate`) awaits this before it exits. Never rejects (a cache only saves time).
   */
  async saveRecordCache (): Promise<void> {
    const cache = this.opts.recordCache
    if (cache == null) return
    const records = [...this.known]
    this.cacheSaved = this.cacheSaved.then(async () => { await cache.save(records) }).catch(err => { this.log('record cache not saved: %e', err) })
    await this.cacheSaved
  }

  /** the discovery in flight (one at a time per router, shared by every caller) */
  private discovering?: Promise<boolean>

  /**
   * runs a discovery, or joins the one in flight; `signal` ends only this caller's wait.
   * Resolves true when it stopped at `want` records (the mesh may have more).
   */
  private async discover (want: number, signal?: AbortSignal): Promise<boolean> {
    this.discovering ??= this.runDiscovery(want).finally(() => { this.discovering = undefined })
    if (signal == null) return await this.discovering
    signal.throwIfAborted()
    let onAbort: (() => void) | undefined
    try {
      return await Promise.race([this.discovering, new Promise<never>((resolve, reject) => { onAbort = () => { reject(signal.reason) }; signal.addEventListener('abort', onAbort, { once: true }) })])
    } finally {
      if (onAbort != null) signal.removeEventListener('abort', onAbort)
    }
  }

  private async runDiscovery (want: number): Promise<boolean> {
    const now = Date.now()
    // unknown providers first (a new expert is seen at once), known ones next (refresh; kept
    // anyway until their records expire), recently failed ones last
    const knownIds = new Set(this.known.map(x => x.peerId.toString()))
    const priority = (id: string): number => (this.recordFailures.peek(id) ?? 0) > now ? 2 : knownIds.has(id) ? 1 : 0
    const r = await discoverExperts(this.node, this.tokenizer.fingerprint, { signal: AbortSignal.timeout(this.opts.discoveryTimeoutMs ?? 4_000), priority, want })
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
    if (this.opts.recordCache != null) void this.saveRecordCache()
    return r.compatible.length >= want
  }

  /** the discovered experts and, first, this node's own when its tokenizer is the router's */
  private withLocal (known: ExpertRecord[]): ExpertRecord[] {
    const local = this.opts.local
    if (local == null) return known
    const own = local.record()
    if (!equals(own.tokenizerFingerprint, this.tokenizer.fingerprint)) return known
    return [own, ...known.filter(x => !x.peerId.equals(own.peerId))]
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
    // the one validation every interface shares (src/router/options.ts)
    validateGenerateOptions(opts)
    const ctrl = new AbortController()
    this.live.add(ctrl)
    const signal = opts.signal != null ? AbortSignal.any([opts.signal, ctrl.signal]) : ctrl.signal
    try {
      return await new Generation(this.core, prompt, opts, signal, started).run()
    } finally {
      this.live.delete(ctrl)
    }
  }

  /** true when this router has a drafter (GenerateOptions.speculative works) */
  get supportsSpeculation (): boolean {
    return this.opts.drafter != null
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

/** how long a provider whose record could not be fetched goes to the end of the fetch order */
const RECORD_RETRY_MS = 60_000

/** how long a router's first discovery waits for the dials to cached experts (RouterOptions.recordCache) before it waits for the DHT alone (ms) */
export const CACHED_DIAL_MS = 3_000
