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

/**
 * Most experts (peer ids) one router keeps per-expert state for (health, reputation, record
 * fetch failures, known records): identities are free, so every table keyed by peer id is
 * bounded; past the bound the least recently used entry goes.
 */
export const MAX_TRACKED_EXPERTS = 4096

/**
 * A Map of at most `limit` entries: `get` and `set` make an entry the most recently used, and
 * inserting past the limit drops the least recently used one for which `evictable` holds (the
 * least recently used of all when none does). `peek` reads without refreshing.
 */
export class LruMap<K, V> {
  private readonly map = new Map<K, V>()
  constructor (readonly limit: number, private readonly evictable: (key: K, value: V) => boolean = () => true) {
    if (!(limit >= 1)) throw new RangeError(`limit must be ≥ 1, got ${limit}`)
  }

  get size (): number { return this.map.size }

  get (key: K): V | undefined {
    const v = this.map.get(key)
    if (v !== undefined) { this.map.delete(key); this.map.set(key, v) }
    return v
  }

  peek (key: K): V | undefined { return this.map.get(key) }

  has (key: K): boolean { return this.map.has(key) }

  set (key: K, value: V): this {
    this.map.delete(key)
    this.map.set(key, value)
    if (this.map.size > this.limit) {
      let victim: K | undefined
      for (const [k, v] of this.map) if (k !== key && this.evictable(k, v)) { victim = k; break }
      this.map.delete(victim ?? this.map.keys().next().value as K)
    }
    return this
  }

  delete (key: K): boolean { return this.map.delete(key) }

  entries (): IterableIterator<[K, V]> { return this.map.entries() }

  [Symbol.iterator] (): IterableIterator<[K, V]> { return this.map.entries() }
}

export class HealthTable {
  private readonly table: LruMap<string, ExpertHealth>
  constructor (private readonly opts: { alpha?: number, baseBackoffMs?: number, maxBackoffMs?: number, now?: () => number, maxEntries?: number } = {}) {
    this.table = new LruMap(opts.maxEntries ?? MAX_TRACKED_EXPERTS)
  }

  get size (): number { return this.table.size }

  private now (): number { return (this.opts.now ?? Date.now)() }

  get (id: string, priorLatencyMs = 100): ExpertHealth {
    let h = this.table.get(id)
    if (h == null) {
      h = { latencyMs: priorLatencyMs, samples: 0, successes: 0, failures: 0, consecutiveFailures: 0, openUntil: 0 }
      this.table.set(id, h)
    }
    return h
  }

  /** the entry, without creating one (nor refreshing it) */
  peek (id: string): ExpertHealth | undefined {
    return this.table.peek(id)
  }

  /**
   * A request succeeded; `latencyMs` is a latency sample, or undefined when the request's time
   * says nothing about the expert's per-token latency (an open: its prefill, and the time it
   * waited in the expert's queue for a session slot, which would stretch every later step's
   * deadline by that wait)
   */
  success (id: string, latencyMs?: number): void {
    const h = this.get(id, latencyMs)
    if (latencyMs !== undefined) {
      const a = this.opts.alpha ?? 0.2
      h.latencyMs = h.samples === 0 ? latencyMs : (1 - a) * h.latencyMs + a * latencyMs
      h.samples++
    }
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
