/**
 * Per-address limits of the governance protocols: a fixed-window counter bounded in keys,
 * the address a limit applies to (IPv4, or the IPv6 /64, never the peer id), and the error
 * a peer gets past its limit.
 */
import type { Connection } from '@libp2p/interface'

/** most remote addresses tracked by the rate limiters */
export const MAX_TRACKED_ADDRESSES = 4096

/** Fixed-window counter per key, bounded in keys (oldest dropped). */
export class RateLimiter {
  private readonly windows = new Map<string, { start: number, n: number }>()
  constructor (private readonly perWindow: number, private readonly windowMs: number, private readonly maxKeys = MAX_TRACKED_ADDRESSES) {}
  take (key: string, now = Date.now()): boolean {
    let w = this.windows.get(key)
    if (w == null || now - w.start >= this.windowMs) {
      this.windows.delete(key)
      w = { start: now, n: 0 }
      this.windows.set(key, w)
      if (this.windows.size > this.maxKeys) this.windows.delete(this.windows.keys().next().value as string)
    }
    if (w.n >= this.perWindow) return false
    w.n++
    return true
  }

  /** whether `key` has used up its window (nothing is consumed) */
  exhausted (key: string, now = Date.now()): boolean {
    const w = this.windows.get(key)
    return w != null && now - w.start < this.windowMs && w.n >= this.perWindow
  }

  get size (): number { return this.windows.size }
}

/**
 * The address a rate limit applies to: the connection's remote IPv4 address, or its IPv6
 * /64 (one host commonly has a whole /64), never the peer id, which is free.
 */
export function addressKey (connection: Pick<Connection, 'remoteAddr'> | undefined): string {
  const c = connection?.remoteAddr?.getComponents().find(x => x.name === 'ip4' || x.name === 'ip6')
  if (c?.value == null) return connection?.remoteAddr?.toString() ?? 'unknown'
  if (c.name === 'ip4') return c.value
  return `${ipv6Prefix64(c.value)}::/64`
}

/** the first four groups of an IPv6 address ("2001:db8:1:2::5" → "2001:db8:1:2") */
function ipv6Prefix64 (addr: string): string {
  const [head, tail = ''] = addr.split('::')
  const h = head === '' ? [] : head.split(':')
  const t = tail === '' ? [] : tail.split(':')
  const groups = addr.includes('::') ? [...h, ...Array(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t] : h
  return groups.slice(0, 4).map(g => g.toLowerCase().replace(/^0+(?=.)/, '')).join(':')
}

/** a peer asked for more governance work than its address is allowed */
export class RateLimitedError extends Error {
  static override name = 'RateLimitedError'
  override name = 'RateLimitedError'
}
