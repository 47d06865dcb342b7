/**
 * Capacity rules of the agent: how many parallel task streams the experts support, which
 * rollout phase the mesh qualifies for (REPORTED ONLY: a phase change is a PHASE vote of
 * the keyholders), the centralised fallback below the minimum, and the fractal allocation of
 * experts per request. docs/agent.md ("Subsets, capacity, fallback, fractal allocation").
 */
import { PHASES } from '../governance/tiers.js'
import type { ExpertMetrics } from './observe.js'

export interface CapacityConfig {
  /** below this many experts the mesh runs one centralised model (default 280) */
  minExperts?: number
  /** experts each stream beyond the first needs (default 128) */
  expertsPerStream?: number
  /** experts needed for phases 0–4 (default: 0, 1, minExperts, minExperts·1000/280, minExperts·5000/280) */
  phaseThresholds?: readonly number[]
}

export const DEFAULT_MIN_EXPERTS = 280
export const DEFAULT_EXPERTS_PER_STREAM = 128

/**
 * Parallel streams N experts support: 0 below the minimum (the centralised fallback serves
 * one stream), else 1 + ⌊(N − minExperts) / expertsPerStream⌋.
 * Seed figures with the defaults: 280 → 1, 1,000 → 6 (3–7), 5,000 → 37.
 */
export function streamCapacity (n: number, cfg: CapacityConfig = {}): number {
  const min = cfg.minExperts ?? DEFAULT_MIN_EXPERTS
  const per = Math.max(1, cfg.expertsPerStream ?? DEFAULT_EXPERTS_PER_STREAM)
  if (!(n >= min) || n <= 0) return 0
  return 1 + Math.floor((n - min) / per)
}

export function phaseThresholds (cfg: CapacityConfig = {}): number[] {
  if (cfg.phaseThresholds != null) {
    const t = [...cfg.phaseThresholds]
    if (t.length !== 5 || t.some((x, i) => !(x >= 0) || (i > 0 && x < t[i - 1]))) throw new RangeError('phaseThresholds must be 5 non-decreasing numbers ≥ 0')
    return t
  }
  const min = cfg.minExperts ?? DEFAULT_MIN_EXPERTS
  return [0, 1, min, Math.ceil(min * 1000 / 280), Math.ceil(min * 5000 / 280)]
}

/** the highest phase whose expert threshold N meets */
export function qualifiedPhase (n: number, cfg: CapacityConfig = {}): number {
  const t = phaseThresholds(cfg)
  let p = 0
  for (let i = 0; i < t.length; i++) if (n >= t[i]) p = i
  return p
}

export interface CapacityReport {
  experts: number
  k: number
  minExperts: number
  /** streams the rule allows (0: centralised fallback) */
  streams: number
  /** what disjoint subsets of ≥ K experts allow: ⌊N / K⌋ */
  maxDisjointSubsets: number
  qualifiedPhase: number
  qualifiedPhaseName: string
  currentPhase: number
  mode: 'distributed' | 'fallback'
  note: string
}

export function capacityReport (n: number, k: number, currentPhase: number, cfg: CapacityConfig = {}, fallbackActive?: boolean): CapacityReport {
  const min = cfg.minExperts ?? DEFAULT_MIN_EXPERTS
  const q = qualifiedPhase(n, cfg)
  return {
    experts: n,
    k,
    minExperts: min,
    streams: streamCapacity(n, cfg),
    maxDisjointSubsets: Math.floor(n / Math.max(1, k)),
    qualifiedPhase: q,
    qualifiedPhaseName: PHASES[q].name,
    currentPhase,
    mode: (fallbackActive ?? n < min) ? 'fallback' : 'distributed',
    note: 'reported only: a phase change needs a PHASE vote of the keyholders'
  }
}

/**
 * Graceful degradation: below `minExperts` the mesh falls back to one centralised model (the
 * single best expert serves whole generations, K = 1, only read-only and suggest actions).
 * It engages when N < minExperts and releases when N ≥ minExperts + hysteresis.
 */
export class FallbackController {
  active: boolean | undefined

  constructor (readonly minExperts = DEFAULT_MIN_EXPERTS, readonly hysteresis = 0) {}

  update (n: number): { active: boolean, changed: boolean } {
    const before = this.active
    if (this.active === true) this.active = !(n >= this.minExperts + this.hysteresis)
    else this.active = n < this.minExperts
    return { active: this.active, changed: before !== undefined && before !== this.active }
  }
}

/**
 * The best single expert by measured health and speed: circuit closed first, then
 * reliability / latency, where reliability = (successes + 1) / (successes + failures + 2)
 * and latency = the EWMA, or the record's claimed speed before any measurement.
 */
export function bestExpert (experts: readonly ExpertMetrics[]): string | undefined {
  let best: ExpertMetrics | undefined
  let bestScore = -Infinity
  const score = (e: ExpertMetrics): number => {
    const rel = (e.successes + 1) / (e.successes + e.failures + 2)
    const lat = e.latencyMs ?? (e.recordTokensPerSecond != null && e.recordTokensPerSecond > 0 ? 1000 / e.recordTokensPerSecond + 5 : 100)
    return (e.circuitOpen ? 0 : 1e6) + rel / Math.max(1, lat)
  }
  for (const e of experts) {
    const s = score(e)
    if (s > bestScore || (s === bestScore && best != null && e.id < best.id)) { best = e; bestScore = s }
  }
  return best?.id
}

export type Severity = 'info' | 'warning' | 'critical'

/** priority of a request from its severity */
export function priorityOf (severity: Severity): number {
  return severity === 'critical' ? 2 : severity === 'warning' ? 1 : 0.5
}

/** complexity of a request: more evidence and more possible actions need more experts */
export function complexityOf (evidenceItems: number, actionChoices: number): number {
  return Math.min(2, Math.max(0.5, 0.5 + 0.25 * evidenceItems + 0.125 * actionChoices))
}

/** Fractal allocation: K = clamp(round(baseK × priority × complexity), 1, available). */
export function fractalK (o: { baseK: number, priority: number, complexity: number, available: number }): number {
  const k = Math.round(o.baseK * o.priority * o.complexity)
  return Math.max(1, Math.min(Math.max(1, o.available), Number.isFinite(k) ? k : 1))
}
