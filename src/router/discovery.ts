/** Finds experts on the DHT: provider records → signed expert records → dialable peers. */
import type { AbortOptions, PeerId } from '@libp2p/interface'
import { equals } from 'uint8arrays/equals'
import type { MeshNode } from '../node/node.js'
import { openExpertRecord, expertRecordKey, expertProvidersCid, type ExpertRecord } from '../wire/record.js'
import { MAX_TRACKED_EXPERTS } from './health.js'
import { localProviders, providersFromHolders } from '../node/dht-internals.js'
import { streamTo } from '../node/reach.js'
import { lpStream } from '@libp2p/utils'
import { lengthPrefixOptions } from '../wire/length-prefix.js'
import { MAX_RECORD_BYTES, RECORD_PROTOCOL } from '../wire/types.js'
import { asError } from '../util/errors.js'

export interface DiscoveryResult {
  compatible: ExpertRecord[]
  /** experts found whose tokenizer fingerprint differs from ours: never used */
  incompatible: ExpertRecord[]
  /** providers whose record lookup was tried and failed (not those the time ran out before) */
  missing?: string[]
  /** how many providers (experts, by their provider records) the lookup saw */
  providers?: number
}

/** concurrent record lookups of one discovery */
const FETCH_CONCURRENCY = 8

/**
 * after the first valid copy of a record, how long its lookup goes on for a newer one (ms):
 * kad-dht's get would collect 16 copies across the query's paths first (seconds in a large
 * mesh); a newer copy (higher seq) matters when the expert's addresses just changed
 */
const RECORD_GRACE_MS = 250

/** how long a record is asked of the expert itself before the DHT is asked (ms) */
const DIRECT_RECORD_MS = 1_500

/** the expert's record from the expert (/meshllm/record), on the connection a session would use */
async function fetchRecordDirect (node: MeshNode, peerId: PeerId, options: AbortOptions): Promise<ExpertRecord | undefined> {
  const signal = AbortSignal.any([...(options.signal != null ? [options.signal] : []), AbortSignal.timeout(DIRECT_RECORD_MS)])
  const stream = await streamTo(node, peerId, RECORD_PROTOCOL, { signal })
  try {
    const lp = lpStream(stream, lengthPrefixOptions(MAX_RECORD_BYTES))
    const r = await openExpertRecord(await lp.read({ signal }))
    await stream.close({ signal }).catch(() => {})
    return r.peerId.equals(peerId) ? r : undefined
  } catch (err) {
    stream.abort(asError(err))
    throw err
  }
}

/** the record from the expert itself, else (no route, old expert, bad answer) from the DHT */
async function fetchRecord (node: MeshNode, peerId: PeerId, options: AbortOptions): Promise<ExpertRecord | undefined> {
  const direct = await fetchRecordDirect(node, peerId, options).catch(() => undefined)
  if (direct != null) return direct
  options.signal?.throwIfAborted()
  return await fetchRecordFromDht(node, peerId, options)
}

async function fetchRecordFromDht (node: MeshNode, peerId: PeerId, options: AbortOptions): Promise<ExpertRecord | undefined> {
  const done = new AbortController()
  let grace: NodeJS.Timeout | undefined
  let best: ExpertRecord | undefined
  try {
    for await (const ev of node.services.dht.get(expertRecordKey(peerId), { ...options, signal: AbortSignal.any([...(options.signal != null ? [options.signal] : []), done.signal]) })) {
      if (ev.name === 'VALUE') {
        try {
          const r = await openExpertRecord(ev.value)
          if (r.peerId.equals(peerId) && (best == null || r.seq > best.seq)) best = r
        } catch {}
        if (best != null) grace ??= setTimeout(() => { done.abort() }, RECORD_GRACE_MS)
      }
    }
  } catch (err) {
    if (!done.signal.aborted) throw err
  } finally {
    clearTimeout(grace)
    done.abort()
  }
  return best
}

export interface DiscoveryOptions extends AbortOptions {
  /**
   * fetch order hint: providers for which this returns a lower number are fetched first
   * (a router puts unknown providers first, known ones next, and providers whose records
   * failed recently last,
   * so that dead providers, whose provider records outlive them in the DHT, cannot use up a
   * discovery's time before a new expert is seen); within one rank the order is random
   */
  priority?: (peerId: string) => number
  /**
   * stop once this many compatible records are fetched (default: every provider found, up to
   * MAX_TRACKED_EXPERTS). A router samples: it needs K experts and a few spare, not all N.
   */
  want?: number
  /** only these providers' records are fetched (status's pages), in the given order, once the provider lookup ended */
  only?: (peerIds: PeerId[]) => PeerId[]
  /**
   * the provider lookup's own bound (ms; default: the discovery's), leaving the rest for
   * records; it ends the lookup only once a provider is known (until then, the discovery's bound)
   */
  lookupTimeoutMs?: number
  /**
   * ask every DHT server holding the "all experts" key for its providers (providersFromHolders),
   * not only the first that answers: how `status` counts the mesh. Default false: a router's
   * sample needs one answer.
   */
  allHolders?: boolean
  /** record lookups at a time (default FETCH_CONCURRENCY, 8; at most 32) */
  concurrency?: number
}

/** a discovery's bound when the caller gives no signal (ms) */
export const DEFAULT_DISCOVERY_MS = 5_000

/**
 * Finds experts: the providers of the "all experts" key (one DHT lookup, providers streamed
 * as they arrive), and their signed records (from each expert itself, else a DHT lookup;
 * FETCH_CONCURRENCY at a time, started as soon as a provider is known, best priority first,
 * random within a priority).
 * Stops when `want` compatible records are in, when the caller's signal ends (default:
 * DEFAULT_DISCOVERY_MS), or when every provider's record was tried.
 */
export async function discoverExperts (node: MeshNode, fingerprint: Uint8Array, opts: DiscoveryOptions = {}): Promise<DiscoveryResult> {
  const outer = opts.signal ?? AbortSignal.timeout(DEFAULT_DISCOVERY_MS)
  // ends the provider lookup and the record fetches once enough is known
  const enough = new AbortController()
  const signal = AbortSignal.any([outer, enough.signal])
  const want = Math.max(1, opts.want ?? Infinity)
  const peers = new Map<string, PeerId>()
  const rank = (id: string): number => opts.priority?.(id) ?? 0
  // providers found and not yet fetched: taken best rank first, at random within a rank
  const queue: Array<{ id: PeerId, rank: number, tie: number }> = []
  const compatible: ExpertRecord[] = []
  const incompatible: ExpertRecord[] = []
  const missing: string[] = []
  let lookupDone = false
  // workers waiting for a provider to fetch: woken, all of them, by every lookup event
  const waiting = new Set<() => void>()
  const notify = (): void => { for (const w of [...waiting]) w(); waiting.clear() }
  signal.addEventListener('abort', notify, { once: true })

  const add = (id: PeerId): void => {
    if (id.equals(node.peerId)) return
    const s = id.toString()
    // identities are free: at most MAX_TRACKED_EXPERTS providers per discovery
    if (peers.has(s) || peers.size >= MAX_TRACKED_EXPERTS) return
    peers.set(s, id)
    if (opts.only == null) queue.push({ id, rank: rank(s), tie: Math.random() })
  }
  let boundTimer: NodeJS.Timeout | undefined
  const lookup = (async () => {
    const key = await expertProvidersCid()
    try {
      // the providers this node stores itself, all of them (findProviders stops at 20)
      for (const id of await localProviders(node.services.dht, key, { signal })) add(id)
      notify()
      // the lookup's own bound ends it only once a provider is known: on a slow mesh, a lookup
      // that found nothing by then goes on until the discovery's signal (at 300 peers on 2
      // cores, status reported 0 experts seen after 2.5 s)
      const bounded = new AbortController()
      if (opts.lookupTimeoutMs != null) {
        const check = (): void => { if (peers.size > 0) bounded.abort(); else boundTimer = setTimeout(check, 100) }
        boundTimer = setTimeout(check, opts.lookupTimeoutMs)
      }
      const lookupSignal = AbortSignal.any([signal, bounded.signal])
      // every holder's providers (status), or the first answer's (a router's sample)
      if (opts.allHolders === true) {
        await providersFromHolders(node.services.dht, key, (ids) => { for (const id of ids) add(id); notify() }, { signal: lookupSignal })
      } else {
        for await (const ev of node.services.dht.findProviders(key, { signal: lookupSignal })) {
          if (ev.name !== 'PROVIDER') continue
          for (const p of ev.providers) {
            const known = peers.has(p.id.toString())
            add(p.id)
            if (!known && peers.has(p.id.toString()) && p.multiaddrs?.length > 0) await node.peerStore.merge(p.id, { multiaddrs: p.multiaddrs }).catch(() => {})
          }
          notify()
        }
      }
    } catch (err) {
      if (!signal.aborted && opts.lookupTimeoutMs == null) throw err
    } finally {
      clearTimeout(boundTimer)
      lookupDone = true
      // status's pages: the page is chosen once every provider is known
      if (opts.only != null) for (const id of opts.only([...peers.values()])) queue.push({ id, rank: 0, tie: queue.length })
      notify()
    }
  })()

  const take = (): PeerId | undefined => {
    if (queue.length === 0) return undefined
    let best = 0
    for (let i = 1; i < queue.length; i++) {
      const a = queue[i]; const b = queue[best]
      if (a.rank < b.rank || (a.rank === b.rank && a.tie < b.tie)) best = i
    }
    return queue.splice(best, 1)[0].id
  }

  // at most FETCH_CONCURRENCY record lookups at a time: each is a DHT query whose streams
  // share our few connections, and DHT servers bound their inbound streams per connection
  // (more at once are reset and the lookups fail fast)
  const worker = async (): Promise<void> => {
    while (!signal.aborted) {
      const id = take()
      if (id == null) {
        if (lookupDone) return
        await new Promise<void>(resolve => { waiting.add(resolve) })
        continue
      }
      const r = await fetchRecord(node, id, { signal: AbortSignal.any([signal, AbortSignal.timeout(3_000)]) }).catch(() => undefined)
      if (r == null) { if (!enough.signal.aborted) missing.push(id.toString()); continue }
      if (r.addrs.length > 0) await node.peerStore.merge(r.peerId, { multiaddrs: r.addrs }).catch(() => {})
      if (equals(r.tokenizerFingerprint, fingerprint)) {
        compatible.push(r)
        if (compatible.length >= want) enough.abort()
      } else {
        incompatible.push(r)
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(32, Math.max(1, opts.concurrency ?? FETCH_CONCURRENCY)) }, worker))
  enough.abort()
  await lookup
  return { compatible, incompatible, missing, providers: peers.size }
}
