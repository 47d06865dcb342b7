/**
 * Observe: one cycle's metrics of the mesh, as this node sees it.
 *
 * - experts online: `router.experts(true)` (DHT discovery, compatible tokenizer)
 * - per expert: latency EWMA, successes, failures, consecutive failures, circuit state, last
 *   error (`router.health`); bytes per token of its sessions (RouterObserver events)
 * - traffic over the window since the last cycle: bytes per expert per token and tokens/s
 *   (RouterObserver `onGeneration`, else deltas of `router.stats`)
 * - governance: halted, phase, read-only, accepted version, rejected messages by class
 *   (forged / replay / malformed / other)
 * - DHT: routing table size
 * - churn: experts that appeared / disappeared since the previous cycle (from the store)
 *
 * Any of it can be overridden by injected metrics (tests, what-if runs).
 */
import type { MeshNode } from '../node/node.js'
import { routingTableSize } from '../node/dht-internals.js'
import type { GenerateResult, Router, RouterObserver } from '../router/router.js'
import type { GovernanceService } from '../governance/service.js'
import type { Sample } from './store.js'

export interface ExpertMetrics {
  id: string
  model?: string
  /** the tokens/s its signed record claims */
  recordTokensPerSecond?: number
  contextLength?: number
  /** latency EWMA (ms); undefined before the first measured request */
  latencyMs?: number
  samples: number
  successes: number
  failures: number
  consecutiveFailures: number
  circuitOpen: boolean
  lastError?: string
  /** bytes (both directions, framing included) per frame over the window */
  bytesPerToken?: number
  /** frames it served over the window */
  frames?: number
}

export interface RejectedCounts { forged: number, replay: number, malformed: number, other: number }

export interface GovernanceMetrics {
  halted: boolean
  haltReason?: string
  phase: number
  readOnly: boolean
  version: number
  rejected: RejectedCounts
}

export interface MeshMetrics {
  at: number
  experts: ExpertMetrics[]
  /** experts seen with another tokenizer */
  incompatible: number
  /** bytes per expert per token over the window (undefined: no traffic) */
  bytesPerExpertToken?: number
  /** tokens per second of the generations that ended in the window */
  tokensPerSecond?: number
  generations: number
  governance: GovernanceMetrics
  dht: { routingTableSize: number }
  churn: { appeared: string[], disappeared: string[] }
}

export interface InjectedMetrics {
  /** merged into the observed expert by id (added when not online) */
  experts?: Record<string, Partial<Omit<ExpertMetrics, 'id'>>>
  /** treated as offline */
  removeExperts?: string[]
  bytesPerExpertToken?: number
  tokensPerSecond?: number
  governance?: Partial<Omit<GovernanceMetrics, 'rejected'>> & { rejected?: Partial<RejectedCounts> }
  dht?: { routingTableSize?: number }
}

/** what a cycle keeps for the next one (stored in the cycle's summary) */
export interface PreviousSummary {
  experts?: string[]
  rejected?: RejectedCounts
}

/** Collects traffic over a window: a RouterObserver attached to the router. */
export class TrafficMonitor {
  private perExpert = new Map<string, { bytes: number, frames: number }>()
  private gens: GenerateResult[] = []
  private statsAt: { bytes: number, expertSteps: number, tokens: number }
  private readonly observer: RouterObserver
  private attached = false

  constructor (private readonly router: Router) {
    this.statsAt = { bytes: router.stats.bytes, expertSteps: router.stats.expertSteps, tokens: router.stats.tokens }
    this.observer = {
      onGeneration: (ev) => {
        if (ev.result != null) this.gens.push(ev.result)
        for (const x of ev.perExpert) {
          const e = this.perExpert.get(x.expert) ?? { bytes: 0, frames: 0 }
          e.bytes += x.bytes
          e.frames += x.frames
          this.perExpert.set(x.expert, e)
        }
      }
    }
    const obs = (router as unknown as { observers?: Set<RouterObserver> }).observers
    if (obs != null) { obs.add(this.observer); this.attached = true }
  }

  /** the window's traffic; starts a new window */
  take (): { perExpert: Map<string, { bytes: number, frames: number }>, bytesPerExpertToken?: number, tokensPerSecond?: number, generations: number } {
    const st = this.router.stats
    let perExpert = this.perExpert
    let bytes = 0
    let frames = 0
    if (this.attached) {
      for (const e of perExpert.values()) { bytes += e.bytes; frames += e.frames }
    } else {
      bytes = st.bytes - this.statsAt.bytes
      frames = st.expertSteps - this.statsAt.expertSteps
      perExpert = new Map()
    }
    const gens = this.gens
    const tokens = gens.reduce((a, g) => a + g.tokens, 0)
    const ms = gens.reduce((a, g) => a + g.elapsedMs, 0)
    this.perExpert = new Map()
    this.gens = []
    this.statsAt = { bytes: st.bytes, expertSteps: st.expertSteps, tokens: st.tokens }
    return {
      perExpert,
      ...(frames > 0 ? { bytesPerExpertToken: bytes / frames } : {}),
      ...(ms > 0 ? { tokensPerSecond: tokens / (ms / 1000) } : (!this.attached && st.lastTokensPerSecond > 0 ? { tokensPerSecond: st.lastTokensPerSecond } : {})),
      generations: gens.length
    }
  }

  detach (): void {
    const obs = (this.router as unknown as { observers?: Set<RouterObserver> }).observers
    obs?.delete(this.observer)
    this.attached = false
  }
}

export interface CollectOptions {
  node: MeshNode
  router: Router
  governance?: GovernanceService
  traffic?: TrafficMonitor
  previous?: PreviousSummary
  injected?: InjectedMetrics
  signal?: AbortSignal
  now?: number
  /** refresh discovery (default true) */
  discover?: boolean
}

export async function collectMetrics (o: CollectOptions): Promise<MeshMetrics> {
  const now = o.now ?? Date.now()
  let compatible: Array<{ id: string, model: string, tps: number, ctx: number }> = []
  let incompatible = 0
  try {
    const r = await o.router.experts(o.discover !== false, o.signal)
    compatible = r.compatible.map(x => ({ id: x.peerId.toString(), model: x.modelName, tps: x.tokensPerSecond, ctx: x.contextLength }))
    incompatible = r.incompatible.length
  } catch (err) {
    if (o.signal?.aborted === true) throw err
    // discovery failed (no peers): the mesh looks empty; detectors report it
  }
  const traffic = o.traffic?.take()
  const health = new Map(o.router.health.entries())
  const experts: ExpertMetrics[] = compatible.map(x => {
    const h = health.get(x.id)
    const t = traffic?.perExpert.get(x.id)
    return {
      id: x.id,
      model: x.model,
      recordTokensPerSecond: x.tps,
      contextLength: x.ctx,
      ...(h != null && h.samples > 0 ? { latencyMs: h.latencyMs } : {}),
      samples: h?.samples ?? 0,
      successes: h?.successes ?? 0,
      failures: h?.failures ?? 0,
      consecutiveFailures: h?.consecutiveFailures ?? 0,
      circuitOpen: h != null && h.openUntil > now,
      ...(h?.lastError != null ? { lastError: h.lastError } : {}),
      ...(t != null && t.frames > 0 ? { bytesPerToken: t.bytes / t.frames, frames: t.frames } : {})
    }
  })
  const st = o.governance?.state
  const governance: GovernanceMetrics = {
    halted: st?.halted != null,
    ...(st?.halted != null ? { haltReason: st.halted.reason } : {}),
    phase: st?.phase ?? 0,
    readOnly: st?.readOnly ?? false,
    version: st?.version ?? 0,
    rejected: { ...(st?.rejected ?? { forged: 0, replay: 0, malformed: 0, other: 0 }) }
  }
  const m: MeshMetrics = {
    at: now,
    experts,
    incompatible,
    ...(traffic?.bytesPerExpertToken != null ? { bytesPerExpertToken: traffic.bytesPerExpertToken } : {}),
    ...(traffic?.tokensPerSecond != null ? { tokensPerSecond: traffic.tokensPerSecond } : {}),
    generations: traffic?.generations ?? 0,
    governance,
    dht: { routingTableSize: routingTableSize(o.node.services.dht) },
    churn: { appeared: [], disappeared: [] }
  }
  const out = o.injected != null ? applyInjected(m, o.injected) : m
  out.churn = churn(o.previous?.experts, out.experts.map(e => e.id))
  return out
}

/** merges injected metrics into observed ones (a new object) */
export function applyInjected (m: MeshMetrics, inj: InjectedMetrics): MeshMetrics {
  const experts = m.experts.filter(e => !(inj.removeExperts ?? []).includes(e.id)).map(e => ({ ...e }))
  for (const [id, patch] of Object.entries(inj.experts ?? {})) {
    const e = experts.find(x => x.id === id)
    if (e != null) Object.assign(e, patch)
    else experts.push({ id, samples: 0, successes: 0, failures: 0, consecutiveFailures: 0, circuitOpen: false, ...patch })
  }
  const g = inj.governance
  return {
    ...m,
    experts,
    ...(inj.bytesPerExpertToken != null ? { bytesPerExpertToken: inj.bytesPerExpertToken } : {}),
    ...(inj.tokensPerSecond != null ? { tokensPerSecond: inj.tokensPerSecond } : {}),
    governance: g != null ? { ...m.governance, ...g, rejected: { ...m.governance.rejected, ...(g.rejected ?? {}) } } : m.governance,
    dht: { routingTableSize: inj.dht?.routingTableSize ?? m.dht.routingTableSize },
    churn: { ...m.churn }
  }
}

export function churn (previous: string[] | undefined, current: string[]): { appeared: string[], disappeared: string[] } {
  if (previous == null) return { appeared: [], disappeared: [] }
  const p = new Set(previous)
  const c = new Set(current)
  return { appeared: current.filter(x => !p.has(x)), disappeared: previous.filter(x => !c.has(x)) }
}

/** a metrics object with defaults (tests, what-if runs) */
export function syntheticMetrics (inj: InjectedMetrics = {}, previous?: PreviousSummary, now = Date.now()): MeshMetrics {
  const base: MeshMetrics = {
    at: now,
    experts: [],
    incompatible: 0,
    generations: 0,
    governance: { halted: false, phase: 0, readOnly: false, version: 0, rejected: { forged: 0, replay: 0, malformed: 0, other: 0 } },
    dht: { routingTableSize: 1 },
    churn: { appeared: [], disappeared: [] }
  }
  const m = applyInjected(base, inj)
  m.churn = churn(previous?.experts, m.experts.map(e => e.id))
  return m
}

/** the cycle's metrics as stored samples (name, labels, value) */
export function metricsToSamples (m: MeshMetrics): Sample[] {
  const out: Sample[] = [
    { name: 'experts_online', value: m.experts.length },
    { name: 'experts_incompatible', value: m.incompatible },
    { name: 'generations', value: m.generations },
    { name: 'gov_halted', value: m.governance.halted ? 1 : 0 },
    { name: 'gov_phase', value: m.governance.phase },
    { name: 'gov_read_only', value: m.governance.readOnly ? 1 : 0 },
    { name: 'gov_version', value: m.governance.version },
    { name: 'dht_routing_table_size', value: m.dht.routingTableSize },
    { name: 'churn_appeared', value: m.churn.appeared.length },
    { name: 'churn_disappeared', value: m.churn.disappeared.length }
  ]
  for (const [reason, n] of Object.entries(m.governance.rejected)) out.push({ name: 'gov_rejected', labels: { reason }, value: n })
  if (m.bytesPerExpertToken != null) out.push({ name: 'bytes_per_expert_token', value: m.bytesPerExpertToken })
  if (m.tokensPerSecond != null) out.push({ name: 'tokens_per_second', value: m.tokensPerSecond })
  for (const e of m.experts) {
    const labels = { expert: e.id }
    out.push({ name: 'expert_online', labels, value: 1 })
    if (e.latencyMs != null) out.push({ name: 'expert_latency_ms', labels, value: e.latencyMs })
    out.push({ name: 'expert_failures', labels, value: e.failures })
    out.push({ name: 'expert_consecutive_failures', labels, value: e.consecutiveFailures })
    out.push({ name: 'expert_circuit_open', labels, value: e.circuitOpen ? 1 : 0 })
    if (e.bytesPerToken != null) out.push({ name: 'expert_bytes_per_token', labels, value: e.bytesPerToken })
  }
  return out
}
