/**
 * Reach: how peers that strangers run at home become usable (docs/deploy.md).
 *
 * - Every full node runs the circuit relay v2 *transport* (it can dial `/p2p-circuit`
 *   addresses) and DCUtR (a relayed connection is upgraded to a direct one where the NATs
 *   allow: in js-libp2p over TCP that is a NATed peer dialling a publicly reachable one).
 * - A publicly reachable node may serve circuit relay v2 for the mesh (`relay`), with limits
 *   sized for inference streams (RELAY_DEFAULTS: per relayed connection, not libp2p's 2 min /
 *   128 KiB, which one generation outgrows after ~60 tokens) and a per-peer rate of new
 *   relayed connections, so the relay cannot be used for unbounded unrelated traffic.
 * - A node without a public address that joins a real network holds relay reservations
 *   (`relayReservations`): its `/p2p-circuit` addresses go in its signed expert record.
 * - mDNS finds peers on one LAN (off unless asked for: it multicasts on every interface of
 *   the network namespace); UPnP maps the listen port on a home gateway (opt-in).
 *
 * Relayed connections are *limited* (they carry a data and a time budget), so the protocols
 * that must run over them (inference, routed generation, governance push and catch-up)
 * register with `runOnLimitedConnection` and open their streams on an existing connection
 * (connectionFor): libp2p never reuses a limited connection for a new dial.
 */
import type { AbortOptions, Connection, Libp2p, PeerId, Stream, Transport } from '@libp2p/interface'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { TransportManager } from '@libp2p/interface-internal'
import { isPrivateIp } from '@libp2p/utils'
import { RateLimiter } from '../util/rate-limit.js'
import { MAX_RESERVATIONS, MDNS_SERVICE_TAG, RELAY_DEFAULTS, type RelayLimits } from './reach-limits.js'

export { MAX_RESERVATIONS, MDNS_SERVICE_TAG, RELAY_DEFAULTS, type RelayLimits }

export interface ReachOptions {
  /** serve circuit relay v2 for the mesh (a publicly reachable node); true: RELAY_DEFAULTS */
  relay?: boolean | Partial<RelayLimits>
  /** relay reservations to hold (a node without a public address; default 0) */
  relayReservations?: number
  /** mDNS discovery on the node's LAN (default off); serviceTag separates meshes on one LAN */
  mdns?: boolean | { serviceTag?: string, intervalMs?: number }
  /** UPnP / NAT-PMP port mapping on the home gateway (default off) */
  upnp?: boolean
}

/** the transports, services and listen addresses a node's reach options add */
export async function reachParts (opts: ReachOptions, isBlocked: (peer: PeerId) => boolean): Promise<{
  transports: Array<(components: any) => Transport>
  services: Record<string, (components: any) => unknown>
  listen: string[]
  gater: { denyInboundRelayReservation: (peer: PeerId) => boolean, denyOutboundRelayedConnection: (source: PeerId, target: PeerId) => boolean, denyInboundRelayedConnection: (relay: PeerId, remote: PeerId) => boolean }
}> {
  const [{ circuitRelayTransport, circuitRelayServer }, { dcutr }] = await Promise.all([import('@libp2p/circuit-relay-v2'), import('@libp2p/dcutr')])
  const services: Record<string, (components: any) => unknown> = {
    dcutr: dcutr(),
    reach: (components: { transportManager: Pick<TransportManager, 'listen'> }) => new ReachService(components, Math.max(0, Math.min(opts.relayReservations ?? 0, MAX_RESERVATIONS)))
  }
  let connects: RateLimiter | undefined
  if (opts.relay != null && opts.relay !== false) {
    const l: RelayLimits = { ...RELAY_DEFAULTS, ...(opts.relay === true ? {} : opts.relay) }
    connects = new RateLimiter(l.connectsPerMinute, 60_000)
    services.relay = circuitRelayServer({
      // each relayed connection keeps its HOP stream open while it lives (libp2p's default: 32 per connection)
      maxInboundHopStreams: 256,
      maxOutboundStopStreams: 1024,
      reservations: {
        maxReservations: l.maxReservations,
        reservationTtl: l.reservationTtlMs,
        applyDefaultLimit: true,
        defaultDataLimit: BigInt(l.dataLimitBytes),
        // the relay enforces this in ms (its wire field says seconds; clients read it 1000× too long)
        defaultDurationLimit: l.durationLimitMs
      }
    })
  }
  if (opts.mdns != null && opts.mdns !== false) {
    const { mdns } = await import('@libp2p/mdns')
    const m = opts.mdns === true ? {} : opts.mdns
    services.mdns = mdns({ serviceTag: m.serviceTag ?? MDNS_SERVICE_TAG, interval: m.intervalMs ?? 10_000 })
  }
  if (opts.upnp === true) {
    const { uPnPNAT } = await import('@libp2p/upnp-nat')
    // no AutoNAT confirms a mapping in a js-only mesh: a mapping the gateway granted is announced
    services.upnp = uPnPNAT({ autoConfirmAddress: true })
  }
  return {
    transports: [circuitRelayTransport({ reservationConcurrency: 1 })],
    services,
    listen: [],
    gater: {
      denyInboundRelayReservation: (peer) => isBlocked(peer),
      denyOutboundRelayedConnection: (source, target) => isBlocked(source) || isBlocked(target) || (connects != null && !connects.take(source.toString())),
      denyInboundRelayedConnection: (_relay, remote) => isBlocked(remote)
    }
  }
}

/** the IP of a multiaddr, if it has one */
function ipOf (ma: Multiaddr): string | undefined {
  return ma.getComponents().find(c => c.name === 'ip4' || c.name === 'ip6')?.value
}

/** a multiaddr whose host is a public IP or a DNS name (what a peer anywhere could dial) */
export function isPublicAddress (ma: Multiaddr): boolean {
  if (ma.getComponents().some(c => c.name === 'dns' || c.name === 'dns4' || c.name === 'dns6' || c.name === 'dnsaddr')) return true
  const ip = ipOf(ma)
  return ip != null && !isUnspecified(ip) && isPrivateIp(ip) !== true
}

function isUnspecified (ip: string): boolean {
  return ip === '0.0.0.0' || ip === '::'
}

/**
 * Listen addresses on an explicit public IP: announced as they are (libp2p announces a
 * public transport address only once something verified it, and no AutoNAT verifies one in
 * a js-only mesh). A wildcard (0.0.0.0) is not one of them: announce the public address.
 */
export function publicListenAddresses (listen: Multiaddr[]): Multiaddr[] {
  return listen.filter(ma => isPublicAddress(ma) && ma.getComponents().some(c => c.name === 'tcp' && c.value !== '0'))
}

/**
 * Relay reservations by default: 1 for a node with no public address of its own (listen or
 * announce) that joins through a public bootstrap peer (it is likely behind NAT); 0 on a LAN,
 * on loopback, or for a publicly reachable node.
 */
export function defaultRelayReservations (listen: Multiaddr[], announce: Multiaddr[], bootstrap: Multiaddr[]): number {
  if ([...listen, ...announce].some(isPublicAddress)) return 0
  return bootstrap.some(isPublicAddress) ? 1 : 0
}

/** mDNS by default: on when the node listens on a non-loopback address (a LAN can reach it); never for loopback-only nodes */
export function defaultMdns (listen: Multiaddr[]): boolean {
  return listen.some(ma => { const ip = ipOf(ma); return ip != null && !ip.startsWith('127.') && ip !== '::1' })
}

export type Reach = 'direct' | 'relayed' | 'upgraded'

/** whether a multiaddr goes through a relay */
export function isCircuit (ma: Multiaddr): boolean {
  return ma.getComponents().some(c => c.name === 'p2p-circuit')
}

/**
 * The node's relay reservations, asked for once it has DHT peers (`reserve()`, after the
 * bootstrap): libp2p's relay discovery falls back to a DHT random walk, which with an empty
 * routing table spins without yielding and starves the node (the dial to the bootstrap peer
 * never completes). Reservations come from a connected relay first (identify lists the HOP
 * protocol), then from the peer store, then from the walk.
 */
export class ReachService {
  readonly [Symbol.toStringTag] = '@meshllm/reach'
  private reserved = false
  constructor (private readonly components: { transportManager: Pick<TransportManager, 'listen'> }, readonly reservations: number) {}

  /** starts holding the configured number of relay reservations (once; nothing when 0) */
  async reserve (): Promise<void> {
    if (this.reserved || this.reservations === 0) return
    this.reserved = true
    await this.components.transportManager.listen(new Array(this.reservations).fill(multiaddr('/p2p-circuit')))
  }
}

/** per node: its direct connections opened while a relayed one to the same peer was open (DCUtR) */
const upgradedByNode = new WeakMap<object, WeakSet<Connection>>()

/** starts noting a node's upgraded connections (createMeshNode does, for every full node) */
export function trackUpgrades (node: Pick<Libp2p, 'addEventListener' | 'getConnections'>): void {
  if (upgradedByNode.has(node)) return
  const upgraded = new WeakSet<Connection>()
  upgradedByNode.set(node, upgraded)
  node.addEventListener('connection:open', (e) => {
    const conn = e.detail
    if (isCircuit(conn.remoteAddr)) return
    if (node.getConnections(conn.remotePeer).some(c => c !== conn && isCircuit(c.remoteAddr))) upgraded.add(conn)
  })
}

/**
 * How a node reaches a peer now, by its best open connection: 'direct', 'upgraded' (a direct
 * connection opened while a relayed one was open: DCUtR), 'relayed' (through a circuit relay),
 * or undefined when it has no open connection.
 */
export function reachOf (node: Pick<Libp2p, 'getConnections'>, peer: PeerId): Reach | undefined {
  const conn = connectionFor(node.getConnections(peer))
  if (conn == null) return undefined
  if (isCircuit(conn.remoteAddr)) return 'relayed'
  return upgradedByNode.get(node)?.has(conn) === true ? 'upgraded' : 'direct'
}

/**
 * A stream to `peer`: on an open connection when there is one (a direct one first, a relayed
 * one else: libp2p's dialer never reuses a limited connection and would open a second one
 * through the relay), else on a new connection; a stream the existing connection refuses
 * (closing under us) is tried once more on a new one.
 */
export async function streamTo (node: { getConnections: (peer: PeerId) => Connection[], dial: (peer: PeerId, options: AbortOptions) => Promise<Connection> }, peer: PeerId, protocol: string, options: AbortOptions & { maxOutboundStreams?: number } = {}): Promise<Stream> {
  const opts = { ...options, runOnLimitedConnection: true }
  const existing = connectionFor(node.getConnections(peer))
  if (existing != null) {
    try {
      return await existing.newStream(protocol, opts)
    } catch (err) {
      if (options.signal?.aborted === true) throw err
    }
  }
  const conn = await node.dial(peer, options)
  return await conn.newStream(protocol, opts)
}

/**
 * The connection a new stream to `peer` should use: an open direct one first, else an open
 * relayed one (libp2p's dialer never hands out a limited connection, and dialling again
 * would open a second relayed connection).
 */
export function connectionFor (connections: Connection[]): Connection | undefined {
  const open = connections.filter(c => c.status === 'open')
  return open.find(c => !isCircuit(c.remoteAddr)) ?? open[0]
}
