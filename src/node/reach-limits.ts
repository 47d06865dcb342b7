/**
 * The bounds and defaults of reach (src/node/reach.ts), with no dependency: the CLI's option
 * declarations import them without loading libp2p.
 */

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

/** relay reservations one node may ask for */
export const MAX_RESERVATIONS = 4

/** mDNS service tag of meshllm peers (libp2p's default is '_p2p._udp.local') */
export const MDNS_SERVICE_TAG = '_meshllm._udp.local'
