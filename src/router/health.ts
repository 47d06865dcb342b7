/**
 * Per-expert health as the router measures it: latency EWMA, error counts and a circuit
 * breaker with exponential backoff. Shared by every generation a router runs.
 */
export interface ExpertHealth {
  /** EWMA of step latency (ms) */
  latencyMs: number
  samples: number
  successes: number
  failures: number
  consecutiveFailures: number
  /** circuit open (expert not selectable) until this time */
  openUntil: number
  lastError?: string
}

export class HealthTable {
  private readonly table = new Map<string, ExpertHealth>()
  constructor (private readonly opts: { alpha?: number, baseBackoffMs?: number, maxBackoffMs?: number, now?: () => number } = {}) {}

  private now (): number { return (this.opts.now ?? Date.now)() }

  get (id: string, priorLatencyMs = 100): ExpertHealth {
    let h = this.table.get(id)
    if (h == null) {
      h = { latencyMs: priorLatencyMs, samples: 0, successes: 0, failures: 0, consecutiveFailures: 0, openUntil: 0 }
      this.table.set(id, h)
    }
    return h
  }

  /** the entry, without creating one */
  peek (id: string): ExpertHealth | undefined {
    return this.table.get(id)
  }

  success (id: string, latencyMs: number): void {
    const h = this.get(id, latencyMs)
    const a = this.opts.alpha ?? 0.2
    h.latencyMs = h.samples === 0 ? latencyMs : (1 - a) * h.latencyMs + a * latencyMs
    h.samples++
    h.successes++
    h.consecutiveFailures = 0
    h.openUntil = 0
  }

  failure (id: string, error: string): void {
    const h = this.get(id)
    h.failures++
    h.consecutiveFailures++
    h.lastError = error
    const base = this.opts.baseBackoffMs ?? 1_000
    const backoff = Math.min(this.opts.maxBackoffMs ?? 60_000, base * 2 ** (h.consecutiveFailures - 1))
    h.openUntil = this.now() + backoff
  }

  /** closed circuit, or half-open (backoff elapsed: one more try allowed) */
  available (id: string): boolean {
    return this.get(id).openUntil <= this.now()
  }

  entries (): Array<[string, ExpertHealth]> {
    return [...this.table.entries()]
  }
}
