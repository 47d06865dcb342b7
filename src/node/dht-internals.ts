/**
 * The one module that reads @libp2p/kad-dht's internals (v16: `KadDHT.routingTable`, a
 * RoutingTable with `size`, `remove`, `peer:add` events and its k-bucket tree `kb`), none of
 * which is in kad-dht's public interface. Everything else uses the small typed API below.
 *
 * Every accessor checks the members it touches and throws DhtInternalsChangedError, naming
 * the missing one, when kad-dht's shape changed; `assertDhtInternals` checks them all
 * (createMeshNode runs it on every full node, test/integration/dht-internals.spec.ts on a
 * real kad-dht node), so an upgrade that moves them fails loudly, never silently.
 */
import type { AbortOptions, PeerId } from '@libp2p/interface'
import type { KadDHT } from '@libp2p/kad-dht'

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

/** Checks every internal this module uses (throws DhtInternalsChangedError). */
export function assertDhtInternals (dht: KadDHT): void {
  if (table(dht, ALL_MEMBERS) == null) throw new DhtInternalsChangedError('no DHT to check')
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
