/* Motions: canonical encoding, strict bounded decoding, motion ids. */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import fc from 'fast-check'
import { MAX_MOTION_BYTES, MOTION_DOMAIN, canonicalJson, createMotion, decodeMotion, encodeMotion, motionId, type Motion } from '../../src/governance/motions.js'
import { Tier } from '../../src/governance/tiers.js'
import { runs } from '../helpers/fuzz.js'

const PEER = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'
const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s)
const base: Motion = { action: { type: 'adjust_k', params: { k: 4 } }, tier: Tier.SANDBOX_TEST, proposer: PEER, proposedAtMs: 1_700_000_000_000, nonce: 'abc' }

const jsonValue: fc.Arbitrary<unknown> = fc.jsonValue({ maxDepth: 3 }).map(v => JSON.parse(JSON.stringify(v))) // no -0
const motionArb: fc.Arbitrary<Motion> = fc.record({
  action: fc.record({ type: fc.string({ minLength: 1, maxLength: 64 }), params: jsonValue }, { requiredKeys: ['type'], noNullPrototype: true }),
  tier: fc.integer({ min: 0, max: 4 }),
  proposer: fc.string({ minLength: 1, maxLength: 128 }),
  proposedAtMs: fc.maxSafeNat(),
  nonce: fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/)
}, { noNullPrototype: true }).filter(m => canonicalJson(m).length < 6000)

describe('governance motions: encoding', () => {
  it('canonical form: sorted keys, no whitespace; id = sha256(domain | encoding)', () => {
    const text = '{"action":{"params":{"k":4},"type":"adjust_k"},"nonce":"abc","proposedAtMs":1700000000000,"proposer":"' + PEER + '","tier":2}'
    assert.equal(Buffer.from(encodeMotion(base)).toString(), text)
    const id = createHash('sha256').update(MOTION_DOMAIN).update(text).digest('hex')
    assert.equal(Buffer.from(motionId(base)).toString('hex'), id)
    assert.equal(MOTION_DOMAIN, 'meshllm-motion-v1\u0000')
  })

  it('round trip and key-order independence (fast-check)', () => {
    fc.assert(fc.property(motionArb, m => {
      const b = encodeMotion(m)
      assert.deepEqual(decodeMotion(b), JSON.parse(JSON.stringify(m)))
      const reordered = { tier: m.tier, nonce: m.nonce, proposer: m.proposer, proposedAtMs: m.proposedAtMs, action: { params: m.action.params, type: m.action.type } }
      assert.deepEqual(motionId(reordered), motionId(m))
    }), { numRuns: runs(1000) })
  })

  it('distinct motions have distinct ids (nonce, time, params)', () => {
    const ids = new Set([base, { ...base, nonce: 'abd' }, { ...base, proposedAtMs: 1 }, { ...base, action: { type: 'adjust_k', params: { k: 5 } } }, { ...base, tier: Tier.DEPLOY_MAJOR }]
      .map(m => Buffer.from(motionId(m)).toString('hex')))
    assert.equal(ids.size, 5)
  })

  it('createMotion takes the tier from the catalogue', () => {
    assert.equal(createMotion({ type: 'ban_expert', params: { expert: PEER, reason: 'x' } }, PEER, 1).tier, Tier.DEPLOY_MINOR)
    assert.equal(createMotion({ type: 'something new' }, PEER, 1).tier, Tier.DEPLOY_MAJOR)
    assert.notEqual(createMotion(base.action, PEER, 1).nonce, createMotion(base.action, PEER, 1).nonce)
  })

  it('decoding is strict', () => {
    const good = Buffer.from(encodeMotion(base)).toString()
    const bad: Array<[string | Uint8Array, RegExp]> = [
      [good.replace('{"action"', '{ "action"'), /canonical/],
      [good.replace('"tier":2}', '"tier":2}\n'), /canonical/],
      [good.replace('"nonce":"abc",', '"nonce":"abc","nonce":"abd",'), /canonical/], // duplicate key
      [good.replace('"tier":2', '"tier":2.0'), /canonical/],
      [good.replace('"k":4', '"k":4e0'), /canonical/],
      [good.replace('"nonce":"abc"', '"nonce":"a\\u0062c"'), /canonical/],
      ['{"action":{"type":"adjust_k"},"nonce":"abc","proposer":"p","tier":2}', /fields must be/],
      [good.replace('"tier":2}', '"tier":2,"zz":1}'), /fields must be/],
      [good.replace('"type":"adjust_k"}', '"type":"adjust_k","x":1}'), /action fields/],
      [good.replace('"tier":2', '"tier":5'), /tier must be 0–4/],
      [good.replace('"tier":2', '"tier":"2"'), /tier must be 0–4/],
      [good.replace('"nonce":"abc"', '"nonce":"a c"'), /nonce/],
      [good.replace('"nonce":"abc"', '"nonce":""'), /nonce/],
      [good.replace('1700000000000', '-1'), /proposedAtMs/],
      [good.replace('1700000000000', '9007199254740993'), /proposedAtMs/],
      [good.replace('"proposer":"' + PEER + '"', '"proposer":""'), /proposer/],
      [good.replace('"type":"adjust_k"', '"type":""'), /action type/],
      ['[]', /not an object/],
      ['null', /not an object/],
      ['{', /not UTF-8 JSON/],
      [Uint8Array.from([...utf8(good.slice(0, 20)), 0xff, ...utf8(good.slice(20))]), /not UTF-8 JSON/],
      [Uint8Array.from([0xef, 0xbb, 0xbf, ...utf8(good)]), /not UTF-8 JSON/], // BOM
      [good.replace('"k":4', `"k":"${'x'.repeat(MAX_MOTION_BYTES)}"`), /exceeds 8192/]
    ]
    for (const [input, re] of bad) {
      const bytes = typeof input === 'string' ? utf8(input) : input
      assert.throws(() => decodeMotion(bytes), (err: any) => err.name === 'MotionError' && re.test(err.message), `${Buffer.from(bytes).toString().slice(0, 120)} → ${re}`)
    }
    assert.deepEqual(decodeMotion(utf8(good)), base)
  })

  it('encoding refuses what JSON cannot carry canonically, and motions over 8 KiB', () => {
    for (const params of [{ x: NaN }, { x: Infinity }, { x: new Date(0) }, { x: new Uint8Array(2) }, { x: 1n }, { x: () => 1 }]) {
      assert.throws(() => encodeMotion({ ...base, action: { type: 't', params } }), { name: 'MotionError' }, String(Object.values(params)[0]))
    }
    assert.throws(() => encodeMotion({ ...base, action: { type: 't', params: { x: 'y'.repeat(MAX_MOTION_BYTES) } } }), { name: 'MotionError', message: /exceeds 8192/ })
  })

  it('decoding never throws anything but MotionError (fast-check)', () => {
    fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }), fc.json().map(utf8), motionArb.map(m => { const b = encodeMotion(m); return b.map((x, i) => i === b.length >> 1 ? x ^ 1 : x) })), b => {
      try { decodeMotion(b) } catch (err: any) { assert.equal(err.name, 'MotionError', err.message) }
    }), { numRuns: runs(2000) })
  })
})
