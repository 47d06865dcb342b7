import assert from 'node:assert/strict'
import fc from 'fast-check'
import { aggregate, PRODUCT_EPSILON } from '../../src/aggregate/index.js'
import type { Aggregated, AggregationRule, SparseDist, WeightedDist } from '../../src/aggregate/index.js'
import { runs } from '../helpers/fuzz.js'

const RUNS = { numRuns: runs(500) }
const BIG_V = 128256
const RULES: AggregationRule[] = ['mixture', 'product']

// ---------------------------------------------------------------------------------------
// Generators: realistic sparse dists. n distinct ids in [0, V), logprobs of a random
// softmax scaled by (1 - tail), rounded to float32 as on the wire.

function makeDist (ids: number[], logits: number[], tail: number): SparseDist {
  const mx = Math.max(...logits)
  const ws = logits.map(l => Math.exp(l - mx))
  const s = ws.reduce((a, b) => a + b, 0)
  return {
    ids: Uint32Array.from(ids),
    logprobs: Float32Array.from(ws, w => Math.log(w / s * (1 - tail))),
    tailMass: tail
  }
}

const vocabArb = fc.constantFrom(3, 300, BIG_V)

function distArb (V: number): fc.Arbitrary<SparseDist> {
  return fc.uniqueArray(fc.nat(V - 1), { minLength: 1, maxLength: Math.min(256, V) }).chain(ids =>
    fc.tuple(
      fc.array(fc.double({ min: -10, max: 10, noNaN: true }), { minLength: ids.length, maxLength: ids.length }),
      fc.oneof(fc.constant(0), fc.double({ min: 0, max: 0.6, noNaN: true }))
    ).map(([logits, tail]) => makeDist(ids, logits, ids.length === V ? 0 : tail)))
}

const weightArb = fc.oneof(fc.constant(0), fc.constant(1), fc.double({ min: 1e-3, max: 1e3, noNaN: true }))

/** V, K in [1, 8] weighted dists (not all weights zero), a rule. */
const caseArb = vocabArb.chain(V => fc.record({
  V: fc.constant(V),
  rule: fc.constantFrom(...RULES),
  inputs: fc.array(fc.record({ dist: distArb(V), weight: weightArb }), { minLength: 1, maxLength: 8 })
    .filter(xs => xs.some(x => x.weight > 0))
}))

// ---------------------------------------------------------------------------------------
// Reference (slow, obvious) implementation of the documented formulas.

interface Expert { w: number, listed: Map<number, number>, base: number }

function experts (inputs: WeightedDist[], V: number): Expert[] {
  const wSum = inputs.reduce((a, x) => a + x.weight, 0)
  return inputs.map(({ dist, weight }) => {
    const n = dist.ids.length
    const tail = n < V ? dist.tailMass : 0
    const S = Array.from(dist.logprobs).reduce((a, lp) => a + Math.exp(lp), 0) + tail
    const listed = new Map<number, number>()
    dist.ids.forEach((id, i) => listed.set(id, Math.exp(dist.logprobs[i]) / S))
    return { w: weight / wSum, listed, base: n < V ? tail / (S * (V - n)) : 0 }
  }).filter(e => e.w > 0)
}

/** probability of `id` (or of an unlisted-by-all token when id = -1) under the rule */
function reference (inputs: WeightedDist[], V: number, rule: AggregationRule): { prob: (id: number) => number, union: Set<number> } {
  const es = experts(inputs, V)
  const union = new Set<number>()
  for (const e of es) for (const id of e.listed.keys()) union.add(id)
  const pe = (e: Expert, id: number): number => e.listed.get(id) ?? e.base
  if (rule === 'mixture') {
    return { union, prob: id => es.reduce((a, e) => a + e.w * pe(e, id), 0) }
  }
  const eps = PRODUCT_EPSILON / V
  const L = (id: number): number => es.reduce((a, e) => a + e.w * Math.log(Math.max(pe(e, id), eps)), 0)
  const restCount = V - union.size
  const logs = [...union].map(L)
  const m = Math.max(...logs, restCount > 0 ? L(-1) : -Infinity)
  const Z = logs.reduce((a, l) => a + Math.exp(l - m), 0) + restCount * Math.exp(L(-1) - m)
  return { union, prob: id => Math.exp(L(id) - m) / Z }
}

const close = (a: number, b: number, rel = 1e-9, abs = 1e-12): boolean => Math.abs(a - b) <= rel * Math.abs(b) + abs

function assertDistribution (agg: Aggregated, V: number): void {
  assert.equal(agg.ids.length, agg.probs.length)
  assert.equal(agg.restCount, V - agg.ids.length)
  assert.ok(agg.restProb >= 0 && Number.isFinite(agg.restProb))
  let sum = agg.restCount * agg.restProb
  for (let i = 0; i < agg.ids.length; i++) {
    assert.ok(agg.ids[i] < V)
    assert.ok(agg.probs[i] >= 0, `negative prob ${agg.probs[i]}`)
    sum += agg.probs[i]
    if (i > 0) {
      const ordered = agg.probs[i - 1] > agg.probs[i] || (agg.probs[i - 1] === agg.probs[i] && agg.ids[i - 1] < agg.ids[i])
      assert.ok(ordered, `not sorted at ${i}`)
    }
  }
  assert.ok(Math.abs(sum - 1) < 1e-9, `sum ${sum}`)
}

function assertSameAgg (a: Aggregated, b: Aggregated, rel = 1e-9): void {
  assert.equal(a.restCount, b.restCount)
  assert.ok(close(a.restProb, b.restProb, rel), `restProb ${a.restProb} vs ${b.restProb}`)
  const pb = new Map<number, number>()
  b.ids.forEach((id, i) => pb.set(id, b.probs[i]))
  assert.equal(a.ids.length, b.ids.length)
  a.ids.forEach((id, i) => {
    assert.ok(pb.has(id), `id ${id} missing`)
    assert.ok(close(a.probs[i], pb.get(id)!, rel), `id ${id}: ${a.probs[i]} vs ${pb.get(id)}`)
  })
}

const probOf = (agg: Aggregated, id: number): number => {
  const i = agg.ids.indexOf(id)
  return i >= 0 ? agg.probs[i] : agg.restProb
}

// ---------------------------------------------------------------------------------------

describe('aggregate', () => {
  it('returns a sorted distribution over the whole vocabulary (both rules)', () => {
    fc.assert(fc.property(caseArb, ({ V, rule, inputs }) => {
      const agg = aggregate(inputs, { rule, vocabSize: V })
      assertDistribution(agg, V)
      const union = new Set<number>()
      for (const x of inputs) if (x.weight > 0) x.dist.ids.forEach(id => union.add(id))
      assert.deepEqual(new Set(agg.ids), union)
      if (rule === 'product') {
        // the epsilon floor: no token is ever vetoed to exactly 0
        assert.ok(agg.probs.every(p => p > 0) && (agg.restCount === 0 || agg.restProb > 0))
      }
    }), RUNS)
  })

  it('matches the reference formulas (both rules)', () => {
    fc.assert(fc.property(caseArb, ({ V, rule, inputs }) => {
      const agg = aggregate(inputs, { rule, vocabSize: V })
      const ref = reference(inputs, V, rule)
      agg.ids.forEach((id, i) => assert.ok(close(agg.probs[i], ref.prob(id)), `id ${id}: ${agg.probs[i]} vs ${ref.prob(id)}`))
      if (agg.restCount > 0) assert.ok(close(agg.restProb, ref.prob(-1)), `rest ${agg.restProb} vs ${ref.prob(-1)}`)
    }), RUNS)
  })

  it('K copies of one expert give that expert\'s distribution (both rules, any weights)', () => {
    const arb = vocabArb.chain(V => fc.tuple(fc.constant(V), distArb(V),
      fc.array(fc.double({ min: 1e-3, max: 1e3, noNaN: true }), { minLength: 1, maxLength: 8 }), fc.constantFrom(...RULES)))
    fc.assert(fc.property(arb, ([V, dist, weights, rule]) => {
      const agg = aggregate(weights.map(weight => ({ dist, weight })), { rule, vocabSize: V })
      const n = dist.ids.length
      const S = Array.from(dist.logprobs).reduce((a, lp) => a + Math.exp(lp), 0) + (n < V ? dist.tailMass : 0)
      dist.ids.forEach((id, i) => {
        // S differs from 1 only by the float32 rounding of the logprobs
        assert.ok(close(probOf(agg, id), Math.exp(dist.logprobs[i]) / S), `id ${id}`)
        assert.ok(close(probOf(agg, id), Math.exp(dist.logprobs[i]), 1e-5))
      })
      const expectRest = n < V ? dist.tailMass / (S * (V - n)) : 0
      assert.ok(close(agg.restProb, expectRest), `rest ${agg.restProb} vs ${expectRest}`)
    }), RUNS)
  })

  it('an expert of weight 0 is absent', () => {
    const arb = caseArb.chain(c => fc.tuple(fc.constant(c), distArb(c.V), fc.nat(8)))
    fc.assert(fc.property(arb, ([{ V, rule, inputs }, zero, at]) => {
      const withZero = [...inputs]
      withZero.splice(at % (inputs.length + 1), 0, { dist: zero, weight: 0 })
      assert.deepEqual(aggregate(withZero, { rule, vocabSize: V }), aggregate(inputs, { rule, vocabSize: V }))
    }), RUNS)
  })

  it('is invariant to scaling all weights and to the order of experts', () => {
    fc.assert(fc.property(caseArb, fc.double({ min: 1e-3, max: 1e3, noNaN: true }), ({ V, rule, inputs }, c) => {
      const a = aggregate(inputs, { rule, vocabSize: V })
      const scaled = inputs.map(x => ({ dist: x.dist, weight: x.weight * c }))
      assertSameAgg(aggregate(scaled, { rule, vocabSize: V }), a)
      assertSameAgg(aggregate([...inputs].reverse(), { rule, vocabSize: V }), a)
    }), RUNS)
  })

  it('mixture of two experts: P(t) = w1 p1(t) + w2 p2(t)', () => {
    const arb = vocabArb.chain(V => fc.tuple(fc.constant(V), distArb(V), distArb(V),
      fc.double({ min: 1e-3, max: 1e3, noNaN: true }), fc.double({ min: 1e-3, max: 1e3, noNaN: true })))
    fc.assert(fc.property(arb, ([V, d1, d2, a, b]) => {
      const agg = aggregate([{ dist: d1, weight: a }, { dist: d2, weight: b }], { rule: 'mixture', vocabSize: V })
      const [e1, e2] = experts([{ dist: d1, weight: a }, { dist: d2, weight: b }], V)
      const w1 = a / (a + b)
      const w2 = b / (a + b)
      agg.ids.forEach((id, i) => {
        const want = w1 * (e1.listed.get(id) ?? e1.base) + w2 * (e2.listed.get(id) ?? e2.base)
        assert.ok(close(agg.probs[i], want), `id ${id}`)
      })
    }), RUNS)
  })

  it('mixture is bounded below by w_e p_e(t)', () => {
    fc.assert(fc.property(caseArb, ({ V, inputs }) => {
      const agg = aggregate(inputs, { rule: 'mixture', vocabSize: V })
      for (const e of experts(inputs, V)) {
        for (const [id, p] of e.listed) assert.ok(probOf(agg, id) >= e.w * p * (1 - 1e-12) - 1e-15)
        if (agg.restCount > 0) assert.ok(agg.restProb >= e.w * e.base * (1 - 1e-12) - 1e-15)
      }
    }), RUNS)
  })

  it('product keeps the argmax that two experts agree on', () => {
    /** d with token t listed (replacing its first id if absent) and holding the largest logprob */
    const withTop = (d: SparseDist, t: number): SparseDist => {
      const ids = d.ids.slice()
      let j = ids.indexOf(t)
      if (j < 0) { j = 0; ids[0] = t }
      const lps = d.logprobs.slice()
      const k = lps.indexOf(Math.max(...lps))
      ;[lps[j], lps[k]] = [lps[k], lps[j]]
      return { ids, logprobs: lps, tailMass: d.tailMass }
    }
    const arb = vocabArb.chain(V => fc.tuple(fc.constant(V), distArb(V), distArb(V), fc.nat(V - 1), weightArb, weightArb))
    fc.assert(fc.property(arb, ([V, d1, d2, t, a, b]) => {
      fc.pre(a + b > 0)
      const ds = [withTop(d1, t), withTop(d2, t)]
      // t must be each expert's argmax, also against its uniform tail value
      for (const d of ds) fc.pre(Math.exp(Math.max(...d.logprobs)) > d.tailMass / (V - d.ids.length || 1))
      const agg = aggregate([{ dist: ds[0], weight: a }, { dist: ds[1], weight: b }], { rule: 'product', vocabSize: V })
      const best = Math.max(...agg.probs, agg.restProb)
      assert.ok(close(probOf(agg, t), best), `agreed ${t}: ${probOf(agg, t)} < ${best}`)
    }), RUNS)
  })

  it('product sharpens agreement and lets one expert veto; mixture does not', () => {
    const e1: SparseDist = { ids: Uint32Array.of(0, 1), logprobs: Float32Array.of(Math.log(0.6), Math.log(0.4)), tailMass: 0 }
    const e2: SparseDist = { ids: Uint32Array.of(0, 2), logprobs: Float32Array.of(Math.log(0.6), Math.log(0.4)), tailMass: 0 }
    const inputs = [{ dist: e1, weight: 1 }, { dist: e2, weight: 1 }]
    const mix = aggregate(inputs, { rule: 'mixture', vocabSize: 3 })
    const prod = aggregate(inputs, { rule: 'product', vocabSize: 3 })
    assert.deepEqual([...mix.ids], [0, 1, 2])
    assert.ok(close(mix.probs[0], 0.6, 1e-6) && close(mix.probs[1], 0.2, 1e-6) && close(mix.probs[2], 0.2, 1e-6))
    assert.equal(prod.ids[0], 0)
    assert.ok(prod.probs[0] > 1 - 1e-5, `product P(0) = ${prod.probs[0]}`)
    assert.ok(prod.probs[1] < 1e-5 && prod.probs[2] < 1e-5)
  })

  it('product floors p at epsilon: a zero from one expert is a veto, not a hard 0', () => {
    const V = 1000
    const a: SparseDist = { ids: Uint32Array.of(1, 2), logprobs: Float32Array.of(0, -Infinity), tailMass: 0 }
    const b: SparseDist = { ids: Uint32Array.of(1, 2), logprobs: Float32Array.of(Math.log(0.5), Math.log(0.5)), tailMass: 0 }
    const agg = aggregate([{ dist: a, weight: 1 }, { dist: b, weight: 1 }], { rule: 'product', vocabSize: V })
    const eps = PRODUCT_EPSILON / V
    // P(2) / P(1) = sqrt(eps * 0.5) / sqrt(1 * 0.5)
    assert.ok(close(probOf(agg, 2) / probOf(agg, 1), Math.sqrt(eps), 1e-6))
    assert.ok(close(agg.restProb / probOf(agg, 1), Math.sqrt(eps * eps / 0.5), 1e-6))
    assertDistribution(agg, V)
  })

  it('spreads the tail uniformly over the unlisted tokens; a full listing has no tail', () => {
    const d: SparseDist = { ids: Uint32Array.of(7, 3), logprobs: Float32Array.of(Math.log(0.5), Math.log(0.3)), tailMass: 0.2 }
    const agg = aggregate([{ dist: d, weight: 1 }], { vocabSize: 10 })
    assert.deepEqual([...agg.ids], [7, 3])
    assert.equal(agg.restCount, 8)
    assert.ok(close(agg.restProb, 0.2 / 8, 1e-6))
    const full: SparseDist = { ids: Uint32Array.of(2, 0, 1), logprobs: Float32Array.of(Math.log(0.5), Math.log(0.25), Math.log(0.25)), tailMass: 0.3 }
    for (const rule of RULES) {
      const a = aggregate([{ dist: full, weight: 1 }], { rule, vocabSize: 3 })
      assert.deepEqual([...a.ids], [2, 0, 1]) // tie 0/1 broken by ascending id
      assert.equal(a.restCount, 0)
      assert.equal(a.restProb, 0)
      assert.ok(close(a.probs[0], 0.5, 1e-6))
    }
    // with a second expert, the ignored tail must not shrink the full listing's weight
    const other: SparseDist = { ids: Uint32Array.of(0), logprobs: Float32Array.of(0), tailMass: 0 }
    const mix = aggregate([{ dist: full, weight: 1 }, { dist: other, weight: 1 }], { vocabSize: 3 })
    assert.ok(close(probOf(mix, 2), 0.25, 1e-6) && close(probOf(mix, 0), 0.625, 1e-6) && close(probOf(mix, 1), 0.125, 1e-6))
  })

  it('allows -Infinity logprobs (p = 0)', () => {
    const d: SparseDist = { ids: Uint32Array.of(1, 2), logprobs: Float32Array.of(0, -Infinity), tailMass: 0 }
    const mix = aggregate([{ dist: d, weight: 1 }], { vocabSize: 5 })
    assert.deepEqual([...mix.ids], [1, 2])
    assert.deepEqual([...mix.probs], [1, 0])
    assert.equal(mix.restProb, 0)
    const prod = aggregate([{ dist: d, weight: 1 }], { rule: 'product', vocabSize: 5 })
    assertDistribution(prod, 5)
    assert.ok(prod.probs[0] > 1 - 1e-11 && prod.probs[1] < 1e-12)
  })

  it('throws AggregationError on invalid input, and stays correct afterwards', () => {
    const good: SparseDist = { ids: Uint32Array.of(1, 2), logprobs: Float32Array.of(Math.log(0.5), Math.log(0.25)), tailMass: 0.25 }
    const V = 10
    const bad: Array<[string, WeightedDist[], number?]> = [
      ['no inputs', []],
      ['all-zero weights', [{ dist: good, weight: 0 }, { dist: good, weight: 0 }]],
      ['negative weight', [{ dist: good, weight: 1 }, { dist: good, weight: -1 }]],
      ['NaN weight', [{ dist: good, weight: NaN }]],
      ['infinite weight', [{ dist: good, weight: Infinity }]],
      ['id >= vocabSize', [{ dist: { ...good, ids: Uint32Array.of(1, 10) }, weight: 1 }]],
      ['duplicate id', [{ dist: good, weight: 1 }, { dist: { ...good, ids: Uint32Array.of(5, 5) }, weight: 1 }]],
      ['duplicate id, weight 0', [{ dist: good, weight: 1 }, { dist: { ...good, ids: Uint32Array.of(6, 6) }, weight: 0 }]],
      ['NaN logprob', [{ dist: { ...good, logprobs: Float32Array.of(NaN, -1) }, weight: 1 }]],
      ['+Infinity logprob', [{ dist: { ...good, logprobs: Float32Array.of(Infinity, -1) }, weight: 1 }]],
      ['length mismatch', [{ dist: { ...good, logprobs: Float32Array.of(-1) }, weight: 1 }]],
      ['bad tailMass', [{ dist: { ...good, tailMass: -0.1 }, weight: 1 }]],
      ['zero mass', [{ dist: { ids: Uint32Array.of(1), logprobs: Float32Array.of(-Infinity), tailMass: 0 }, weight: 1 }]],
      ['bad vocabSize', [{ dist: good, weight: 1 }], 0]
    ]
    for (const [what, inputs, vocab] of bad) {
      for (const rule of RULES) {
        assert.throws(() => aggregate(inputs, { rule, vocabSize: vocab ?? V }), (err: Error) => err.name === 'AggregationError', what)
      }
      // the shared scratch was cleaned up: a valid call right after is exact
      const agg = aggregate([{ dist: good, weight: 1 }], { vocabSize: V })
      assert.deepEqual([...agg.ids], [1, 2])
      assert.equal(agg.restCount, 8)
      assert.ok(close(agg.restProb, 0.25 / 8, 1e-6))
    }
  })

  it('aggregates 8 experts x 256 entries quickly (sanity, not a benchmark)', () => {
    const rng = mulberry(5)
    const inputs = Array.from({ length: 8 }, () => ({ dist: randomDist(rng, BIG_V, 256), weight: 1 }))
    for (const rule of RULES) {
      for (let i = 0; i < 50; i++) aggregate(inputs, { rule, vocabSize: BIG_V })
      const t0 = performance.now()
      for (let i = 0; i < 200; i++) aggregate(inputs, { rule, vocabSize: BIG_V })
      const us = (performance.now() - t0) * 1000 / 200
      assert.ok(us < 5000, `${rule}: ${us} µs per call`) // very loose: CI machines vary
    }
  })
})

// small deterministic helpers (no fast-check) -------------------------------------------

function mulberry (a: number): () => number {
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function randomDist (rng: () => number, V: number, n: number): SparseDist {
  const ids = new Set<number>()
  while (ids.size < Math.min(n, V)) ids.add(Math.floor(rng() * V))
  return makeDist([...ids], Array.from(ids, () => rng() * 10), 0.1)
}
