/**
 * Expert selection per token. Default policy 'weighted': sample K distinct experts without
 * replacement (Efraimidis–Spirakis keys u^(1/w)) with weight
 *   w = capacity × reliability / latency × colocation
 * where latency is the measured EWMA (prior: the record's advertised speed, never better
 * than the median measured latency), reliability = 1 / (1 + recent consecutive failures),
 * capacity = free slots share (≥ 0.25) and colocation the Sybil penalty below. Randomness
 * spreads load; measured latency dominates advertised claims once samples exist.
 * 'fastest': the K lowest-latency experts. 'random': uniform (× colocation).
 *
 * Sybil resistance (docs/quality.md "Sybil identities"): identities are free, machines and
 * addresses are not. Experts are grouped by the network address the router OBSERVES: the
 * remote address of an open connection (IPv4 by /24, IPv6 by /48), never an address a record
 * claims (self-signed, so a Sybil lists any IP it likes first); every expert without a
 * connection yet (or with a relayed one) is in one group, UNVERIFIED_GROUP. Every member
 * of a group of n > COLOCATION_THRESHOLD identities has its weight divided by
 * 1 + (n − threshold)², the IP-colocation factor of gossipsub v1.1's peer score, so that a
 * group's total weight *falls* as it adds identities: 100 identities on one address weigh
 * about as much as one expert. The penalty is relative: a mesh whose experts all share one
 * address (a test mesh on loopback) selects exactly as without it.
 */
import type { Multiaddr } from '@multiformats/multiaddr'
import type { ExpertRecord } from '../wire/record.js'
import type { ExpertHealth } from './health.js'

export type SelectionPolicy = 'weighted' | 'fastest' | 'random'

/** identities per address that carry no penalty (a donor with a few GPUs, a shared NAT) */
export const COLOCATION_THRESHOLD = 3

export interface SelectionOptions<T> {
  policy?: SelectionPolicy
  /** weight multiplier per candidate in (0, 1] (colocationFactors); default 1 */
  colocation?: (c: T) => number
}

export function expertWeight (h: ExpertHealth, r: ExpertRecord): number {
  const latency = Math.max(1, h.latencyMs)
  const reliability = 1 / (1 + h.consecutiveFailures)
  const capacity = r.maxSlots > 0 ? Math.max(0.25, r.freeSlots / r.maxSlots) : 1
  return capacity * reliability / latency
}

export function selectExperts<T> (pool: T[], n: number, healthOf: (c: T) => ExpertHealth, recordOf: (c: T) => ExpertRecord, opts: SelectionOptions<T>, random: () => number): T[] {
  if (n >= pool.length) return [...pool]
  const policy = opts.policy ?? 'weighted'
  if (policy === 'fastest') {
    return [...pool].sort((a, b) => healthOf(a).latencyMs - healthOf(b).latencyMs).slice(0, n)
  }
  const colocation = opts.colocation ?? (() => 1)
  const keyed = pool.map(c => {
    const w = (policy === 'random' ? 1 : expertWeight(healthOf(c), recordOf(c))) * colocation(c)
    const u = Math.max(1e-12, random())
    return { c, key: Math.log(u) / w }
  })
  keyed.sort((a, b) => b.key - a.key)
  return keyed.slice(0, n).map(x => x.c)
}

/** the group of every expert whose address the router has not observed (no connection, or a relayed one) */
export const UNVERIFIED_GROUP = 'unverified'

/**
 * The address group of an observed address: its IPv4 /24, IPv6 /48 or DNS name; undefined when
 * it has none or is relayed (`/p2p-circuit`: the IP is the relay's, not the expert's).
 */
export function addressGroup (addr: Multiaddr | undefined): string | undefined {
  if (addr == null) return undefined
  const components = addr.getComponents()
  if (components.some(c => c.name === 'p2p-circuit')) return undefined
  for (const c of components) {
    if (c.name === 'ip4' && c.value != null) return `ip4/${c.value.split('.').slice(0, 3).join('.')}.0/24`
    if (c.name === 'ip6' && c.value != null) return `ip6/${expandIp6(c.value).slice(0, 3).join(':')}::/48`
    if ((c.name === 'dns4' || c.name === 'dns6' || c.name === 'dns') && c.value != null) return `dns/${c.value.toLowerCase()}`
  }
  return undefined
}

/**
 * Address group per expert from what the router observes: the remote address of its first
 * open connection with an IP (addressGroup), else the group of the last connection the node
 * had with it (`lastObserved`), else UNVERIFIED_GROUP. What a record claims never
 * counts: a Sybil's fake first address would make it a group of its own.
 */
export function observedGroups (experts: Array<{ id: string, connections: Array<{ remoteAddr: Multiaddr }>, lastObserved?: string }>): Map<string, string> {
  const out = new Map<string, string>()
  for (const e of experts) {
    let g: string | undefined
    for (const conn of e.connections) { g = addressGroup(conn.remoteAddr); if (g != null) break }
    out.set(e.id, g ?? e.lastObserved ?? UNVERIFIED_GROUP)
  }
  return out
}

function expandIp6 (ip: string): string[] {
  const [head, tail] = ip.split('::')
  const h = head === '' ? [] : head.split(':')
  const t = tail == null || tail === '' ? [] : tail.split(':')
  const fill = tail == null ? [] : new Array(Math.max(0, 8 - h.length - t.length)).fill('0')
  return [...h, ...fill, ...t].map(x => x.toLowerCase().replace(/^0+(?=.)/, ''))
}

/** colocation multiplier per key: 1 up to `threshold` members of a group, then 1 / (1 + (n − threshold)²) */
export function colocationFactors (groups: Map<string, string | undefined>, threshold = COLOCATION_THRESHOLD): Map<string, number> {
  const count = new Map<string, number>()
  for (const g of groups.values()) if (g != null) count.set(g, (count.get(g) ?? 0) + 1)
  const out = new Map<string, number>()
  for (const [id, g] of groups) {
    const n = g == null ? 1 : (count.get(g) ?? 1)
    out.set(id, n <= threshold ? 1 : 1 / (1 + (n - threshold) ** 2))
  }
  return out
}
