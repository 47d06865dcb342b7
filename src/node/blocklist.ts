/**
 * Peers this node refuses for a while: a peer that keeps tripping a rate limit or sending
 * forgeries over a stream protocol is hung up on and its new connections are refused (after
 * the encryption handshake, by peer id: the connection gater of createMeshNode) until the
 * block expires. Bounded: at most MAX_BLOCKED peers, the oldest block dropped first.
 * Every node has one, as the libp2p service `blocklist`.
 */
export const MAX_BLOCKED = 4096

export class PeerBlocklist {
  private readonly until = new Map<string, number>()
  constructor (private readonly now: () => number = Date.now) {}

  /** blocks `peer` (a peer id string) for `ms` milliseconds */
  block (peer: string, ms: number): void {
    this.until.delete(peer)
    this.until.set(peer, this.now() + ms)
    while (this.until.size > MAX_BLOCKED) this.until.delete(this.until.keys().next().value as string)
  }

  isBlocked (peer: string): boolean {
    const t = this.until.get(peer)
    if (t == null) return false
    if (t > this.now()) return true
    this.until.delete(peer)
    return false
  }

  get size (): number { return this.until.size }
}

/**
 * Counts a peer's offences in a sliding window; `strike` answers whether the peer has now
 * reached `limit` (and should be blocked). Bounded like the blocklist.
 */
export class Strikes {
  private readonly hits = new Map<string, number[]>()
  constructor (private readonly limit: number, private readonly windowMs: number, private readonly now: () => number = Date.now) {}

  strike (peer: string): boolean {
    const t = this.now()
    const recent = (this.hits.get(peer) ?? []).filter(x => t - x < this.windowMs)
    recent.push(t)
    this.hits.delete(peer)
    this.hits.set(peer, recent)
    while (this.hits.size > MAX_BLOCKED) this.hits.delete(this.hits.keys().next().value as string)
    return recent.length >= this.limit
  }
}
