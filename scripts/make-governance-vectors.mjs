// Writes protocols/vectors/governance.json: test vectors of governance envelopes (protocols/governance.md).
// Run after `npm run build`: node scripts/make-governance-vectors.mjs
//
// Keys are derived from fixed 32-byte Ed25519 seeds (seed of key i: 32 bytes of value i), and
// Ed25519 signatures are deterministic, so the file is the same on every run.
//
// File: { config (the governance file, protocols/governance.md §2), keys: [{ name, seed, publicKey, publicKeyHex }],
//         motion: { value, hex (canonical encoding), motionId }, cases: [...] }
// Each case: { name, now, hex (the envelope), verdict } where verdict is
//   { ok: true, kind, version, signers: [public key hex, ascending] }  or  { ok: false, reason },
// the result of verifyEnvelope(hex, config, now). Cases built by the encoder also carry
// `message` (JSON: kind by name, byte fields as hex) and `signedBy` (key names):
// createEnvelope(message, keys) gives `hex`. Hand-made cases carry `note` instead.
import { writeFile } from 'node:fs/promises'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { Kind, createEnvelope, decodeEnvelope, encodeEnvelope, encodePayload, signPayload, verifyEnvelope } from '../dist/src/governance/envelope.js'
import { configToJson, parseConfig } from '../dist/src/governance/config.js'
import { formatPublicKey } from '../dist/src/governance/keys.js'
import { encodeMotion, motionId } from '../dist/src/governance/motions.js'

const hex = b => Buffer.from(b).toString('hex')
const NOW = Date.UTC(2026, 0, 1) // 1767225600000
const HOUR = 3_600_000

const names = ['k1', 'k2', 'k3', 'outsider', 'k5']
const keys = {}
for (const [i, name] of names.entries()) keys[name] = await generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(i + 1))
const pub = name => keys[name].publicKey.raw

const config = parseConfig(JSON.stringify({
  meshId: 'vector-mesh',
  keyholders: ['k1', 'k2', 'k3'].map(n => ({ name: n, publicKey: formatPublicKey(pub(n)) })),
  reviewPeriodHours: 24,
  revertOnHalt: 3
}))

const motion = {
  action: { type: 'ban_expert', params: { expert: '12D3KooWGzh9sUHbWm8RLYL5rRUVaYJYLtWxWzRrZ1PmJ3eYWqBZ', reason: 'repeated unsafe output' } },
  tier: 3,
  proposer: '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN',
  proposedAtMs: NOW - 2 * HOUR,
  nonce: 'vector-1'
}

const base = { meshId: 'vector-mesh', issuedAtMs: NOW - 60_000, expiresAtMs: NOW + 24 * HOUR }

function messageJson (m) {
  const out = { ...m, kind: Kind[m.kind] }
  if (m.kind === Kind.VOTE) out.motionId = hex(m.motionId)
  if (m.kind === Kind.KEYHOLDERS) out.keyholders = m.keyholders.map(hex)
  return out
}

async function verdictOf (bytes, now) {
  const v = await verifyEnvelope(bytes, config, now)
  return v.ok
    ? { ok: true, kind: Kind[v.envelope.message.kind], version: v.envelope.message.version, signers: v.signers.map(hex).sort() }
    : { ok: false, code: v.code, reason: v.reason }
}

const cases = []
async function encoded (name, message, signedBy, expectOk, now = NOW) {
  const bytes = await createEnvelope(message, signedBy.map(n => keys[n]))
  const verdict = await verdictOf(bytes, now)
  if (verdict.ok !== expectOk) throw new Error(`${name}: unexpected verdict ${JSON.stringify(verdict)}`)
  cases.push({ name, now, message: messageJson(message), signedBy, hex: hex(bytes), verdict })
  return bytes
}
async function handMade (name, bytes, note, now = NOW) {
  const verdict = await verdictOf(bytes, now)
  if (verdict.ok) throw new Error(`${name}: a hand-made case verified`)
  cases.push({ name, now, note, hex: hex(bytes), verdict })
}

const halt = { ...base, kind: Kind.HALT, version: 1, reason: 'incident 42: unsafe output' }
const resume = { ...base, kind: Kind.RESUME, version: 2, liftsVersion: 1, reason: 'fixed' }
const keyholders = {
  ...base,
  kind: Kind.KEYHOLDERS,
  version: 4,
  keyholders: ['k1', 'k2', 'k5'].map(pub),
  thresholds: { halt: 1, resume: 2, deployMinor: 2, deployMajor: 3, phase: 3, keyholders: 3, cancel: 2 },
  reviewPeriodMs: 24 * HOUR,
  revertOnHalt: 3
}

// ---- valid
const haltBytes = await encoded('halt: valid, 1 signature', halt, ['k1'], true)
const resumeBytes = await encoded('resume: valid, 2 signatures', resume, ['k1', 'k2'], true)
await encoded('vote: valid approval of the motion', { ...base, kind: Kind.VOTE, version: 1, motionId: motionId(motion), approve: true }, ['k2'], true)
await encoded('phase: valid, phase 2 by all 3', { ...base, kind: Kind.PHASE, version: 3, phase: 2 }, ['k1', 'k2', 'k3'], true)
await encoded('keyholders: valid, k3 replaced by k5, signed by 3 old and 3 new', keyholders, ['k1', 'k2', 'k3', 'k5'], true)

// ---- invalid, by the encoder
await encoded('invalid: another mesh id', { ...halt, meshId: 'other-mesh' }, ['k1'], false)
await encoded('invalid: signed by a key that is not a keyholder', halt, ['outsider'], false)
await encoded('invalid: expired 60 minutes ago (the clock-skew grace)', { ...halt, issuedAtMs: NOW - 3 * HOUR, expiresAtMs: NOW - HOUR }, ['k1'], false)
await encoded('invalid: issued more than 60 minutes in the future', { ...halt, issuedAtMs: NOW + 61 * 60_000, expiresAtMs: NOW + 2 * HOUR }, ['k1'], false)
await encoded('invalid: version more than 60 minutes beyond the clock', { ...halt, version: NOW + 61 * 60_000 }, ['k1'], false)
await encoded('invalid: lifetime above 30 days', { ...halt, issuedAtMs: NOW - HOUR, expiresAtMs: NOW - HOUR + 31 * 24 * HOUR }, ['k1'], false)
await encoded('invalid: resume with 1 signature, 2 needed', resume, ['k1'], false)
await encoded('invalid: keyholders change without the new set\'s threshold', keyholders, ['k1', 'k2', 'k3'], false)

// ---- invalid, hand-made
const tampered = Uint8Array.from(haltBytes)
tampered[5 + encodePayload(halt).length - 1] ^= 0x01 // last byte of the reason
await handMade('invalid: one payload byte flipped', tampered, 'the halt case with the last byte of its reason XOR 0x01')

const resumePayload = encodePayload(resume)
const s1 = await signPayload(resumePayload, keys.k1)
await handMade('invalid: the same keyholder signature twice', encodeEnvelope(resumePayload, [s1, s1]), 'the resume case signed by k1 only, its signature entry listed twice')

const haltSig = decodeEnvelope(haltBytes).signatures
await handMade('invalid: a halt signature spliced onto a resume payload', encodeEnvelope(resumePayload, haltSig), 'the payload of the resume case with the signature entry of the halt case')

const junk = { publicKey: pub('k1'), signature: new Uint8Array(64).fill(7) }
await handMade('invalid: a keyholder entry with a junk signature', encodeEnvelope(encodePayload(halt), [junk]), 'the halt payload with k1 listed and 64 bytes of 0x07 as its signature')

await handMade('invalid: truncated', haltBytes.subarray(0, haltBytes.length - 1), 'the halt case without its last byte')

// non-canonical: KEYHOLDERS keys not in ascending order (swap the first and the last key)
const p = Uint8Array.from(encodePayload(keyholders))
const keysAt = 11 + 1 + 1 + 1 + 'vector-mesh'.length + 24 + 4 + 1
const first = p.slice(keysAt, keysAt + 32)
p.set(p.slice(keysAt + 64, keysAt + 96), keysAt)
p.set(first, keysAt + 64)
const sigs = await Promise.all(['k1', 'k2', 'k3', 'k5'].map(n => signPayload(p, keys[n])))
await handMade('invalid: non-canonical payload (keyholders not ascending)', encodeEnvelope(p, sigs), 'the keyholders case with its first and last new key swapped, signed by k1, k2, k3, k5')

const out = {
  description: 'meshllm governance envelope test vectors (protocols/governance.md). Generated by scripts/make-governance-vectors.mjs.',
  config: configToJson(config),
  keys: names.map((name, i) => ({ name, seed: hex(new Uint8Array(32).fill(i + 1)), publicKey: formatPublicKey(pub(name)), publicKeyHex: hex(pub(name)) })),
  motion: { value: motion, hex: hex(encodeMotion(motion)), motionId: hex(motionId(motion)) },
  cases
}
await writeFile(new URL('../protocols/vectors/governance.json', import.meta.url), JSON.stringify(out, null, 2) + '\n')
console.log(`protocols/vectors/governance.json: ${cases.length} cases`)
console.log('halt:', hex(haltBytes))
console.log('resume:', hex(resumeBytes))
