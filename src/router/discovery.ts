/** Finds experts on the DHT: provider records → signed expert records → dialable peers. */
import type { PeerId } from '@libp2p/interface'
import { equals } from 'uint8arrays/equals'
import type { MeshNode } from '../node/node.js'
import { openExpertRecord, expertRecordKey, expertProvidersCid, type ExpertRecord } from '../wire/record.js'

export interface DiscoveryResult {
  compatible: ExpertRecord[]
  /** experts found whose tokenizer fingerprint differs from ours: never used */
  incompatible: ExpertRecord[]
}

/** concurrent record lookups of one discovery */
const FETCH_CONCURRENCY = 8

async function fetchRecord (node: MeshNode, peerId: PeerId, signal: AbortSignal): Promise<ExpertRecord | undefined> {
  let best: ExpertRecord | undefined
  for await (const ev of node.services.dht.get(expertRecordKey(peerId), { signal }) as AsyncIterable<any>) {
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
export async function discoverExperts (node: MeshNode, fingerprint: Uint8Array, opts: { timeoutMs?: number, signal?: AbortSignal } = {}): Promise<DiscoveryResult> {
  const signal = AbortSignal.any([AbortSignal.timeout(opts.timeoutMs ?? 5_000), ...(opts.signal != null ? [opts.signal] : [])])
  const peers = new Map<string, PeerId>()
  const key = await expertProvidersCid()
  try {
    for await (const ev of node.services.dht.findProviders(key, { signal }) as AsyncIterable<any>) {
      if (ev.name === 'PROVIDER') {
        for (const p of ev.providers) {
          if (p.id.equals(node.peerId)) continue
          peers.set(p.id.toString(), p.id)
          if (p.multiaddrs?.length > 0) await node.peerStore.merge(p.id, { multiaddrs: p.multiaddrs }).catch(() => {})
        }
      }
    }
  } catch (err: any) {
    if (!signal.aborted) throw err
  }
  // at most FETCH_CONCURRENCY record lookups at a time: each is a DHT query whose streams
  // share our few connections, and DHT servers bound their inbound streams per connection
  // (more at once are reset and the lookups fail fast)
  const ids = [...peers.values()]
  const records: Array<ExpertRecord | undefined> = new Array(ids.length)
  let next = 0
  await Promise.all(Array.from({ length: Math.min(FETCH_CONCURRENCY, ids.length) }, async () => {
    while (next < ids.length && !signal.aborted) {
      const i = next++
      records[i] = await fetchRecord(node, ids[i], AbortSignal.any([signal, AbortSignal.timeout(3_000)])).catch(() => undefined)
    }
  }))
  const compatible: ExpertRecord[] = []
  const incompatible: ExpertRecord[] = []
  for (const r of records) {
    if (r == null) continue
    if (r.addrs.length > 0) await node.peerStore.merge(r.peerId, { multiaddrs: r.addrs }).catch(() => {})
    ;(equals(r.tokenizerFingerprint, fingerprint) ? compatible : incompatible).push(r)
  }
  return { compatible, incompatible }
}
