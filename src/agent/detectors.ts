/**
 * Detectors: pure functions from a cycle's metrics (and the previous cycle's summary) to
 * concrete findings with evidence: the numbers that triggered them, the domains they belong
 * to, and the catalogue actions that could answer them (the agent lets the mesh choose among
 * those, docs/agent.md).
 */
import { ACTIONS, PHASES, Tier } from '../governance/tiers.js'
import { DEFAULT_MIN_EXPERTS, qualifiedPhase, type CapacityConfig, type Severity } from './capacity.js'
import type { ExpertMetrics, MeshMetrics, PreviousSummary } from './observe.js'
import type { Domain } from './task-schema.js'

export type FindingKind = 'expert_failing' | 'expert_slow' | 'bandwidth' | 'too_few_experts' | 'phase_capacity' | 'security' | 'dht_empty' | 'churn'

export interface Finding {
  kind: FindingKind
  /** kind:subject; an open task with the same key is not proposed again */
  key: string
  /** the finding's own domain first */
  domains: Domain[]
  severity: Severity
  title: string
  summary: string
  /** the detector's numbers, one line each */
  evidence: string[]
  numbers: Record<string, number>
  /** catalogue actions that fit, the most appropriate first */
  actionTypes: string[]
  /** experts the finding is about (narrows `expert` parameters) */
  experts: string[]
  /** configuration keys a suggest_config may name */
  configKeys?: string[]
}

export interface DetectorConfig extends CapacityConfig {
  /** experts per token the mesh is configured for (default 3) */
  k?: number
  /** bytes per expert per token above this is a finding (default 1000) */
  bandwidthBudget?: number
  /** latency ≥ slowFactor × the median latency is slow (default 3) */
  slowFactor?: number
  /** …and at least this many ms (default 50) */
  slowMinMs?: number
  /** consecutive failures that make an expert failing (default 2; an open circuit always does) */
  failingConsecutive?: number
  /** share of failed requests that makes an expert failing, with ≥ 3 failures (default 0.2) */
  failingRate?: number
  /** experts disappearing since the last cycle that is a finding, as a share of the previous count (default 0.2) */
  churnShare?: number
}

const fmt = (x: number, d = 0): string => Number.isFinite(x) ? x.toFixed(d) : String(x)
const short = (id: string): string => id.length > 16 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id

export function median (xs: readonly number[]): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2
}

function expertFailing (e: ExpertMetrics, c: Required<Pick<DetectorConfig, 'failingConsecutive' | 'failingRate'>>): boolean {
  const total = e.successes + e.failures
  return e.circuitOpen || e.consecutiveFailures >= c.failingConsecutive || (e.failures >= 3 && total > 0 && e.failures / total >= c.failingRate)
}

/** every finding of this cycle */
export function detect (m: MeshMetrics, previous: PreviousSummary | undefined, cfg: DetectorConfig = {}): Finding[] {
  const c = {
    k: cfg.k ?? 3,
    bandwidthBudget: cfg.bandwidthBudget ?? 1000,
    slowFactor: cfg.slowFactor ?? 3,
    slowMinMs: cfg.slowMinMs ?? 50,
    failingConsecutive: cfg.failingConsecutive ?? 2,
    failingRate: cfg.failingRate ?? 0.2,
    churnShare: cfg.churnShare ?? 0.2,
    minExperts: cfg.minExperts ?? DEFAULT_MIN_EXPERTS
  }
  const out: Finding[] = []

  // ---- experts failing
  const failing = new Set<string>()
  for (const e of m.experts) {
    if (!expertFailing(e, c)) continue
    failing.add(e.id)
    const total = e.successes + e.failures
    out.push({
      kind: 'expert_failing',
      key: `expert_failing:${e.id}`,
      domains: ['scheduler', 'network'],
      severity: e.circuitOpen || e.consecutiveFailures >= 3 ? 'critical' : 'warning',
      title: `expert ${short(e.id)} is failing`,
      summary: `Expert ${e.id} failed ${e.failures} of ${total} requests${e.circuitOpen ? ' and its circuit is open' : ''}.`,
      evidence: [
        `expert ${e.id}: ${e.failures} failures of ${total} requests, ${e.consecutiveFailures} consecutive, circuit ${e.circuitOpen ? 'open' : 'closed'}`,
        ...(e.lastError != null ? [`last error of ${short(e.id)}: ${e.lastError.slice(0, 80)}`] : [])
      ],
      numbers: { failures: e.failures, requests: total, consecutiveFailures: e.consecutiveFailures, circuitOpen: e.circuitOpen ? 1 : 0 },
      actionTypes: ['flag_expert', 'report', 'benchmark_expert', 'ban_expert'],
      experts: [e.id]
    })
  }

  // ---- experts slow (latency ≫ median)
  const measured = m.experts.filter(e => e.latencyMs != null && !failing.has(e.id))
  if (measured.length >= 2) {
    const med = median(measured.map(e => e.latencyMs as number))
    for (const e of measured) {
      const lat = e.latencyMs as number
      if (lat >= c.slowFactor * med && lat >= c.slowMinMs) {
        out.push({
          kind: 'expert_slow',
          key: `expert_slow:${e.id}`,
          domains: ['scheduler'],
          severity: lat >= 2 * c.slowFactor * med ? 'critical' : 'warning',
          title: `expert ${short(e.id)} is slow`,
          summary: `Expert ${e.id} answers in ${fmt(lat)} ms, ${fmt(lat / med, 1)}× the median of ${fmt(med)} ms.`,
          evidence: [`expert ${e.id}: latency ${fmt(lat)} ms = ${fmt(lat / med, 1)}x the median ${fmt(med)} ms of ${measured.length} experts`],
          numbers: { latencyMs: lat, medianMs: med, ratio: lat / med },
          actionTypes: ['flag_expert', 'report', 'benchmark_expert', 'set_selection_weights'],
          experts: [e.id]
        })
      }
    }
  }

  // ---- bandwidth above budget (whole mesh, and experts whose own traffic is above it)
  const heavy = m.experts.filter(e => e.bytesPerToken != null && e.bytesPerToken > c.bandwidthBudget)
  if ((m.bytesPerExpertToken != null && m.bytesPerExpertToken > c.bandwidthBudget) || heavy.length > 0) {
    const b = m.bytesPerExpertToken ?? Math.max(...heavy.map(e => e.bytesPerToken as number))
    out.push({
      kind: 'bandwidth',
      key: 'bandwidth:mesh',
      domains: ['network', 'scheduler'],
      severity: b > 2 * c.bandwidthBudget ? 'critical' : 'warning',
      title: `bandwidth above budget: ${fmt(b)} bytes per expert per token`,
      summary: `Traffic is ${fmt(b)} bytes per expert per token, above the budget of ${c.bandwidthBudget}.`,
      evidence: [
        `${fmt(b)} bytes per expert per token, budget ${c.bandwidthBudget} (${fmt(b / c.bandwidthBudget, 1)}x)`,
        ...heavy.slice(0, 2).map(e => `expert ${e.id}: ${fmt(e.bytesPerToken as number)} bytes per token`)
      ],
      numbers: { bytesPerExpertToken: b, budget: c.bandwidthBudget },
      actionTypes: ['suggest_config', 'report', 'adjust_k'],
      experts: heavy.map(e => e.id),
      configKeys: ['router.k', 'frame.topK', 'router.bandwidthBudget']
    })
  }

  // ---- too few experts (below K, below the minimum, or for the phase)
  const n = m.experts.length
  const usable = m.experts.filter(e => !e.circuitOpen).length
  if (usable < c.k || n < c.minExperts) {
    out.push({
      kind: 'too_few_experts',
      key: 'too_few_experts:mesh',
      domains: ['capacity', 'scheduler'],
      severity: usable < c.k ? 'critical' : 'warning',
      title: usable < c.k ? `too few experts: ${usable} usable of ${n} online, K is ${c.k}` : `too few experts: ${n} online, ${c.minExperts} needed (--min-experts)`,
      summary: `${n} experts online (${usable} usable), K is ${c.k}. Below ${c.minExperts} online experts (--min-experts) the mesh runs one centralised model instead of the distributed mode; below K usable experts a generation runs with fewer experts per token than asked.`,
      evidence: [`${n} experts online, ${usable} usable, K ${c.k}, minimum ${c.minExperts}${n < c.minExperts ? ': centralised fallback' : ''}`],
      numbers: { online: n, usable, k: c.k, minExperts: c.minExperts },
      actionTypes: ['report', 'suggest_config', 'adjust_k'],
      experts: [],
      configKeys: ['agent.minExperts', 'router.k']
    })
  }
  const qp = qualifiedPhase(n, cfg)
  if (m.governance.phase > qp) {
    out.push({
      kind: 'phase_capacity',
      key: `phase_capacity:${m.governance.phase}`,
      domains: ['capacity', 'governance'],
      severity: 'warning',
      title: `phase ${m.governance.phase} needs more experts than ${n}`,
      summary: `The mesh is in phase ${m.governance.phase} (${PHASES[m.governance.phase]?.name ?? '?'}) but ${n} experts qualify for phase ${qp} only.`,
      evidence: [`phase ${m.governance.phase} in force, ${n} experts qualify for phase ${qp} (${PHASES[qp].name})`],
      numbers: { phase: m.governance.phase, qualifiedPhase: qp, experts: n },
      actionTypes: ['report', 'suggest_config', 'change_governance'],
      experts: [],
      configKeys: ['governance.phase', 'agent.minExperts']
    })
  }

  // ---- security: rejected forged or replayed governance messages since the last cycle
  const r = m.governance.rejected
  const p = previous?.rejected
  const delta = (cur: number, before: number | undefined): number => before != null && cur >= before ? cur - before : cur
  const forged = delta(r.forged, p?.forged)
  const replay = delta(r.replay, p?.replay)
  if (forged + replay > 0) {
    out.push({
      kind: 'security',
      key: 'security:governance',
      domains: ['security', 'governance'],
      severity: forged > 0 ? 'critical' : 'warning',
      title: `governance messages rejected: ${forged} forged, ${replay} replayed`,
      summary: `Since the last cycle this node rejected ${forged} forged and ${replay} replayed governance messages (totals ${r.forged} forged, ${r.replay} replayed).`,
      evidence: [
        `${forged} forged governance messages rejected since the last cycle (total ${r.forged})`,
        `${replay} replayed governance messages rejected since the last cycle (total ${r.replay})`
      ],
      numbers: { forged, replay, forgedTotal: r.forged, replayTotal: r.replay },
      actionTypes: ['report', 'suggest_config', 'change_governance'],
      experts: [],
      configKeys: ['governance.keyRotation', 'gossipsub.graylistThreshold']
    })
  }

  // ---- DHT routing table empty
  if (m.dht.routingTableSize === 0) {
    out.push({
      kind: 'dht_empty',
      key: 'dht_empty:node',
      domains: ['network'],
      severity: 'critical',
      title: 'DHT routing table is empty',
      summary: 'This node knows no DHT peer: discovery of experts cannot work.',
      evidence: ['DHT routing table size 0'],
      numbers: { routingTableSize: 0 },
      actionTypes: ['report', 'suggest_config'],
      experts: [],
      configKeys: ['node.bootstrap']
    })
  }

  // ---- churn: many experts left since the last cycle
  const before = previous?.experts?.length ?? 0
  if (m.churn.disappeared.length > 0 && before > 0 && m.churn.disappeared.length / before >= c.churnShare) {
    out.push({
      kind: 'churn',
      key: `churn:${m.churn.disappeared.slice().sort().join(',').slice(0, 200)}`,
      domains: ['capacity', 'network'],
      severity: 'info',
      title: `${m.churn.disappeared.length} of ${before} experts left`,
      summary: `${m.churn.disappeared.length} experts disappeared and ${m.churn.appeared.length} appeared since the last cycle.`,
      evidence: [`${m.churn.disappeared.length} of ${before} experts disappeared, ${m.churn.appeared.length} appeared since the last cycle`],
      numbers: { disappeared: m.churn.disappeared.length, appeared: m.churn.appeared.length, previous: before },
      actionTypes: ['report', 'suggest_config'],
      experts: [],
      configKeys: ['agent.minExperts']
    })
  }
  return out
}

/** the action types of a finding that a mode allows (fallback: read-only and suggest only) */
export function allowedActionTypes (f: Finding, maxTier: Tier = Tier.DEPLOY_MAJOR): string[] {
  const t = f.actionTypes.filter(a => ACTIONS[a] != null && ACTIONS[a].tier <= maxTier)
  return t.length > 0 ? t : ['report']
}
