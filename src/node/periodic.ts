/**
 * Every periodic task a mesh node runs, in one place; what each costs is in docs/scale.md
 * ("What a node does when idle"). A mesh of 300 must afford them:
 * each is O(1) per node per period, whatever the mesh's size, except where said.
 */

const minute = 60_000

/**
 * kad-dht (@libp2p/kad-dht 16) settings. Its defaults are sized for IPFS (α = 10 concurrent
 * requests on 10 disjoint paths per query, provider records valid 48 h): in a mesh of a few
 * dozen peers every query then reaches every peer, and a departed expert's provider record
 * outlives it by two days.
 */
export const DHT_SETTINGS = {
  /** concurrent requests per query path (Kademlia's α; kad-dht's default 10) */
  alpha: 3,
  /** disjoint query paths (S/Kademlia's d; kad-dht's default: α) */
  disjointPaths: 3,
  /**
   * how long a DHT server keeps a provider record (kad-dht's default 48 h). kad-dht 16 drops
   * expired ones in its re-provider's pass (every reprovideIntervalMs), so a departed expert
   * is listed for up to 30 + 10 min
   */
  providerValidityMs: 30 * minute,
  /**
   * kad-dht's own re-provider: it re-provides only records within this of expiry. The expert's
   * advertiser re-provides every RECORD_REFRESH_MS (< validity − threshold), so this is the
   * safety net, not a second publisher.
   */
  reprovideThresholdMs: 5 * minute,
  /** how often the re-provider checks (kad-dht's default 1 h) */
  reprovideIntervalMs: 10 * minute,
  /**
   * self-lookup keeping our neighbourhood fresh (kad-dht's default 5 min). kad-dht's routing
   * table refresh (a lookup per tracked bucket, every 5 min) has no setting.
   */
  querySelfMs: 10 * minute
} as const

/** an expert record's lifetime (readers refuse more than MAX_RECORD_LIFETIME_MS, 1 h) */
export const RECORD_TTL_MS = 30 * minute
/**
 * how often an expert re-publishes its record and provider records (3 DHT operations); an
 * address change re-publishes within ADDRESS_CHANGE_DELAY_MS (1 s) whatever this says
 */
export const RECORD_REFRESH_MS = 10 * minute

/**
 * libp2p's connection monitor pings every open connection this often, and closes one whose ping fails (libp2p's default 10 s:
 * a stream per connection per 10 s, the largest idle cost of a well-connected node)
 */
export const CONNECTION_PING_MS = 2 * minute

/** governance anti-entropy: one catch-up from one random peer this often (src/governance/service.ts) */
export const GOVERNANCE_RESYNC_MS = minute

/**
 * a node serving the API refreshes its router's sample of experts this often (one discovery:
 * a provider lookup and at most RouterOptions.discoverySample record lookups) for listings
 * and metrics; generations refresh on their own when the sample is stale
 */
export const API_EXPERT_REFRESH_MS = minute

/**
 * the connection budget (src/node/connection-budget.ts): past `target` connections, idle ones
 * (open ≥ idleMs, no stream but gossipsub's, peer untagged) are closed, checked every
 * intervalMs. Without it a node ends up connected to nearly every peer it ever queried.
 */
export const CONNECTION_BUDGET = { target: 32, idleMs: 2 * minute, intervalMs: 30_000 } as const

/** how long a node keeps its bootstrap peers tagged keep-alive (libp2p redials them) */
export const BOOTSTRAP_KEEP_ALIVE_MS = 10 * minute
