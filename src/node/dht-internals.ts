/**
 * The one module that reads @libp2p/kad-dht's internals (v16: `KadDHT.routingTable`, a
 * RoutingTable with `size`, `remove`, `peer:add` events and its k-bucket tree `kb`; and
 * `KadDHT.providers`, the provider records this node stores, with `getProviders`), none of
 * which is in kad-dht's public interface. Everything else uses the small typed API below.
 *
 * Every accessor checks the members it touches and throws DhtInternalsChangedError, naming
 * the missing one, when kad-dht's shape changed; `assertDhtInternals` checks them all
 * (createMeshNode runs it on every full node, test/integration/dht-internals.spec.ts on a
 * real kad-dht node), so an upgrade that moves them fails loudly, never silently.
 */
import type { AbortOptions, PeerId } from '@libp2p/interface'
import { MessageType, type KadDHT } from '@libp2p/kad-dht'
import type { CID } from 'multiformats/cid'

/** @libp2p/kad-dht no longer has the internals this module reads (dependency changed?) */
export class DhtInternalsChangedError extends Error {
  static override name = 'DhtInternalsChangedError'
  override name = 'DhtInternalsChangedError'
}

/** what this module reads of kad-dht's RoutingTable */
interface RoutingTableInternals {
  readonly size: number
  remove: (peer: PeerId, options?: AbortOptions) => Promise<void>
  addEventListener: (type: 'peer:add', listener: (evt: CustomEvent<PeerId>) => void) => void
  removeEventListener: (type: 'peer:add', listener: (evt: CustomEvent<PeerId>) => void) => void
  kb: { toIterable: () => Iterable<{ peerId: PeerId }> }
}

type Member = 'size' | 'remove' | 'addEventListener' | 'removeEventListener' | 'kb'
const ALL_MEMBERS: readonly Member[] = ['size', 'remove', 'addEventListener', 'removeEventListener', 'kb']

function checkMember (table: Record<string, unknown>, member: Member): void {
  const v = table[member]
  const ok = member === 'size'
    ? typeof v === 'number'
    : member === 'kb'
      ? typeof (v as { toIterable?: unknown } | undefined)?.toIterable === 'function'
      : typeof v === 'function'
  if (!ok) throw new DhtInternalsChangedError(`@libp2p/kad-dht's routingTable has no ${member === 'kb' ? 'kb.toIterable()' : member === 'size' ? 'numeric size' : `${member}()`} (dependency changed?)`)
}

/** kad-dht's routing table, its members checked; undefined when there is no DHT (a minimal node) */
function table (dht: KadDHT | undefined, members: readonly Member[]): RoutingTableInternals | undefined {
  if (dht == null) return undefined
  const t = (dht as unknown as { routingTable?: unknown }).routingTable
  if (t == null || typeof t !== 'object') throw new DhtInternalsChangedError('@libp2p/kad-dht has no routingTable (dependency changed?)')
  for (const m of members) checkMember(t as Record<string, unknown>, m)
  return t as RoutingTableInternals
}

/** what this module reads of kad-dht's provider store */
interface ProvidersInternals {
  getProviders: (cid: CID, options?: AbortOptions) => Promise<PeerId[]>
}

function providerStore (dht: KadDHT): ProvidersInternals {
  const p = (dht as unknown as { providers?: { getProviders?: unknown } }).providers
  if (typeof p?.getProviders !== 'function') throw new DhtInternalsChangedError('@libp2p/kad-dht has no providers.getProviders() (dependency changed?)')
  return p as ProvidersInternals
}

/** what this module reads of kad-dht's Network: one request, its events (PEER_RESPONSE carries the answer) */
interface NetworkInternals {
  sendRequest: (to: PeerId, msg: { type: MessageType, key: Uint8Array }, options: AbortOptions & { path: { index: number, queued: number, running: number, total: number } }) => AsyncIterable<{ name: string, providers?: Array<{ id: PeerId }> }>
}

function network (dht: KadDHT): NetworkInternals {
  const n = (dht as unknown as { network?: { sendRequest?: unknown } }).network
  if (typeof n?.sendRequest !== 'function') throw new DhtInternalsChangedError('@libp2p/kad-dht has no network.sendRequest() (dependency changed?)')
  return n as NetworkInternals
}

/** Checks every internal this module uses (throws DhtInternalsChangedError). */
export function assertDhtInternals (dht: KadDHT): void {
  if (table(dht, ALL_MEMBERS) == null) throw new DhtInternalsChangedError('no DHT to check')
  providerStore(dht)
  network(dht)
}

/**
 * The providers of `cid` that the DHT servers closest to it hold, all of them: one lookup of
 * the closest peers, then a GET_PROVIDERS to each (8 at a time). kad-dht's findProviders
 * ends at the first answer that brings its count to 20; holders do not all hold the same
 * providers (each expert provides to the closest peers its own lookup found), so that one
 * answer is a sample, not the mesh. `onProviders` sees each answer as it arrives.
 */
export async function providersFromHolders (dht: KadDHT, cid: CID, onProviders: (ids: PeerId[]) => void, options: AbortOptions = {}): Promise<number> {
  const net = network(dht)
  const holders: PeerId[] = []
  for await (const ev of dht.getClosestPeers(cid.multihash.bytes, options)) {
    if (ev.name === 'FINAL_PEER') holders.push(ev.peer.id)
  }
  let next = 0
  let answered = 0
  await Promise.all(Array.from({ length: Math.min(8, holders.length) }, async () => {
    while (next < holders.length && options.signal?.aborted !== true) {
      const to = holders[next++]
      for await (const ev of net.sendRequest(to, { type: MessageType.GET_PROVIDERS, key: cid.multihash.bytes }, { ...options, path: { index: -1, queued: 0, running: 0, total: 0 } })) {
        if (ev.name === 'PEER_RESPONSE') { answered++; onProviders((ev.providers ?? []).map(p => p.id)) }
      }
    }
  }))
  return answered
}

/**
 * Every provider of `cid` this node stores itself (a DHT server near the key). kad-dht's
 * findProviders yields at most K (20) of them and then ends the lookup: a router that is one
 * of the key's holders would otherwise only ever see the same 20 experts.
 */
export async function localProviders (dht: KadDHT | undefined, cid: CID, options?: AbortOptions): Promise<PeerId[]> {
  if (dht == null) return []
  return await providerStore(dht).getProviders(cid, options)
}

/** peers in the routing table (0 without a DHT) */
export function routingTableSize (dht: KadDHT | undefined): number {
  return table(dht, ['size'])?.size ?? 0
}

/** the peers in the routing table */
export function routingTablePeers (dht: KadDHT | undefined): PeerId[] {
  const t = table(dht, ['kb'])
  return t == null ? [] : [...t.kb.toIterable()].map(p => p.peerId)
}

/** removes a peer from the routing table (nothing when it is not there) */
export async function removeFromRoutingTable (dht: KadDHT | undefined, peer: PeerId, options?: AbortOptions): Promise<void> {
  await table(dht, ['remove'])?.remove(peer, options)
}

/** calls `listener` for each peer added to the routing table; returns the function that stops it */
export function onRoutingTableAdd (dht: KadDHT | undefined, listener: (peer: PeerId) => void): () => void {
  const t = table(dht, ['addEventListener', 'removeEventListener'])
  if (t == null) return () => {}
  const l = (evt: CustomEvent<PeerId>): void => { listener(evt.detail) }
  t.addEventListener('peer:add', l)
  return () => { t.removeEventListener('peer:add', l) }
}
