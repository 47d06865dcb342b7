/**
 * The governance file (src/governance/config.ts) refuses unknown keys — at the top level, in
 * `thresholds` and in a keyholder entry — with GovernanceConfigError, instead of letting a
 * misspelled key silently mean its default; what it writes (configToJson) it reads back.
 */
import assert from 'node:assert/strict'
import { DEV_GOVERNANCE_JSON, configDigest, configToJson, defaultConfig, parseConfig } from '../../src/governance/config.js'

const keys = DEV_GOVERNANCE_JSON.keyholders.map(h => h.publicKey)
const base = { meshId: 'm', keyholders: keys }
const parse = (j: unknown): ReturnType<typeof parseConfig> => parseConfig(JSON.stringify(j))

describe('governance file: unknown keys are refused', () => {
  it('a misspelled threshold key is GovernanceConfigError (not a silent default)', () => {
    assert.throws(() => parse({ ...base, thresholds: { deploy_major: 2 } }), { name: 'GovernanceConfigError' })
    assert.throws(() => parse({ ...base, thresholds: { resume: 2, halts: 1 } }), { name: 'GovernanceConfigError' })
    // every known threshold key is accepted
    const c = parse({ ...base, thresholds: { halt: 1, resume: 2, deployMinor: 2, deployMajor: 3, phase: 3, keyholders: 3, cancel: 2 } })
    assert.equal(c.thresholds.deployMajor, 3)
  })

  it('a misspelled top-level key is GovernanceConfigError', () => {
    for (const bad of [{ reviewPeriodHour: 1 }, { revertOnHault: 1 }, { meshID: 'x' }, { threshold: { halt: 1 } }]) {
      assert.throws(() => parse({ ...base, ...bad }), { name: 'GovernanceConfigError' }, JSON.stringify(bad))
    }
    const c = parse({ ...base, reviewPeriodHours: 2, revertOnHalt: 1 })
    assert.equal(c.reviewPeriodMs, 2 * 3_600_000)
    assert.equal(c.revertOnHalt, 1)
  })

  it('a keyholder entry with an unknown key, or without a string publicKey, is GovernanceConfigError; its name is kept', () => {
    assert.throws(() => parse({ meshId: 'm', keyholders: [{ name: 'a', publickey: keys[0] }] }), { name: 'GovernanceConfigError' })
    assert.throws(() => parse({ meshId: 'm', keyholders: [{ publicKey: keys[0], role: 'admin' }] }), { name: 'GovernanceConfigError' })
    assert.throws(() => parse({ meshId: 'm', keyholders: [42] }), { name: 'GovernanceConfigError' })
    assert.equal(parse({ meshId: 'm', keyholders: [{ name: 'a', publicKey: keys[0] }] }).keyholders[0].name, 'a')
  })

  it('wrong value types and shapes are GovernanceConfigError', () => {
    for (const bad of [{ keyholders: 'k' }, { thresholds: { halt: '1' } }, { thresholds: 3 }, { reviewPeriodHours: '24' }, { revertOnHalt: null }]) {
      assert.throws(() => parse({ ...base, ...bad }), { name: 'GovernanceConfigError' }, JSON.stringify(bad))
    }
    for (const bad of ['[]', 'null', '3', '{']) assert.throws(() => parseConfig(bad), { name: 'GovernanceConfigError' }, bad)
  })

  it('what configToJson writes is read back unchanged (the canonical form is a valid file)', () => {
    const c = defaultConfig()
    const back = parse(configToJson(c))
    assert.equal(configDigest(back), configDigest(c))
    assert.deepEqual(back.keyholders.map(k => k.name), c.keyholders.map(k => k.name))
  })
})
