/**
 * Bind addresses, the bearer token and TLS. Both servers bind 127.0.0.1 by default; binding
 * any other address requires a token AND either TLS (`--tls-cert`/`--tls-key`) or the explicit
 * `--insecure-behind-proxy` opt-in (refused at start otherwise). With a token every request
 * must carry `authorization: Bearer <token>` (gRPC metadata or HTTP header).
 *
 * The token comes from a file (`--api-token-file`, first line; refused when group/others may
 * read or write it) or MESHLLM_API_TOKEN, never from argv: a command line is visible to every
 * user of the machine in `ps`, so `--api-token <token>` is refused (ApiTokenError).
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { isIP } from 'node:net'
import { readSecretFile } from '../util/secret-file.js'
import { createSecureContext } from 'node:tls'
import { errorMessage } from '../util/errors.js'

export class ApiConfigError extends Error {
  static override name = 'ApiConfigError'
  override name = 'ApiConfigError'
}

/** the API token cannot be read: argv form, missing or empty file, file open to group/others */
export class ApiTokenError extends ApiConfigError {
  static override name = 'ApiTokenError'
  override name = 'ApiTokenError'
}

/** `--tls-cert`/`--tls-key`: one without the other, unreadable, not PEM, key not matching */
export class ApiTlsError extends ApiConfigError {
  static override name = 'ApiTlsError'
  override name = 'ApiTlsError'
}

/** a non-loopback bind without TLS and without the explicit reverse-proxy opt-in */
export class InsecureBindError extends ApiConfigError {
  static override name = 'InsecureBindError'
  override name = 'InsecureBindError'
}

/** PEM certificate chain and private key for the gRPC and HTTP servers */
export interface TlsOptions {
  cert: string | Buffer
  key: string | Buffer
}

/** where join takes its token from */
export interface ApiTokenSources {
  /** `--api-token <token>`: refused (visible in `ps`) */
  flag?: string
  /** `--api-token-file <path>` */
  file?: string
  env?: NodeJS.ProcessEnv
}

/** The token of a token file: its first line, trimmed (ApiTokenError when missing, empty or open to group/others). */
export function readApiTokenFile (path: string): string {
  const token = readSecretFile(path, '--api-token-file', ApiTokenError, true).toString('utf8').split(/\r?\n/, 1)[0].trim()
  if (token === '') throw new ApiTokenError(`--api-token-file ${path}: the first line is empty`)
  return token
}

/**
 * The API token: `--api-token-file` if given, else MESHLLM_API_TOKEN (empty counts as none).
 * `--api-token <token>` is refused with ApiTokenError: argv is world-readable through `ps`.
 */
export function resolveApiToken (src: ApiTokenSources): string | undefined {
  if (src.flag != null) {
    throw new ApiTokenError('--api-token is refused: a command line is visible to every user in `ps`; ' +
      'put the token in a file only you can read (--api-token-file <path>, chmod 600) or in MESHLLM_API_TOKEN')
  }
  if (src.file != null) return readApiTokenFile(src.file)
  const t = (src.env ?? process.env).MESHLLM_API_TOKEN
  return t != null && t !== '' ? t : undefined
}

/** Reads and checks `--tls-cert`/`--tls-key` (PEM files); undefined when neither is given. */
export function readTlsFiles (certPath: string | undefined, keyPath: string | undefined): TlsOptions | undefined {
  if (certPath == null && keyPath == null) return undefined
  if (certPath == null || keyPath == null) throw new ApiTlsError('--tls-cert <pem> and --tls-key <pem> go together')
  const tls = { cert: readSecretFile(certPath, '--tls-cert', ApiTlsError, false), key: readSecretFile(keyPath, '--tls-key', ApiTlsError, false) }
  checkTls(tls)
  return tls
}

/** Throws ApiTlsError unless cert and key parse as PEM and belong together. */
export function checkTls (tls: TlsOptions): void {
  try {
    createSecureContext({ cert: tls.cert, key: tls.key })
  } catch (err) {
    throw new ApiTlsError(`--tls-cert/--tls-key: ${errorMessage(err).split('\n')[0]}`)
  }
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

/**
 * Throws unless the token is acceptable and a non-loopback bind has one (ApiConfigError) and
 * is either TLS or explicitly behind a TLS-terminating reverse proxy (InsecureBindError).
 */
export function checkBind (host: string, token: string | undefined, what: string, transport: { tls?: boolean, insecureBehindProxy?: boolean } = {}): void {
  if (token != null && (token.length < 8 || /\s/.test(token))) {
    throw new ApiConfigError('the API token must be at least 8 characters without whitespace (e.g. `openssl rand -hex 32`)')
  }
  if (isLoopback(host)) return
  if (token == null) {
    throw new ApiConfigError(`refusing to serve the ${what} API on ${host}, which is not a loopback address, without a token: ` +
      'use --api-token-file <path> or set MESHLLM_API_TOKEN (clients then send "authorization: Bearer <token>")')
  }
  if (transport.tls !== true && transport.insecureBehindProxy !== true) {
    throw new InsecureBindError(`refusing to serve the ${what} API on ${host}, which is not a loopback address, in clear text ` +
      '(the token would cross the network readable): pass --tls-cert <pem> --tls-key <pem>, ' +
      'or --insecure-behind-proxy when a TLS-terminating reverse proxy is the only way in (docs/api.md)')
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
