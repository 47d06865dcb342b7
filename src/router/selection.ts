/**
 * Expert selection per token. Default policy 'weighted': sample K distinct experts without
 * replacement (Efraimidis–Spirakis keys u^(1/w)) with weight
 *   w = capacity × reliability / latency
 * where latency is the measured EWMA (prior: the record's advertised speed), reliability =
 * 1 / (1 + recent consecutive failures) and capacity = free slots share (≥ 0.25). Randomness
 * spreads load; measured latency dominates advertised claims once samples exist.
 * 'fastest': the K lowest-latency experts. 'random': uniform.
 * An advertised speed (record.tokensPerSecond) is only the latency prior before the first
 * measurement: an expert claiming 10× capacity gets no more steps than its measured latency
 * earns. The router never offers banned experts (src/router/reputation.ts) to selection.
 */
import type { ExpertRecord } from '../wire/record.js'
import type { ExpertHealth } from './health.js'

export type SelectionPolicy = 'weighted' | 'fastest' | 'random'

export function expertWeight (h: ExpertHealth, r: ExpertRecord): number {
  const latency = Math.max(1, h.latencyMs)
  const reliability = 1 / (1 + h.consecutiveFailures)
  const capacity = r.maxSlots > 0 ? Math.max(0.25, r.freeSlots / r.maxSlots) : 1
  return capacity * reliability / latency
}

export function selectExperts<T> (pool: T[], n: number, healthOf: (c: T) => ExpertHealth, recordOf: (c: T) => ExpertRecord, opts: { policy?: SelectionPolicy }, random: () => number): T[] {
  if (n >= pool.length) return [...pool]
  const policy = opts.policy ?? 'weighted'
  if (policy === 'random') {
    const a = [...pool]
    for (let i = a.length - 1; i > 0; i--) { const j = Math.floor(random() * (i + 1)); [a[i], a[j]] = [a[j], a[i]] }
    return a.slice(0, n)
  }
  if (policy === 'fastest') {
    return [...pool].sort((a, b) => healthOf(a).latencyMs - healthOf(b).latencyMs).slice(0, n)
  }
  const keyed = pool.map(c => {
    const w = expertWeight(healthOf(c), recordOf(c))
    const u = Math.max(1e-12, random())
    return { c, key: Math.log(u) / w }
  })
  keyed.sort((a, b) => b.key - a.key)
  return keyed.slice(0, n).map(x => x.c)
}
