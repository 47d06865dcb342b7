/**
 * The generation-options schema (src/router/options.ts): any input either validates to values
 * inside the documented bounds or is refused with InvalidGenerateOptionError (by name, with the
 * option named); every bound is accepted and one step beyond it refused.
 */
import assert from 'node:assert/strict'
import fc from 'fast-check'
import {
  GENERATE_LIMITS, GenerateOptionsSchema, InvalidGenerateOptionError, POLICIES, RULES, STOP_LIMITS, TAILS, WEIGHTINGS,
  validateGenerateOptions, type GenerateOptionValues, type ValidGenerateOptions
} from '../../src/router/options.js'
import { runs } from '../helpers/fuzz.js'

const L = GENERATE_LIMITS

function assertInBounds (v: ValidGenerateOptions, maxTokens = L.maxTokens[1]): void {
  const int = (x: number | undefined, [lo, hi]: readonly [number, number]): void => {
    if (x !== undefined) assert.ok(Number.isSafeInteger(x) && x >= lo && x <= hi, `${x} in [${lo}, ${hi}]`)
  }
  int(v.k, L.k)
  int(v.maxTokens, [L.maxTokens[0], maxTokens])
  int(v.topK, L.topK)
  int(v.seed, L.seed)
  if (v.temperature !== undefined) assert.ok(Number.isFinite(v.temperature) && v.temperature >= 0 && v.temperature <= 10)
  if (v.topP !== undefined) assert.ok(Number.isFinite(v.topP) && v.topP > 0 && v.topP <= 1)
  if (v.stop !== undefined) assert.ok(v.stop.length <= STOP_LIMITS.count && v.stop.every(s => typeof s === 'string' && s.length >= 1 && s.length <= STOP_LIMITS.length))
  if (v.rule !== undefined) assert.ok(RULES.includes(v.rule))
  if (v.weighting !== undefined) assert.ok((WEIGHTINGS as readonly string[]).includes(v.weighting))
  if (v.tail !== undefined) assert.ok(TAILS.includes(v.tail))
  if (v.policy !== undefined) assert.ok(POLICIES.includes(v.policy))
  if (v.reputation !== undefined) assert.equal(typeof v.reputation, 'boolean')
}

const anyValue = fc.oneof(
  fc.integer({ min: -10, max: 300 }),
  fc.double(),
  fc.constantFrom(Number.NaN, Infinity, -Infinity, 0, -0, 1, 64, 65, 256, 257, 10, 10.000001, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER + 2, 2 ** 64),
  fc.string({ maxLength: 12 }),
  fc.constantFrom(...RULES, ...WEIGHTINGS, ...TAILS, ...POLICIES, true, false, null, undefined),
  fc.array(fc.string({ maxLength: 300 }), { maxLength: 20 }),
  fc.array(fc.oneof(fc.string({ maxLength: 4 }), fc.integer()), { maxLength: 4 }),
  fc.object({ maxDepth: 1 })
)

const KEYS = ['k', 'maxTokens', 'temperature', 'topK', 'topP', 'seed', 'stop', 'rule', 'weighting', 'tail', 'policy', 'reputation'] as const
const NAMES = ['k', 'max_tokens', 'temperature', 'top_k', 'top_p', 'seed', 'stop', 'rule', 'weighting', 'tail', 'policy', 'reputation']
/** values inside the bounds, so that whole inputs are often valid too */
const VALID: Record<(typeof KEYS)[number], fc.Arbitrary<unknown>> = {
  k: fc.integer({ min: 1, max: 64 }),
  maxTokens: fc.integer({ min: 1, max: 5000 }),
  temperature: fc.double({ min: 0, max: 10, noNaN: true }),
  topK: fc.integer({ min: 0, max: 256 }),
  topP: fc.double({ min: Number.MIN_VALUE, max: 1, noNaN: true }),
  seed: fc.maxSafeNat(),
  stop: fc.array(fc.string({ minLength: 1, maxLength: 256 }), { maxLength: 16 }),
  rule: fc.constantFrom(...RULES),
  weighting: fc.constantFrom(...WEIGHTINGS),
  tail: fc.constantFrom(...TAILS),
  policy: fc.constantFrom(...POLICIES),
  reputation: fc.boolean()
}
const inputArb: fc.Arbitrary<GenerateOptionValues> = fc.record(Object.fromEntries(KEYS.map(k => [k, fc.oneof({ arbitrary: VALID[k], weight: 19 }, { arbitrary: anyValue, weight: 1 })])) as Record<(typeof KEYS)[number], fc.Arbitrary<unknown>>, { requiredKeys: [] })

describe('generation options: one schema', () => {
  it('random inputs: valid inside the documented bounds, or InvalidGenerateOptionError naming the option', () => {
    let valid = 0
    let refused = 0
    fc.assert(fc.property(inputArb, fc.option(fc.integer({ min: 1, max: 4096 }), { nil: undefined }), (o, limit) => {
      let v: ValidGenerateOptions
      try {
        v = validateGenerateOptions(o, { maxTokens: limit })
      } catch (err: any) {
        assert.equal(err.name, 'InvalidGenerateOptionError', String(err))
        assert.ok(NAMES.includes(err.option), err.option)
        assert.ok(err.message.length > 0)
        refused++
        return
      }
      valid++
      assertInBounds(v, limit)
      // what comes out is what went in: validation never changes a value
      for (const k of KEYS) if (v[k] !== undefined) assert.deepEqual(v[k], o[k])
    }), { numRuns: runs(5000) })
    assert.ok(valid > 0 && refused > 0, `both outcomes seen (${valid} valid, ${refused} refused)`)
  })

  it('a remote object whose toString is not a function is refused by name, not a TypeError (found by the property above)', () => {
    for (const key of KEYS) {
      assert.throws(() => validateGenerateOptions({ [key]: { toString: {} } }), (err: any) => err.name === 'InvalidGenerateOptionError', key)
    }
  })

  const bounds: Array<[keyof GenerateOptionValues, string, unknown, unknown]> = [
    ['k', 'k', L.k[0], L.k[0] - 1],
    ['k', 'k', L.k[1], L.k[1] + 1],
    ['maxTokens', 'max_tokens', L.maxTokens[0], L.maxTokens[0] - 1],
    ['maxTokens', 'max_tokens', L.maxTokens[1], L.maxTokens[1] + 1],
    ['temperature', 'temperature', L.temperature[0], -Number.EPSILON],
    ['temperature', 'temperature', L.temperature[1], 10.000001],
    ['topK', 'top_k', L.topK[0], L.topK[0] - 1],
    ['topK', 'top_k', L.topK[1], L.topK[1] + 1],
    ['topP', 'top_p', Number.MIN_VALUE, 0],
    ['topP', 'top_p', L.topP[1], 1.000001],
    ['seed', 'seed', L.seed[0], L.seed[0] - 1],
    ['seed', 'seed', L.seed[1], L.seed[1] + 1],
    ['stop', 'stop', new Array(STOP_LIMITS.count).fill('x'), new Array(STOP_LIMITS.count + 1).fill('x')],
    ['stop', 'stop', ['x'.repeat(STOP_LIMITS.length)], ['x'.repeat(STOP_LIMITS.length + 1)]],
    ['stop', 'stop', ['x'], ['']]
  ]
  for (const [key, name, ok, over] of bounds) {
    it(`${name}: ${Array.isArray(ok) ? `${ok.length} × ${String(ok[0]).length} chars` : String(ok)} is accepted, ${Array.isArray(over) ? `${over.length} × ${String(over[0]).length} chars` : String(over)} refused`, () => {
      assert.deepEqual(validateGenerateOptions({ [key]: ok })[key], ok)
      assert.throws(() => validateGenerateOptions({ [key]: over }), (err: any) => err.name === 'InvalidGenerateOptionError' && err.option === name)
    })
  }

  it("an interface's max_tokens limit: the limit is accepted, one more refused, under the interface's name", () => {
    assert.equal(validateGenerateOptions({ maxTokens: 2048 }, { maxTokens: 2048 }).maxTokens, 2048)
    assert.throws(() => validateGenerateOptions({ maxTokens: 2049 }, { maxTokens: 2048 }), { name: 'InvalidGenerateOptionError', option: 'max_tokens' })
    assert.throws(() => validateGenerateOptions({ maxTokens: 2049 }, { maxTokens: 2048, maxTokensName: 'max_completion_tokens' }), { name: 'InvalidGenerateOptionError', option: 'max_completion_tokens' })
  })

  it('mistyped and unknown values are refused by name; undefined is the default', () => {
    for (const [key, bad] of [['k', '3'], ['k', 1.5], ['temperature', '0.5'], ['topP', null], ['rule', 'vote'], ['rule', 3], ['weighting', 'nll'], ['tail', 'fat'], ['policy', 'cheapest'], ['stop', 'x'], ['stop', [1]], ['reputation', 'yes']] as const) {
      assert.throws(() => validateGenerateOptions({ [key]: bad }), InvalidGenerateOptionError, `${key} ${String(bad)}`)
    }
    assert.deepEqual(validateGenerateOptions({}), {})
    assert.deepEqual(validateGenerateOptions({ k: undefined, rule: undefined }), { k: undefined, rule: undefined })
  })

  it('the first bad option in the schema order is the one reported, with the same message for the same value', () => {
    const a = (() => { try { validateGenerateOptions({ temperature: 11, k: 0 }) } catch (err: any) { return err } })()
    assert.equal(a.option, 'k')
    const b = (() => { try { validateGenerateOptions({ temperature: 11 }) } catch (err: any) { return err } })()
    const c = (() => { try { validateGenerateOptions({ temperature: 11, seed: 1 }, { maxTokens: 5 }) } catch (err: any) { return err } })()
    assert.equal(b.option, 'temperature')
    assert.equal(b.message, c.message)
  })

  it('the exported schema is the same check (zod safeParse)', () => {
    assert.equal(GenerateOptionsSchema.safeParse({ topP: 0 }).success, false)
    assert.equal(GenerateOptionsSchema.safeParse({ topP: 1, k: 64, stop: ['a'] }).success, true)
  })
})
