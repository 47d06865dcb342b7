/* Governance envelopes: test vectors, round trips, and forgeries (≥ 10,000 fast-check cases) that verifyEnvelope and GovernanceState.apply must reject without throwing. */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import fc from 'fast-check'
import { generateKeyPair, generateKeyPairFromSeed, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import {
  Kind, createEnvelope, decodeEnvelope, decodePayload, encodeEnvelope, encodePayload, signPayload, verifyEnvelope,
  MAX_CLOCK_SKEW_MS, MAX_LIFETIME_MS, type Message, type Signature
} from '../../src/governance/envelope.js'
import { defaultConfig, defaultThresholds, parseConfig, type GovernanceConfig } from '../../src/governance/config.js'
import { formatPublicKey, keyHex, loadKeyholderKey } from '../../src/governance/keys.js'
import { GovernanceState } from '../../src/governance/state.js'
import { encodeMotion, motionId, type Motion } from '../../src/governance/motions.js'
import { runs } from '../helpers/fuzz.js'

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
const unhex = (h: string): Uint8Array => Uint8Array.from(Buffer.from(h, 'hex'))
const HOUR = 3_600_000
const fixture = (name: string): string => new URL(`../../../test/fixtures/keys/${name}`, import.meta.url).pathname

// ---------------------------------------------------------------- test vectors

interface VectorCase {
  name: string
  now: number
  hex: string
  message?: any
  signedBy?: string[]
  note?: string
  verdict: { ok: true, kind: string, version: number, signers: string[] } | { ok: false, code: string, reason: string }
}
const vectors: { config: any, keys: Array<{ name: string, seed: string, publicKey: string, publicKeyHex: string }>, motion: { value: Motion, hex: string, motionId: string }, cases: VectorCase[] } =
  JSON.parse(readFileSync(new URL('../../../protocols/vectors/governance.json', import.meta.url), 'utf8'))

function messageFromJson (j: any): Message {
  const m = { ...j, kind: Kind[j.kind as keyof typeof Kind] }
  if (m.kind === Kind.VOTE) m.motionId = unhex(j.motionId)
  if (m.kind === Kind.KEYHOLDERS) m.keyholders = j.keyholders.map(unhex)
  return m
}

describe('governance envelope: test vectors (protocols/vectors/governance.json)', () => {
  const config = parseConfig(JSON.stringify(vectors.config))
  const keys = new Map<string, PrivateKey>()

  before(async () => {
    for (const k of vectors.keys) keys.set(k.name, await generateKeyPairFromSeed('Ed25519', unhex(k.seed)))
  })

  it('derives the keys from their seeds', () => {
    for (const k of vectors.keys) {
      assert.equal(hex(keys.get(k.name)!.publicKey.raw), k.publicKeyHex)
      assert.equal(formatPublicKey(keys.get(k.name)!.publicKey.raw), k.publicKey)
    }
  })

  it('has valid and invalid cases of every required sort', () => {
    const names = vectors.cases.map(c => c.name).join('\n')
    for (const kind of ['halt', 'resume', 'vote', 'phase', 'keyholders']) assert.match(names, new RegExp(`^${kind}: valid`, 'm'))
    for (const bad of ['another mesh', 'flipped', 'not a keyholder', 'twice', 'expired', 'non-canonical']) assert.match(names, new RegExp(`invalid: .*${bad}`))
  })

  for (const c of vectors.cases) {
    it(`verdict: ${c.name}`, async () => {
      const v = await verifyEnvelope(unhex(c.hex), config, c.now)
      if (c.verdict.ok) {
        assert.ok(v.ok, v.ok ? '' : v.reason)
        assert.equal(Kind[v.envelope.message.kind], c.verdict.kind)
        assert.equal(v.envelope.message.version, c.verdict.version)
        assert.deepEqual(v.signers.map(hex).sort(), c.verdict.signers)
      } else {
        assert.deepEqual(v, { ok: false, code: c.verdict.code, reason: c.verdict.reason })
      }
    })
    if (c.message != null) {
      it(`encoding: ${c.name}`, async () => {
        const m = messageFromJson(c.message)
        const bytes = await createEnvelope(m, c.signedBy!.map(n => keys.get(n)!))
        assert.equal(hex(bytes), c.hex)
        assert.equal(hex(encodePayload(m)), hex(decodeEnvelope(bytes).payload))
        assert.deepEqual(decodePayload(encodePayload(m)), sortedKeys(m))
      })
    }
  }

  it('motion: canonical encoding and id', () => {
    assert.equal(hex(encodeMotion(vectors.motion.value)), vectors.motion.hex)
    assert.equal(hex(motionId(vectors.motion.value)), vectors.motion.motionId)
    const vote = vectors.cases.find(c => c.message?.kind === 'VOTE')!
    assert.equal(vote.message.motionId, vectors.motion.motionId)
  })

  it('the valid cases apply to a GovernanceState in version order', async () => {
    const now = vectors.cases[0].now
    const st = new GovernanceState(config, undefined, () => now)
    const valid = vectors.cases.filter(c => c.verdict.ok).sort((a, b) => (a.verdict as any).version - (b.verdict as any).version)
    for (const c of valid) {
      const r = await st.apply(unhex(c.hex))
      assert.ok(r.accepted, `${c.name}: ${r.accepted ? '' : r.reason}`)
    }
    assert.equal(st.halted, undefined)
    assert.equal(st.phase, 2)
    assert.equal(st.readOnly, false)
    assert.deepEqual(st.config.keyholders.map(k => keyHex(k.publicKey)).sort(), ['k1', 'k2', 'k5'].map(n => hex(keys.get(n)!.publicKey.raw)).sort())
  })

  it('the spec shows the halt and resume vectors', () => {
    const md = readFileSync(new URL('../../../protocols/governance.md', import.meta.url), 'utf8').replace(/\s+/g, '')
    for (const name of ['halt: valid, 1 signature', 'resume: valid, 2 signatures']) {
      assert.ok(md.includes(vectors.cases.find(c => c.name === name)!.hex), `${name} not in governance.md`)
    }
  })
})

// ---------------------------------------------------------------- round trips

const meshIdArb = fc.stringMatching(/^[A-Za-z0-9._-]{1,64}$/)
const reasonArb = fc.string({ unit: 'binary', maxLength: 250 })
const key32 = fc.uint8Array({ minLength: 32, maxLength: 32 })
const thresholdsArb = fc.record({ halt: fc.nat(255), resume: fc.nat(255), deployMinor: fc.nat(255), deployMajor: fc.nat(255), phase: fc.nat(255), keyholders: fc.nat(255), cancel: fc.nat(255) }, { noNullPrototype: true })
const bodyArb = fc.oneof(
  fc.record({ kind: fc.constant(Kind.HALT as const), reason: reasonArb }),
  fc.record({ kind: fc.constant(Kind.RESUME as const), liftsVersion: fc.maxSafeNat(), reason: reasonArb }),
  fc.record({ kind: fc.constant(Kind.VOTE as const), motionId: key32, approve: fc.boolean() }),
  fc.record({ kind: fc.constant(Kind.PHASE as const), phase: fc.integer({ min: 0, max: 4 }) }),
  fc.record({
    kind: fc.constant(Kind.KEYHOLDERS as const),
    keyholders: fc.uniqueArray(key32, { minLength: 1, maxLength: 8, selector: hex }),
    thresholds: thresholdsArb,
    reviewPeriodMs: fc.nat(0xffffffff).map(s => s * 1000),
    revertOnHalt: fc.nat(255)
  })
)
const messageArb: fc.Arbitrary<Message> = fc.tuple(bodyArb, meshIdArb, fc.maxSafeNat(), fc.maxSafeNat(), fc.maxSafeNat())
  .map(([b, meshId, version, issuedAtMs, expiresAtMs]) => ({ ...b, meshId, version, issuedAtMs, expiresAtMs }) as Message)

function sortedKeys (m: Message): Message {
  return m.kind === Kind.KEYHOLDERS ? { ...m, keyholders: [...m.keyholders].sort((a, b) => hex(a) < hex(b) ? -1 : 1) } : m
}

describe('governance envelope: round trips', () => {
  it('decodePayload(encodePayload(m)) = m (keyholders ascending)', () => {
    fc.assert(fc.property(messageArb, m => {
      assert.deepEqual(decodePayload(encodePayload(m)), sortedKeys(m))
    }), { numRuns: runs(2000) })
  })

  it('decodeEnvelope(encodeEnvelope(p, sigs)) gives p and the signatures sorted by key', () => {
    const sigArb = fc.record({ publicKey: key32, signature: fc.uint8Array({ minLength: 64, maxLength: 64 }) })
    fc.assert(fc.property(messageArb, fc.uniqueArray(sigArb, { maxLength: 6, selector: s => hex(s.publicKey) }), (m, sigs) => {
      const p = encodePayload(m)
      const env = decodeEnvelope(encodeEnvelope(p, sigs))
      assert.deepEqual(env.payload, p)
      assert.deepEqual(env.message, sortedKeys(m))
      assert.deepEqual(env.signatures.map(s => hex(s.publicKey) + hex(s.signature)), sigs.map(s => hex(s.publicKey) + hex(s.signature)).sort())
    }), { numRuns: runs(1000) })
  })

  it('verifyEnvelope never throws on arbitrary bytes', async () => {
    const config = defaultConfig()
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 400 }), async b => {
      const v = await verifyEnvelope(b, config, Date.now())
      assert.equal(v.ok, false)
    }), { numRuns: runs(1000) })
  })
})

// ---------------------------------------------------------------- forgeries

describe('governance envelope: forgeries are rejected, never thrown', function () {
  this.timeout(120_000)
  const NOW = Date.UTC(2026, 2, 1)
  const base = { issuedAtMs: NOW - 60_000, expiresAtMs: NOW + 24 * HOUR }
  let config: GovernanceConfig
  let holders: PrivateKey[] // dev-1, dev-2, dev-3 (test/fixtures/keys)
  let outsiders: PrivateKey[] // e.g. nodes' own peer keys
  let k5: PrivateKey // a keyholder of the KEYHOLDERS change
  /** halted at version 5: every genuine message below applies to it */
  let state: GovernanceState
  let genuine: Array<{ name: string, message: Message, bytes: Uint8Array }>
  let cases = 0

  /** a message of each kind, signed by exactly its threshold (so any broken signature makes it fall short) */
  const threshold = (kind: Kind): number => kind === Kind.HALT || kind === Kind.VOTE ? 1 : kind === Kind.RESUME ? 2 : 3
  const messageOf = (kind: Kind, meshId: string): Message => {
    const b = { ...base, meshId }
    switch (kind) {
      case Kind.HALT: return { ...b, kind, version: 10, reason: 'incident' }
      case Kind.RESUME: return { ...b, kind, version: 11, liftsVersion: 5, reason: 'fixed' }
      case Kind.VOTE: return { ...b, kind, version: 1, motionId: new Uint8Array(32).fill(7), approve: true }
      case Kind.PHASE: return { ...b, kind, version: 12, phase: 2 }
      case Kind.KEYHOLDERS: return { ...b, kind, version: 13, keyholders: [holders[0].publicKey.raw, holders[1].publicKey.raw, k5.publicKey.raw], thresholds: defaultThresholds(3), reviewPeriodMs: 24 * HOUR, revertOnHalt: 3 }
    }
  }
  const signersOf = (kind: Kind): PrivateKey[] => kind === Kind.KEYHOLDERS ? [...holders, k5] : holders.slice(0, threshold(kind))
  const kindArb = fc.constantFrom(Kind.HALT, Kind.RESUME, Kind.VOTE, Kind.PHASE, Kind.KEYHOLDERS)

  async function mustReject (bytes: Uint8Array, label: string): Promise<void> {
    const v = await verifyEnvelope(bytes, config, NOW)
    assert.equal(v.ok, false, `${label}: verifyEnvelope accepted ${hex(bytes)}`)
    const r = await state.apply(bytes)
    assert.equal(r.accepted, false, `${label}: GovernanceState.apply accepted ${hex(bytes)}`)
    cases++
  }

  /** envelope bytes exactly as given: no sorting, no dedupe */
  function rawEnvelope (payload: Uint8Array, entries: Uint8Array[]): Uint8Array {
    const head = new Uint8Array(5)
    head[0] = 1
    new DataView(head.buffer).setUint32(1, payload.length)
    return Uint8Array.from([...head, ...payload, entries.length, ...entries.flatMap(e => [...e])])
  }
  const entry = (s: Signature): Uint8Array => Uint8Array.from([...s.publicKey, ...s.signature])

  before(async () => {
    config = defaultConfig()
    holders = await Promise.all(['dev-1.key', 'dev-2.key', 'dev-3.key'].map(async f => (await loadKeyholderKey(fixture(f))).privateKey))
    outsiders = [await generateKeyPair('Ed25519'), await generateKeyPair('Ed25519')]
    k5 = await generateKeyPair('Ed25519')
    state = new GovernanceState(config, undefined, () => NOW)
    const halt5 = await createEnvelope({ ...base, meshId: config.meshId, kind: Kind.HALT, version: 5, reason: 'setup' }, holders.slice(0, 1))
    assert.ok((await state.apply(halt5)).accepted)
    genuine = []
    for (const kind of [Kind.HALT, Kind.RESUME, Kind.VOTE, Kind.PHASE, Kind.KEYHOLDERS]) {
      const message = messageOf(kind, config.meshId)
      genuine.push({ name: Kind[kind], message, bytes: await createEnvelope(message, signersOf(kind)) })
    }
  })

  it('control: each genuine envelope verifies and applies (to a copy of the state)', async () => {
    for (const g of genuine) {
      assert.ok((await verifyEnvelope(g.bytes, config, NOW)).ok, g.name)
      const copy = new GovernanceState(config, undefined, () => NOW)
      await copy.apply(await createEnvelope({ ...base, meshId: config.meshId, kind: Kind.HALT, version: 5, reason: 'setup' }, holders.slice(0, 1)))
      const r = await copy.apply(g.bytes)
      assert.ok(r.accepted, `${g.name}: ${r.accepted ? '' : r.reason}`)
    }
  })

  it('signed by keys that are not keyholders (with fewer keyholders than the threshold)', async () => {
    await fc.assert(fc.asyncProperty(kindArb, fc.subarray([0, 1], { minLength: 1 }), fc.nat(), async (kind, outs, version) => {
      const m = { ...messageOf(kind, config.meshId), version: version + 14 }
      const keyholders = kind === Kind.KEYHOLDERS ? [holders[0], holders[1], k5] : holders.slice(0, threshold(kind) - 1)
      await mustReject(await createEnvelope(m, [...keyholders, ...outs.map(i => outsiders[i])]), 'non-keyholder')
    }), { numRuns: runs(1500) })
  })

  it('the same keyholder counted twice (duplicated entries, any order; a key in libp2p protobuf form)', async () => {
    const multi = fc.constantFrom(Kind.RESUME, Kind.PHASE, Kind.KEYHOLDERS)
    await fc.assert(fc.asyncProperty(multi, fc.nat(3), fc.integer({ min: 1, max: 4 }), fc.boolean(), fc.nat(), async (kind, dupOf, copies, protobufForm, seed) => {
      const m = messageOf(kind, config.meshId)
      const payload = encodePayload(m)
      const signers = kind === Kind.KEYHOLDERS ? [holders[0], holders[1], k5] : holders.slice(0, threshold(kind) - 1) // one short
      const sigs = await Promise.all(signers.map(async k => await signPayload(payload, k)))
      const dup = sigs[dupOf % sigs.length]
      const extra = protobufForm
        ? Uint8Array.from([...publicKeyToProtobuf(holders[0].publicKey), ...dup.signature]) // 36-byte key form
        : entry(dup)
      const entries = [...sigs.map(entry), ...Array(copies).fill(extra)]
      // deterministic shuffle
      for (let i = entries.length - 1, s = seed; i > 0; i--, s = (s * 1103515245 + 12345) >>> 0) { const j = s % (i + 1); [entries[i], entries[j]] = [entries[j], entries[i]] }
      await mustReject(rawEnvelope(payload, entries), 'duplicate')
      if (!protobufForm) await mustReject(encodeEnvelope(payload, [...sigs, ...Array(copies).fill(dup)]), 'duplicate (encoder)')
      else assert.throws(() => encodeEnvelope(payload, [...sigs, { publicKey: publicKeyToProtobuf(holders[0].publicKey), signature: dup.signature }]), { name: 'EnvelopeError' })
    }), { numRuns: runs(1000) })
  })

  it('a flipped byte anywhere in the envelope', async () => {
    const arb = fc.nat(genuine.length - 1).chain(g => fc.tuple(fc.constant(g), fc.nat(genuine[g].bytes.length - 1), fc.integer({ min: 1, max: 255 })))
    await fc.assert(fc.asyncProperty(arb, async ([g, pos, x]) => {
      const b = Uint8Array.from(genuine[g].bytes)
      b[pos] ^= x
      await mustReject(b, `flip ${genuine[g].name}[${pos}]^${x}`)
    }), { numRuns: runs(3000) })
  })

  it('another mesh id, signed by every keyholder', async () => {
    const other = meshIdArb.filter(id => id !== config.meshId)
    await fc.assert(fc.asyncProperty(kindArb, other, async (kind, meshId) => {
      await mustReject(await createEnvelope(messageOf(kind, meshId), signersOf(kind)), `mesh ${meshId}`)
    }), { numRuns: runs(1000) })
  })

  it('another message (other kind or fields) spliced onto valid signatures', async () => {
    const spliced = fc.tuple(fc.nat(genuine.length - 1), messageArb, fc.maxSafeNat())
    await fc.assert(fc.asyncProperty(spliced, async ([g, m, v]) => {
      // in this mesh, in the time window, and with a version that would apply
      const forged = encodePayload({ ...m, meshId: config.meshId, ...base, version: (v % 1000) + 20 } as Message)
      const src = decodeEnvelope(genuine[g].bytes)
      fc.pre(hex(forged) !== hex(src.payload))
      await mustReject(encodeEnvelope(forged, src.signatures), `splice onto ${genuine[g].name}`)
    }), { numRuns: runs(1500) })
  })

  it('truncated, extended, or with bytes inserted', async () => {
    const arb = fc.nat(genuine.length - 1).chain(g => fc.oneof(
      fc.nat(genuine[g].bytes.length - 1).map(n => genuine[g].bytes.subarray(0, n)),
      fc.uint8Array({ minLength: 1, maxLength: 64 }).map(tail => Uint8Array.from([...genuine[g].bytes, ...tail])),
      fc.tuple(fc.nat(genuine[g].bytes.length), fc.uint8Array({ minLength: 1, maxLength: 8 })).map(([at, ins]) => {
        const b = genuine[g].bytes
        return Uint8Array.from([...b.subarray(0, at), ...ins, ...b.subarray(at)])
      })
    ))
    await fc.assert(fc.asyncProperty(arb, async b => { await mustReject(b, 'truncate/extend') }), { numRuns: runs(2000) })
  })

  it('edge: time window (60 min skew, expiry with the same grace, 30-day lifetime, version bound) and the state is unchanged', async () => {
    const m = messageOf(Kind.HALT, config.meshId)
    for (const t of [
      { issuedAtMs: NOW + MAX_CLOCK_SKEW_MS + 1, expiresAtMs: NOW + 2 * HOUR },
      { issuedAtMs: NOW - 3 * HOUR, expiresAtMs: NOW - MAX_CLOCK_SKEW_MS },
      { version: NOW + MAX_CLOCK_SKEW_MS + 1, issuedAtMs: NOW, expiresAtMs: NOW + HOUR },
      { version: 2 ** 53 - 1, issuedAtMs: NOW, expiresAtMs: NOW + HOUR },
      { issuedAtMs: NOW - HOUR, expiresAtMs: NOW - HOUR + MAX_LIFETIME_MS + 1 },
      { issuedAtMs: NOW + 1, expiresAtMs: NOW + 1 }
    ]) await mustReject(await createEnvelope({ ...m, ...t }, holders), JSON.stringify(t))
    // at the bounds: issued and versioned exactly MAX_CLOCK_SKEW_MS ahead, expired less than MAX_CLOCK_SKEW_MS ago
    assert.ok((await verifyEnvelope(await createEnvelope({ ...m, issuedAtMs: NOW + MAX_CLOCK_SKEW_MS, expiresAtMs: NOW + 2 * HOUR }, holders), config, NOW)).ok)
    assert.ok((await verifyEnvelope(await createEnvelope({ ...m, version: NOW + MAX_CLOCK_SKEW_MS, issuedAtMs: NOW, expiresAtMs: NOW + HOUR }, holders), config, NOW)).ok)
    assert.ok((await verifyEnvelope(await createEnvelope({ ...m, issuedAtMs: NOW - 3 * HOUR, expiresAtMs: NOW - MAX_CLOCK_SKEW_MS + 1 }, holders), config, NOW)).ok)
    assert.equal(state.version, 5)
    assert.equal(state.halted?.reason, 'setup')
  })

  it('generated at least 10,000 forgery cases in total', () => {
    assert.ok(cases >= 10_000, `only ${cases}`)
    assert.ok(state.rejected.forged + state.rejected.malformed + state.rejected.other + state.rejected.replay >= cases)
  })
})
