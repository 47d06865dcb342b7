/*
 * The governance property of docs/security.md (issue "Hostile peers" §3): whatever a set of
 * keyholders below the RESUME threshold signs (any kinds, any versions up to 2^53 - 1, any
 * times, junk signatures of the others), a RESUME quorum can always bring the mesh back, at
 * once, and never loses its authority (the keyholder set and thresholds stay as they were).
 * A fast-check model test over sequences of messages, on the real GovernanceState (persisted
 * and reloaded, so the property also holds across restarts).
 */
import assert from 'node:assert/strict'
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { Kind, MAX_CLOCK_SKEW_MS, createEnvelope, encodeEnvelope, encodePayload, signPayload, type Message, type Signature } from '../../src/governance/envelope.js'
import { configDigest, validateConfig, type GovernanceConfig, type Thresholds } from '../../src/governance/config.js'
import { GovernanceState } from '../../src/governance/state.js'
import { runs } from '../helpers/fuzz.js'

const T0 = Date.UTC(2026, 11, 1)
const HOUR = 3_600_000
const MAX_VERSION = 2 ** 53 - 1

interface Setup { n: number, t: Thresholds, attackers: number[] }

/** a governance of n keyholders, any valid thresholds, and a set of them below the RESUME threshold */
const setupArb: fc.Arbitrary<Setup> = fc.integer({ min: 1, max: 5 }).chain(n =>
  fc.record({
    halt: fc.integer({ min: 1, max: n }),
    resume: fc.integer({ min: 1, max: n }),
    deployMinor: fc.integer({ min: 1, max: n }),
    deployMajor: fc.integer({ min: 1, max: n }),
    phase: fc.integer({ min: 1, max: n }),
    cancel: fc.integer({ min: 1, max: n })
  }).chain(t => fc.integer({ min: t.resume, max: n }).chain(keyholders =>
    fc.subarray([...Array(n).keys()], { maxLength: t.resume - 1 }).map(attackers => ({ n, t: { ...t, keyholders }, attackers }))
  ))
)

/** one step of the adversary */
type Step =
  | { op: 'clock', ms: number }
  | { op: 'sign', kind: Kind, version: 'max' | 'clock-edge' | 'next' | 'past' | number, issued: number, life: number, junk: boolean, lifts: 'halt' | 'max' | number, catchUp: boolean }
  | { op: 'restart' }

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ op: fc.constant('clock' as const), ms: fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 0, max: 3 * HOUR })) }) },
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant('sign' as const),
      kind: fc.constantFrom(Kind.HALT, Kind.RESUME, Kind.PHASE, Kind.KEYHOLDERS, Kind.VOTE),
      version: fc.oneof(fc.constantFrom('max' as const, 'clock-edge' as const, 'next' as const, 'past' as const), fc.maxSafeNat()),
      issued: fc.integer({ min: -2 * HOUR, max: 2 * HOUR }),
      life: fc.integer({ min: 1, max: 40 * 24 * HOUR }),
      junk: fc.boolean(),
      lifts: fc.oneof(fc.constantFrom('halt' as const, 'max' as const), fc.maxSafeNat()),
      catchUp: fc.boolean()
    })
  },
  { weight: 1, arbitrary: fc.constant({ op: 'restart' as const }) }
)

describe('governance model: a RESUME quorum can always bring the mesh back (fast-check)', function () {
  this.timeout(120_000)
  let keys: PrivateKey[]
  let dir: string

  before(async () => {
    keys = await Promise.all([1, 2, 3, 4, 5, 6].map(async i => await generateKeyPairFromSeed('Ed25519', new Uint8Array(32).fill(40 + i))))
    dir = mkdtempSync(join(tmpdir(), 'meshllm-gov-model-'))
  })
  after(() => { rmSync(dir, { recursive: true, force: true }) })

  it('holds over random configurations and adversary sequences (versions up to 2^53 - 1, clocks, junk signatures, restarts)', async () => {
    let file = 0
    let attacksApplied = 0
    let maxVersionTried = 0
    await fc.assert(fc.asyncProperty(setupArb, fc.array(stepArb, { minLength: 1, maxLength: 14 }), async (setup, steps) => {
      const holders = keys.slice(0, setup.n)
      const config: GovernanceConfig = validateConfig({ meshId: 'model', keyholders: holders.map(k => ({ publicKey: k.publicKey.raw })), thresholds: setup.t, reviewPeriodMs: 0, revertOnHalt: 0 })
      const digest = configDigest(config)
      const path = join(dir, `s${file++}.json`)
      let now = T0
      const clock = (): number => now
      let st = new GovernanceState(config, path, clock)
      const attackers = setup.attackers.map(i => holders[i])
      const others = holders.filter((_, i) => !setup.attackers.includes(i))
      const quorum = holders.slice(0, setup.t.resume)

      for (const step of steps) {
        if (step.op === 'clock') { now += step.ms; continue }
        if (step.op === 'restart') { st = new GovernanceState(config, path, clock); continue }
        const version = step.version === 'max'
          ? MAX_VERSION
          : step.version === 'clock-edge'
            ? now + MAX_CLOCK_SKEW_MS
            : step.version === 'next'
              ? st.version + 1
              : step.version === 'past'
                ? Math.max(0, st.version - 1)
                : step.version
        maxVersionTried = Math.max(maxVersionTried, version)
        const base = { meshId: 'model', version, issuedAtMs: Math.max(0, now + step.issued), expiresAtMs: Math.max(0, now + step.issued) + step.life }
        let m: Message
        switch (step.kind) {
          case Kind.HALT: m = { ...base, kind: Kind.HALT, reason: 'attack' }; break
          case Kind.RESUME: m = { ...base, kind: Kind.RESUME, liftsVersion: Math.min(version > 0 ? version - 1 : 0, step.lifts === 'halt' ? (st.halted?.version ?? 0) : step.lifts === 'max' ? MAX_VERSION : step.lifts), reason: 'attack' }; break
          case Kind.PHASE: m = { ...base, kind: Kind.PHASE, phase: 4 }; break
          case Kind.VOTE: m = { ...base, kind: Kind.VOTE, motionId: new Uint8Array(32).fill(9), approve: true }; break
          default: m = { ...base, kind: Kind.KEYHOLDERS, keyholders: attackers.length > 0 ? attackers.map(k => k.publicKey.raw) : [keys[5].publicKey.raw], thresholds: { halt: 1, resume: 1, deployMinor: 1, deployMajor: 1, phase: 1, keyholders: 1, cancel: 1 }, reviewPeriodMs: 0, revertOnHalt: 0 }
        }
        let payload: Uint8Array
        try { payload = encodePayload(m) } catch { continue } // not encodable: nothing to send
        const sigs: Signature[] = await Promise.all(attackers.map(async k => await signPayload(payload, k)))
        // junk "signatures" of the keyholders the adversary does not hold
        if (step.junk) for (const k of others) sigs.push({ publicKey: k.publicKey.raw, signature: new Uint8Array(64).fill(1) })
        const r = await st.apply(encodeEnvelope(payload, sigs), { catchUp: step.catchUp })
        if (r.accepted) attacksApplied++

        // invariants after every adversary message
        assert.ok(st.version <= now + MAX_CLOCK_SKEW_MS, `version ${st.version} beyond clock ${now} + skew`)
        assert.equal(configDigest(st.config), digest, 'the adversary changed the keyholders or thresholds')

        // the property: a moment later, the RESUME quorum brings the mesh back (on a copy of
        // the persisted state, so the adversary's sequence goes on unchanged)
        const later = now + 1
        const copyPath = `${path}.copy`
        rmSync(copyPath, { force: true })
        if (existsSync(path)) copyFileSync(path, copyPath)
        const copy = new GovernanceState(config, copyPath, () => later)
        if (copy.halted == null) {
          // not halted: a quorum can still act (a PHASE by all keyholders is accepted)
          const phase = await createEnvelope({ meshId: 'model', kind: Kind.PHASE, phase: 1, version: Math.max(later, copy.version + 1), issuedAtMs: later, expiresAtMs: later + HOUR }, holders.slice(0, setup.t.phase))
          const rp = await copy.apply(phase)
          assert.ok(rp.accepted, `quorum PHASE refused: ${rp.accepted ? '' : rp.code}`)
          continue
        }
        const resume = await createEnvelope({ meshId: 'model', kind: Kind.RESUME, liftsVersion: copy.halted.version, reason: 'quorum', version: Math.max(later, copy.version + 1), issuedAtMs: later, expiresAtMs: later + HOUR }, quorum)
        const rr = await copy.apply(resume)
        assert.ok(rr.accepted, `quorum RESUME refused: ${rr.accepted ? '' : `${rr.code}: ${rr.reason}`}`)
        assert.equal(copy.halted, undefined)
      }
    }), { numRuns: runs(150) })
    assert.ok(attacksApplied > 0, 'the adversary never got a message applied: the model explores nothing')
    assert.equal(maxVersionTried, MAX_VERSION)
  })

  it('the concrete attack: a HALT at version 2^53 - 1 is refused (future); at the clock edge it is taken, and a quorum RESUME 1 ms later lifts it', async () => {
    const holders = keys.slice(0, 3)
    const config = validateConfig({ meshId: 'model', keyholders: holders.map(k => ({ publicKey: k.publicKey.raw })), thresholds: { halt: 1, resume: 2, deployMinor: 2, deployMajor: 3, phase: 3, keyholders: 3, cancel: 2 }, reviewPeriodMs: 0, revertOnHalt: 0 })
    let now = T0
    const st = new GovernanceState(config, undefined, () => now)
    const halt = async (version: number): Promise<Uint8Array> => await createEnvelope({ meshId: 'model', kind: Kind.HALT, reason: 'stolen key', version, issuedAtMs: now, expiresAtMs: now + HOUR }, [holders[0]])
    const r1 = await st.apply(await halt(MAX_VERSION))
    assert.equal(r1.accepted ? 'applied' : r1.code, 'future')
    const r2 = await st.apply(await halt(now + MAX_CLOCK_SKEW_MS + 1))
    assert.equal(r2.accepted ? 'applied' : r2.code, 'future')
    assert.ok((await st.apply(await halt(now + MAX_CLOCK_SKEW_MS))).accepted)
    now += 1
    const resume = await createEnvelope({ meshId: 'model', kind: Kind.RESUME, liftsVersion: st.halted!.version, reason: 'quorum', version: st.version + 1, issuedAtMs: now, expiresAtMs: now + HOUR }, [holders[1], holders[2]])
    assert.ok((await st.apply(resume)).accepted)
    assert.equal(st.halted, undefined)
  })

  it('a governance whose keyholders threshold is below its RESUME threshold is refused (fewer than a quorum could replace the keyholders)', () => {
    const holders = keys.slice(0, 3)
    assert.throws(() => validateConfig({ meshId: 'model', keyholders: holders.map(k => ({ publicKey: k.publicKey.raw })), thresholds: { halt: 1, resume: 2, deployMinor: 2, deployMajor: 3, phase: 3, keyholders: 1, cancel: 2 }, reviewPeriodMs: 0, revertOnHalt: 0 }), { name: 'GovernanceConfigError' })
  })
})
