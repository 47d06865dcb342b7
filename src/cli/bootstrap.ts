/**
 * Where `--bootstrap` comes from when it is not given: `MESHLLM_BOOTSTRAP` (multiaddrs
 * separated by commas or spaces), else the `bootstrap` list of the config file
 * ($MESHLLM_HOME/config.json, else ${XDG_CONFIG_HOME:-~/.config}/meshllm/config.json),
 * else none (a LAN mesh then finds its peers with mDNS). `/dnsaddr/<host>/p2p/<id>` entries
 * work like any other (libp2p resolves them through the system's DNS).
 *
 * Light on purpose (no libp2p): the CLI reads it for every command that takes --bootstrap.
 */
import { readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { UsageError } from './errors.js'
import { errorMessage, errorCode } from '../util/errors.js'

/** the config file is bad: not JSON, unknown keys, a bootstrap list that is not strings (exit 2) */
export class ConfigFileError extends UsageError {
  static override name = 'ConfigFileError'
  override name = 'ConfigFileError'
}

/** most bootstrap addresses taken from the environment or the config file */
export const MAX_DEFAULT_BOOTSTRAP = 64
/** the longest config file read (bytes) */
const MAX_CONFIG_BYTES = 64 * 1024

export function configFilePath (env: NodeJS.ProcessEnv = process.env): string {
  if (env.MESHLLM_HOME != null && env.MESHLLM_HOME !== '') return join(env.MESHLLM_HOME, 'config.json')
  const base = env.XDG_CONFIG_HOME != null && env.XDG_CONFIG_HOME !== '' ? env.XDG_CONFIG_HOME : join(homedir(), '.config')
  return join(base, 'meshllm', 'config.json')
}

/** the default bootstrap list, and where it came from */
export function defaultBootstrap (env: NodeJS.ProcessEnv = process.env): { addrs: string[], source: 'env' | 'config' | 'none' } {
  const fromEnv = (env.MESHLLM_BOOTSTRAP ?? '').split(/[\s,]+/).filter(s => s.length > 0)
  if (fromEnv.length > 0) return { addrs: bounded(fromEnv, 'MESHLLM_BOOTSTRAP'), source: 'env' }
  const file = configFilePath(env)
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return { addrs: [], source: 'none' }
    throw new ConfigFileError(`cannot read ${file}: ${errorMessage(err)}`)
  }
  if (text.length > MAX_CONFIG_BYTES) throw new ConfigFileError(`${file} is larger than ${MAX_CONFIG_BYTES} bytes`)
  let json: unknown
  try { json = JSON.parse(text) } catch (err) { throw new ConfigFileError(`${file} is not JSON: ${errorMessage(err)}`) }
  if (json == null || typeof json !== 'object' || Array.isArray(json)) throw new ConfigFileError(`${file} must hold a JSON object ({"bootstrap": ["/dns4/…/p2p/…"]})`)
  const unknown = Object.keys(json).filter(k => k !== 'bootstrap')
  if (unknown.length > 0) throw new ConfigFileError(`${file}: unknown key "${unknown[0].slice(0, 64)}" (known: bootstrap)`)
  const list = (json as { bootstrap?: unknown }).bootstrap
  if (list === undefined) return { addrs: [], source: 'none' }
  if (!Array.isArray(list) || !list.every(x => typeof x === 'string' && x.length > 0 && x.length <= 1024)) throw new ConfigFileError(`${file}: "bootstrap" must be a list of multiaddr strings`)
  return { addrs: bounded(list, file), source: list.length > 0 ? 'config' : 'none' }
}

function bounded (addrs: string[], where: string): string[] {
  if (addrs.length > MAX_DEFAULT_BOOTSTRAP) throw new ConfigFileError(`${where}: more than ${MAX_DEFAULT_BOOTSTRAP} bootstrap addresses`)
  return addrs
}
