/**
 * The governance file: mesh id, keyholders' Ed25519 public keys, threshold per message kind.
 * A file whose thresholds exceed its keyholders (a mesh that could never be resumed) is
 * refused. Spec: protocols/governance.md.
 */
import { readFile } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { canonicalPublicKey, formatPublicKey, keyHex } from './keys.js'
import { GovernanceConfigError } from './errors.js'
import { errorCode, errorMessage } from '../util/errors.js'
import { z } from 'zod'

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
  if (typeof c.meshId !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(c.meshId)) {
    throw new GovernanceConfigError(`meshId must be 1–64 characters of [A-Za-z0-9._-], got "${c.meshId}"`)
  }
  try {
    c = { ...c, keyholders: c.keyholders.map(k => ({ ...k, publicKey: canonicalPublicKey(k.publicKey) })) }
  } catch (err) {
    throw new GovernanceConfigError(errorMessage(err))
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
    if (t > n) {
      const why = kind === 'resume' ? ' (a HALT could never be lifted)' : ''
      throw new GovernanceConfigError(`threshold ${kind} is ${t} but there are only ${n} keyholder(s): the mesh could never reach it${why}`)
    }
  }
  // fewer keyholders than a RESUME quorum must never be able to replace the keyholders
  // (they could then lock the RESUME quorum out): docs/security.md
  if (c.thresholds.keyholders < c.thresholds.resume) {
    throw new GovernanceConfigError(`threshold keyholders (${c.thresholds.keyholders}) must be at least threshold resume (${c.thresholds.resume}): ` +
      'otherwise fewer keyholders than a RESUME quorum could replace the keyholders')
  }
  if (!Number.isFinite(c.reviewPeriodMs) || c.reviewPeriodMs < 0) throw new GovernanceConfigError('reviewPeriodHours must be ≥ 0')
  if (!Number.isInteger(c.revertOnHalt) || c.revertOnHalt < 0) throw new GovernanceConfigError('revertOnHalt must be an integer ≥ 0')
  return c
}

const THRESHOLD_KEYS = ['halt', 'resume', 'deployMinor', 'deployMajor', 'phase', 'keyholders', 'cancel'] as const

/**
 * The governance file's shape (protocols/governance.md): strict objects, so a misspelled key
 * (`reviewPeriodHour`, a threshold `deploy_major`, a keyholder's `publickey`) is refused
 * instead of silently meaning its default. Values are checked by `validateConfig` after the
 * keys are canonicalised.
 */
export const GovernanceFileSchema = z.strictObject({
  meshId: z.unknown(),
  keyholders: z.array(z.unknown(), { error: 'must be a list of keyholders' }),
  thresholds: z.strictObject(
    Object.fromEntries(THRESHOLD_KEYS.map(k => [k, z.number().optional()])) as Record<keyof Thresholds, z.ZodOptional<z.ZodNumber>>
  ).optional(),
  reviewPeriodHours: z.number().optional(),
  revertOnHalt: z.number().optional()
})

/** a keyholder entry: its public key, or `{ name?, publicKey }` */
const KeyholderSchema = z.strictObject({ name: z.string().optional(), publicKey: z.string() })

/** the first issue, an unknown key before anything else (a misspelled key also leaves its right name missing) */
function firstIssue (e: z.ZodError): z.core.$ZodIssue {
  return e.issues.find(i => i.code === 'unrecognized_keys') ?? e.issues[0]
}

function fileError (source: string, issue: z.core.$ZodIssue, known: readonly string[], what: string): GovernanceConfigError {
  if (issue.code === 'unrecognized_keys') {
    return new GovernanceConfigError(`${source}: unknown ${what} "${issue.keys[0].slice(0, 64)}" (known: ${known.join(', ')})`)
  }
  const at = issue.path.length > 0 ? `"${issue.path.join('.')}": ` : ''
  return new GovernanceConfigError(`${source}: ${at}${issue.message}`)
}

/** Parses and validates a governance file's JSON text. Unknown keys are refused (GovernanceConfigError). */
export function parseConfig (text: string, source = 'governance file'): GovernanceConfig {
  let j: unknown
  try {
    j = JSON.parse(text)
  } catch (err) {
    throw new GovernanceConfigError(`${source}: not JSON: ${errorMessage(err)}`)
  }
  if (j == null || typeof j !== 'object' || Array.isArray(j)) throw new GovernanceConfigError(`${source}: not an object`)
  const file = GovernanceFileSchema.safeParse(j)
  if (!file.success) {
    const issue = firstIssue(file.error)
    const inThresholds = issue.path[0] === 'thresholds'
    throw fileError(source, issue, inThresholds ? THRESHOLD_KEYS : Object.keys(GovernanceFileSchema.shape), inThresholds ? 'threshold' : 'key')
  }
  const f = file.data
  const keyholders = f.keyholders.map((k, i) => {
    let entry: { name?: string, publicKey: string }
    if (typeof k === 'string') entry = { publicKey: k }
    else {
      const e = KeyholderSchema.safeParse(k)
      if (!e.success) throw fileError(`${source}: keyholder ${i + 1}`, firstIssue(e.error), Object.keys(KeyholderSchema.shape), 'key')
      entry = e.data
    }
    try {
      return { name: entry.name, publicKey: canonicalPublicKey(entry.publicKey) }
    } catch (err) {
      throw new GovernanceConfigError(`${source}: ${errorMessage(err)}`)
    }
  })
  const n = keyholders.length
  const t: Thresholds = { ...defaultThresholds(n) }
  for (const k of THRESHOLD_KEYS) { const v = f.thresholds?.[k]; if (v !== undefined) t[k] = v }
  return validateConfig({
    meshId: f.meshId as string,
    keyholders,
    thresholds: t,
    reviewPeriodMs: (f.reviewPeriodHours ?? 24) * 3_600_000,
    revertOnHalt: f.revertOnHalt ?? 3
  })
}

export async function loadConfig (path: string): Promise<GovernanceConfig> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new GovernanceConfigError(`cannot read governance file ${path}: ${errorCode(err) === 'ENOENT' ? 'no such file' : errorMessage(err)}`)
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
  const fields = JSON.stringify({ m: c.meshId, k: keys, t: c.thresholds, r: c.reviewPeriodMs, h: c.revertOnHalt })
  return createHash('sha256').update(fields).digest('hex').slice(0, 16)
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
