/**
 * Motions (actions proposed for a keyholder vote) and their tallies.
 * Spec: protocols/governance.md §9.
 *
 * Canonical encoding: the motion as JSON with object keys sorted (by UTF-16 code units), no
 * whitespace, strings and numbers as ECMAScript's JSON.stringify writes them (RFC 8785, JCS),
 * absent `params` omitted, UTF-8. At most 8 KiB.
 * motionId = SHA-256("meshllm-motion-v1" 0x00 | canonical encoding): the 32 bytes a VOTE carries.
 */
import { createHash, randomBytes } from 'node:crypto'
import type { GovernanceConfig } from './config.js'
import { Kind, type Message } from './envelope.js'
import { canonicalPublicKey, keyHex } from './keys.js'
import type { VoteRecord } from './state.js'
import { Tier, classifyAction, type Action } from './tiers.js'
import { errorMessage } from '../util/errors.js'

export const MAX_MOTION_BYTES = 8 * 1024
export const MOTION_DOMAIN = 'meshllm-motion-v1\u0000'
/** an approval counts for this long after the vote's `atMs` */
export const APPROVAL_TTL_MS = 7 * 24 * 3_600_000

export interface Motion {
  action: Action
  /** declared tier; the effective tier is never below the action's classified tier */
  tier: Tier
  /** peer id of the proposing node */
  proposer: string
  proposedAtMs: number
  /** makes two proposals of the same action distinct: 1–64 characters of [A-Za-z0-9_-] */
  nonce: string
}

export type MotionState = 'pending' | 'approved' | 'in_review' | 'cancelled' | 'expired'

export interface MotionTally {
  /** live approvals by current keyholders */
  approvals: number
  rejections: number
  /** key hex of the live approvers */
  approvers: string[]
  /** when the quorum of live approvals was reached (the needed-th earliest approval) */
  quorumAtMs?: number
  state: MotionState
  reviewEndsAtMs?: number
  /** effective tier of the motion */
  tier: Tier
  /** approvals needed (0 below DEPLOY_MINOR) */
  needed: number
}

export class MotionError extends Error {
  static override name = 'MotionError'
  override name = 'MotionError'
}

/** canonical JSON (RFC 8785 subset: no floats beyond what JSON.stringify writes) */
export function canonicalJson (v: unknown, depth = 0): string {
  if (depth > 32) throw new MotionError('nested too deeply')
  if (v === null || typeof v === 'boolean' || typeof v === 'string') return JSON.stringify(v)
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new MotionError('numbers must be finite')
    return JSON.stringify(v)
  }
  if (Array.isArray(v)) return `[${v.map(x => canonicalJson(x, depth + 1)).join(',')}]`
  if (typeof v === 'object') {
    const proto = Object.getPrototypeOf(v)
    if (proto !== Object.prototype && proto !== null) throw new MotionError('only plain objects, arrays, strings, finite numbers, booleans and null')
    const o = v as Record<string, unknown>
    const keys = Object.keys(o).filter(k => o[k] !== undefined).sort()
    return `{${keys.map(k => `${JSON.stringify(k)}:${canonicalJson(o[k], depth + 1)}`).join(',')}}`
  }
  throw new MotionError(`cannot encode a ${typeof v}`)
}

const NONCE = /^[A-Za-z0-9_-]{1,64}$/

/** a JSON object: its fields unchecked */
type Fields = Record<string, unknown>

function isFields (v: unknown): v is Fields {
  return v != null && typeof v === 'object' && !Array.isArray(v)
}

/** `m` itself when it is a motion (any value: a decoded one or a caller's); throws MotionError */
function checkMotion (m: unknown): Motion {
  // typed, not inferred, so that a call narrows like a throw
  const fail: (why: string) => never = (why) => { throw new MotionError(`invalid motion: ${why}`) }
  if (!isFields(m)) fail('not an object')
  const keys = Object.keys(m).sort().join(',')
  if (keys !== 'action,nonce,proposedAtMs,proposer,tier') fail(`fields must be action, nonce, proposedAtMs, proposer, tier (got ${keys.slice(0, 100)})`)
  const a = m.action
  if (!isFields(a)) fail('action must be an object')
  const akeys = Object.keys(a).sort().join(',')
  if (akeys !== 'type' && akeys !== 'params,type') fail('action fields must be type and optional params')
  if (typeof a.type !== 'string' || a.type.length < 1 || a.type.length > 64) fail('action type must be 1–64 characters')
  // Number.isInteger / isSafeInteger are false for anything but a number
  if (typeof m.tier !== 'number' || !Number.isInteger(m.tier) || m.tier < 0 || m.tier > 4) fail('tier must be 0–4')
  if (typeof m.proposer !== 'string' || m.proposer.length < 1 || m.proposer.length > 128) fail('proposer must be 1–128 characters')
  if (typeof m.proposedAtMs !== 'number' || !Number.isSafeInteger(m.proposedAtMs) || m.proposedAtMs < 0) fail('proposedAtMs must be a non-negative integer')
  if (typeof m.nonce !== 'string' || !NONCE.test(m.nonce)) fail('nonce must be 1–64 characters of [A-Za-z0-9_-]')
  return m as unknown as Motion
}

export function encodeMotion (m: Motion): Uint8Array {
  checkMotion(m)
  const action = m.action.params === undefined ? { type: m.action.type } : { type: m.action.type, params: m.action.params }
  const bytes = new TextEncoder().encode(canonicalJson({ action, tier: m.tier, proposer: m.proposer, proposedAtMs: m.proposedAtMs, nonce: m.nonce }))
  if (bytes.length > MAX_MOTION_BYTES) throw new MotionError(`motion of ${bytes.length} bytes exceeds ${MAX_MOTION_BYTES}`)
  return bytes
}

/** Strict: at most 8 KiB, valid UTF-8, exactly the motion fields, and in canonical form. Throws MotionError. */
export function decodeMotion (bytes: Uint8Array): Motion {
  if (bytes.length > MAX_MOTION_BYTES) throw new MotionError(`motion of ${bytes.length} bytes exceeds ${MAX_MOTION_BYTES}`)
  let parsed: unknown
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes))
  } catch (err) {
    throw new MotionError(`motion is not UTF-8 JSON: ${errorMessage(err)}`)
  }
  const m = checkMotion(parsed)
  const again = encodeMotion(m)
  if (again.length !== bytes.length || !again.every((x, i) => x === bytes[i])) throw new MotionError('motion is not in canonical form')
  return m
}

export function motionId (m: Motion): Uint8Array {
  return Uint8Array.from(createHash('sha256').update(MOTION_DOMAIN).update(encodeMotion(m)).digest())
}

export function motionIdHex (m: Motion): string {
  return keyHex(motionId(m))
}

/** effective tier: never below the tier the catalogue gives the action */
export function motionTier (m: Motion): Tier {
  return Math.max(m.tier, classifyAction(m.action).tier)
}

/** a new motion for an action, at the action's tier */
export function createMotion (action: Action, proposer: string, nowMs: number, nonce = randomBytes(12).toString('base64url')): Motion {
  const m: Motion = { action, tier: classifyAction(action).tier, proposer, proposedAtMs: nowMs, nonce }
  encodeMotion(m) // validates
  return m
}

/** The VOTE message on a motion (sign it with createEnvelope). */
export function voteMessage (m: Motion, approve: boolean, o: { meshId: string, version: number, issuedAtMs: number, ttlMs?: number }): Message {
  return {
    kind: Kind.VOTE,
    motionId: motionId(m),
    approve,
    meshId: o.meshId,
    version: o.version,
    issuedAtMs: o.issuedAtMs,
    expiresAtMs: o.issuedAtMs + (o.ttlMs ?? APPROVAL_TTL_MS)
  }
}

/** approvals a motion of this tier needs */
export function approvalsNeeded (tier: Tier, config: GovernanceConfig): number {
  return tier === Tier.DEPLOY_MAJOR ? config.thresholds.deployMajor : tier === Tier.DEPLOY_MINOR ? config.thresholds.deployMinor : 0
}

/**
 * Tally of a motion's votes (`GovernanceState.votes.get(motionIdHex(m))`) at `now`.
 * Counts distinct keyholders of the current config only. Approvals count for APPROVAL_TTL_MS
 * after their atMs; rejections do not lapse. Rejections ≥ thresholds.cancel cancel the motion
 * (also during review). Below DEPLOY_MINOR no votes are needed. DEPLOY_MINOR is approved at
 * thresholds.deployMinor live approvals; DEPLOY_MAJOR reaches quorum at thresholds.deployMajor
 * and is in review until quorumAt + reviewPeriodMs, then approved. Without enough live
 * approvals a motion is pending, or expired when enough keyholders approved but some lapsed.
 */
export function tally (m: Motion, votes: ReadonlyMap<string, VoteRecord> | undefined, config: GovernanceConfig, now: number): MotionTally {
  const tier = motionTier(m)
  const needed = approvalsNeeded(tier, config)
  const holders = new Set(config.keyholders.map(k => keyHex(canonicalPublicKey(k.publicKey))))
  const live: Array<{ key: string, atMs: number }> = []
  let lapsed = 0
  let rejections = 0
  for (const [key, v] of votes ?? []) {
    if (!holders.has(key)) continue
    if (!v.approve) rejections++
    else if (now - v.atMs < APPROVAL_TTL_MS) live.push({ key, atMs: v.atMs })
    else lapsed++
  }
  live.sort((a, b) => a.atMs - b.atMs || (a.key < b.key ? -1 : 1))
  const base = { approvals: live.length, rejections, approvers: live.map(x => x.key), tier, needed }
  if (rejections >= config.thresholds.cancel) return { ...base, state: 'cancelled' }
  if (needed === 0) return { ...base, state: 'approved' }
  if (live.length < needed) return { ...base, state: live.length + lapsed >= needed ? 'expired' : 'pending' }
  const quorumAtMs = live[needed - 1].atMs
  if (tier !== Tier.DEPLOY_MAJOR) return { ...base, quorumAtMs, state: 'approved' }
  const reviewEndsAtMs = quorumAtMs + config.reviewPeriodMs
  return { ...base, quorumAtMs, reviewEndsAtMs, state: now >= reviewEndsAtMs ? 'approved' : 'in_review' }
}
