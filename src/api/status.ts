/**
 * The status facade of the API: the experts the router finds (cached for dashboards and
 * metrics), their health as this router measured it, throughput, GetRouterStatus,
 * ListExperts and the dashboard snapshot.
 */
import type { RouterObserver, TokenEvent } from '../router/router.js'
import { GENERATE_DEFAULTS } from '../router/options.js'
import { expertRecordKey, openExpertRecord, type ExpertRecord } from '../wire/record.js'
import type { GovernanceApi } from './governance-api.js'
import type { ApiContext, DashboardSnapshot, ExpertInfo, ExpertLists, LocalExpert, RouterStatusInfo } from './types.js'
import { errorMessage } from '../util/errors.js'

/** finished generations kept for "recent tokens/s" */
const RECENT_GENERATIONS = 256
/** seconds of per-second token counts kept (dashboard chart) */
const PER_SECOND_KEPT = 300

export class StatusApi {
  private cache: ExpertLists & { at: number } = { compatible: [], incompatible: [], at: 0 }
  private readonly models = new Map<string, string>()
  /** generations ended recently: for "recent tokens/s" */
  private readonly recent: Array<{ at: number, tokens: number, ms: number }> = []
  /** tokens per wall-clock second, last 5 minutes (dashboard chart) */
  private readonly perSecond = new Map<number, number>()
  private readonly lastTokenExperts: { at: number, experts: string[] } = { at: 0, experts: [] }
  /** the router observer feeding throughput and the 'token' / 'generation' events */
  readonly observer: RouterObserver

  constructor (
    private readonly ctx: ApiContext,
    private readonly governance: GovernanceApi,
    private readonly localExpert: () => LocalExpert | undefined,
    private readonly tasks: () => DashboardSnapshot['tasks']
  ) {
    this.observer = {
      onToken: (ev: TokenEvent) => {
        const sec = Math.floor(Date.now() / 1000)
        this.perSecond.set(sec, (this.perSecond.get(sec) ?? 0) + 1)
        this.lastTokenExperts.at = Date.now()
        this.lastTokenExperts.experts = ev.experts
        ctx.events.emit('token', { index: ev.index, text: ev.text, experts: ev.experts, at: Date.now() })
      },
      onGeneration: (ev) => {
        if (ev.result != null) {
          this.recent.push({ at: Date.now(), tokens: ev.result.tokens, ms: ev.result.elapsedMs })
          if (this.recent.length > RECENT_GENERATIONS) this.recent.shift()
          const r = ev.result
          ctx.events.emit('generation', {
            tokens: r.tokens,
            tokensPerSecond: r.tokensPerSecond,
            experts: r.experts,
            finishReason: r.finishReason,
            at: Date.now()
          })
        } else {
          ctx.events.emit('generation', { error: errorMessage(ev.error), at: Date.now() })
        }
      }
    }
  }

  /**
   * the router's experts (a DHT lookup when `force`, or when the router's cache is stale and
   * short of `first`, default its whole sample: Router.experts)
   */
  async refreshExperts (force: boolean, signal?: AbortSignal, first?: number): Promise<ExpertLists> {
    const r = await this.ctx.router.experts(force, signal, undefined, first)
    this.cache = { compatible: r.compatible, incompatible: r.incompatible, at: Date.now() }
    for (const x of [...r.compatible, ...r.incompatible]) this.noteModel(x.peerId.toString(), x.modelName)
    return r
  }

  /** cached experts (no DHT lookup): for dashboards and metrics */
  cachedExperts (): ExpertLists & { at: number } {
    return this.cache
  }

  /** remembers which model a peer serves (for metrics labels) */
  noteModel (peerId: string, model: string): void {
    this.models.set(peerId, model)
  }

  modelOf (peerId: string): string | undefined {
    return this.models.get(peerId)
  }

  expertInfo (r: ExpertRecord, flags: { local?: boolean, compatible?: boolean } = {}): ExpertInfo {
    const id = r.peerId.toString()
    const h = this.ctx.router.health.entries().find(([k]) => k === id)?.[1]
    const now = Date.now()
    const state = h == null || h.samples + h.failures === 0
      ? 'unknown'
      : h.openUntil > now ? 'circuit_open' : h.consecutiveFailures > 0 ? 'degraded' : 'healthy'
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
    const local = this.localExpert()
    if (local == null) return undefined
    const node = this.ctx.node
    try {
      let best: ExpertRecord | undefined
      for await (const ev of node.services.dht.get(expertRecordKey(node.peerId), { signal: signal ?? AbortSignal.timeout(3_000) })) {
        if (ev.name === 'VALUE') {
          try {
            const r = await openExpertRecord(ev.value)
            if (r.peerId.equals(node.peerId) && (best == null || r.seq > best.seq)) best = r
          } catch {}
        }
      }
      if (best != null) return best
    } catch {}
    return local.advertiser.lastRecord
  }

  /** the local expert's description, with its live slot counts */
  localInfo (r: ExpertRecord | undefined): ExpertInfo | undefined {
    if (r == null) return undefined
    const info = this.expertInfo(r, { local: true, compatible: Buffer.from(r.tokenizerFingerprint).equals(Buffer.from(this.ctx.router.tokenizer.fingerprint)) })
    const host = this.localExpert()?.host
    if (host != null) { info.freeSlots = host.freeSlots; info.maxSlots = host.maxSessions }
    return info
  }

  /** the router's experts but this node's own (which the router uses too, and is reported as the local expert) */
  private others (records: ExpertRecord[]): ExpertRecord[] {
    return records.filter(x => !x.peerId.equals(this.ctx.node.peerId))
  }

  /** ListExperts */
  async listExperts (refresh = false, includeIncompatible = false): Promise<ExpertInfo[]> {
    const r = await this.refreshExperts(refresh)
    const out = this.others(r.compatible).map(x => this.expertInfo(x, { compatible: true }))
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
    for (const k of this.perSecond.keys()) if (k < now - PER_SECOND_KEPT) this.perSecond.delete(k)
    const out: Array<[number, number]> = []
    for (let s = now - seconds + 1; s <= now; s++) out.push([s * 1000, this.perSecond.get(s) ?? 0])
    return out
  }

  /** GetRouterStatus; `cached`: no DHT lookup (dashboard) */
  async routerStatus (refresh = false, cached = false): Promise<RouterStatusInfo> {
    const r = cached ? this.cache : await this.refreshExperts(refresh)
    const s = this.ctx.router.stats
    return {
      peerId: this.ctx.node.peerId.toString(),
      listenAddrs: this.ctx.node.getMultiaddrs().map(a => a.toString()),
      experts: this.others(r.compatible).map(x => this.expertInfo(x, { compatible: true })),
      expertsOnline: r.compatible.length,
      incompatibleExperts: r.incompatible.length,
      policy: {
        defaultK: this.ctx.defaultK,
        defaultRule: GENERATE_DEFAULTS.rule,
        selection: 'weighted: K distinct experts per token, weight = capacity × reliability / latency EWMA; ' +
          'circuit-open and busy experts skipped; hedging and replacement on failure',
        maxTokensLimit: this.ctx.maxTokensLimit
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
      halt: this.governance.haltState(),
      localExpert: this.localInfo(cached ? this.localExpert()?.advertiser.lastRecord : await this.localRecord())
    }
  }

  /** what the dashboard polls / receives: status without a DHT lookup, throughput, governance, the latest tasks */
  async dashboard (): Promise<DashboardSnapshot> {
    return {
      at: Date.now(),
      status: await this.routerStatus(false, true),
      throughput: this.throughput(120),
      lastToken: this.lastTokenExperts,
      governance: this.governance.state(),
      tasks: this.tasks()
    }
  }
}
