/**
 * Governance envelopes: a canonical payload signed by one or more keyholders.
 * Normative spec with test vectors: protocols/governance.md.
 *
 * payload (big-endian):
 *   "MESHLLM-GOV" (11 bytes) | u8 format = 1 | u8 kind | u8 meshIdLen | meshId (UTF-8)
 *   | u64 version | u64 issuedAtMs | u64 expiresAtMs | u32 bodyLen | body
 * body by kind:
 *   HALT        u16 reasonLen | reason
 *   RESUME      u64 liftsVersion | u16 reasonLen | reason
 *   VOTE        32-byte motionId | u8 decision (1 approve, 2 reject)
 *   PHASE       u8 phase
 *   KEYHOLDERS  u8 n | n × 32-byte keys (ascending) | 7 × u8 thresholds | u32 reviewPeriodSeconds | u8 revertOnHalt
 * signature = Ed25519(private key, "meshllm-governance-signature-v1" 0x00 | payload)
 * envelope  = u8 format = 1 | u32 payloadLen | payload | u8 nSigs | nSigs × (32-byte public key | 64-byte signature)
 *   with signatures sorted by public key, each key at most once.
 */
import type { PrivateKey } from '@libp2p/interface'
import { canonicalPublicKey, keyHex, verifySignature } from './keys.js'
import { EnvelopeError } from './errors.js'
import { errorMessage } from '../util/errors.js'
import type { GovernanceConfig, Thresholds } from './config.js'

export enum Kind {
  HALT = 1,
  RESUME = 2,
  VOTE = 3,
  PHASE = 4,
  KEYHOLDERS = 5
}

export const MAGIC = new TextEncoder().encode('MESHLLM-GOV')
export const SIGNATURE_DOMAIN = new TextEncoder().encode('meshllm-governance-signature-v1\u0000')
export const FORMAT = 1
export const MAX_ENVELOPE_BYTES = 16 * 1024
export const MAX_REASON_BYTES = 1024
/** longest allowed lifetime of a message */
export const MAX_LIFETIME_MS = 30 * 24 * 3_600_000
/**
 * How far ahead of this node's clock a message's issue time or version may be (and how long
 * past its expiry it is still taken): clocks off by minutes must not drop a real HALT, and a
 * version can never be pushed beyond real time plus this much.
 */
export const MAX_CLOCK_SKEW_MS = 60 * 60_000

export type Body =
  | { kind: Kind.HALT, reason: string }
  | { kind: Kind.RESUME, liftsVersion: number, reason: string }
  | { kind: Kind.VOTE, motionId: Uint8Array, approve: boolean }
  | { kind: Kind.PHASE, phase: number }
  | { kind: Kind.KEYHOLDERS, keyholders: Uint8Array[], thresholds: Thresholds, reviewPeriodMs: number, revertOnHalt: number }

export type Message = Body & {
  meshId: string
  version: number
  issuedAtMs: number
  expiresAtMs: number
}

export interface Signature {
  publicKey: Uint8Array
  signature: Uint8Array
}

export interface Envelope {
  payload: Uint8Array
  message: Message
  signatures: Signature[]
}

const THRESHOLD_ORDER: Array<keyof Thresholds> = ['halt', 'resume', 'deployMinor', 'deployMajor', 'phase', 'keyholders', 'cancel']

class Writer {
  private readonly parts: number[] = []
  private range (n: number, max: number): void {
    if (!Number.isInteger(n) || n < 0 || n > max) throw new EnvelopeError(`value ${n} outside 0..${max}`)
  }

  u8 (n: number): void { this.range(n, 0xff); this.parts.push(n) }
  u16 (n: number): void { this.range(n, 0xffff); this.parts.push((n >>> 8) & 0xff, n & 0xff) }
  u32 (n: number): void { this.range(n, 0xffffffff); this.parts.push((n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff) }
  u64 (n: number): void {
    if (!Number.isSafeInteger(n) || n < 0) throw new EnvelopeError(`not a u64 safe integer: ${n}`)
    this.u32(Math.floor(n / 2 ** 32)); this.u32(n >>> 0)
  }

  bytes (b: Uint8Array): void { for (const x of b) this.parts.push(x) }
  str16 (s: string, max: number): void {
    const b = new TextEncoder().encode(s)
    if (b.length > max) throw new EnvelopeError(`text of ${b.length} bytes exceeds ${max}`)
    this.u16(b.length); this.bytes(b)
  }

  done (): Uint8Array { return Uint8Array.from(this.parts) }
}

class Reader {
  pos = 0
  constructor (private readonly b: Uint8Array) {}
  need (n: number): void { if (this.pos + n > this.b.length) throw new EnvelopeError('truncated') }
  u8 (): number { this.need(1); return this.b[this.pos++] }
  u16 (): number { this.need(2); const v = (this.b[this.pos] << 8) | this.b[this.pos + 1]; this.pos += 2; return v }
  u32 (): number {
    this.need(4)
    const v = ((this.b[this.pos] << 24) >>> 0) + (this.b[this.pos + 1] << 16) + (this.b[this.pos + 2] << 8) + this.b[this.pos + 3]
    this.pos += 4
    return v
  }

  u64 (): number {
    const hi = this.u32(); const lo = this.u32()
    if (hi >= 2 ** 21) throw new EnvelopeError('u64 beyond 2^53')
    return hi * 2 ** 32 + lo
  }

  bytes (n: number): Uint8Array { this.need(n); const v = this.b.subarray(this.pos, this.pos + n); this.pos += n; return v }
  str (n: number): string {
    const bytes = this.bytes(n)
    try {
      return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes)
    } catch {
      throw new EnvelopeError('text is not valid UTF-8')
    }
  }

  end (): void { if (this.pos !== this.b.length) throw new EnvelopeError('trailing bytes') }
}

function encodeBody (w: Writer, body: Body): void {
  switch (body.kind) {
    case Kind.HALT: w.str16(body.reason, MAX_REASON_BYTES); break
    case Kind.RESUME: w.u64(body.liftsVersion); w.str16(body.reason, MAX_REASON_BYTES); break
    case Kind.VOTE:
      if (body.motionId.length !== 32) throw new EnvelopeError('motion id must be 32 bytes')
      w.bytes(body.motionId); w.u8(body.approve ? 1 : 2); break
    case Kind.PHASE:
      if (!Number.isInteger(body.phase) || body.phase < 0 || body.phase > 4) throw new EnvelopeError('phase must be 0–4')
      w.u8(body.phase); break
    case Kind.KEYHOLDERS: {
      const keys = body.keyholders.map(k => canonicalPublicKey(k)).sort(compareBytes)
      if (keys.length < 1 || keys.length > 64) throw new EnvelopeError('1–64 keyholders')
      for (let i = 1; i < keys.length; i++) if (compareBytes(keys[i - 1], keys[i]) === 0) throw new EnvelopeError('a keyholder is listed twice')
      w.u8(keys.length)
      for (const k of keys) w.bytes(k)
      for (const t of THRESHOLD_ORDER) w.u8(body.thresholds[t])
      w.u32(Math.round(body.reviewPeriodMs / 1000))
      w.u8(body.revertOnHalt)
      break
    }
    default: throw new EnvelopeError('unknown kind')
  }
}

export function encodePayload (m: Message): Uint8Array {
  const w = new Writer()
  w.bytes(MAGIC); w.u8(FORMAT); w.u8(m.kind)
  const mesh = new TextEncoder().encode(m.meshId)
  if (mesh.length < 1 || mesh.length > 64) throw new EnvelopeError('mesh id must be 1–64 bytes')
  w.u8(mesh.length); w.bytes(mesh)
  w.u64(m.version); w.u64(m.issuedAtMs); w.u64(m.expiresAtMs)
  const bw = new Writer()
  encodeBody(bw, m)
  const body = bw.done()
  w.u32(body.length); w.bytes(body)
  return w.done()
}

export function decodePayload (payload: Uint8Array): Message {
  const r = new Reader(payload)
  const magic = r.bytes(MAGIC.length)
  if (!equalBytes(magic, MAGIC)) throw new EnvelopeError('not a meshllm governance payload')
  if (r.u8() !== FORMAT) throw new EnvelopeError('unknown payload format')
  const kind = r.u8()
  const meshId = r.str(r.u8())
  const version = r.u64()
  const issuedAtMs = r.u64()
  const expiresAtMs = r.u64()
  const bodyLen = r.u32()
  const br = new Reader(r.bytes(bodyLen))
  r.end()
  let body: Body
  switch (kind) {
    case Kind.HALT: body = { kind, reason: br.str(br.u16()) }; break
    case Kind.RESUME: { const liftsVersion = br.u64(); body = { kind, liftsVersion, reason: br.str(br.u16()) }; break }
    case Kind.VOTE: {
      const motionId = Uint8Array.from(br.bytes(32))
      const d = br.u8()
      if (d !== 1 && d !== 2) throw new EnvelopeError('vote decision must be 1 or 2')
      body = { kind, motionId, approve: d === 1 }
      break
    }
    case Kind.PHASE: { const phase = br.u8(); if (phase > 4) throw new EnvelopeError('phase must be 0–4'); body = { kind, phase }; break }
    case Kind.KEYHOLDERS: {
      const n = br.u8()
      if (n < 1 || n > 64) throw new EnvelopeError('1–64 keyholders')
      const keyholders: Uint8Array[] = []
      for (let i = 0; i < n; i++) keyholders.push(Uint8Array.from(br.bytes(32)))
      const t = {} as Thresholds
      for (const k of THRESHOLD_ORDER) t[k] = br.u8()
      body = { kind, keyholders, thresholds: t, reviewPeriodMs: br.u32() * 1000, revertOnHalt: br.u8() }
      break
    }
    default: throw new EnvelopeError(`unknown message kind ${kind}`)
  }
  br.end()
  const m = { ...body, meshId, version, issuedAtMs, expiresAtMs } as Message
  // canonical: the payload must be exactly what we would encode
  if (!equalBytes(encodePayload(m), payload)) throw new EnvelopeError('payload is not in canonical form')
  return m
}

export function signingBytes (payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(SIGNATURE_DOMAIN.length + payload.length)
  out.set(SIGNATURE_DOMAIN); out.set(payload, SIGNATURE_DOMAIN.length)
  return out
}

export function encodeEnvelope (payload: Uint8Array, signatures: Signature[]): Uint8Array {
  const sigs = [...signatures].sort((a, b) => compareBytes(a.publicKey, b.publicKey))
  const w = new Writer()
  w.u8(FORMAT); w.u32(payload.length); w.bytes(payload)
  if (sigs.length > 64) throw new EnvelopeError('at most 64 signatures')
  w.u8(sigs.length)
  for (const s of sigs) {
    if (s.publicKey.length !== 32 || s.signature.length !== 64) throw new EnvelopeError('bad signature entry')
    w.bytes(s.publicKey); w.bytes(s.signature)
  }
  return w.done()
}

/** Parses an envelope (structure only, no signature check). Throws EnvelopeError. */
export function decodeEnvelope (bytes: Uint8Array): Envelope {
  if (bytes.length > MAX_ENVELOPE_BYTES) throw new EnvelopeError(`envelope of ${bytes.length} bytes exceeds ${MAX_ENVELOPE_BYTES}`)
  const r = new Reader(bytes)
  if (r.u8() !== FORMAT) throw new EnvelopeError('unknown envelope format')
  const payloadLen = r.u32()
  if (payloadLen > MAX_ENVELOPE_BYTES) throw new EnvelopeError('payload too large')
  const payload = Uint8Array.from(r.bytes(payloadLen))
  const n = r.u8()
  if (n > 64) throw new EnvelopeError('too many signatures')
  const signatures: Signature[] = []
  for (let i = 0; i < n; i++) {
    const publicKey = Uint8Array.from(r.bytes(32))
    // canonical: strictly ascending keys, so no key appears twice
    if (i > 0 && compareBytes(signatures[i - 1].publicKey, publicKey) >= 0) {
      throw new EnvelopeError('signature entries are not in ascending key order (or a key is repeated)')
    }
    signatures.push({ publicKey, signature: Uint8Array.from(r.bytes(64)) })
  }
  r.end()
  const message = decodePayload(payload)
  return { payload, message, signatures }
}

export async function signPayload (payload: Uint8Array, key: PrivateKey): Promise<Signature> {
  const signature = await key.sign(signingBytes(payload))
  return { publicKey: key.publicKey.raw, signature: Uint8Array.from(signature) }
}

/** Creates an envelope signed by every given key. */
export async function createEnvelope (m: Message, keys: PrivateKey[]): Promise<Uint8Array> {
  const payload = encodePayload(m)
  const sigs = await Promise.all(keys.map(async k => signPayload(payload, k)))
  return encodeEnvelope(payload, dedupe(sigs))
}

/** Adds signatures to an existing envelope (offline collection); a key already present is kept once. */
export async function addSignatures (envelope: Uint8Array, keys: PrivateKey[]): Promise<Uint8Array> {
  const env = decodeEnvelope(envelope)
  const sigs = [...env.signatures, ...await Promise.all(keys.map(async k => signPayload(env.payload, k)))]
  return encodeEnvelope(env.payload, dedupe(sigs))
}

function dedupe (sigs: Signature[]): Signature[] {
  const m = new Map<string, Signature>()
  for (const s of sigs) m.set(keyHex(s.publicKey), s)
  return [...m.values()]
}

/** Why an envelope was refused: a stable code for programs, `reason` for people. */
export type RefusalCode =
  | 'malformed' // does not decode, or not in canonical form (unsorted or repeated signature entries)
  | 'mesh' // for another mesh
  | 'future' // issued, or versioned, beyond this node's clock plus MAX_CLOCK_SKEW_MS
  | 'expired'
  | 'lifetime' // expiry not after issue, or a lifetime above MAX_LIFETIME_MS
  | 'not-keyholder' // a signature entry by a key that is not a keyholder
  | 'threshold' // fewer keyholder signatures than the kind needs
  | 'bad-signature' // a keyholder entry whose signature does not verify
  | 'unsafe-thresholds' // a KEYHOLDERS change to thresholds that are unreachable or let fewer than a RESUME quorum replace the keyholders
  | 'known' // this very message is already applied here (not an error for whoever sent it)
  | 'stale' // version not above the accepted version (replay or superseded)
  | 'replayed-vote'
  | 'lifts-older' // RESUME lifting an older halt than the one in force

export type Verdict =
  | { ok: true, envelope: Envelope, signers: Uint8Array[] }
  | { ok: false, code: RefusalCode, reason: string }

/** counts of Ed25519 verifications made (for metrics and the cost-of-refusal tests) */
export const verificationStats = { count: 0 }

export function thresholdFor (kind: Kind, t: Thresholds): number {
  switch (kind) {
    case Kind.HALT: return t.halt
    case Kind.RESUME: return t.resume
    case Kind.VOTE: return 1
    case Kind.PHASE: return t.phase
    case Kind.KEYHOLDERS: return t.keyholders
  }
}

const refuse = (code: RefusalCode, reason: string): { ok: false, code: RefusalCode, reason: string } => ({ ok: false, code, reason })

/**
 * Every check of an envelope that costs no signature verification: structure and canonical
 * form (signature entries strictly ascending by key, so no key twice), mesh id, time window
 * (a version is a millisecond timestamp: none may lie beyond this node's clock plus
 * MAX_CLOCK_SKEW_MS, so nobody can exhaust the version space), lifetime, every signature
 * entry by a keyholder (for KEYHOLDERS: of the old or the new set), enough entries for the
 * threshold, and for KEYHOLDERS safe new thresholds. Never throws.
 * `allowExpired` is for catch-up only: a node that joins after a HALT's expiry must still
 * learn the halt in force (fail closed); versions, not expiry, protect it from replays.
 */
export function inspectEnvelope (bytes: Uint8Array, config: GovernanceConfig, now: number, opts: { allowExpired?: boolean } = {}): Verdict {
  let env: Envelope
  try {
    env = decodeEnvelope(bytes)
  } catch (err) {
    return refuse('malformed', `malformed: ${errorMessage(err)}`)
  }
  const m = env.message
  if (m.meshId !== config.meshId) return refuse('mesh', `for mesh "${m.meshId}", this is "${config.meshId}"`)
  if (m.issuedAtMs > now + MAX_CLOCK_SKEW_MS) return refuse('future', 'issued in the future')
  if (m.version > now + MAX_CLOCK_SKEW_MS) {
    return refuse('future', `version ${m.version} is beyond this node's clock (${now}) plus ${MAX_CLOCK_SKEW_MS / 60_000} min`)
  }
  if (m.expiresAtMs <= m.issuedAtMs || m.expiresAtMs - m.issuedAtMs > MAX_LIFETIME_MS) return refuse('lifetime', 'bad lifetime')
  if (m.expiresAtMs + MAX_CLOCK_SKEW_MS <= now && opts.allowExpired !== true) return refuse('expired', 'expired')
  if (m.kind === Kind.RESUME && m.liftsVersion >= m.version) {
    return refuse('malformed', `malformed: RESUME version ${m.version} lifts a later version ${m.liftsVersion}`)
  }
  const holders = new Set(config.keyholders.map(k => keyHex(k.publicKey)))
  const newHolders = m.kind === Kind.KEYHOLDERS ? new Set(m.keyholders.map(k => keyHex(k))) : new Set<string>()
  let eligible = 0
  let eligibleNew = 0
  for (const s of env.signatures) {
    const h = keyHex(s.publicKey)
    if (!holders.has(h) && !newHolders.has(h)) return refuse('not-keyholder', `signed by ${h.slice(0, 16)}…, which is not a keyholder`)
    if (holders.has(h)) eligible++
    if (newHolders.has(h)) eligibleNew++
  }
  const need = thresholdFor(m.kind, config.thresholds)
  if (eligible < need) return refuse('threshold', `${eligible} keyholder signature(s), ${need} needed for ${Kind[m.kind]}`)
  if (m.kind === Kind.KEYHOLDERS) {
    for (const t of THRESHOLD_ORDER) {
      if (m.thresholds[t] < 1 || m.thresholds[t] > m.keyholders.length) return refuse('unsafe-thresholds', `new threshold ${t} unreachable`)
    }
    if (m.thresholds.keyholders < m.thresholds.resume) {
      return refuse('unsafe-thresholds', `new keyholders threshold ${m.thresholds.keyholders} is below the RESUME threshold ${m.thresholds.resume}`)
    }
    if (eligibleNew < m.thresholds.keyholders) return refuse('threshold', `new keyholder set: ${eligibleNew} signature(s), ${m.thresholds.keyholders} needed`)
  }
  return { ok: true, envelope: env, signers: [] }
}

/**
 * Verifies the signatures of an inspected envelope, cheapest refusal first: entries in
 * order, the first that fails refuses the whole envelope (an honest envelope holds no bad
 * signature, so a forgery costs at most one verification), and verification stops once
 * the threshold is met (VOTE: every entry is verified, each signer's vote counts).
 */
export async function verifySigners (
  env: Envelope,
  config: GovernanceConfig,
  counter?: { count: number },
  skip?: (publicKey: Uint8Array) => boolean
): Promise<Verdict> {
  const m = env.message
  const holders = new Set(config.keyholders.map(k => keyHex(k.publicKey)))
  const newHolders = m.kind === Kind.KEYHOLDERS ? new Set(m.keyholders.map(k => keyHex(k))) : new Set<string>()
  const need = thresholdFor(m.kind, config.thresholds)
  const needNew = m.kind === Kind.KEYHOLDERS ? m.thresholds.keyholders : 0
  const data = signingBytes(env.payload)
  const signers: Uint8Array[] = []
  let newCount = 0
  for (const s of env.signatures) {
    if (m.kind !== Kind.VOTE && signers.length >= need && newCount >= needNew) break
    if (skip?.(s.publicKey) === true) continue
    verificationStats.count++
    if (counter != null) counter.count++
    if (!await verifySignature(s.publicKey, data, s.signature)) {
      return refuse('bad-signature', `the signature of ${keyHex(s.publicKey).slice(0, 16)}… does not verify`)
    }
    const h = keyHex(s.publicKey)
    if (holders.has(h)) signers.push(s.publicKey)
    if (newHolders.has(h)) newCount++
  }
  if (signers.length < need) return refuse('threshold', `${signers.length} valid keyholder signature(s), ${need} needed for ${Kind[m.kind]}`)
  if (newCount < needNew) return refuse('threshold', `new keyholder set: ${newCount} signature(s), ${needNew} needed`)
  return { ok: true, envelope: env, signers }
}

/**
 * Full check of an envelope against a governance config at time `now` (inspectEnvelope,
 * then verifySigners). Never throws. Counts only signatures by distinct keyholders of
 * `config`; KEYHOLDERS changes must also meet the new set's threshold with signatures of the
 * new keyholders.
 */
export async function verifyEnvelope (bytes: Uint8Array, config: GovernanceConfig, now: number, opts: { allowExpired?: boolean } = {}): Promise<Verdict> {
  const v = inspectEnvelope(bytes, config, now, opts)
  if (!v.ok) return v
  return await verifySigners(v.envelope, config)
}

function compareBytes (a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i]
  return a.length - b.length
}

function equalBytes (a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}
