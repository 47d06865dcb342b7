/**
 * Disjoint expert subsets, one per task stream (domain), so independent task streams run
 * concurrently without sharing an expert. Each subset has ≥ K experts; the number of
 * streams is min(domains, ⌊N / K⌋, maxStreams). Rebalancing after churn keeps every
 * surviving expert in its stream unless a stream must shed it (above its target size) or
 * the stream itself is dissolved, so movement is minimal.
 */

export interface Assignment {
  /** domain → experts (disjoint) */
  streams: Record<string, string[]>
  /** experts not in any stream (only when no stream can be formed) */
  spare: string[]
}

export interface PartitionOptions {
  /** experts per stream at least (K) */
  k: number
  /** upper bound on streams (capacity rule) */
  maxStreams?: number
  /** the previous assignment, to move as few experts as possible */
  previous?: Assignment
}

/**
 * Partitions `experts` among the first S `domains` (priority order).
 * Sizes differ by at most one; the larger sizes go to the streams that keep the most of
 * their previous members.
 */
export function partition (experts: readonly string[], domains: readonly string[], o: PartitionOptions): Assignment {
  const k = Math.max(1, Math.floor(o.k))
  const present = [...new Set(experts)]
  const n = present.length
  const S = Math.max(0, Math.min(domains.length, Math.floor(n / k), o.maxStreams ?? Infinity))
  if (S === 0) return { streams: {}, spare: present }
  const active = domains.slice(0, S)
  const here = new Set(present)
  const prev = o.previous?.streams ?? {}
  const taken = new Set<string>()
  // members each active stream keeps (in their previous order)
  const kept = new Map<string, string[]>()
  for (const d of active) {
    const m = (prev[d] ?? []).filter(x => here.has(x) && !taken.has(x))
    for (const x of m) taken.add(x)
    kept.set(d, m)
  }
  // target sizes: floor(n/S), the extras to the streams keeping the most
  const base = Math.floor(n / S)
  let extra = n % S
  const target = new Map<string, number>()
  const byKept = [...active].sort((a, b) => kept.get(b)!.length - kept.get(a)!.length || active.indexOf(a) - active.indexOf(b))
  for (const d of byKept) target.set(d, base + (extra-- > 0 ? 1 : 0))
  // pool: new experts, spares, members of dissolved streams, then surplus of kept streams
  const pool: string[] = present.filter(x => !taken.has(x))
  for (const d of active) {
    const m = kept.get(d)!
    const t = target.get(d)!
    if (m.length > t) pool.push(...m.splice(t))
  }
  for (const d of active) {
    const m = kept.get(d)!
    const t = target.get(d)!
    while (m.length < t && pool.length > 0) m.push(pool.shift() as string)
  }
  const streams: Record<string, string[]> = {}
  for (const d of active) streams[d] = kept.get(d)!
  return { streams, spare: pool }
}

/** experts that serve a different stream in `next` than in `prev` (both present) */
export function moved (prev: Assignment, next: Assignment): number {
  const where = new Map<string, string>()
  for (const [d, m] of Object.entries(prev.streams)) for (const x of m) where.set(x, d)
  let n = 0
  for (const [d, m] of Object.entries(next.streams)) for (const x of m) if (where.has(x) && where.get(x) !== d) n++
  return n
}

/** the stream a task of this domain runs in: its own, else one of its other domains, else the least loaded */
export function streamFor (domains: readonly string[], streams: readonly string[], load: ReadonlyMap<string, number>): string | undefined {
  for (const d of domains) if (streams.includes(d)) return d
  let best: string | undefined
  for (const s of streams) if (best == null || (load.get(s) ?? 0) < (load.get(best) ?? 0)) best = s
  return best
}
