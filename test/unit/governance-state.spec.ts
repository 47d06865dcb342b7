/* GovernanceState: replay protection (immediately, after the gossipsub seen-cache forgot, after restart), halt/resume/phase, keyholder changes, config refusal. */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { Kind, createEnvelope, decodeEnvelope, encodeEnvelope, encodePayload, signPayload, verifyEnvelope, type Message, type RefusalCode } from '../../src/governance/envelope.js'
import { DEV_GOVERNANCE_JSON, defaultConfig, defaultThresholds, parseConfig, validateConfig, type GovernanceConfig } from '../../src/governance/config.js'
import { formatPublicKey, keyHex, loadKeyholderKey } from '../../src/governance/keys.js'
import { GovernanceState } from '../../src/governance/state.js'
import { Tier, gate, gateContext } from '../../src/governance/tiers.js'

const HOUR = 3_600_000
const DAY = 24 * HOUR
const T0 = Date.UTC(2026, 3, 1)
/** gossipsub's seen-cache TTL: after it, gossipsub itself no longer drops a duplicate */
const SEEN_TTL_MS = 2 * 60_000
const fixture = (name: string): string => new URL(`../../../test/fixtures/keys/${name}`, import.meta.url).pathname
/** a message without its mesh id and time window */
type Unsigned = Message extends infer M ? M extends any ? Omit<M, 'meshId' | 'issuedAtMs' | 'expiresAtMs'> : never : never

describe('governance state', function () {
  this.timeout(20_000)
  let dir: string
  let config: GovernanceConfig
  let k: PrivateKey[] // dev-1, dev-2, dev-3
  let now = T0
  const clock = (): number => now

  const msg = (m: Unsigned, at = now): Message =>
    ({ meshId: config.meshId, issuedAtMs: at - 1000, expiresAtMs: at + 7 * DAY, ...m }) as Message
  const halt = async (version: number, signers = [k[0]], reason = 'incident'): Promise<Uint8Array> => await createEnvelope(msg({ kind: Kind.HALT, version, reason }), signers)
  const resume = async (version: number, liftsVersion: number, signers = [k[0], k[1]]): Promise<Uint8Array> => await createEnvelope(msg({ kind: Kind.RESUME, version, liftsVersion, reason: 'fixed' }), signers)
  const phase = async (version: number, p: number, signers = k): Promise<Uint8Array> => await createEnvelope(msg({ kind: Kind.PHASE, version, phase: p }), signers)
  const vote = async (version: number, signer: PrivateKey, approve = true, id = 1): Promise<Uint8Array> =>
    await createEnvelope(msg({ kind: Kind.VOTE, version, motionId: new Uint8Array(32).fill(id), approve }), [signer])
  const rejected = async (st: GovernanceState, bytes: Uint8Array, code: RefusalCode): Promise<void> => {
    const r = await st.apply(bytes)
    assert.equal(r.accepted, false, 'accepted')
    if (!r.accepted) assert.equal(r.code, code, r.reason)
  }
  const accepted = async (st: GovernanceState, bytes: Uint8Array): Promise<void> => {
    const r = await st.apply(bytes)
    assert.ok(r.accepted, r.accepted ? '' : r.reason)
  }

  before(async () => {
    config = defaultConfig()
    k = await Promise.all(['dev-1.key', 'dev-2.key', 'dev-3.key'].map(async f => (await loadKeyholderKey(fixture(f))).privateKey))
    assert.deepEqual(k.map(x => formatPublicKey(x.publicKey.raw)), DEV_GOVERNANCE_JSON.keyholders.map(h => h.publicKey), 'fixture keys are the dev governance keys')
  })
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'meshllm-gov-'))
    now = T0
  })
  afterEach(() => { rmSync(dir, { recursive: true, force: true }) })

  describe('replay', () => {
    it('the same bytes twice: rejected immediately', async () => {
      const st = new GovernanceState(config, undefined, clock)
      const h = await halt(1)
      await accepted(st, h)
      await rejected(st, h, 'known') // the message in force, again: known, not applied twice
      assert.equal(st.rejected.replay, 1)
    })

    it('after gossipsub\'s seen-cache forgot it (clock advanced > 2 min, and 3 days): still rejected', async () => {
      const st = new GovernanceState(config, undefined, clock)
      const h = await halt(1)
      const r = await resume(2, 1)
      await accepted(st, h)
      await accepted(st, r)
      now += SEEN_TTL_MS + 1
      await rejected(st, h, 'stale')
      await rejected(st, r, 'known')
      now += 3 * DAY
      await rejected(st, h, 'stale')
      assert.equal(st.halted, undefined)
    })

    it('after a restart (new GovernanceState on the same file): still rejected, still halted', async () => {
      const file = join(dir, 'governance-state.json')
      const h = await halt(7, [k[2]], 'stop now')
      const v = await vote(1, k[0])
      const st = new GovernanceState(config, file, clock)
      await accepted(st, h)
      await accepted(st, v)
      now += SEEN_TTL_MS + 1
      const st2 = new GovernanceState(config, file, clock)
      assert.equal(st2.halted?.reason, 'stop now')
      assert.equal(st2.version, 7)
      await rejected(st2, h, 'known') // the HALT in force, again
      await rejected(st2, v, 'replayed-vote')
      await rejected(st2, await phase(6, 1), 'stale') // older version, never seen
      assert.equal(st2.haltReason, 'stop now')
    })

    it('votes: versions per (keyholder, motion)', async () => {
      const st = new GovernanceState(config, undefined, clock)
      await accepted(st, await vote(5, k[0], true))
      await rejected(st, await vote(5, k[0], false), 'replayed-vote') // same version, other decision
      await rejected(st, await vote(4, k[0], false), 'replayed-vote')
      await accepted(st, await vote(1, k[1], true)) // another keyholder: own versions
      await accepted(st, await vote(1, k[0], true, 2)) // another motion: own versions
      await accepted(st, await vote(6, k[0], false)) // changes k[0]'s vote
      const rec = st.votes.get(keyHex(new Uint8Array(32).fill(1)))!
      assert.equal(rec.get(keyHex(k[0].publicKey.raw))?.approve, false)
      assert.equal(rec.get(keyHex(k[1].publicKey.raw))?.approve, true)
      assert.equal(st.version, 0, 'votes do not move the state version')
    })
  })

  describe('concurrency', () => {
    it('applies run one at a time: two HALTs validated together never move the version back', async () => {
      const st = new GovernanceState(config, undefined, clock)
      const [a, b] = await Promise.all([st.apply(await halt(12)), st.apply(await halt(10))])
      assert.ok(a.accepted)
      assert.equal(b.accepted ? 'applied' : b.code, 'stale')
      assert.equal(st.version, 12)
      assert.equal(st.halted?.version, 12)
      // the same envelope twice at once: applied once, the second copy is known
      const h = await halt(13)
      const [c, d] = await Promise.all([st.apply(h), st.apply(h)])
      assert.deepEqual([c.accepted, d.accepted ? 'applied' : d.code], [true, 'known'])
    })
  })

  describe('halt and resume', () => {
    it('RESUME must lift the halt in force and carry a higher version', async () => {
      const st = new GovernanceState(config, undefined, clock)
      // a verified RESUME while nothing is halted here is a version step (noop): the HALT it
      // answered, arriving later, is then stale
      const r = await st.apply(await resume(2, 1))
      assert.ok(r.accepted && r.noop === true, r.accepted ? 'not a noop' : `${r.code}: ${r.reason}`)
      assert.equal(st.halted, undefined)
      await rejected(st, await halt(1), 'stale')
      await accepted(st, await halt(3))
      await accepted(st, await halt(4, [k[1]], 'second incident'))
      await rejected(st, await resume(5, 3), 'lifts-older')
      await rejected(st, await resume(4, 3), 'stale')
      await rejected(st, await resume(5, 5), 'malformed') // a RESUME cannot lift a version at or above its own
      assert.equal((st.halted as { version: number } | undefined)?.version, 4)
      await accepted(st, await resume(5, 4))
      assert.equal(st.halted, undefined)
      assert.equal(st.lastHalt?.reason, 'second incident')
    })

    it('RESUME with 1 of the 2 signatures needed is rejected; the halt stays', async () => {
      const st = new GovernanceState(config, undefined, clock)
      await accepted(st, await halt(1))
      for (const signer of k) await rejected(st, await resume(2, 1, [signer]), 'threshold')
      await rejected(st, await resume(2, 1, [k[0], await generateKeyPair('Ed25519')]), 'not-keyholder')
      assert.equal(st.halted?.version, 1)
      await accepted(st, await resume(2, 1, [k[1], k[2]]))
    })

    it('a halted node stays halted across restarts until a valid RESUME, then read-only until a PHASE vote', async () => {
      const file = join(dir, 'state', 'governance-state.json')
      await accepted(new GovernanceState(config, file, clock), await halt(1, [k[0]], 'bad outputs'))
      for (let i = 0; i < 3; i++) {
        now += DAY
        const st = new GovernanceState(config, file, clock)
        assert.equal(st.halted?.reason, 'bad outputs')
        assert.equal(gate({ type: 'report', params: { title: 'x' } }, gateContext(st.snapshot(), now)).allowed, false, 'nothing runs while halted')
      }
      await accepted(new GovernanceState(config, file, clock), await resume(2, 1))
      let st = new GovernanceState(config, file, clock)
      assert.equal(st.halted, undefined)
      assert.equal(st.readOnly, true)
      const ctx = gateContext(st.snapshot(), now)
      assert.equal(gate({ type: 'report', params: { title: 'x' } }, ctx).executeNow, true, 'read-only actions run')
      assert.equal(gate({ type: 'flag_expert', params: { expert: '12D3KooWGzh9sUHbWm8RLYL5rRUVaYJYLtWxWzRrZ1PmJ3eYWqBZ', reason: 'x' } }, ctx).allowed, false, 'suggest does not')
      await rejected(st, await phase(3, 1, [k[0], k[1]]), 'threshold')
      await accepted(st, await phase(3, 1))
      st = new GovernanceState(config, file, clock)
      assert.equal(st.readOnly, false)
      assert.equal(st.phase, 1)
      assert.equal(gate({ type: 'flag_expert', params: { expert: '12D3KooWGzh9sUHbWm8RLYL5rRUVaYJYLtWxWzRrZ1PmJ3eYWqBZ', reason: 'x' } }, gateContext(st.snapshot(), now)).allowed, true)
    })

    it('catch-up: another node applying catchUp() in version order reaches the same state', async () => {
      const a = new GovernanceState(config, undefined, clock)
      for (const b of [await halt(1), await resume(2, 1), await vote(1, k[2]), await phase(3, 2), await halt(4, [k[1]], 'again')]) await accepted(a, b)
      const b = new GovernanceState(config, undefined, clock)
      for (const env of a.catchUp()) await accepted(b, env)
      assert.deepEqual(b.snapshot(), a.snapshot())
      assert.deepEqual([...b.votes].map(([id, m]) => [id, [...m.keys()]]), [...a.votes].map(([id, m]) => [id, [...m.keys()]]))
    })
  })

  describe('keyholder changes', () => {
    it('need the old and the new thresholds; afterwards the old keys no longer count', async () => {
      const file = join(dir, 'governance-state.json')
      const k4 = await generateKeyPair('Ed25519')
      const change = msg({ kind: Kind.KEYHOLDERS, version: 1, keyholders: [k[0].publicKey.raw, k[1].publicKey.raw, k4.publicKey.raw], thresholds: defaultThresholds(3), reviewPeriodMs: 12 * HOUR, revertOnHalt: 2 })
      const st = new GovernanceState(config, file, clock)
      await rejected(st, await createEnvelope(change, k), 'threshold')
      await rejected(st, await createEnvelope(change, [k[0], k[1], k4]), 'threshold')
      await accepted(st, await createEnvelope(change, [...k, k4]))
      assert.equal(st.config.reviewPeriodMs, 12 * HOUR)
      assert.equal(st.config.revertOnHalt, 2)
      await rejected(st, await halt(2, [k[2]]), 'not-keyholder') // removed key
      await rejected(st, await vote(1, k[2]), 'not-keyholder')
      const st2 = new GovernanceState(config, file, clock) // the change survives a restart
      await rejected(st2, await halt(2, [k[2]]), 'not-keyholder')
      await accepted(st2, await halt(2, [k4]))
      await accepted(st2, await resume(3, 2, [k[0], k4]))
    })

    it('a change to thresholds its new set cannot reach is rejected', async () => {
      const st = new GovernanceState(config, undefined, clock)
      const change = msg({ kind: Kind.KEYHOLDERS, version: 1, keyholders: [k[0].publicKey.raw, k[1].publicKey.raw], thresholds: { ...defaultThresholds(2), resume: 3 }, reviewPeriodMs: DAY, revertOnHalt: 3 })
      await rejected(st, await createEnvelope(change, k), 'unsafe-thresholds')
      assert.equal(st.config.keyholders.length, 3)
    })
  })

  describe('governance file', () => {
    const keys = DEV_GOVERNANCE_JSON.keyholders.map(h => h.publicKey)

    it('thresholds above the number of keyholders are refused with a clear message', () => {
      assert.throws(() => parseConfig(JSON.stringify({ meshId: 'm', keyholders: keys.slice(0, 2), thresholds: { resume: 3 } })),
        (err: any) => err.name === 'GovernanceConfigError' && /threshold resume is 3 but there are only 2 keyholder\(s\).*could never be lifted/.test(err.message))
      assert.throws(() => parseConfig(JSON.stringify({ meshId: 'm', keyholders: keys, thresholds: { deployMajor: 4 } })),
        (err: any) => err.name === 'GovernanceConfigError' && /deployMajor is 4 but there are only 3/.test(err.message))
      assert.throws(() => parseConfig(JSON.stringify({ meshId: 'm', keyholders: keys, thresholds: { cancel: 0 } })), { name: 'GovernanceConfigError', message: /cancel must be an integer ≥ 1/ })
      assert.throws(() => parseConfig(JSON.stringify({ meshId: 'm', keyholders: [] })), { name: 'GovernanceConfigError', message: /at least one keyholder/ })
    })

    it('defaults: HALT 1, RESUME 2, deploy-minor 2, deploy-major all, phase all, keyholders all, cancel 2, 24 h review, revert 3', () => {
      const c = parseConfig(JSON.stringify({ meshId: 'm', keyholders: keys }))
      assert.deepEqual(c.thresholds, { halt: 1, resume: 2, deployMinor: 2, deployMajor: 3, phase: 3, keyholders: 3, cancel: 2 })
      assert.equal(c.reviewPeriodMs, DAY)
      assert.equal(c.revertOnHalt, 3)
      assert.deepEqual(parseConfig(JSON.stringify({ meshId: 'm', keyholders: keys.slice(0, 1) })).thresholds, { halt: 1, resume: 1, deployMinor: 1, deployMajor: 1, phase: 1, keyholders: 1, cancel: 1 })
    })

    it('a key listed twice in another encoding (hex, libp2p protobuf) is refused', async () => {
      const raw = k[0].publicKey.raw
      for (const other of [Buffer.from(raw).toString('hex'), 'ed25519:' + Buffer.from(publicKeyToProtobuf(k[0].publicKey)).toString('base64url')]) {
        assert.throws(() => parseConfig(JSON.stringify({ meshId: 'm', keyholders: [keys[0], other, keys[1]] })), { name: 'GovernanceConfigError', message: /listed twice/ })
      }
    })
  })

  describe('regressions (found in review)', () => {
    it('BUG 1 (envelope.ts): a KEYHOLDERS change listing a key twice must be rejected (else unreachable thresholds, and the state file cannot be loaded again)', async () => {
      const file = join(dir, 'governance-state.json')
      const k4 = await generateKeyPair('Ed25519')
      // new set [a, a, c]: made from the payload of [a, b, c] (keys ascending), with b overwritten by a
      // (by hand, as a fixed encoder refuses to write it), signed by all old and new keys
      const change = msg({ kind: Kind.KEYHOLDERS, version: 1, keyholders: [k[0].publicKey.raw, k[1].publicKey.raw, k4.publicKey.raw], thresholds: { ...defaultThresholds(3), keyholders: 2 }, reviewPeriodMs: DAY, revertOnHalt: 3 })
      const payload = encodePayload(change)
      const at = 11 + 1 + 1 + 1 + config.meshId.length + 24 + 4 + 1
      payload.copyWithin(at + 32, at, at + 32)
      const bytes = encodeEnvelope(payload, await Promise.all([...k, k4].map(async x => await signPayload(payload, x))))
      const v = await verifyEnvelope(bytes, config, now)
      // today: accepted with resume/phase/deployMajor = 3 while only 2 distinct keys exist, and
      // `new GovernanceState(config, file)` then throws "keyholder … is listed twice"
      assert.equal(v.ok, false, 'a duplicated keyholder in a KEYHOLDERS change was accepted')
      const st = new GovernanceState(config, file, clock)
      await st.apply(bytes)
      assert.doesNotThrow(() => new GovernanceState(config, file, clock))
    })

    it('BUG 2 (config.ts): validateConfig must canonicalise keys: the same key raw and in protobuf form is one keyholder', () => {
      const raw = k[0].publicKey.raw
      // today: accepted as 2 keyholders, so "resume: 2" passes the reachability check, yet the
      // protobuf-form entry can never match an envelope's 32-byte key: RESUME is unreachable
      assert.throws(() => validateConfig({ meshId: 'm', keyholders: [{ publicKey: raw }, { publicKey: publicKeyToProtobuf(k[0].publicKey) }], thresholds: defaultThresholds(2), reviewPeriodMs: DAY, revertOnHalt: 3 }), { name: 'GovernanceConfigError', message: /listed twice/ })
    })

    it('BUG 3 (state.ts): a vote\'s time is its signed issuedAtMs, not when this node received it', async () => {
      // a vote cast 6 days ago reaches a node that catches up today: its approval must lapse
      // in 1 day (APPROVAL_TTL_MS = 7 days), on every node alike; today it is recorded as cast now
      const st = new GovernanceState(config, undefined, clock)
      const cast = now - 6 * DAY
      await accepted(st, await createEnvelope({ meshId: config.meshId, issuedAtMs: cast, expiresAtMs: cast + 14 * DAY, kind: Kind.VOTE, version: 1, motionId: new Uint8Array(32).fill(1), approve: true }, [k[0]]))
      assert.equal(st.votes.get(keyHex(new Uint8Array(32).fill(1)))!.get(keyHex(k[0].publicKey.raw))!.atMs, cast)
    })

    it('BUG 4 (state.ts): apply never throws, even when the state file cannot be written', async () => {
      const st = new GovernanceState(config, '/dev/null/governance-state.json', clock)
      const r = await st.apply(await halt(1)).then(x => x, (err: any) => ({ threw: String(err) }))
      assert.ok(!('threw' in r), `apply threw: ${(r as any).threw}`)
    })

    it('BUG 5 (envelope.ts): values that do not fit their field are refused, not silently wrapped', async () => {
      const change = msg({ kind: Kind.KEYHOLDERS, version: 1, keyholders: k.map(x => x.publicKey.raw), thresholds: defaultThresholds(3), reviewPeriodMs: DAY, revertOnHalt: 259 })
      // today: encoded as revertOnHalt 3 (259 & 0xff)
      await assert.rejects(createEnvelope(change, k), { name: 'EnvelopeError' })
    })

    it('BUG 6 (envelope.ts): decodeEnvelope throws EnvelopeError on invalid UTF-8 (today: TypeError)', () => {
      const p = encodePayload({ kind: Kind.HALT, reason: 'ab', meshId: 'm', version: 1, issuedAtMs: 1, expiresAtMs: 2 })
      p[p.length - 1] = 0xff
      assert.throws(() => decodeEnvelope(encodeEnvelope(p, [])), { name: 'EnvelopeError' })
    })
  })

  it('tier check: the gate never lets anything above READ_ONLY run in the state after a fresh RESUME', async () => {
    const st = new GovernanceState(config, undefined, clock)
    await accepted(st, await phase(1, 4))
    await accepted(st, await halt(2))
    await accepted(st, await resume(3, 2))
    assert.equal(st.phase, 4)
    const ctx = { ...gateContext(st.snapshot(), now), stableSinceMs: 0, sandboxValidated: true }
    assert.equal(gate({ type: 'adjust_k', params: { k: 3 } }, ctx).allowed, false)
    assert.equal(gate({ type: 'adjust_k', params: { k: 3 } }, ctx).tier, Tier.SANDBOX_TEST)
  })
})
