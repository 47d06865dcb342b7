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
import type { Connection, PeerId, Transport } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { RateLimiter } from '../util/rate-limit.js'

/** circuit relay v2 server settings of a mesh relay (`join --relay`) */
export interface RelayLimits {
  /** reservations held at once (default 128; libp2p's default is 15) */
  maxReservations: number
  /** a reservation's lifetime; clients refresh it before it ends (ms, default 2 h) */
  reservationTtlMs: number
  /** bytes one relayed connection may carry, both directions together (default 64 MiB) */
  dataLimitBytes: number
  /** how long one relayed connection may stay open (ms, default 30 min) */
  durationLimitMs: number
  /** new relayed connections one source peer may open per minute (default 60) */
  connectsPerMinute: number
}

/**
 * One generation moves ≈ 2 KiB per token per expert (frames, framing included), so a relayed
 * connection carries ≈ 300 generations of 100 tokens before its data limit; a connection that
 * reaches a limit is closed by the relay and the next session dials again.
 */
export const RELAY_DEFAULTS: Readonly<RelayLimits> = Object.freeze({
  maxReservations: 128,
  reservationTtlMs: 2 * 3_600_000,
  dataLimitBytes: 64 * 1024 * 1024,
  durationLimitMs: 30 * 60_000,
  connectsPerMinute: 60
})

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

/** mDNS service tag of meshllm peers (libp2p's default is '_p2p._udp.local') */
export const MDNS_SERVICE_TAG = '_meshllm._udp.local'

/** the transports, services and listen addresses a node's reach options add */
export async function reachParts (opts: ReachOptions, isBlocked: (peer: PeerId) => boolean): Promise<{
  transports: Array<(components: any) => Transport>
  services: Record<string, (components: any) => unknown>
  listen: string[]
  gater: { denyInboundRelayReservation: (peer: PeerId) => boolean, denyOutboundRelayedConnection: (source: PeerId, target: PeerId) => boolean, denyInboundRelayedConnection: (relay: PeerId, remote: PeerId) => boolean }
}> {
  const [{ circuitRelayTransport, circuitRelayServer }, { dcutr }] = await Promise.all([import('@libp2p/circuit-relay-v2'), import('@libp2p/dcutr')])
  const services: Record<string, (components: any) => unknown> = { dcutr: dcutr() }
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
    listen: new Array(Math.max(0, Math.min(opts.relayReservations ?? 0, MAX_RESERVATIONS))).fill('/p2p-circuit'),
    gater: {
      denyInboundRelayReservation: (peer) => isBlocked(peer),
      denyOutboundRelayedConnection: (source, target) => isBlocked(source) || isBlocked(target) || (connects != null && !connects.take(source.toString())),
      denyInboundRelayedConnection: (_relay, remote) => isBlocked(remote)
    }
  }
}

/** relay reservations one node may ask for */
export const MAX_RESERVATIONS = 4

export type Reach = 'direct' | 'relayed' | 'upgraded'

/** whether a multiaddr goes through a relay */
export function isCircuit (ma: Multiaddr): boolean {
  return ma.getComponents().some(c => c.name === 'p2p-circuit')
}

/**
 * How a connection reaches its peer: 'relayed' through a circuit relay, 'upgraded' when it
 * is a direct connection opened while a relayed one to the same peer was open (DCUtR), else
 * 'direct'.
 */
export function reachOf (conn: Connection, upgraded: WeakSet<Connection>): Reach {
  if (isCircuit(conn.remoteAddr)) return 'relayed'
  return upgraded.has(conn) ? 'upgraded' : 'direct'
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
