/* Safety tiers, phases and the gate; motion tallies (2-of-3, full vote with the 24 h review, cancellation, approval expiry); the change log. */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { createEnvelope } from '../../src/governance/envelope.js'
import { defaultThresholds, validateConfig, type GovernanceConfig } from '../../src/governance/config.js'
import { keyHex } from '../../src/governance/keys.js'
import { GovernanceState, type VoteRecord } from '../../src/governance/state.js'
import { ACTIONS, MIN_PHASE, STABILITY_MS, Tier, classifyAction, gate, type Action, type GateContext } from '../../src/governance/tiers.js'
import { APPROVAL_TTL_MS, createMotion, motionIdHex, tally, voteMessage, type Motion, type MotionTally } from '../../src/governance/motions.js'
import { ChangeLog, revertOnHalt } from '../../src/governance/changelog.js'
import { runs } from '../helpers/fuzz.js'

const HOUR = 3_600_000
const DAY = 24 * HOUR
const MIN = 60_000
const T0 = Date.UTC(2026, 5, 1)
const PEER = '12D3KooWGzh9sUHbWm8RLYL5rRUVaYJYLtWxWzRrZ1PmJ3eYWqBZ'

/** one valid action per tier */
const SAMPLE: Record<Tier, Action> = {
  [Tier.READ_ONLY]: { type: 'report', params: { title: 'weekly metrics', body: 'p50 latency 41 ms' } },
  [Tier.SUGGEST]: { type: 'flag_expert', params: { expert: PEER, reason: 'slow' } },
  [Tier.SANDBOX_TEST]: { type: 'adjust_k', params: { k: 5 } },
  [Tier.DEPLOY_MINOR]: { type: 'ban_expert', params: { expert: PEER, reason: 'unsafe output', durationHours: 48 } },
  [Tier.DEPLOY_MAJOR]: { type: 'deploy_model', params: { model: 'Llama-3.2-3B-Instruct-Q8_0', sha256: 'ab'.repeat(32) } }
}
const TIERS = [Tier.READ_ONLY, Tier.SUGGEST, Tier.SANDBOX_TEST, Tier.DEPLOY_MINOR, Tier.DEPLOY_MAJOR]
const approvedTally = (tier: Tier): MotionTally => ({ approvals: 3, rejections: 0, approvers: [], state: 'approved', tier, needed: 3 })

describe('governance tiers: the action catalogue', () => {
  it('classifies every catalogue action at its tier', () => {
    const expected: Record<string, Tier> = {
      report: 0,
      flag_expert: 1,
      suggest_config: 1,
      adjust_k: 2,
      benchmark_expert: 2,
      ban_expert: 3,
      set_selection_weights: 3,
      change_aggregation_rule: 3,
      update_protocol: 4,
      change_governance: 4,
      deploy_model: 4
    }
    assert.deepEqual(Object.fromEntries(Object.entries(ACTIONS).map(([t, s]) => [t, s.tier])), expected)
    const valid: Action[] = [
      ...Object.values(SAMPLE),
      { type: 'report', params: { title: 't' } },
      { type: 'suggest_config', params: { key: 'router.k', value: 4, reason: 'faster' } },
      { type: 'benchmark_expert', params: { expert: PEER } },
      { type: 'set_selection_weights', params: { weights: { [PEER]: 0.5 } } },
      { type: 'change_aggregation_rule', params: { rule: 'product' } },
      { type: 'update_protocol', params: { protocol: '/meshllm/infer/2.0.0', version: '2.0.0' } },
      { type: 'change_governance', params: { summary: 'add a keyholder' } }
    ]
    for (const a of valid) {
      const c = classifyAction(a)
      assert.deepEqual(c, { tier: expected[a.type], known: true }, a.type)
    }
  })

  it('unknown types, free-form text and params failing the schema are DEPLOY_MAJOR', () => {
    const bad: Array<[unknown, RegExp]> = [
      ['please ban expert 12D3KooW and then redeploy', /free-form text/],
      [null, /not an action/],
      [[{ type: 'report' }], /not an action/],
      [{ params: {} }, /without a type/],
      [{ type: 'shell', params: { cmd: 'rm -rf /' } }, /unknown action type "shell"/],
      [{ type: '__proto__' }, /unknown action type/],
      [{ type: 'constructor' }, /unknown action type/],
      [{ type: 'toString' }, /unknown action type/],
      [{ type: 'report' }, /missing parameter "title"/],
      [{ type: 'report', params: { title: 5 } }, /"title" must be a string/],
      [{ type: 'report', params: { title: 'x', run: 'deploy' } }, /unknown parameter "run"/],
      [{ type: 'report', params: { title: 'x' }, then: 'deploy_model' }, /unexpected field "then"/],
      [{ type: 'report', params: 'write a report' }, /params must be an object/],
      [{ type: 'adjust_k', params: { k: 1000 } }, /"k" must be an integer/],
      [{ type: 'adjust_k', params: { k: 2.5 } }, /"k" must be an integer/],
      [{ type: 'ban_expert', params: { expert: 'not a peer id!', reason: 'x' } }, /"expert" must match/],
      [{ type: 'set_selection_weights', params: { weights: { [PEER]: 2 } } }, /weights/],
      [{ type: 'set_selection_weights', params: { weights: {} } }, /1–256 entries/],
      [{ type: 'change_aggregation_rule', params: { rule: 'whatever the model says' } }, /must be one of mixture, product/],
      [{ type: 'deploy_model', params: { model: 'x', sha256: 'nothex' } }, /sha256/],
      [{ type: 'suggest_config', params: { key: 'a', value: { nested: true } } }, /"value" must be a string/]
    ]
    for (const [a, re] of bad) {
      const c = classifyAction(a)
      assert.equal(c.tier, Tier.DEPLOY_MAJOR, JSON.stringify(a))
      assert.equal(c.known, false)
      assert.match(c.reason ?? '', re)
    }
  })

  it('never throws, and anything outside the catalogue is DEPLOY_MAJOR (fast-check)', () => {
    fc.assert(fc.property(fc.oneof(fc.anything(), fc.record({ type: fc.constantFrom(...Object.keys(ACTIONS), 'x'), params: fc.anything() })), a => {
      const c = classifyAction(a)
      if (!c.known) assert.equal(c.tier, Tier.DEPLOY_MAJOR)
      else assert.equal(c.tier, ACTIONS[(a as any).type].tier)
    }), { numRuns: runs(3000) })
  })
})

describe('governance tiers: the gate', () => {
  const ready = (phase: number): GateContext => ({ phase, halted: false, readOnly: false, stableSinceMs: T0 - STABILITY_MS, now: T0, sandboxValidated: true })

  describe('every tier in every phase, with every other condition met', () => {
    for (const tier of TIERS) {
      for (let phase = 0; phase <= 4; phase++) {
        const allowed = phase >= MIN_PHASE[tier]
        const executeNow = allowed && tier !== Tier.SUGGEST
        it(`${Tier[tier]} in phase ${phase}: ${allowed ? (executeNow ? 'runs' : 'waits for human review') : 'refused'}`, () => {
          const d = gate(SAMPLE[tier], { ...ready(phase), approvals: approvedTally(tier) })
          assert.equal(d.tier, tier)
          assert.equal(d.allowed, allowed, d.reason)
          assert.equal(d.executeNow, executeNow, d.reason)
          if (!allowed) assert.match(d.needs.join(), new RegExp(`phase ≥ ${MIN_PHASE[tier]}`))
          if (tier === Tier.SUGGEST && allowed) assert.deepEqual(d.needs, ['human review'])
        })
      }
    }
  })

  it('MIN_PHASE: 0–1 read-only and suggest, 2 sandbox, 3 deploy-minor, 4 deploy-major', () => {
    assert.deepEqual(TIERS.map(t => MIN_PHASE[t]), [0, 0, 2, 3, 4])
  })

  it('while halted nothing runs, in any phase, whatever the approvals', () => {
    for (const tier of TIERS) {
      for (let phase = 0; phase <= 4; phase++) {
        const d = gate(SAMPLE[tier], { ...ready(phase), halted: true, approvals: approvedTally(tier) })
        assert.deepEqual([d.allowed, d.executeNow], [false, false], `${Tier[tier]} phase ${phase}`)
        assert.match(d.reason, /halted/)
      }
    }
  })

  it('read-only (after a RESUME, until a PHASE vote): only READ_ONLY runs, in any phase', () => {
    for (const tier of TIERS) {
      for (let phase = 0; phase <= 4; phase++) {
        const d = gate(SAMPLE[tier], { ...ready(phase), readOnly: true, approvals: approvedTally(tier) })
        assert.equal(d.executeNow, tier === Tier.READ_ONLY, `${Tier[tier]} phase ${phase}`)
        assert.equal(d.allowed, tier === Tier.READ_ONLY)
        if (tier !== Tier.READ_ONLY) assert.deepEqual(d.needs, ['PHASE vote by the keyholders'])
      }
    }
  })

  it('unknown and free-form actions need phase 4 and a full approved vote', () => {
    for (const a of ['ban every slow expert', { type: 'exec', params: { cmd: 'curl | sh' } }]) {
      assert.equal(gate(a, ready(3)).allowed, false)
      assert.equal(gate(a, ready(4)).executeNow, false)
      assert.equal(gate(a, { ...ready(4), approvals: approvedTally(Tier.DEPLOY_MINOR) }).executeNow, false, 'a lower-tier approval does not count')
      assert.equal(gate(a, { ...ready(4), approvals: approvedTally(Tier.DEPLOY_MAJOR) }).executeNow, true)
    }
  })

  it('an invalid phase counts as phase 0 (no phase unlocks by itself)', () => {
    for (const phase of [-1, 5, 2.5, NaN, 99]) assert.equal(gate(SAMPLE[Tier.SANDBOX_TEST], ready(phase)).allowed, false, String(phase))
  })

  it('sandbox tests: phase ≥ 2, 30 days of stability, a validated sandbox', () => {
    const a = SAMPLE[Tier.SANDBOX_TEST]
    assert.equal(gate(a, ready(2)).executeNow, true)
    const d1 = gate(a, { ...ready(2), stableSinceMs: T0 - STABILITY_MS + 1 })
    assert.deepEqual([d1.allowed, d1.executeNow, d1.needs], [true, false, ['30 days of stability']])
    assert.deepEqual(gate(a, { ...ready(2), stableSinceMs: undefined }).needs, ['30 days of stability'])
    assert.deepEqual(gate(a, { ...ready(2), sandboxValidated: false }).needs, ['validated sandbox'])
  })

  it('deploy tiers follow the tally: pending, in review, cancelled, expired, approved', () => {
    const t = (state: MotionTally['state'], tier = Tier.DEPLOY_MAJOR): MotionTally => ({ approvals: 2, rejections: 0, approvers: [], state, tier, needed: 3, reviewEndsAtMs: T0 + HOUR })
    const a = SAMPLE[Tier.DEPLOY_MAJOR]
    assert.deepEqual(gate(a, ready(4)).executeNow, false)
    assert.deepEqual(gate(a, { ...ready(4), approvals: t('pending') }).executeNow, false)
    const r = gate(a, { ...ready(4), approvals: t('in_review') })
    assert.deepEqual([r.allowed, r.executeNow], [true, false])
    assert.match(r.needs[0], /review period until 2026-06-01T01:00:00.000Z/)
    assert.deepEqual(gate(a, { ...ready(4), approvals: t('cancelled') }).allowed, false)
    assert.deepEqual(gate(a, { ...ready(4), approvals: t('expired') }).executeNow, false)
    assert.deepEqual(gate(a, { ...ready(4), approvals: t('approved') }).executeNow, true)
    assert.deepEqual(gate(SAMPLE[Tier.DEPLOY_MINOR], { ...ready(3), approvals: t('approved', Tier.DEPLOY_MINOR) }).executeNow, true)
  })
})

// ---------------------------------------------------------------- tallies

describe('governance motions: tallies', function () {
  this.timeout(20_000)
  let keys: PrivateKey[]
  let config: GovernanceConfig
  let hexes: string[]
  const minor = (): Motion => createMotion(SAMPLE[Tier.DEPLOY_MINOR], PEER, T0, 'n1')
  const major = (): Motion => createMotion(SAMPLE[Tier.DEPLOY_MAJOR], PEER, T0, 'n2')
  const votes = (...v: Array<[number, boolean, number]>): Map<string, VoteRecord> =>
    new Map(v.map(([i, approve, atMs], n) => [hexes[i], { version: n + 1, approve, atMs }]))

  before(async () => {
    keys = await Promise.all([0, 1, 2, 3].map(async () => await generateKeyPair('Ed25519')))
    hexes = keys.map(k => keyHex(k.publicKey.raw))
    config = validateConfig({ meshId: 'tally-mesh', keyholders: keys.slice(0, 3).map(k => ({ publicKey: k.publicKey.raw })), thresholds: defaultThresholds(3), reviewPeriodMs: DAY, revertOnHalt: 3 })
  })

  it('lower tiers need no votes', () => {
    for (const tier of [Tier.READ_ONLY, Tier.SUGGEST, Tier.SANDBOX_TEST]) {
      const t = tally(createMotion(SAMPLE[tier], PEER, T0), undefined, config, T0)
      assert.deepEqual([t.state, t.needed], ['approved', 0])
    }
  })

  it('2-of-3: every subset of the 3 keyholders, approved exactly for subsets of size ≥ 2 (signed VOTEs through GovernanceState)', async () => {
    const m = minor()
    for (let subset = 0; subset < 8; subset++) {
      const st = new GovernanceState(config, undefined, () => T0)
      const members = [0, 1, 2].filter(i => (subset & (1 << i)) !== 0)
      for (const i of members) {
        const r = await st.apply(await createEnvelope(voteMessage(m, true, { meshId: config.meshId, version: 1, issuedAtMs: T0 }), [keys[i]]))
        assert.ok(r.accepted)
      }
      const t = tally(m, st.votes.get(motionIdHex(m)), config, T0)
      assert.equal(t.approvals, members.length)
      assert.deepEqual(t.approvers.sort(), members.map(i => hexes[i]).sort())
      assert.equal(t.state, members.length >= 2 ? 'approved' : 'pending', `subset {${members.join(',')}}`)
    }
  })

  it('2-of-3 with cancel 2: every approve / reject / abstain assignment', () => {
    const m = minor()
    for (let code = 0; code < 27; code++) {
      const choice = [0, 1, 2].map(i => Math.floor(code / 3 ** i) % 3) // 0 abstain, 1 approve, 2 reject
      const v = votes(...choice.flatMap((c, i): Array<[number, boolean, number]> => c === 0 ? [] : [[i, c === 1, T0]]))
      const approvals = choice.filter(c => c === 1).length
      const rejections = choice.filter(c => c === 2).length
      const t = tally(m, v, config, T0)
      assert.equal(t.state, rejections >= 2 ? 'cancelled' : approvals >= 2 ? 'approved' : 'pending', choice.join())
      assert.deepEqual([t.approvals, t.rejections], [approvals, rejections])
    }
  })

  it('counts only keyholders of the current config', () => {
    const m = minor()
    const v = votes([0, true, T0], [3, true, T0], [3, false, T0])
    assert.equal(tally(m, v, config, T0).state, 'pending')
    // after a keyholder change that adds key 3 and drops key 0
    const next = validateConfig({ ...config, keyholders: [1, 2, 3].map(i => ({ publicKey: keys[i].publicKey.raw })) })
    const t = tally(m, votes([0, true, T0], [1, true, T0], [3, true, T0]), next, T0)
    assert.deepEqual([t.approvals, t.state], [2, 'approved'])
    assert.ok(!t.approvers.includes(hexes[0]))
  })

  it('a motion declaring a lower tier than its action is tallied at the action\'s tier', () => {
    const m = { ...major(), tier: Tier.SUGGEST }
    const t = tally(m, votes([0, true, T0], [1, true, T0]), config, T0)
    assert.deepEqual([t.tier, t.needed, t.state], [Tier.DEPLOY_MAJOR, 3, 'pending'])
  })

  it('deploy-major: full vote, in review until quorum + 24 h (injected clock), approved at 24 h', () => {
    const m = major()
    const v = votes([0, true, T0], [1, true, T0 + HOUR], [2, true, T0 + 2 * HOUR])
    const quorumAt = T0 + 2 * HOUR
    const r = tally(m, v, config, quorumAt + 23 * HOUR + 59 * MIN)
    assert.deepEqual([r.state, r.quorumAtMs, r.reviewEndsAtMs], ['in_review', quorumAt, quorumAt + DAY])
    assert.equal(tally(m, v, config, quorumAt + DAY - 1).state, 'in_review')
    assert.equal(tally(m, v, config, quorumAt + DAY).state, 'approved')
    assert.equal(gate(m.action, { phase: 4, halted: false, readOnly: false, now: quorumAt + DAY - 1, approvals: tally(m, v, config, quorumAt + DAY - 1) }).executeNow, false)
    assert.equal(gate(m.action, { phase: 4, halted: false, readOnly: false, now: quorumAt + DAY, approvals: tally(m, v, config, quorumAt + DAY) }).executeNow, true)
  })

  it('deploy-major: never approved by waiting without the full vote', () => {
    const m = major()
    const v = votes([0, true, T0], [1, true, T0])
    for (let t = T0; t < T0 + 30 * DAY; t += 6 * HOUR) assert.notEqual(tally(m, v, config, t).state, 'approved', new Date(t).toISOString())
    assert.equal(tally(m, v, config, T0 + DAY).state, 'pending')
    assert.equal(tally(m, v, config, T0 + 8 * DAY).state, 'pending') // lapsed approvals, never a quorum
  })

  it('deploy-major: 2 rejections during the review cancel it (signed VOTEs, injected clock)', async () => {
    const m = major()
    let now = T0
    const st = new GovernanceState(config, undefined, () => now)
    const cast = async (i: number, version: number, approve: boolean): Promise<void> => {
      const r = await st.apply(await createEnvelope(voteMessage(m, approve, { meshId: config.meshId, version, issuedAtMs: now }), [keys[i]]))
      assert.ok(r.accepted, r.accepted ? '' : r.reason)
    }
    for (const i of [0, 1, 2]) await cast(i, 1, true)
    now += 12 * HOUR
    assert.equal(tally(m, st.votes.get(motionIdHex(m)), config, now).state, 'in_review')
    await cast(0, 2, false)
    assert.equal(tally(m, st.votes.get(motionIdHex(m)), config, now).state, 'pending', 'one rejection: no quorum, not cancelled')
    await cast(1, 2, false)
    for (const later of [0, 12 * HOUR, 3 * DAY]) assert.equal(tally(m, st.votes.get(motionIdHex(m)), config, now + later).state, 'cancelled')
  })

  it('approvals lapse 7 days after their atMs', () => {
    const m = minor()
    const v = votes([0, true, T0], [1, true, T0 + DAY])
    assert.equal(tally(m, v, config, T0 + APPROVAL_TTL_MS - 1).state, 'approved')
    const t = tally(m, v, config, T0 + APPROVAL_TTL_MS)
    assert.deepEqual([t.state, t.approvals, t.approvers], ['expired', 1, [hexes[1]]])
    // a fresh approval (a higher vote version) revives it
    const again = new Map(v)
    again.set(hexes[0], { version: 3, approve: true, atMs: T0 + APPROVAL_TTL_MS })
    assert.equal(tally(m, again, config, T0 + APPROVAL_TTL_MS).state, 'approved')
    // deploy-major: the review cannot outlive the approvals
    const mj = major()
    const vj = votes([0, true, T0], [1, true, T0], [2, true, T0])
    assert.equal(tally(mj, vj, config, T0 + DAY).state, 'approved')
    assert.equal(tally(mj, vj, config, T0 + APPROVAL_TTL_MS).state, 'expired')
  })

  it('rejections do not lapse', () => {
    assert.equal(tally(minor(), votes([0, false, T0], [1, false, T0]), config, T0 + 365 * DAY).state, 'cancelled')
  })
})

// ---------------------------------------------------------------- change log

describe('governance change log', () => {
  let dir: string
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'meshllm-changelog-')) })
  afterEach(() => { rmSync(dir, { recursive: true, force: true }) })

  const fill = (log: ChangeLog, n: number, undone: string[], failing = new Set<string>()): void => {
    for (let i = 1; i <= n; i++) {
      const id = `c${i}`
      log.record({ id, description: `change ${i}`, tier: Tier.DEPLOY_MINOR, appliedAtMs: T0 + i }, async () => {
        await new Promise(resolve => setTimeout(resolve, 1))
        if (failing.has(id)) throw new Error(`cannot undo ${id}`)
        undone.push(id)
      })
    }
  }

  it('revertLast(3) undoes the newest 3, newest first, and marks them', async () => {
    const undone: string[] = []
    const log = new ChangeLog(undefined, () => T0 + 100)
    fill(log, 5, undone)
    const r = await log.revertLast(3)
    assert.deepEqual(r, { reverted: ['c5', 'c4', 'c3'], failed: [] })
    assert.deepEqual(undone, ['c5', 'c4', 'c3'])
    assert.deepEqual(log.entries().map(e => e.revertedAtMs ?? null), [null, null, T0 + 100, T0 + 100, T0 + 100])
    assert.deepEqual((await log.revertLast(3)).reverted, ['c2', 'c1'], 'reverted entries are not reverted twice')
    assert.deepEqual(await log.revertLast(3), { reverted: [], failed: [] })
    assert.deepEqual(await log.revertLast(0), { reverted: [], failed: [] })
  })

  it('an undo that throws is reported, not fatal', async () => {
    const undone: string[] = []
    const log = new ChangeLog()
    fill(log, 4, undone, new Set(['c3']))
    const r = await log.revertLast(3)
    assert.deepEqual(r.reverted, ['c4', 'c2'])
    assert.deepEqual(r.failed, [{ id: 'c3', error: 'cannot undo c3' }])
    assert.equal(log.entries()[2].revertError, 'cannot undo c3')
    assert.equal(log.entries()[2].revertedAtMs, undefined)
  })

  it('on HALT: reverts config.revertOnHalt changes; concurrent calls do not revert twice', async () => {
    const undone: string[] = []
    const log = new ChangeLog()
    fill(log, 5, undone)
    const [a, b] = await Promise.all([revertOnHalt(log, { revertOnHalt: 3 }), revertOnHalt(log, { revertOnHalt: 3 })])
    assert.deepEqual(a.reverted, ['c5', 'c4', 'c3'])
    assert.deepEqual(b.reverted, ['c2', 'c1'])
    assert.deepEqual(undone, ['c5', 'c4', 'c3', 'c2', 'c1'])
  })

  it('persists entries; after a restart an entry without a re-attached undo is reported', async () => {
    const file = join(dir, 'changes.json')
    const log = new ChangeLog(file)
    fill(log, 3, [])
    assert.throws(() => log.record({ id: 'c1', description: 'again', tier: Tier.SUGGEST, appliedAtMs: T0 }, () => {}), /already recorded/)
    await log.revertLast(1)
    const log2 = new ChangeLog(file)
    assert.deepEqual(log2.entries().map(e => [e.id, e.revertedAtMs != null]), [['c1', false], ['c2', false], ['c3', true]])
    const undone: string[] = []
    log2.attachUndo('c1', () => { undone.push('c1') })
    const r = await log2.revertLast(3)
    assert.deepEqual(r.reverted, ['c1'])
    assert.deepEqual(r.failed.map(f => f.id), ['c2'])
    assert.match(r.failed[0].error, /no undo/)
    assert.deepEqual(new ChangeLog(file).entries().map(e => e.revertedAtMs != null), [true, false, true])
  })
})
