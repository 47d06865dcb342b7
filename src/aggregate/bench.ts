/**
 * Micro-benchmark of `aggregate` on synthetic top-n expert distributions (for the bench
 * suite; not asserted in tests). Experts overlap as related models do: most of each
 * expert's ids come from a shared pool, the rest are random.
 */
import { aggregate } from './aggregate.js'
import { createRng } from './sampling.js'
import type { AggregationRule, SparseDist, WeightedDist } from './types.js'

export interface BenchOptions {
  vocabSize?: number // default 128256
  entries?: number // ids per expert, default 256
  iterations?: number // timed calls per (K, rule), default 2000
  ks?: number[] // default [1, 2, 4, 8]
  rules?: AggregationRule[] // default both
  /** fraction of each expert's ids drawn from a pool shared by all experts, default 0.8 */
  overlap?: number
  seed?: number
}

export interface BenchResult {
  k: number
  rule: AggregationRule
  /** mean microseconds per aggregate() call */
  meanUs: number
}

export function benchAggregate (opts: BenchOptions = {}): BenchResult[] {
  const V = opts.vocabSize ?? 128256
  const n = Math.min(opts.entries ?? 256, V)
  const iterations = opts.iterations ?? 2000
  const rng = createRng(opts.seed ?? 1)
  const pool = distinctIds(rng, Math.min(V, Math.ceil(n * 1.5)), V)
  const experts: SparseDist[] = []
  const maxK = Math.max(...(opts.ks ?? [8]))
  const overlap = opts.overlap ?? 0.8
  for (let e = 0; e < maxK; e++) experts.push(syntheticDist(rng, pool, n, V, overlap))

  const out: BenchResult[] = []
  for (const rule of opts.rules ?? ['mixture', 'product'] as AggregationRule[]) {
    for (const k of opts.ks ?? [1, 2, 4, 8]) {
      const inputs: WeightedDist[] = experts.slice(0, k).map((dist, i) => ({ dist, weight: 1 + i }))
      for (let i = 0; i < 200; i++) aggregate(inputs, { rule, vocabSize: V }) // warm-up
      const t0 = performance.now()
      for (let i = 0; i < iterations; i++) aggregate(inputs, { rule, vocabSize: V })
      out.push({ k, rule, meanUs: (performance.now() - t0) * 1000 / iterations })
    }
  }
  return out
}

function distinctIds (rng: () => number, n: number, V: number): Uint32Array {
  const seen = new Set<number>()
  while (seen.size < n) seen.add(Math.floor(rng() * V))
  return Uint32Array.from(seen)
}

/** n ids: a fraction `overlap` from the shared pool, the rest random; softmax logprobs with a 5% tail. */
function syntheticDist (rng: () => number, pool: Uint32Array, n: number, V: number, overlap: number): SparseDist {
  const seen = new Set<number>()
  const fromPool = Math.min(pool.length, Math.floor(n * overlap))
  while (seen.size < fromPool) seen.add(pool[Math.floor(rng() * pool.length)])
  while (seen.size < n) seen.add(Math.floor(rng() * V))
  const ids = Uint32Array.from(seen)
  const logits = Array.from(ids, () => rng() * 12)
  const mx = Math.max(...logits)
  const ws = logits.map(l => Math.exp(l - mx))
  const s = ws.reduce((x, y) => x + y, 0)
  const tail = n < V ? 0.05 : 0
  return { ids, logprobs: Float32Array.from(ws, w => Math.log(w / s * (1 - tail))), tailMass: tail }
}
