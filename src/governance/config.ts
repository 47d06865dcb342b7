/**
 * The governance file: mesh id, keyholders' Ed25519 public keys, threshold per message kind.
 * A file whose thresholds exceed its keyholders (a mesh that could never be resumed) is
 * refused. Spec: protocols/governance.md.
 */
import { readFile } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { canonicalPublicKey, formatPublicKey, keyHex } from './keys.js'
import { GovernanceConfigError } from './errors.js'

export interface Thresholds {
  /** HALT: any one keyholder may stop the mesh */
  halt: number
  resume: number
  deployMinor: number
  deployMajor: number
  /** rollout phase change: a full vote by default */
  phase: number
  /** changing the keyholder set: needs this many of the old AND of the new set */
  keyholders: number
  /** rejections that cancel a pending motion */
  cancel: number
}

export interface GovernanceConfig {
  meshId: string
  keyholders: Array<{ name?: string, publicKey: Uint8Array }>
  thresholds: Thresholds
  /** review period of deploy-major motions after quorum (ms) */
  reviewPeriodMs: number
  /** changes the mesh applied to itself that a HALT reverts */
  revertOnHalt: number
}

export function defaultThresholds (n: number): Thresholds {
  return {
    halt: 1,
    resume: Math.min(2, n),
    deployMinor: Math.min(2, n),
    deployMajor: n,
    phase: n,
    keyholders: n,
    cancel: Math.min(2, n)
  }
}

export function validateConfig (c: GovernanceConfig): GovernanceConfig {
  if (typeof c.meshId !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(c.meshId)) throw new GovernanceConfigError(`meshId must be 1–64 characters of [A-Za-z0-9._-], got "${c.meshId}"`)
  try {
    c = { ...c, keyholders: c.keyholders.map(k => ({ ...k, publicKey: canonicalPublicKey(k.publicKey) })) }
  } catch (err: any) {
    throw new GovernanceConfigError(err.message)
  }
  const n = c.keyholders.length
  if (n === 0) throw new GovernanceConfigError('a governance file needs at least one keyholder')
  if (n > 64) throw new GovernanceConfigError(`at most 64 keyholders, got ${n}`)
  const seen = new Set<string>()
  for (const k of c.keyholders) {
    const h = keyHex(k.publicKey)
    if (seen.has(h)) throw new GovernanceConfigError(`keyholder ${formatPublicKey(k.publicKey)} is listed twice`)
    seen.add(h)
  }
  for (const [kind, t] of Object.entries(c.thresholds)) {
    if (!Number.isInteger(t) || t < 1) throw new GovernanceConfigError(`threshold ${kind} must be an integer ≥ 1, got ${t}`)
    if (t > n) throw new GovernanceConfigError(`threshold ${kind} is ${t} but there are only ${n} keyholder(s): the mesh could never reach it${kind === 'resume' ? ' (a HALT could never be lifted)' : ''}`)
  }
  // fewer keyholders than a RESUME quorum must never be able to replace the keyholders
  // (they could then lock the RESUME quorum out): docs/security.md
  if (c.thresholds.keyholders < c.thresholds.resume) throw new GovernanceConfigError(`threshold keyholders (${c.thresholds.keyholders}) must be at least threshold resume (${c.thresholds.resume}): otherwise fewer keyholders than a RESUME quorum could replace the keyholders`)
  if (!Number.isFinite(c.reviewPeriodMs) || c.reviewPeriodMs < 0) throw new GovernanceConfigError('reviewPeriodHours must be ≥ 0')
  if (!Number.isInteger(c.revertOnHalt) || c.revertOnHalt < 0) throw new GovernanceConfigError('revertOnHalt must be an integer ≥ 0')
  return c
}

/** Parses and validates a governance file's JSON text. */
export function parseConfig (text: string, source = 'governance file'): GovernanceConfig {
  let j: any
  try {
    j = JSON.parse(text)
  } catch (err: any) {
    throw new GovernanceConfigError(`${source}: not JSON: ${err.message}`)
  }
  if (j == null || typeof j !== 'object') throw new GovernanceConfigError(`${source}: not an object`)
  if (!Array.isArray(j.keyholders)) throw new GovernanceConfigError(`${source}: "keyholders" must be a list`)
  const keyholders = j.keyholders.map((k: any) => {
    const pk = typeof k === 'string' ? k : k?.publicKey
    try {
      return { name: typeof k?.name === 'string' ? k.name : undefined, publicKey: canonicalPublicKey(pk) }
    } catch (err: any) {
      throw new GovernanceConfigError(`${source}: ${err.message}`)
    }
  })
  const n = keyholders.length
  const known = Object.keys(defaultThresholds(n))
  for (const k of Object.keys(j.thresholds ?? {})) if (!known.includes(k)) throw new GovernanceConfigError(`${source}: unknown threshold "${k}" (known: ${known.join(', ')})`)
  const t = { ...defaultThresholds(n), ...(j.thresholds ?? {}) }
  return validateConfig({
    meshId: j.meshId,
    keyholders,
    thresholds: t,
    reviewPeriodMs: Number(j.reviewPeriodHours ?? 24) * 3_600_000,
    revertOnHalt: j.revertOnHalt ?? 3
  })
}

export async function loadConfig (path: string): Promise<GovernanceConfig> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err: any) {
    throw new GovernanceConfigError(`cannot read governance file ${path}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`)
  }
  return parseConfig(text, path)
}

export function configToJson (c: GovernanceConfig): object {
  return {
    meshId: c.meshId,
    keyholders: c.keyholders.map(k => ({ ...(k.name != null ? { name: k.name } : {}), publicKey: formatPublicKey(k.publicKey) })),
    thresholds: c.thresholds,
    reviewPeriodHours: c.reviewPeriodMs / 3_600_000,
    revertOnHalt: c.revertOnHalt
  }
}

/** short, stable identifier of a configuration (printed on start, compared across peers) */
export function configDigest (c: GovernanceConfig): string {
  const keys = c.keyholders.map(k => keyHex(k.publicKey)).sort()
  return createHash('sha256').update(JSON.stringify({ m: c.meshId, k: keys, t: c.thresholds, r: c.reviewPeriodMs, h: c.revertOnHalt })).digest('hex').slice(0, 16)
}

/**
 * The built-in governance of a development mesh. Its three keyholders' private keys are
 * published in test/fixtures/keys/ so anyone can test halting: NEVER use it for a real mesh
 * (pass `join --governance <file>`). Nodes print a warning when they run with it.
 */
export const DEV_GOVERNANCE_JSON = {
  meshId: 'meshllm-dev',
  keyholders: [
    { name: 'dev-1', publicKey: 'ed25519:8_MS2FxaKvinnWBptRZthRYzk7o5fY71KZZP1_aNgeg' },
    { name: 'dev-2', publicKey: 'ed25519:52vVF6lD_NtqD-BzgupX_OhtgDeDUAe9cC6ABTe630Y' },
    { name: 'dev-3', publicKey: 'ed25519:72R-QlMaHH-MIlt_fiy0NTuF3XSPN9dtjQ0sE4jXuoU' }
  ],
  reviewPeriodHours: 24,
  revertOnHalt: 3
}

export function defaultConfig (): GovernanceConfig {
  return parseConfig(JSON.stringify(DEV_GOVERNANCE_JSON), 'built-in development governance')
}

/**
 * whether a config trusts any key of the built-in development governance (whose private keys
 * are public): its mesh id or thresholds may differ, the keys are what make it unsafe
 */
export function isDevGovernance (c: GovernanceConfig): boolean {
  const dev = new Set(defaultConfig().keyholders.map(k => keyHex(k.publicKey)))
  return c.keyholders.some(k => dev.has(keyHex(k.publicKey)))
}
