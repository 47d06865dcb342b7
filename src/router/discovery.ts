/** Finds experts on the DHT: provider records → signed expert records → dialable peers. */
import type { AbortOptions, PeerId } from '@libp2p/interface'
import { equals } from 'uint8arrays/equals'
import type { MeshNode } from '../node/node.js'
import { openExpertRecord, expertRecordKey, expertProvidersCid, type ExpertRecord } from '../wire/record.js'
import { MAX_TRACKED_EXPERTS } from './health.js'

export interface DiscoveryResult {
  compatible: ExpertRecord[]
  /** experts found whose tokenizer fingerprint differs from ours: never used */
  incompatible: ExpertRecord[]
  /** providers whose record lookup was tried and failed (not those the time ran out before) */
  missing?: string[]
}

/** concurrent record lookups of one discovery */
const FETCH_CONCURRENCY = 8

async function fetchRecord (node: MeshNode, peerId: PeerId, options: AbortOptions): Promise<ExpertRecord | undefined> {
  let best: ExpertRecord | undefined
  for await (const ev of node.services.dht.get(expertRecordKey(peerId), options)) {
    if (ev.name === 'VALUE') {
      try {
        const r = await openExpertRecord(ev.value)
        if (r.peerId.equals(peerId) && (best == null || r.seq > best.seq)) best = r
      } catch {}
    }
  }
  return best
}

/**
 * Looks up every expert advertising under the "all experts" key, fetches and verifies each
 * record, and splits them by tokenizer fingerprint. `want`: stop early once this many
 * compatible experts are known.
 */
export interface DiscoveryOptions extends AbortOptions {
  /**
   * fetch order hint: providers for which this returns a lower number are fetched first
   * (a router puts unknown providers first, known ones next, and providers whose records
   * failed recently last,
   * so that dead providers, whose provider records outlive them in the DHT, cannot use up a
   * discovery's time before a new expert is seen)
   */
  priority?: (peerId: string) => number
}

/** a discovery's bound when the caller gives no signal (ms) */
export const DEFAULT_DISCOVERY_MS = 5_000

export async function discoverExperts (node: MeshNode, fingerprint: Uint8Array, opts: DiscoveryOptions = {}): Promise<DiscoveryResult> {
  // the caller's signal bounds the whole discovery (default: DEFAULT_DISCOVERY_MS)
  const signal = opts.signal ?? AbortSignal.timeout(DEFAULT_DISCOVERY_MS)
  const peers = new Map<string, PeerId>()
  const key = await expertProvidersCid()
  try {
    for await (const ev of node.services.dht.findProviders(key, { signal })) {
      if (ev.name === 'PROVIDER') {
        for (const p of ev.providers) {
          if (p.id.equals(node.peerId)) continue
          // identities are free: at most MAX_TRACKED_EXPERTS providers per discovery
          if (peers.size >= MAX_TRACKED_EXPERTS && !peers.has(p.id.toString())) continue
          peers.set(p.id.toString(), p.id)
          if (p.multiaddrs?.length > 0) await node.peerStore.merge(p.id, { multiaddrs: p.multiaddrs }).catch(() => {})
        }
      }
    }
  } catch (err) {
    if (!signal.aborted) throw err
  }
  // at most FETCH_CONCURRENCY record lookups at a time: each is a DHT query whose streams
  // share our few connections, and DHT servers bound their inbound streams per connection
  // (more at once are reset and the lookups fail fast)
  const ids = [...peers.values()]
  if (opts.priority != null) {
    const rank = new Map(ids.map(id => [id.toString(), opts.priority?.(id.toString()) ?? 0]))
    ids.sort((a, b) => (rank.get(a.toString()) ?? 0) - (rank.get(b.toString()) ?? 0))
  }
  const records: Array<ExpertRecord | undefined> = new Array(ids.length)
  let next = 0
  const attempted = new Array<boolean>(ids.length).fill(false)
  await Promise.all(Array.from({ length: Math.min(FETCH_CONCURRENCY, ids.length) }, async () => {
    while (next < ids.length && !signal.aborted) {
      const i = next++
      attempted[i] = true
      records[i] = await fetchRecord(node, ids[i], { signal: AbortSignal.any([signal, AbortSignal.timeout(3_000)]) }).catch(() => undefined)
    }
  }))
  const compatible: ExpertRecord[] = []
  const incompatible: ExpertRecord[] = []
  const missing: string[] = []
  for (let i = 0; i < records.length; i++) {
    const r = records[i]
    if (r == null) { if (attempted[i]) missing.push(ids[i].toString()); continue }
    if (r.addrs.length > 0) await node.peerStore.merge(r.peerId, { multiaddrs: r.addrs }).catch(() => {})
    ;(equals(r.tokenizerFingerprint, fingerprint) ? compatible : incompatible).push(r)
  }
  return { compatible, incompatible, missing }
}
