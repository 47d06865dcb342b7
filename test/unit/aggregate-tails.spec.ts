/* Tail models (uniform, unigram, bounded), robust rules (median, trimmed), priors, perplexity weights. */
import assert from 'node:assert/strict'
import fc from 'fast-check'
import {
  aggregate, probabilityOf, tailPriorFromWeights, encodeTailPrior, decodeTailPrior, defaultTailPrior,
  perplexityWeights, DEFAULT_PERPLEXITY_BETA
} from '../../src/aggregate/index.js'
import type { Aggregated, AggregationRule, SparseDist, TailModel, TailPrior, WeightedDist } from '../../src/aggregate/index.js'
import { aggregateGeneral, BOUNDED_COLISTED } from '../../src/aggregate/general.js'
import { runs } from '../helpers/fuzz.js'

const RUNS = { numRuns: runs(300) }
const RULES: AggregationRule[] = ['mixture', 'product', 'median', 'trimmed']
const TAILS: TailModel[] = ['uniform', 'unigram', 'bounded']

function makeDist (ids: number[], logits: number[], tail: number): SparseDist {
  const mx = Math.max(...logits)
  const ws = logits.map(l => Math.exp(l - mx))
  const s = ws.reduce((a, b) => a + b, 0)
  return { ids: Uint32Array.from(ids), logprobs: Float32Array.from(ws, w => Math.log(w / s * (1 - tail))), tailMass: tail }
}

function distArb (V: number): fc.Arbitrary<SparseDist> {
  return fc.uniqueArray(fc.nat(V - 1), { minLength: 1, maxLength: Math.min(40, V) }).chain(ids =>
    fc.tuple(
      fc.array(fc.double({ min: -8, max: 8, noNaN: true }), { minLength: ids.length, maxLength: ids.length }),
      fc.oneof(fc.constant(0), fc.double({ min: 0, max: 0.6, noNaN: true }))
    ).map(([logits, tail]) => makeDist(ids, logits, ids.length === V ? 0 : tail)))
}

const priorArb = (V: number): fc.Arbitrary<TailPrior> =>
  fc.array(fc.oneof(fc.double({ min: 1e-6, max: 100, noNaN: true }), fc.constant(0)), { minLength: V, maxLength: V })
    .filter(w => w.some(x => x > 0))
    .map(w => tailPriorFromWeights(w, 'test'))

const caseArb = fc.constantFrom(3, 50, 300).chain(V => fc.record({
  V: fc.constant(V),
  rule: fc.constantFrom(...RULES),
  tail: fc.constantFrom(...TAILS),
  prior: priorArb(V),
  inputs: fc.array(fc.record({ dist: distArb(V), weight: fc.oneof(fc.constant(0), fc.constant(1), fc.double({ min: 1e-3, max: 1e3, noNaN: true })) }), { minLength: 1, maxLength: 5 })
    .filter(xs => xs.some(x => x.weight > 0))
}))

/** every token's probability through probabilityOf: ≥ 0, summing to 1 over the vocabulary */
function assertFullDistribution (agg: Aggregated, V: number): number[] {
  const ps = Array.from({ length: V }, (_, t) => probabilityOf(agg, t))
  for (const p of ps) assert.ok(p >= 0 && Number.isFinite(p), `p ${p}`)
  const sum = ps.reduce((a, b) => a + b, 0)
  assert.ok(Math.abs(sum - 1) < 1e-9, `sum ${sum}`)
  assert.equal(agg.restCount, V - agg.ids.length)
  // the invariant old consumers rely on: listed + restCount · restProb = 1
  const legacy = agg.probs.reduce((a, b) => a + b, 0) + agg.restCount * agg.restProb
  assert.ok(Math.abs(legacy - 1) < 1e-9, `legacy sum ${legacy}`)
  for (let i = 1; i < agg.ids.length; i++) assert.ok(agg.probs[i - 1] > agg.probs[i] || (agg.probs[i - 1] === agg.probs[i] && agg.ids[i - 1] < agg.ids[i]), 'sorted')
  return ps
}

const close = (a: number, b: number, rel = 1e-9, abs = 1e-12): boolean => Math.abs(a - b) <= rel * Math.abs(b) + abs

describe('aggregate: tails and robust rules', () => {
  it('every rule × tail gives a distribution over the whole vocabulary (fast-check)', () => {
    fc.assert(fc.property(caseArb, ({ V, rule, tail, prior, inputs }) => {
      assertFullDistribution(aggregate(inputs, { rule, vocabSize: V, tail, prior }), V)
    }), RUNS)
  })

  it('the general path equals the fast path for the uniform-tail mixture and product', () => {
    fc.assert(fc.property(caseArb, ({ V, inputs }) => {
      for (const rule of ['mixture', 'product'] as const) {
        const fast = aggregate(inputs, { rule, vocabSize: V })
        const gen = aggregateGeneral(inputs, { rule, vocabSize: V, tail: 'uniform' })
        for (let t = 0; t < V; t++) assert.ok(close(probabilityOf(gen, t), probabilityOf(fast, t), 1e-9, 1e-15), `${rule} token ${t}`)
      }
    }), RUNS)
  })

  it('unigram: one expert\'s unlisted tokens share its tail in proportion to the prior', () => {
    fc.assert(fc.property(fc.constantFrom(50, 300).chain(V => fc.tuple(fc.constant(V), distArb(V), priorArb(V))), ([V, dist, prior]) => {
      fc.pre(dist.tailMass > 0.01 && dist.ids.length < V)
      const agg = aggregate([{ dist, weight: 1 }], { vocabSize: V, tail: 'unigram', prior })
      const listed = new Set(dist.ids)
      const S = Array.from(dist.logprobs).reduce((a, lp) => a + Math.exp(lp), 0) + dist.tailMass
      let ratio: number | undefined
      let rest = 0
      for (let t = 0; t < V; t++) {
        if (listed.has(t)) continue
        const p = probabilityOf(agg, t)
        rest += p
        const r = p / prior.weights[t]
        if (ratio === undefined) ratio = r
        else assert.ok(close(r, ratio, 1e-9), `token ${t}: ${r} vs ${ratio}`)
      }
      assert.ok(close(rest, dist.tailMass / S, 1e-9))
    }), RUNS)
  })

  it('bounded: no unlisted token above the least probable listed one, when that is feasible', () => {
    fc.assert(fc.property(fc.constantFrom(50, 300).chain(V => fc.tuple(fc.constant(V), distArb(V), priorArb(V))), ([V, dist, prior]) => {
      const agg = aggregate([{ dist, weight: 1 }], { vocabSize: V, tail: 'bounded', prior })
      const ps = assertFullDistribution(agg, V)
      const S = Array.from(dist.logprobs).reduce((a, lp) => a + Math.exp(lp), 0) + (dist.ids.length < V ? dist.tailMass : 0)
      const cap = Math.min(...Array.from(dist.logprobs, lp => Math.exp(lp) / S))
      const listed = new Set(dist.ids)
      const unlisted = V - dist.ids.length
      if (unlisted * cap < dist.tailMass / S) return // infeasible: the plain prior shape
      for (let t = 0; t < V; t++) if (!listed.has(t)) assert.ok(ps[t] <= cap * (1 + 1e-9), `token ${t}: ${ps[t]} > cap ${cap}`)
    }), RUNS)
  })

  it('bounded: an id only another expert lists gets γ × this expert\'s least listed probability', () => {
    const V = 1000
    const prior = tailPriorFromWeights(Array.from({ length: V }, (_, i) => 1 / (i + 1)))
    const a = makeDist([1, 2, 3], [3, 2, 1], 0.3)
    const b = makeDist([1, 2, 9], [3, 2, 1], 0.3)
    const agg = aggregate([{ dist: a, weight: 1 }, { dist: b, weight: 1 }], { vocabSize: V, tail: 'bounded', prior })
    assertFullDistribution(agg, V)
    const capA = Math.exp(Math.min(...a.logprobs))
    const pB9 = Math.exp(b.logprobs[2])
    assert.ok(close(probabilityOf(agg, 9), 0.5 * BOUNDED_COLISTED * capA + 0.5 * pB9, 1e-6))
  })

  it('median and trimmed of K copies of one expert give that expert', () => {
    const V = 300
    const d = makeDist([5, 50, 120], [2, 1, -1], 0.2)
    const one = aggregate([{ dist: d, weight: 1 }], { vocabSize: V, rule: 'product' })
    for (const rule of ['median', 'trimmed'] as const) {
      const agg = aggregate([1, 2, 3].map(() => ({ dist: d, weight: 1 })), { vocabSize: V, rule })
      for (let t = 0; t < V; t++) assert.ok(close(probabilityOf(agg, t), probabilityOf(one, t), 1e-9), `${rule} token ${t}`)
    }
  })

  it('trimmed with trim 0 is the product rule', () => {
    fc.assert(fc.property(caseArb, ({ V, inputs }) => {
      const a = aggregate(inputs, { vocabSize: V, rule: 'trimmed', trim: 0 })
      const b = aggregate(inputs, { vocabSize: V, rule: 'product' })
      for (let t = 0; t < V; t++) assert.ok(close(probabilityOf(a, t), probabilityOf(b, t), 1e-8, 1e-15))
    }), { numRuns: runs(100) })
  })

  it('median resists one adversarial expert that the product rule obeys', () => {
    const V = 1000
    const honest = makeDist([10, 11, 12], [4, 1, 0], 0.05)
    const honest2 = makeDist([10, 11, 13], [4, 1, 0], 0.05)
    // the adversary lists junk with all its mass and no tail: a veto of token 10
    const adversary: SparseDist = { ids: Uint32Array.of(500, 501), logprobs: Float32Array.of(Math.log(0.5), Math.log(0.5)), tailMass: 0 }
    const inputs: WeightedDist[] = [honest, honest2, adversary].map(dist => ({ dist, weight: 1 }))
    const med = aggregate(inputs, { vocabSize: V, rule: 'median' })
    const prod = aggregate(inputs, { vocabSize: V, rule: 'product' })
    assert.equal(med.ids[0], 10)
    assert.ok(probabilityOf(med, 10) > 0.5)
    assert.ok(probabilityOf(prod, 10) < probabilityOf(prod, 500), 'the product rule lets one expert veto')
    // and the trimmed mean (25 % each side) keeps 10 far above the adversary's tokens
    const tr = aggregate(inputs, { vocabSize: V, rule: 'trimmed' })
    assert.ok(probabilityOf(tr, 10) > 10 * probabilityOf(tr, 500))
  })

  it('rejects unknown tails and rules, bad trims and mismatched priors', () => {
    const d = makeDist([1], [0], 0.5)
    const named = (fn: () => unknown): void => assert.throws(fn, (e: any) => e.name === 'AggregationError')
    named(() => aggregate([{ dist: d, weight: 1 }], { vocabSize: 10, tail: 'zipf' as any }))
    named(() => aggregate([{ dist: d, weight: 1 }], { vocabSize: 10, rule: 'max' as any }))
    named(() => aggregate([{ dist: d, weight: 1 }], { vocabSize: 10, rule: 'trimmed', trim: 0.5 }))
    named(() => aggregate([{ dist: d, weight: 1 }], { vocabSize: 10, tail: 'unigram', prior: tailPriorFromWeights([1, 2, 3]) }))
    named(() => aggregate([{ dist: d, weight: 1 }], { vocabSize: 10, tail: 'unigram' })) // no shipped prior for V = 10
    named(() => aggregate([{ dist: { ...d, ids: Uint32Array.of(1, 1), logprobs: Float32Array.of(-1, -1) }, weight: 1 }], { vocabSize: 10, rule: 'median' }))
    named(() => aggregate([{ dist: d, weight: 0 }], { vocabSize: 10, rule: 'median' }))
  })
})

describe('tail priors', () => {
  it('encode → decode keeps every weight within the quantisation step (6 %) and mean 1', () => {
    const w = Array.from({ length: 5000 }, (_, i) => (i % 7 === 0 ? 0 : 1 / (i + 1)))
    const p = tailPriorFromWeights(w, 'zipf')
    const back = decodeTailPrior(encodeTailPrior(p))
    assert.equal(back.weights.length, 5000)
    const mean = back.weights.reduce((a, b) => a + b, 0) / 5000
    assert.ok(Math.abs(mean - 1) < 1e-9)
    // compare shapes (each normalised to mean 1) among the weights above the 32-nat floor
    const scale = p.weights[1] / back.weights[1]
    for (let i = 1; i < 2000; i++) if (w[i] > 0) assert.ok(Math.abs(back.weights[i] * scale / p.weights[i] - 1) < 0.07, `weight ${i}`)
    assert.throws(() => decodeTailPrior(Uint8Array.of(1, 2, 3)), (e: any) => e.name === 'TailPriorError')
  })

  it('the shipped prior covers the LLaMA-3 vocabulary', () => {
    const p = defaultTailPrior(128256)
    assert.equal(p.weights.length, 128256)
    assert.ok(Math.abs(p.total - 128256) < 1e-6)
    assert.ok(p.weights.every(x => x > 0))
  })
})

describe('perplexity weights', () => {
  it('a softmax over per-token log-likelihood: normalised, ordered, uniform at β = 0', () => {
    const scores = [{ logprob: -435, count: 100 }, { logprob: -470, count: 100 }, { logprob: -519, count: 100 }]
    const w = perplexityWeights(scores)
    assert.ok(Math.abs(w.reduce((a, b) => a + b, 0) - 1) < 1e-12)
    assert.ok(w[0] > w[1] && w[1] > w[2])
    const beta = DEFAULT_PERPLEXITY_BETA
    assert.ok(close(w[0] / w[1], Math.exp(beta * (-435 + 470) / 108), 1e-12))
    assert.deepEqual(perplexityWeights(scores, { beta: 0 }), [1 / 3, 1 / 3, 1 / 3])
  })

  it('short prompts shrink towards uniform; unscored experts get the mean weight', () => {
    const short = perplexityWeights([{ logprob: -8, count: 2 }, { logprob: -12, count: 2 }])
    const long = perplexityWeights([{ logprob: -400, count: 100 }, { logprob: -600, count: 100 }])
    assert.ok(short[0] < long[0])
    const w = perplexityWeights([{ logprob: -400, count: 100 }, {}, { logprob: -500, count: 100 }])
    assert.ok(close(w[1], (w[0] + w[2]) / 2, 1e-12))
    assert.deepEqual(perplexityWeights([{}, { count: 0, logprob: 0 }]), [0.5, 0.5])
    assert.deepEqual(perplexityWeights([]), [])
    assert.throws(() => perplexityWeights([{}], { beta: -1 }), RangeError)
  })
})

describe("the 'context' tail", () => {
  const ctxCaseArb = fc.constantFrom(50, 300).chain(V => fc.record({
    V: fc.constant(V),
    rule: fc.constantFrom(...RULES),
    prior: priorArb(V),
    inputs: fc.array(fc.record({ dist: distArb(V), weight: fc.oneof(fc.constant(1), fc.double({ min: 1e-3, max: 1e3, noNaN: true })) }), { minLength: 1, maxLength: 4 }),
    context: fc.array(fc.nat(V - 1), { maxLength: 80 })
  }))

  it("keeps every listed probability and the rest's total mass; context tokens nobody listed become explicit, capped at the least listed", () => {
    fc.assert(fc.property(ctxCaseArb, ({ V, rule, prior, inputs, context }) => {
      const base = aggregate(inputs, { rule, vocabSize: V, tail: 'bounded', prior })
      const agg = aggregate(inputs, { rule, vocabSize: V, tail: 'context', prior, context })
      const ps = assertFullDistribution(agg, V)
      const cap = base.probs.length > 0 ? base.probs[base.probs.length - 1] : Infinity
      const listed = new Set(base.ids)
      for (let i = 0; i < base.ids.length; i++) assert.ok(close(ps[base.ids[i]], base.probs[i]), 'listed probability unchanged')
      const restBefore = base.restCount * base.restProb
      let restAfter = 0
      for (let t = 0; t < V; t++) if (!listed.has(t)) restAfter += ps[t]
      assert.ok(close(restAfter, restBefore, 1e-9, 1e-12), `rest mass ${restAfter} vs ${restBefore}`)
      const inCtx = new Set(context)
      const boosted = [...inCtx].filter(t => !listed.has(t))
      if (boosted.length > 0 && boosted.length < base.restCount && restBefore > 1e-200) {
        for (const t of boosted) {
          assert.ok(agg.ids.includes(t), 'explicit')
          assert.ok(ps[t] <= Math.max(cap, probabilityOf(base, t)) * (1 + 1e-12), 'capped (unless the prior shape alone already put it higher)')
          assert.ok(ps[t] >= probabilityOf(base, t) * (1 - 1e-9), 'never less likely than under bounded')
        }
        // the other rest tokens keep the prior's shape among themselves
        const others = Array.from({ length: V }, (_x, t) => t).filter(t => !listed.has(t) && !inCtx.has(t))
        if (others.length >= 2 && probabilityOf(base, others[0]) > 0) {
          const r0 = ps[others[0]] / probabilityOf(base, others[0])
          for (const t of others.slice(1, 20)) assert.ok(close(ps[t] / probabilityOf(base, t), r0, 1e-6, 1e-12))
        }
      }
    }), RUNS)
  })

  it('needs the context; an empty context is the bounded tail', () => {
    const d = makeDist([1, 2, 3], [2, 1, 0], 0.3)
    assert.throws(() => aggregate([{ dist: d, weight: 1 }], { vocabSize: 100, tail: 'context' }), { name: 'AggregationError' })
    const prior = tailPriorFromWeights(Array.from({ length: 100 }, (_x, i) => 1 + i), 'ramp')
    const a = aggregate([{ dist: d, weight: 1 }], { vocabSize: 100, tail: 'context', prior, context: [] })
    const b = aggregate([{ dist: d, weight: 1 }], { vocabSize: 100, tail: 'bounded', prior })
    assert.deepEqual([...a.ids], [...b.ids])
    assert.equal(a.restProb, b.restProb)
  })
})
