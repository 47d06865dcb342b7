/**
 * The connection budget: a node keeps about `target` connections, whatever the mesh's size.
 *
 * Every DHT query leaves connections open to the peers it asked, and nothing in libp2p closes
 * them below `maxConnections` (its pruner would not anyway: it never closes a connection that
 * carries a gossipsub stream, and every connection between two full nodes does). A node then
 * ends up connected to nearly every peer of the mesh, and what it pays per connection (the
 * connection monitor's ping, gossipsub's per-peer heartbeat work) grows with N: measured,
 * 83 connections per node in a 100-node mesh and 0.56 % of a core per idle node.
 *
 * Every `intervalMs`, when the node has more than `target` connections, it closes the
 * surplus among connections that are idle: dialled by this node (the dialer decides: a peer
 * that protects a connection it dialled, e.g. kad-dht keeps its 20 closest peers alive, would
 * redial at once were the other side to close it), open for at least `idleMs`, carrying no stream but
 * gossipsub's long-lived ones, to a peer with no protecting tag in the peer store (bootstrap
 * peers are tagged keep-alive, kad-dht tags its closest peers, gossipsub its mesh peers).
 * Oldest first. The DHT routing table keeps those peers; a later query or
 * generation dials again.
 */
import type { AbortOptions, ComponentLogger, Connection, Logger, PeerStore, Startable } from '@libp2p/interface'
import type { ConnectionManager } from '@libp2p/interface-internal'
import { CONNECTION_BUDGET } from './periodic.js'

export interface ConnectionBudgetInit {
  /** connections kept before idle ones are closed (default CONNECTION_BUDGET, src/node/periodic.ts: 32) */
  target?: number
  /** a connection must be this old and idle before it may be closed (ms, default 2 min) */
  idleMs?: number
  /** how often the budget is checked (ms, default 30 s) */
  intervalMs?: number
}

export interface ConnectionBudgetComponents {
  connectionManager: ConnectionManager
  peerStore: PeerStore
  logger: ComponentLogger
}

/** stream protocols that do not make a connection busy (gossipsub keeps one open per peer, always) */
const BACKGROUND_PROTOCOL = /^\/(meshsub|floodsub)\//

/**
 * peer store tags that do not protect a connection: kad-dht tags every routing table member
 * ("kad-peer"), and a routing table entry needs no open connection (kad-dht dials when it
 * queries). Every other tag does: keep-alive (bootstrap peers, kad-dht's closest peers),
 * "kad-close", gossipsub's mesh peers (the topic's name).
 */
const UNPROTECTED_TAGS = new Set(['kad-peer'])

export class ConnectionBudget implements Startable {
  readonly [Symbol.toStringTag] = '@meshllm/connection-budget'
  private readonly target: number
  private readonly idleMs: number
  private readonly intervalMs: number
  private readonly log: Logger
  private timer?: NodeJS.Timeout
  private running = false

  constructor (private readonly components: ConnectionBudgetComponents, init: ConnectionBudgetInit = {}) {
    this.target = init.target ?? CONNECTION_BUDGET.target
    this.idleMs = init.idleMs ?? CONNECTION_BUDGET.idleMs
    this.intervalMs = init.intervalMs ?? CONNECTION_BUDGET.intervalMs
    if (!(this.target >= 1) || !(this.idleMs >= 0) || !(this.intervalMs >= 100)) throw new RangeError('connection budget: target ≥ 1, idleMs ≥ 0, intervalMs ≥ 100')
    this.log = components.logger.forComponent('meshllm:connection-budget')
  }

  start (): void {
    this.timer = setInterval(() => {
      if (this.running) return
      this.running = true
      this.trim({ signal: AbortSignal.timeout(this.intervalMs) }).catch(err => { this.log.error('trim failed: %e', err) }).finally(() => { this.running = false })
    }, this.intervalMs)
    this.timer.unref()
  }

  stop (): void {
    clearInterval(this.timer)
    this.timer = undefined
  }

  /** closes idle surplus connections now; resolves with how many it closed */
  async trim (options: AbortOptions = {}): Promise<number> {
    const conns = this.components.connectionManager.getConnections()
    let surplus = conns.length - this.target
    if (surplus <= 0) return 0
    const now = Date.now()
    const idle = conns
      .filter(c => c.direction === 'outbound' && c.status === 'open' && now - c.timeline.open >= this.idleMs && c.streams.every(s => s.protocol != null && BACKGROUND_PROTOCOL.test(s.protocol)))
      .sort((a, b) => a.timeline.open - b.timeline.open)
    let n = 0
    for (const c of idle) {
      if (surplus <= 0) break
      options.signal?.throwIfAborted()
      if (await this.tagged(c)) continue
      surplus--
      n++
      await c.close(options).catch(err => { c.abort(err) })
    }
    if (n > 0) this.log('closed %d idle connection(s), %d open', n, this.components.connectionManager.getConnections().length)
    return n
  }

  private async tagged (c: Connection): Promise<boolean> {
    try {
      const peer = await this.components.peerStore.get(c.remotePeer)
      for (const name of peer.tags.keys()) if (!UNPROTECTED_TAGS.has(name)) return true
      return false
    } catch {
      return false
    }
  }
}

/** the libp2p service factory */
export function connectionBudget (init: ConnectionBudgetInit = {}): (components: ConnectionBudgetComponents) => ConnectionBudget {
  return (components) => new ConnectionBudget(components, init)
}
