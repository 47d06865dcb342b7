/**
 * Bind addresses and the bearer token. Both servers bind 127.0.0.1 by default; binding any
 * other address requires a token (refused at start without one), and with a token every
 * request must carry `authorization: Bearer <token>` (gRPC metadata or HTTP header).
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { isIP } from 'node:net'

export class ApiConfigError extends Error {
  static override name = 'ApiConfigError'
  override name = 'ApiConfigError'
}

export const DEFAULT_HOST = '127.0.0.1'

/** "host:port", "[v6]:port", ":port" or "port" (host 127.0.0.1) */
export function parseHostPort (s: string, what: string): { host: string, port: number } {
  const str = String(s).trim()
  let host: string
  let portText: string
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(str)
  if (v6 != null) {
    host = v6[1]; portText = v6[2]
  } else if (/^\d+$/.test(str)) {
    host = DEFAULT_HOST; portText = str
  } else {
    const i = str.lastIndexOf(':')
    if (i < 0) throw new ApiConfigError(`${what}: "${str}" is not host:port`)
    host = str.slice(0, i) === '' ? DEFAULT_HOST : str.slice(0, i)
    portText = str.slice(i + 1)
  }
  const port = Number(portText)
  if (!/^\d+$/.test(portText) || port < 0 || port > 65535) throw new ApiConfigError(`${what}: bad port in "${str}"`)
  if (host !== 'localhost' && isIP(host) === 0 && !/^[A-Za-z0-9.-]+$/.test(host)) throw new ApiConfigError(`${what}: bad host in "${str}"`)
  return { host, port }
}

export function isLoopback (host: string): boolean {
  const h = host.toLowerCase()
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') return true
  if (isIP(h) === 4) return h.startsWith('127.')
  if (h.startsWith('::ffff:')) return h.slice(7).startsWith('127.')
  return false
}

/** Throws unless the token is acceptable and a non-loopback bind has one. */
export function checkBind (host: string, token: string | undefined, what: string): void {
  if (token != null) {
    if (token.length < 8 || /\s/.test(token)) throw new ApiConfigError('the API token must be at least 8 characters without whitespace (e.g. `openssl rand -hex 32`)')
    return
  }
  if (!isLoopback(host)) {
    throw new ApiConfigError(`refusing to serve the ${what} API on ${host}, which is not a loopback address, without a token: pass --api-token <token> or set MESHLLM_API_TOKEN (clients then send "authorization: Bearer <token>")`)
  }
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest()

/** constant-time comparison */
export function tokenMatches (given: string, token: string): boolean {
  return timingSafeEqual(digest(given), digest(token))
}

/** the bearer token of an Authorization header value, if any */
export function bearer (header: string | string[] | undefined): string | undefined {
  const v = Array.isArray(header) ? header[0] : header
  if (v == null) return undefined
  const m = /^Bearer\s+(.+)$/i.exec(v.trim())
  return m?.[1]
}
