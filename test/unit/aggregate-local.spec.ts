/* The 'local' tail: the router's own model's distribution as each step's tail prior (src/aggregate/prior.ts localTailPrior, aggregate.ts). */
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { aggregate, argmax, probabilityOf, sparseProbability, localTailPrior, tailPriorFromWeights, AggregationError } from '../../src/aggregate/index.js'
import type { SparseDist, WeightedDist } from '../../src/aggregate/index.js'
import { LOCAL_HEAD } from '../../src/aggregate/prior.js'
import { runs } from '../helpers/fuzz.js'

const RUNS = { numRuns: runs(40) }

function makeDist (ids: number[], logits: number[], tail: number): SparseDist {
  const mx = Math.max(...logits)
  const ws = logits.map(l => Math.exp(l - mx))
  const s = ws.reduce((a, b) => a + b, 0)
  return { ids: Uint32Array.from(ids), logprobs: Float32Array.from(ws, w => Math.log(w / s * (1 - tail))), tailMass: tail }
}

const distArb = (V: number): fc.Arbitrary<SparseDist> =>
  fc.uniqueArray(fc.nat(V - 1), { minLength: 1, maxLength: 40 }).chain(ids =>
    fc.tuple(fc.array(fc.double({ min: -8, max: 8, noNaN: true }), { minLength: ids.length, maxLength: ids.length }), fc.double({ min: 0.01, max: 0.6, noNaN: true }))
      .map(([logits, tail]) => makeDist(ids, logits, tail)))

/** a model-like distribution over V tokens: log-normal weights, a few very heavy ids */
const localArb = (V: number): fc.Arbitrary<Float64Array> =>
  fc.tuple(fc.integer({ min: 1, max: 2 ** 31 - 1 }), fc.double({ min: 0.5, max: 6, noNaN: true })).map(([seed, spread]) => {
    let x = seed
    const rnd = (): number => { x = (x * 48271) % 2147483647; return x / 2147483647 }
    const q = new Float64Array(V)
    for (let t = 0; t < V; t++) q[t] = Math.exp(spread * Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd()))
    return q
  })

const V = 6000 // more ids than LOCAL_HEAD: the head is partial

describe("aggregate: the 'local' tail", () => {
  it('localTailPrior orders exactly its head: sorted, no id outside it heavier than the bound, none in it lighter (fast-check)', () => {
    fc.assert(fc.property(localArb(V), q => {
      const p = localTailPrior(q)
      assert.ok(p.head != null && p.headBound != null, 'a partial head for V > LOCAL_HEAD')
      // at most LOCAL_HEAD ids, unless the ids within a quarter nat of the heaviest are more
      const top = p.weights[p.head[0]]
      assert.ok(p.head.length >= 1 && (p.head.length <= LOCAL_HEAD || p.head.every(t => p.weights[t] >= top * Math.exp(-0.25) * (1 - 1e-12))), `head of ${p.head.length}`)
      const inHead = new Set(p.head)
      for (let i = 1; i < p.head.length; i++) assert.ok(p.weights[p.head[i - 1]] >= p.weights[p.head[i]])
      for (let t = 0; t < V; t++) {
        if (inHead.has(t)) assert.ok(p.weights[t] >= p.headBound, `id ${t} in the head`)
        else assert.ok(p.weights[t] <= p.headBound, `id ${t} outside the head`)
      }
      // the same weights as the full prior
      const full = tailPriorFromWeights(q)
      for (let t = 0; t < V; t += 97) assert.equal(p.weights[t], full.weights[t])
    }), RUNS)
  })

  it('equals the bounded tail with the same prior fully sorted (the head shortcut changes nothing), with and without context (fast-check)', () => {
    fc.assert(fc.property(localArb(V), fc.array(fc.record({ dist: distArb(V), weight: fc.double({ min: 0.01, max: 10, noNaN: true }) }), { minLength: 1, maxLength: 4 }),
      fc.constantFrom('mixture' as const, 'product' as const, 'median' as const), fc.array(fc.nat(V - 1), { maxLength: 30 }), (q, inputs, rule, context) => {
        const head = localTailPrior(q)
        const full = tailPriorFromWeights(q)
        for (const ctx of [undefined, context]) {
          const a = aggregate(inputs, { vocabSize: V, rule, tail: 'local', prior: head, context: ctx })
          const b = ctx == null
            ? aggregate(inputs, { vocabSize: V, rule, tail: 'bounded', prior: full })
            : aggregate(inputs, { vocabSize: V, rule, tail: 'context', prior: full, context: ctx })
          let sum = 0
          for (let t = 0; t < V; t++) {
            const pa = probabilityOf(a, t)
            sum += pa
            assert.ok(Math.abs(pa - probabilityOf(b, t)) <= 1e-12 + 1e-9 * pa, `token ${t}`)
          }
          assert.ok(Math.abs(sum - 1) < 1e-9, `sum ${sum}`)
        }
      }), RUNS)
  })

  it("one expert: its listed probabilities and the greedy token are kept; its unlisted mass follows the local model's shape below the cap", () => {
    fc.assert(fc.property(localArb(V), distArb(V), (q, dist) => {
      // a frame whose most probable entry is also its least probable (one entry, or all equal)
      // ties with the unlisted ids capped at that value, and ties go to the lowest id: noted in
      // docs/aggregation.md; real frames list 256 distinct probabilities
      fc.pre(Math.max(...dist.logprobs) > Math.min(...dist.logprobs))
      const inputs: WeightedDist[] = [{ dist, weight: 1 }]
      const prior = localTailPrior(q)
      const agg = aggregate(inputs, { vocabSize: V, tail: 'local', prior })
      const uniform = aggregate(inputs, { vocabSize: V, tail: 'uniform' })
      assert.equal(argmax(agg), argmax(uniform))
      const listed = new Set(dist.ids)
      let minListed = Infinity
      for (const t of dist.ids) {
        assert.ok(Math.abs(probabilityOf(agg, t) - probabilityOf(uniform, t)) < 1e-9)
        minListed = Math.min(minListed, probabilityOf(agg, t))
      }
      // the cap binds where it can: (V − n) · least listed ≥ the tail (else the plain shape)
      let unlistedMass = 0
      for (let t = 0; t < V; t++) if (!listed.has(t)) unlistedMass += probabilityOf(agg, t)
      const feasible = (V - dist.ids.length) * minListed >= unlistedMass
      // unlisted ids under the cap: probability / q is one constant
      let ratio: number | undefined
      for (let t = 0; t < V; t++) {
        if (listed.has(t)) continue
        const p = probabilityOf(agg, t)
        if (feasible) assert.ok(p <= minListed * (1 + 1e-9), `unlisted ${t} above the least listed`)
        if (!feasible || p < minListed * (1 - 1e-9)) {
          const r = p / prior.weights[t] // q, floored at 1e-12 of its largest
          ratio ??= r
          assert.ok(Math.abs(r - ratio) <= 1e-6 * ratio, `shape at ${t}`)
        }
      }
    }), RUNS)
  })

  it("sparseProbability (the 'online' weights' read of a frame) is the one-expert uniform-tail aggregate's probability (fast-check)", () => {
    fc.assert(fc.property(distArb(300), fc.nat(299), (dist, token) => {
      const want = probabilityOf(aggregate([{ dist, weight: 1 }], { vocabSize: 300 }), token)
      assert.ok(Math.abs(sparseProbability(dist, token, 300) - want) <= 1e-12 + 1e-9 * want)
    }), { numRuns: runs(200) })
  })

  it('needs the local distribution', () => {
    const dist = makeDist([1, 2], [0, 1], 0.2)
    assert.throws(() => aggregate([{ dist, weight: 1 }], { vocabSize: 10, tail: 'local' }), AggregationError)
  })
})
