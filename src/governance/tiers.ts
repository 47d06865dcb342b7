/**
 * Safety tiers of the actions the mesh (its self-prompting agent) may propose, the rollout
 * phases that unlock them, and the gate every action passes before it runs.
 * Spec: protocols/governance.md §8.
 *
 * The action catalogue is closed: an unknown type, free-form text, or parameters that fail
 * the type's schema classify as DEPLOY_MAJOR (the highest tier). No phase unlocks by itself:
 * the phase comes from the governance state (a PHASE vote of the keyholders).
 */
import type { MotionTally } from './motions.js'

export enum Tier {
  READ_ONLY = 0,
  SUGGEST = 1,
  SANDBOX_TEST = 2,
  DEPLOY_MINOR = 3,
  DEPLOY_MAJOR = 4
}

export interface Action {
  type: string
  params?: unknown
}

/** an action's tier; `known` false (and a reason) when it fell to DEPLOY_MAJOR for being unknown or invalid */
export interface Classification {
  tier: Tier
  known: boolean
  reason?: string
}

// ------------------------------------------------------------------ parameter schemas

/** a parameter check returns an error text, or undefined when the value is fine */
type Check = (v: unknown) => string | undefined

const str = (min: number, max: number, re?: RegExp): Check => v =>
  typeof v !== 'string'
    ? 'must be a string'
    : v.length < min || v.length > max
      ? `must have ${min}–${max} characters`
      : re != null && !re.test(v) ? `must match ${String(re)}` : undefined
const int = (min: number, max: number): Check => v =>
  !Number.isSafeInteger(v) || (v as number) < min || (v as number) > max ? `must be an integer in ${min}…${max}` : undefined
const num = (min: number, max: number): Check => v =>
  typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max ? `must be a number in ${min}…${max}` : undefined
const oneOf = (...values: string[]): Check => v => values.includes(v as string) ? undefined : `must be one of ${values.join(', ')}`
const scalar: Check = v => (typeof v === 'string' && v.length <= 1024) || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v)) ? undefined : 'must be a string (≤ 1024 characters), a finite number or a boolean'
const record = (maxEntries: number, key: Check, value: Check): Check => v => {
  if (!isPlainObject(v)) return 'must be an object'
  const entries = Object.entries(v)
  if (entries.length < 1 || entries.length > maxEntries) return `must have 1–${maxEntries} entries`
  for (const [k, x] of entries) {
    const e = key(k) ?? value(x)
    if (e != null) return `entry "${k.slice(0, 64)}" ${e}`
  }
  return undefined
}

/** an expert: its libp2p peer id (base58btc or CID text) */
const peer = str(1, 128, /^[1-9A-HJ-NP-Za-km-z]+$|^b[a-z2-7]+$/)
const text = (max: number): Check => str(1, max)
const SEMVER = /^\d+\.\d+\.\d+$/

interface ActionSpec {
  tier: Tier
  description: string
  required: Record<string, Check>
  optional?: Record<string, Check>
}

/** The closed catalogue of actions the mesh may propose. */
export const ACTIONS: Readonly<Record<string, ActionSpec>> = Object.freeze({
  report: { tier: Tier.READ_ONLY, description: 'write a report or metric summary', required: { title: text(200) }, optional: { body: str(0, 65536) } },
  flag_expert: { tier: Tier.SUGGEST, description: 'mark an expert for human attention', required: { expert: peer, reason: text(1000) } },
  suggest_config: { tier: Tier.SUGGEST, description: 'suggest a configuration change to the operators', required: { key: str(1, 128, /^[A-Za-z0-9_.-]+$/), value: scalar }, optional: { reason: text(1000) } },
  adjust_k: { tier: Tier.SANDBOX_TEST, description: 'try another ensemble size K in a sandbox', required: { k: int(1, 64) } },
  benchmark_expert: { tier: Tier.SANDBOX_TEST, description: 'benchmark an expert in a sandbox', required: { expert: peer }, optional: { suite: str(1, 128, /^[A-Za-z0-9_.-]+$/) } },
  ban_expert: { tier: Tier.DEPLOY_MINOR, description: 'stop routing to an expert', required: { expert: peer, reason: text(1000) }, optional: { durationHours: num(0, 8760) } },
  set_selection_weights: { tier: Tier.DEPLOY_MINOR, description: 'set expert selection weights', required: { weights: record(256, peer, num(0, 1)) } },
  change_aggregation_rule: { tier: Tier.DEPLOY_MINOR, description: 'change how expert distributions are combined', required: { rule: oneOf('mixture', 'product') } },
  update_protocol: { tier: Tier.DEPLOY_MAJOR, description: 'roll out a new protocol version', required: { protocol: str(1, 128, /^\/meshllm\/[A-Za-z0-9/_.-]+$/), version: str(5, 32, SEMVER) } },
  change_governance: { tier: Tier.DEPLOY_MAJOR, description: 'propose a change of the governance file', required: { summary: text(2000) } },
  deploy_model: { tier: Tier.DEPLOY_MAJOR, description: 'deploy a model to the mesh', required: { model: text(256), sha256: str(64, 64, /^[0-9a-f]{64}$/) } }
} satisfies Record<string, ActionSpec>)

function isPlainObject (v: unknown): v is Record<string, unknown> {
  if (v == null || typeof v !== 'object' || Array.isArray(v)) return false
  const proto = Object.getPrototypeOf(v)
  return proto === Object.prototype || proto === null
}

/** Tier of an action. Never throws; anything not in the closed catalogue is DEPLOY_MAJOR. */
export function classifyAction (action: unknown): Classification {
  const unknown = (reason: string): Classification => ({ tier: Tier.DEPLOY_MAJOR, known: false, reason })
  if (!isPlainObject(action)) return unknown(typeof action === 'string' ? 'free-form text is not an action' : 'not an action object')
  const type = action.type
  if (typeof type !== 'string') return unknown('action without a type')
  if (!Object.hasOwn(ACTIONS, type)) return unknown(`unknown action type "${type.slice(0, 64)}"`)
  const spec = ACTIONS[type]
  const extra = Object.keys(action).filter(k => k !== 'type' && k !== 'params')
  if (extra.length > 0) return unknown(`${type}: unexpected field "${extra[0].slice(0, 64)}"`)
  const params = action.params ?? {}
  if (!isPlainObject(params)) return unknown(`${type}: params must be an object`)
  for (const [name, check] of Object.entries(spec.required)) {
    if (!Object.hasOwn(params, name)) return unknown(`${type}: missing parameter "${name}"`)
    const e = check(params[name])
    if (e != null) return unknown(`${type}: parameter "${name}" ${e}`)
  }
  for (const name of Object.keys(params)) {
    if (Object.hasOwn(spec.required, name)) continue
    const check = spec.optional != null && Object.hasOwn(spec.optional, name) ? spec.optional[name] : undefined
    if (check == null) return unknown(`${type}: unknown parameter "${name.slice(0, 64)}"`)
    const e = check(params[name])
    if (e != null) return unknown(`${type}: parameter "${name}" ${e}`)
  }
  return { tier: spec.tier, known: true }
}

// ------------------------------------------------------------------ phases

export interface PhaseInfo {
  phase: number
  name: string
  /** highest tier that may run in this phase */
  maxTier: Tier
}

export const PHASES: readonly PhaseInfo[] = Object.freeze([
  { phase: 0, name: 'centralised bootstrap', maxTier: Tier.SUGGEST },
  { phase: 1, name: 'centralised', maxTier: Tier.SUGGEST },
  { phase: 2, name: 'distributed ensemble', maxTier: Tier.SANDBOX_TEST },
  { phase: 3, name: 'parallel domain streams', maxTier: Tier.DEPLOY_MINOR },
  { phase: 4, name: 'open mesh (5,000+ nodes)', maxTier: Tier.DEPLOY_MAJOR }
])

/** lowest phase in which each tier may run */
export const MIN_PHASE: Readonly<Record<Tier, number>> = Object.freeze({
  [Tier.READ_ONLY]: 0,
  [Tier.SUGGEST]: 0,
  [Tier.SANDBOX_TEST]: 2,
  [Tier.DEPLOY_MINOR]: 3,
  [Tier.DEPLOY_MAJOR]: 4
})

/** sandbox tests need this long without a halt or incident */
export const STABILITY_MS = 30 * 24 * 3_600_000

// ------------------------------------------------------------------ the gate

export interface GateContext {
  /** rollout phase from the governance state (0–4); anything else counts as 0 */
  phase: number
  halted: boolean
  /** read-only after a RESUME, until a PHASE vote */
  readOnly: boolean
  /** since when the mesh has been stable (no halt, no incident); undefined: not stable */
  stableSinceMs?: number
  now: number
  /** tally of the motion that proposes this action (deploy tiers) */
  approvals?: MotionTally
  /** the sandbox the test would run in has been validated (isolated from production) */
  sandboxValidated?: boolean
}

export interface GateDecision {
  /** the action may go ahead in this phase and mode (now or once `needs` are met) */
  allowed: boolean
  /** every condition is met: run it now */
  executeNow: boolean
  /** what is still missing */
  needs: string[]
  reason: string
  tier: Tier
}

/**
 * Decides whether an action may run. Never throws. While halted nothing runs; while read-only
 * (after a RESUME, until a PHASE vote) only READ_ONLY actions run.
 */
export function gate (action: unknown, ctx: GateContext): GateDecision {
  const c = classifyAction(action)
  const tier = c.tier
  const label = `${Tier[tier]}${c.known ? '' : ` (${c.reason ?? 'unknown action'})`}`
  const deny = (reason: string, needs: string[]): GateDecision => ({ allowed: false, executeNow: false, needs, reason: `${label}: ${reason}`, tier })
  const wait = (reason: string, needs: string[]): GateDecision => ({ allowed: true, executeNow: false, needs, reason: `${label}: ${reason}`, tier })
  const run = (reason: string): GateDecision => ({ allowed: true, executeNow: true, needs: [], reason: `${label}: ${reason}`, tier })

  if (ctx.halted) return deny('the mesh is halted: nothing runs', ['RESUME by the keyholders'])
  if (ctx.readOnly && tier > Tier.READ_ONLY) return deny('read-only after a halt: only read-only actions run', ['PHASE vote by the keyholders'])
  const phase = Number.isInteger(ctx.phase) && ctx.phase >= 0 && ctx.phase <= 4 ? ctx.phase : 0
  if (phase < MIN_PHASE[tier]) return deny(`not allowed in phase ${phase} (${PHASES[phase].name})`, [`phase ≥ ${MIN_PHASE[tier]} (PHASE vote by the keyholders)`])

  switch (tier) {
    case Tier.READ_ONLY:
      return run('read-only')
    case Tier.SUGGEST:
      return wait('suggestions never execute on their own', ['human review'])
    case Tier.SANDBOX_TEST: {
      const needs: string[] = []
      if (ctx.stableSinceMs == null || ctx.now - ctx.stableSinceMs < STABILITY_MS) needs.push('30 days of stability')
      if (ctx.sandboxValidated !== true) needs.push('validated sandbox')
      return needs.length === 0 ? run('sandbox test') : wait('sandbox test not yet possible', needs)
    }
    default: {
      const t = ctx.approvals
      const vote = tier === Tier.DEPLOY_MINOR ? 'deploy-minor quorum of keyholder approvals' : 'full keyholder vote and review period'
      if (t == null || t.tier < tier) return wait('needs a motion approved by the keyholders', [vote])
      switch (t.state) {
        case 'approved': return run(`approved by ${t.approvals} keyholder(s)`)
        case 'cancelled': return deny(`cancelled by ${t.rejections} keyholder rejection(s)`, [])
        case 'in_review': return wait('quorum reached, in review', [`review period until ${new Date(t.reviewEndsAtMs ?? 0).toISOString()}`])
        case 'expired': return wait('approvals lapsed', [`fresh approvals: ${t.needed} needed`])
        default: return wait(`${t.approvals} of ${t.needed} approvals`, [vote])
      }
    }
  }
}

/** A gate context from the governance state: the phase only ever comes from there. */
export function gateContext (snapshot: { halted?: unknown, readOnly: boolean, phase: number }, now: number, extra: Pick<GateContext, 'stableSinceMs' | 'approvals' | 'sandboxValidated'> = {}): GateContext {
  return { phase: snapshot.phase, halted: snapshot.halted != null, readOnly: snapshot.readOnly, now, ...extra }
}
