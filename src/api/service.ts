/**
 * The API core shared by gRPC (src/api/grpc.ts) and HTTP (src/api/http.ts): validation,
 * router status, generation with context checks, expert registration, the task queue and
 * governance relaying. Transport code only converts requests and maps ApiError kinds.
 */
import { EventEmitter } from 'node:events'
import type { MeshNode } from '../node/node.js'
import type { GenerateOptions, GenerateResult, Router, RouterObserver, TokenEvent } from '../router/router.js'
import { FORGERY_CODES as FORGERY, type GovernanceService } from '../governance/service.js'
import { Kind, decodeEnvelope } from '../governance/envelope.js'
import { configDigest } from '../governance/config.js'
import { formatPublicKey } from '../governance/keys.js'
import { PHASES } from '../governance/tiers.js'
import type { GovernanceSnapshot } from '../governance/state.js'
import type { ModelHost } from '../expert/model-host.js'
import type { InferService } from '../expert/infer-service.js'
import type { ExpertAdvertiser } from '../expert/advertise.js'
import { attachExpert, type AttachedExpert, type AttachExpertOptions } from '../expert/attach.js'
import { expertRecordKey, openExpertRecord, type ExpertRecord } from '../wire/record.js'
import { HaltedError, NoExpertsError, IncompatibleTokenizerError } from '../util/errors.js'
import { GENERATE_DEFAULTS, InvalidGenerateOptionError, validateGenerateOptions, type ValidGenerateOptions } from '../router/options.js'
import { ApiError, invalid, toApiError } from './errors.js'
import { ApiMetrics } from './metrics.js'
import { ChatFormatter, type ChatMessage } from './chat.js'
import { TASK_STATUSES, TaskStore, assessTask, type TaskRecord, type TaskStatus } from './tasks.js'

/** an expert this node serves: `startExpert`'s Expert (join) or an AttachedExpert */
export interface LocalExpert {
  host: ModelHost
  service: InferService
  advertiser: ExpertAdvertiser
  tokensPerSecond: number
}

export interface MeshApiOptions {
  node: MeshNode
  router: Router
  governance?: GovernanceService
  /** the expert this node already serves (join --model); RegisterExpert is then refused */
  expert?: LocalExpert
  /** task database (default: an in-memory one) */
  tasks?: TaskStore
  /** K when a request does not say (default 3) */
  defaultK?: number
  /** largest max_tokens a request may ask (default 2048) */
  maxTokensLimit?: number
  /** longest generation (ms, default 300 000): then DEADLINE_EXCEEDED */
  generateTimeoutMs?: number
  /** a Jinja chat template overriding the model's */
  chatTemplate?: string
  /** defaults for RegisterExpert (e.g. threads) */
  attachDefaults?: Partial<AttachExpertOptions>
  /** period of the background expert refresh (ms, default 10 000) */
  refreshMs?: number
}

export interface GenerateParams {
  prompt: string | number[]
  k?: number
  maxTokens?: number
  temperature?: number
  topK?: number
  topP?: number
  seed?: number
  stop?: string[]
  rule?: string
  experts?: string[]
  ignoreEos?: boolean
  /** when maxTokens is not given: as many as fit, at most this many (default 64) */
  defaultMaxTokens?: number
  /** parameter names for error messages (OpenAI: max_tokens / messages) */
  names?: { maxTokens?: string, prompt?: string }
}

export interface PreparedGeneration {
  tokens: number[]
  promptTokens: number
  contextLength: number
  options: GenerateOptions
}

export interface GovernanceEventInfo {
  atMs: number
  kind: string
  version: number
  accepted: boolean
  detail: string
  via: string
}

const MAX_STOP = 16
const MAX_STOP_CHARS = 256

export class MeshApi {
  readonly node: MeshNode
  readonly router: Router
  readonly governance?: GovernanceService
  readonly tasks: TaskStore
  readonly metrics: ApiMetrics
  readonly events = new EventEmitter()
  readonly defaultK: number
  readonly maxTokensLimit: number
  readonly generateTimeoutMs: number
  readonly startedAt = Date.now()
  private readonly ownTasks: boolean
  private readonly givenExpert?: LocalExpert
  private attached?: AttachedExpert
  private attaching = false
  private chat?: ChatFormatter
  private cache: { compatible: ExpertRecord[], incompatible: ExpertRecord[], at: number } = { compatible: [], incompatible: [], at: 0 }
  private readonly models = new Map<string, string>()
  private readonly governanceLog: GovernanceEventInfo[] = []
  private relayVia?: string
  /** generations ended recently: for "recent tokens/s" */
  private readonly recent: Array<{ at: number, tokens: number, ms: number }> = []
  /** tokens per wall-clock second, last 5 minutes (dashboard chart) */
  private readonly perSecond = new Map<number, number>()
  private readonly lastTokenExperts: { at: number, experts: string[] } = { at: 0, experts: [] }
  private readonly observer: RouterObserver
  private refreshTimer?: NodeJS.Timeout
  private closed = false

  constructor (private readonly opts: MeshApiOptions) {
    this.node = opts.node
    this.router = opts.router
    this.governance = opts.governance
    this.givenExpert = opts.expert
    this.tasks = opts.tasks ?? new TaskStore(':memory:')
    this.ownTasks = opts.tasks == null
    this.defaultK = opts.defaultK ?? 3
    this.maxTokensLimit = opts.maxTokensLimit ?? 2048
    this.generateTimeoutMs = opts.generateTimeoutMs ?? 300_000
    this.events.setMaxListeners(0)
    this.metrics = new ApiMetrics({
      router: this.router,
      governance: this.governance,
      localHost: () => this.localExpert?.host,
      expertsOnline: () => ({ compatible: this.cache.compatible.length, incompatible: this.cache.incompatible.length }),
      modelOf: (id) => this.models.get(id) ?? 'unknown'
    })
    this.observer = {
      onToken: (ev: TokenEvent) => {
        const sec = Math.floor(Date.now() / 1000)
        this.perSecond.set(sec, (this.perSecond.get(sec) ?? 0) + 1)
        this.lastTokenExperts.at = Date.now()
        this.lastTokenExperts.experts = ev.experts
        this.events.emit('token', { index: ev.index, text: ev.text, experts: ev.experts, at: Date.now() })
      },
      onGeneration: (ev) => {
        if (ev.result != null) {
          this.recent.push({ at: Date.now(), tokens: ev.result.tokens, ms: ev.result.elapsedMs })
          if (this.recent.length > 256) this.recent.shift()
          this.events.emit('generation', { tokens: ev.result.tokens, tokensPerSecond: ev.result.tokensPerSecond, experts: ev.result.experts, finishReason: ev.result.finishReason, at: Date.now() })
        } else {
          this.events.emit('generation', { error: String((ev.error as any)?.message ?? ev.error), at: Date.now() })
        }
      }
    }
    this.router.observers.add(this.observer)
    this.router.observers.add(this.metrics.observer)
    this.governance?.on({
      onHalt: (reason) => {
        this.router.abortAll(reason)
        this.attached?.service.haltAll(reason)
      },
      onChange: (snap, kind) => {
        if (this.closed) return
        this.logGovernance({ atMs: Date.now(), kind: Kind[kind], version: snap.version, accepted: true, detail: describe(kind, snap), via: this.relayVia ?? 'gossip' })
      }
    })
    const refresh = (): void => {
      if (this.closed) return
      this.refreshExperts(false).catch(() => {}).finally(() => {
        if (!this.closed) { this.refreshTimer = setTimeout(refresh, opts.refreshMs ?? 10_000); this.refreshTimer.unref() }
      })
    }
    this.refreshTimer = setTimeout(refresh, 0)
    this.refreshTimer.unref()
  }

  get localExpert (): LocalExpert | undefined {
    return this.givenExpert ?? this.attached
  }

  // ---------------------------------------------------------------- experts and status

  async refreshExperts (force: boolean, signal?: AbortSignal): Promise<{ compatible: ExpertRecord[], incompatible: ExpertRecord[] }> {
    const r = await this.router.experts(force, signal)
    this.cache = { compatible: r.compatible, incompatible: r.incompatible, at: Date.now() }
    for (const x of [...r.compatible, ...r.incompatible]) this.models.set(x.peerId.toString(), x.modelName)
    return r
  }

  /** cached experts (no DHT lookup): for dashboards and metrics */
  cachedExperts (): { compatible: ExpertRecord[], incompatible: ExpertRecord[], at: number } {
    return this.cache
  }

  modelOf (peerId: string): string | undefined {
    return this.models.get(peerId)
  }

  expertInfo (r: ExpertRecord, flags: { local?: boolean, compatible?: boolean } = {}): Record<string, any> {
    const id = r.peerId.toString()
    const h = this.router.health.entries().find(([k]) => k === id)?.[1]
    const now = Date.now()
    const state = h == null || h.samples + h.failures === 0 ? 'unknown' : h.openUntil > now ? 'circuit_open' : h.consecutiveFailures > 0 ? 'degraded' : 'healthy'
    return {
      peerId: id,
      model: r.modelName,
      fingerprint: Buffer.from(r.tokenizerFingerprint).toString('hex'),
      parameterCount: r.parameterCount,
      quantization: r.quantization,
      contextLength: r.contextLength,
      tokensPerSecond: r.tokensPerSecond,
      freeSlots: r.freeSlots,
      maxSlots: r.maxSlots,
      addrs: r.addrs.map(a => a.toString()),
      issuedAtMs: r.issuedAtMs,
      expiresAtMs: r.expiresAtMs,
      health: {
        state,
        latencyMs: h?.latencyMs ?? 0,
        samples: h?.samples ?? 0,
        successes: h?.successes ?? 0,
        failures: h?.failures ?? 0,
        consecutiveFailures: h?.consecutiveFailures ?? 0,
        circuitOpenUntilMs: h != null && h.openUntil > now ? h.openUntil : 0,
        lastError: h?.lastError ?? ''
      },
      local: flags.local === true,
      compatible: flags.compatible !== false
    }
  }

  /** the local expert's record as the DHT returns it (the advertiser's last one if the lookup fails) */
  async localRecord (signal?: AbortSignal): Promise<ExpertRecord | undefined> {
    const local = this.localExpert
    if (local == null) return undefined
    try {
      let best: ExpertRecord | undefined
      for await (const ev of this.node.services.dht.get(expertRecordKey(this.node.peerId), { signal: signal ?? AbortSignal.timeout(3_000) }) as AsyncIterable<any>) {
        if (ev.name === 'VALUE') {
          try {
            const r = await openExpertRecord(ev.value)
            if (r.peerId.equals(this.node.peerId) && (best == null || r.seq > best.seq)) best = r
          } catch {}
        }
      }
      if (best != null) return best
    } catch {}
    return local.advertiser.lastRecord
  }

  private localInfo (r: ExpertRecord | undefined): Record<string, any> | undefined {
    if (r == null) return undefined
    const info = this.expertInfo(r, { local: true, compatible: Buffer.from(r.tokenizerFingerprint).equals(Buffer.from(this.router.tokenizer.fingerprint)) })
    const host = this.localExpert?.host
    if (host != null) { info.freeSlots = host.freeSlots; info.maxSlots = host.maxSessions }
    return info
  }

  async listExperts (refresh = false, includeIncompatible = false): Promise<Array<Record<string, any>>> {
    const r = await this.refreshExperts(refresh)
    const out = r.compatible.map(x => this.expertInfo(x, { compatible: true }))
    if (includeIncompatible) out.push(...r.incompatible.map(x => this.expertInfo(x, { compatible: false })))
    const local = this.localInfo(await this.localRecord())
    if (local != null) out.push(local)
    return out
  }

  recentTokensPerSecond (windowMs = 60_000): number {
    const since = Date.now() - windowMs
    let tokens = 0
    let ms = 0
    for (const g of this.recent) if (g.at >= since) { tokens += g.tokens; ms += g.ms }
    return ms > 0 ? tokens / (ms / 1000) : 0
  }

  /** tokens per wall-clock second over the last `seconds` (oldest first) */
  throughput (seconds = 120): Array<[number, number]> {
    const now = Math.floor(Date.now() / 1000)
    for (const k of this.perSecond.keys()) if (k < now - 300) this.perSecond.delete(k)
    const out: Array<[number, number]> = []
    for (let s = now - seconds + 1; s <= now; s++) out.push([s * 1000, this.perSecond.get(s) ?? 0])
    return out
  }

  haltState (): { halted: boolean, reason: string, version: number, atMs: number } {
    const h = this.governance?.state.halted
    return { halted: h != null, reason: h?.reason ?? '', version: h?.version ?? 0, atMs: h?.atMs ?? 0 }
  }

  /** GetRouterStatus; `cached`: no DHT lookup (dashboard) */
  async status (refresh = false, cached = false): Promise<Record<string, any>> {
    const r = cached ? this.cache : await this.refreshExperts(refresh)
    const s = this.router.stats
    return {
      peerId: this.node.peerId.toString(),
      listenAddrs: this.node.getMultiaddrs().map(a => a.toString()),
      experts: r.compatible.map(x => this.expertInfo(x, { compatible: true })),
      expertsOnline: r.compatible.length,
      incompatibleExperts: r.incompatible.length,
      policy: {
        defaultK: this.defaultK,
        defaultRule: 'mixture',
        selection: 'weighted: K distinct experts per token, weight = capacity × reliability / latency EWMA; circuit-open and busy experts skipped; hedging and replacement on failure',
        maxTokensLimit: this.maxTokensLimit
      },
      stats: {
        generations: s.generations,
        tokens: s.tokens,
        lastTokensPerSecond: s.lastTokensPerSecond,
        recentTokensPerSecond: this.recentTokensPerSecond(),
        bytesPerExpertToken: s.expertSteps > 0 ? s.bytes / s.expertSteps : 0,
        expertSteps: s.expertSteps,
        bytes: s.bytes
      },
      halt: this.haltState(),
      localExpert: this.localInfo(cached ? this.localExpert?.advertiser.lastRecord : await this.localRecord())
    }
  }

  /** what the dashboard polls / receives: status without a DHT lookup, throughput, governance */
  async dashboardSnapshot (): Promise<Record<string, any>> {
    return {
      at: Date.now(),
      status: await this.status(false, true),
      throughput: this.throughput(120),
      lastToken: this.lastTokenExperts,
      governance: this.governanceState()
    }
  }

  // ---------------------------------------------------------------- generation

  private checkHalt (): void {
    const reason = this.governance?.haltReason
    if (reason != null) throw new ApiError('failed_precondition', `halted by governance: ${reason}`, null, 'mesh_halted')
  }

  /** Validates a request against the mesh (halt, experts online, the experts' context) before any token is generated. */
  async prepare (p: GenerateParams, signal?: AbortSignal): Promise<PreparedGeneration> {
    this.checkHalt()
    const nMax = p.names?.maxTokens ?? 'max_tokens'
    const nPrompt = p.names?.prompt ?? 'prompt'
    const int = (v: number | undefined, name: string, min: number, max: number): number | undefined => {
      if (v == null) return undefined
      if (!Number.isSafeInteger(v) || v < min || v > max) throw invalid(`${name} must be an integer in [${min}, ${max}], got ${String(v)}`, name)
      return v
    }
    const maxTokens = int(p.maxTokens, nMax, 1, this.maxTokensLimit)
    // the one validation of every interface (src/router/options.ts): every rule, the same ranges and messages
    let v: ValidGenerateOptions
    try {
      v = validateGenerateOptions({ k: p.k, temperature: p.temperature, topK: p.topK, topP: p.topP, seed: p.seed, rule: p.rule === '' ? undefined : p.rule })
    } catch (err) {
      if (err instanceof InvalidGenerateOptionError) throw invalid(err.message, err.option, err.option === 'rule' ? 'unknown_rule' : null)
      throw err
    }
    const { temperature, topK, topP, seed } = v
    const k = v.k ?? this.defaultK
    const rule = v.rule ?? GENERATE_DEFAULTS.rule
    const stop = p.stop ?? []
    if (stop.length > MAX_STOP) throw invalid(`at most ${MAX_STOP} stop sequences`, 'stop')
    for (const s of stop) if (typeof s !== 'string' || s.length === 0 || s.length > MAX_STOP_CHARS) throw invalid(`each stop sequence must be a string of 1–${MAX_STOP_CHARS} characters`, 'stop')

    let tokens: number[]
    if (typeof p.prompt === 'string') {
      tokens = this.router.tokenizer.encodePrompt(p.prompt)
    } else {
      const vocab = this.router.tokenizer.vocabSize
      if (p.prompt.length === 0) throw invalid(`${nPrompt} must not be empty`, nPrompt)
      for (const t of p.prompt) if (!Number.isInteger(t) || t < 0 || t >= vocab) throw invalid(`token ids must be integers in [0, ${vocab})`, nPrompt)
      tokens = [...p.prompt]
    }

    let { compatible, incompatible } = await this.refreshExperts(false, signal)
    if (compatible.length === 0) ({ compatible, incompatible } = await this.refreshExperts(true, signal))
    if (p.experts != null && p.experts.length > 0) {
      const want = new Set(p.experts)
      compatible = compatible.filter(r => want.has(r.peerId.toString()))
      if (compatible.length === 0) throw new ApiError('unavailable', `none of the requested experts is online (${p.experts.length} asked)`, 'experts', 'no_experts')
    }
    if (compatible.length === 0) {
      if (incompatible.length > 0) throw toApiError(new IncompatibleTokenizerError(`found ${incompatible.length} expert(s), none with this router's tokenizer`))
      throw toApiError(new NoExpertsError('no experts found on the mesh'))
    }
    const contextLength = Math.min(...compatible.map(r => r.contextLength))
    const room = contextLength - 1 - tokens.length
    if (room < 1) {
      throw invalid(`the prompt has ${tokens.length} tokens; the experts' context is ${contextLength} tokens (1 needed for generation)`, nPrompt, 'context_length_exceeded')
    }
    if (maxTokens != null && maxTokens > room) {
      throw invalid(`${nMax} of ${maxTokens} is beyond the context: the experts' context is ${contextLength} tokens and the prompt has ${tokens.length}, so at most ${room} can be generated`, nMax, 'context_length_exceeded')
    }
    return {
      tokens,
      promptTokens: tokens.length,
      contextLength,
      options: {
        k,
        maxTokens: maxTokens ?? Math.min(room, p.defaultMaxTokens ?? 64),
        temperature,
        topK,
        topP,
        seed,
        stop,
        rule,
        experts: p.experts != null && p.experts.length > 0 ? compatible.map(r => r.peerId.toString()) : undefined,
        ignoreEos: p.ignoreEos === true
      }
    }
  }

  /** Runs a prepared generation; errors come out as ApiError. */
  async generate (prep: PreparedGeneration, o: { onToken?: (t: TokenEvent) => void, signal?: AbortSignal } = {}): Promise<GenerateResult> {
    const timeout = AbortSignal.timeout(this.generateTimeoutMs)
    const signal = o.signal != null ? AbortSignal.any([o.signal, timeout]) : timeout
    try {
      this.checkHalt()
      return await this.router.generate(prep.tokens, { ...prep.options, signal, onToken: o.onToken })
    } catch (err: any) {
      if (err instanceof HaltedError || err?.name === 'HaltedError') throw toApiError(err)
      if (timeout.aborted) throw new ApiError('deadline_exceeded', `generation exceeded ${this.generateTimeoutMs} ms`, null, 'timeout')
      if (o.signal?.aborted === true) {
        const reason = o.signal.reason
        if (reason instanceof ApiError) throw reason
        throw new ApiError('deadline_exceeded', 'the request was cancelled or its deadline passed', null, 'cancelled')
      }
      throw toApiError(err)
    }
  }

  chatFormatter (): ChatFormatter {
    this.chat ??= ChatFormatter.create(this.router.tokenizer, { template: this.opts.chatTemplate })
    return this.chat
  }

  formatChat (messages: ChatMessage[]): ReturnType<ChatFormatter['format']> {
    return this.chatFormatter().format(messages)
  }

  /** OpenAI model ids: "meshllm" (the whole mesh) and every compatible expert model name */
  async modelIds (): Promise<string[]> {
    const r = this.cache.at > 0 ? this.cache : await this.refreshExperts(false)
    return ['meshllm', ...new Set(r.compatible.map(x => x.modelName))]
  }

  /** expert restriction for an OpenAI model id; throws invalid_argument for an unknown one */
  async expertsForModel (model: string): Promise<string[] | undefined> {
    if (model === 'meshllm') return undefined
    let r = await this.refreshExperts(false)
    if (!r.compatible.some(x => x.modelName === model)) r = await this.refreshExperts(true)
    const ids = r.compatible.filter(x => x.modelName === model).map(x => x.peerId.toString())
    if (ids.length === 0) throw invalid(`The model \`${model.slice(0, 128)}\` does not exist on this mesh: use "meshllm" (the whole mesh) or one of ${JSON.stringify(await this.modelIds())}`, 'model', 'model_not_found')
    return ids
  }

  // ---------------------------------------------------------------- experts this node serves

  async registerExpert (o: { model: string, threads?: number, maxSessions?: number, contextSize?: number, gpu?: string }): Promise<{ record: ExpertRecord, tokensPerSecond: number, threads: number, info: Record<string, any> }> {
    if (typeof o.model !== 'string' || o.model.trim().length === 0) throw invalid('model is required (bundled name, .gguf path or URI)', 'model')
    const gpu = o.gpu == null || o.gpu === '' || o.gpu === 'auto' ? 'auto' : o.gpu === 'off' || o.gpu === 'false' ? false : undefined
    if (gpu === undefined) throw invalid(`gpu must be "auto" or "off", got "${String(o.gpu).slice(0, 32)}"`, 'gpu')
    for (const [name, v, max] of [['threads', o.threads, 256], ['max_sessions', o.maxSessions, 1024], ['context_size', o.contextSize, 1 << 20]] as const) {
      if (v != null && v !== 0 && (!Number.isSafeInteger(v) || v < 1 || v > max)) throw invalid(`${name} must be an integer in [1, ${max}]`, name)
    }
    if (o.contextSize != null && o.contextSize !== 0 && o.contextSize < 16) throw invalid('context_size must be at least 16', 'context_size')
    if (this.givenExpert != null) throw new ApiError('failed_precondition', `this node already serves ${this.givenExpert.host.summary.name} (one expert per node)`, 'model', 'expert_exists')
    if (this.attached != null || this.attaching) throw new ApiError('failed_precondition', `this node already ${this.attaching ? 'is loading' : `serves ${this.attached?.host.summary.name}`} an expert (one expert per node)`, 'model', 'expert_exists')
    this.attaching = true
    try {
      const a = await attachExpert(this.node, {
        ...(this.opts.attachDefaults ?? {}),
        model: o.model,
        threads: o.threads != null && o.threads > 0 ? o.threads : this.opts.attachDefaults?.threads,
        maxSessions: o.maxSessions != null && o.maxSessions > 0 ? o.maxSessions : this.opts.attachDefaults?.maxSessions,
        contextSize: o.contextSize != null && o.contextSize > 0 ? o.contextSize : this.opts.attachDefaults?.contextSize,
        gpu,
        haltReason: () => this.governance?.haltReason,
        haltEnvelope: () => this.governance?.state.haltEnvelope
      })
      if (this.closed) { await a.detach(); throw new ApiError('unavailable', 'the API is shutting down') }
      this.attached = a
      this.models.set(this.node.peerId.toString(), a.host.summary.name)
      return { record: a.record, tokensPerSecond: a.tokensPerSecond, threads: a.host.threads, info: this.localInfo(a.record) as Record<string, any> }
    } catch (err: any) {
      if (err?.name === 'ExpertAlreadyAttachedError') throw new ApiError('failed_precondition', err.message, 'model', 'expert_exists')
      if (err instanceof ApiError) throw err
      const e = toApiError(err)
      // a file that is not a loadable GGUF is the caller's input
      if (e.kind === 'internal') throw new ApiError('invalid_argument', `cannot load model "${o.model.slice(0, 256)}": ${err?.message ?? err}`, 'model')
      throw e
    } finally {
      this.attaching = false
    }
  }

  // ---------------------------------------------------------------- tasks

  submitTask (t: { type: string, paramsJson?: string, description?: string, priority?: number, source?: string }): TaskRecord {
    if (typeof t.type !== 'string' || !/^[A-Za-z0-9_.:-]{1,128}$/.test(t.type)) throw invalid('type must be 1–128 characters of [A-Za-z0-9_.:-] (an action type, e.g. "report")', 'type')
    let params: Record<string, unknown> = {}
    if (t.paramsJson != null && t.paramsJson !== '') {
      if (t.paramsJson.length > 64 * 1024) throw invalid('params_json exceeds 64 KiB', 'params_json')
      let v: unknown
      try { v = JSON.parse(t.paramsJson) } catch (err: any) { throw invalid(`params_json is not JSON: ${err.message}`, 'params_json') }
      if (v == null || typeof v !== 'object' || Array.isArray(v)) throw invalid('params_json must be a JSON object', 'params_json')
      params = v as Record<string, unknown>
    }
    const description = t.description ?? ''
    if (description.length > 4096) throw invalid('description exceeds 4096 characters', 'description')
    const priority = t.priority ?? 0
    if (!Number.isSafeInteger(priority) || Math.abs(priority) > 1_000_000) throw invalid('priority must be an integer in [-1000000, 1000000]', 'priority')
    const source = (t.source ?? '').slice(0, 256)
    const snap: GovernanceSnapshot | { readOnly: boolean, phase: number } = this.governance?.state.snapshot() ?? { readOnly: false, phase: 0 }
    return this.tasks.add({ type: t.type, params, description, priority, source }, assessTask(t.type, params, snap))
  }

  getTask (id: string): TaskRecord {
    if (typeof id !== 'string' || id.length === 0 || id.length > 128) throw invalid('id is required', 'id')
    const t = this.tasks.get(id)
    if (t == null) throw new ApiError('not_found', `no task "${id.slice(0, 128)}"`, 'id', 'task_not_found')
    return t
  }

  listTasks (o: { status?: string, limit?: number, offset?: number }): { tasks: TaskRecord[], total: number } {
    const status = o.status == null || o.status === '' ? undefined : o.status
    if (status != null && !TASK_STATUSES.includes(status as TaskStatus)) throw invalid(`status must be one of ${TASK_STATUSES.join(', ')}`, 'status')
    if (o.limit != null && o.limit > 500) throw invalid('limit must be at most 500', 'limit')
    return this.tasks.list({ status: status as TaskStatus | undefined, limit: o.limit != null && o.limit > 0 ? o.limit : 50, offset: o.offset ?? 0 })
  }

  // ---------------------------------------------------------------- governance

  private logGovernance (e: GovernanceEventInfo): void {
    this.governanceLog.unshift(e)
    if (this.governanceLog.length > 50) this.governanceLog.pop()
    this.events.emit('governance', e)
  }

  governanceState (): Record<string, any> {
    const g = this.governance
    if (g == null) return { meshId: '', version: 0, halt: this.haltState(), readOnly: false, phase: 0, phaseName: PHASES[0].name, keyholders: [], configDigest: '', recent: this.governanceLog }
    const st = g.state
    const snap = st.snapshot()
    const hs = (h: { version: number, reason: string, atMs: number } | undefined): Record<string, any> => ({ halted: h != null, reason: h?.reason ?? '', version: h?.version ?? 0, atMs: h?.atMs ?? 0 })
    return {
      meshId: snap.meshId,
      version: snap.version,
      halt: hs(snap.halted),
      readOnly: snap.readOnly,
      phase: snap.phase,
      phaseName: PHASES[snap.phase]?.name ?? '',
      keyholders: st.config.keyholders.map(k => formatPublicKey(k.publicKey)),
      thresholds: { ...st.config.thresholds },
      configDigest: configDigest(st.config),
      rejected: { ...st.rejected },
      lastHalt: snap.lastHalt != null ? { ...hs(snap.lastHalt), halted: snap.halted != null } : undefined,
      lastResumeAtMs: snap.lastResumeAtMs ?? 0,
      recent: [...this.governanceLog]
    }
  }

  /**
   * Relays a keyholder-signed envelope: verified and applied here, then gossiped. `haltOnly`:
   * HaltMesh, where anything that is not an accepted HALT is PERMISSION_DENIED.
   */
  async relayGovernance (bytes: Uint8Array, via: string, haltOnly: boolean): Promise<Record<string, any>> {
    const g = this.governance
    if (g == null) throw new ApiError('failed_precondition', 'this node runs no governance service', null, 'no_governance')
    const deny = (reason: string, kind = 'UNKNOWN', version = 0, forged = true): ApiError => {
      this.logGovernance({ atMs: Date.now(), kind, version, accepted: false, detail: reason, via })
      // a forgery is PERMISSION_DENIED; a genuine message that is stale, expired or early
      // here is FAILED_PRECONDITION: either way the caller learns it was NOT applied
      return new ApiError(forged ? 'permission_denied' : 'failed_precondition', `governance message rejected: ${reason}`, 'envelope', 'governance_rejected')
    }
    if (!(bytes instanceof Uint8Array) || bytes.length === 0) {
      if (haltOnly) throw deny('empty envelope: a HALT must be signed by a keyholder')
      throw invalid('envelope is required (a signed governance envelope)', 'envelope')
    }
    let kind: string
    let version: number
    try {
      const env = decodeEnvelope(bytes)
      kind = Kind[env.message.kind]
      version = env.message.version
    } catch (err: any) {
      if (haltOnly) throw deny(`malformed: ${err.message}`)
      throw invalid(`malformed governance envelope: ${err.message}`, 'envelope')
    }
    if (haltOnly && kind !== 'HALT') throw deny(`a ${kind} envelope, not a HALT: use RelayGovernanceMessage`, kind, version)
    this.relayVia = via
    let r
    try {
      r = await g.submit(bytes)
    } finally {
      this.relayVia = undefined
    }
    if (!r.applied) throw deny(`${r.code}: ${r.reason}`, kind, version, FORGERY.has(r.code ?? 'malformed'))
    const refused = Object.entries(r.peers).filter(([a]) => a !== 'applied' && a !== 'known' && a !== 'no-answer').reduce((n, [, c]) => n + (c ?? 0), 0)
    return { accepted: true, kind, version, recipients: r.gossipRecipients, peersApplied: (r.peers.applied ?? 0) + (r.peers.known ?? 0), peersRefused: refused, state: this.governanceState() }
  }

  // ---------------------------------------------------------------- lifecycle

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.refreshTimer)
    this.router.observers.delete(this.observer)
    this.router.observers.delete(this.metrics.observer)
    this.events.removeAllListeners()
    if (this.attached != null) await this.attached.detach().catch(() => {})
    this.attached = undefined
    if (this.ownTasks) this.tasks.close()
  }
}

function describe (kind: Kind, snap: GovernanceSnapshot): string {
  switch (kind) {
    case Kind.HALT: return snap.halted?.reason ?? ''
    case Kind.RESUME: return 'resumed (read-only until a PHASE vote)'
    case Kind.PHASE: return `phase ${snap.phase}`
    case Kind.VOTE: return 'vote'
    case Kind.KEYHOLDERS: return 'keyholder set changed'
    default: return ''
  }
}
