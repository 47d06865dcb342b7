import assert from 'node:assert/strict'
import fc from 'fast-check'
import { aggregate, argmax, createRng, distributionAfterSampling, nthUnlisted, sample } from '../../src/aggregate/index.js'
import type { Aggregated, SamplingDist, SamplingOptions, SparseDist } from '../../src/aggregate/index.js'
import { runs } from '../helpers/fuzz.js'

const RUNS = { numRuns: runs(500) }
const BIG_V = 128256

// ---------------------------------------------------------------------------------------
// Generators: an Aggregated built directly (sorted as aggregate() sorts, or shuffled),
// with ties (integer weights) and rest buckets that can beat listed tokens (small V).

function makeAgg (V: number, ids: number[], ws: number[], restMass: number): Aggregated {
  const restCount = V - ids.length
  const r = restCount > 0 ? (ids.length === 0 ? 1 : restMass) : 0
  const s = ws.reduce((a, b) => a + b, 0)
  const idx = ids.map((_, i) => i).sort((i, j) => ws[j] - ws[i] || ids[i] - ids[j])
  return {
    ids: Uint32Array.from(idx, i => ids[i]),
    probs: Float64Array.from(idx, i => ws[i] / s * (1 - r)),
    restProb: restCount > 0 ? r / restCount : 0,
    restCount
  }
}

function aggArb (vocabs: number[]): fc.Arbitrary<{ V: number, agg: Aggregated }> {
  return fc.constantFrom(...vocabs).chain(V =>
    fc.uniqueArray(fc.nat(V - 1), { minLength: 0, maxLength: Math.min(256, V) }).chain(ids => fc.record({
      V: fc.constant(V),
      agg: fc.tuple(
        fc.array(fc.oneof(fc.integer({ min: 1, max: 4 }), fc.double({ min: 1e-6, max: 1, noNaN: true })), { minLength: ids.length, maxLength: ids.length }),
        fc.oneof(fc.constant(0), fc.double({ min: 0, max: 0.9, noNaN: true }))
      ).map(([ws, rest]) => makeAgg(V, ids, ws, rest))
    })))
}

const optsArb: fc.Arbitrary<SamplingOptions> = fc.record({
  temperature: fc.oneof(fc.constant(0), fc.constant(1), fc.double({ min: 0.05, max: 3, noNaN: true })),
  topK: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 400 })),
  topP: fc.oneof(fc.constant(1), fc.double({ min: 0.01, max: 1, noNaN: true }))
})

// ---------------------------------------------------------------------------------------
// Reference: materialise the whole vocabulary (small V only) and apply the documented rules.

const lowestUnlisted = (agg: Aggregated): number => nthUnlisted(Uint32Array.from(agg.ids).sort(), 0)

function refArgmax (agg: Aggregated): number {
  let best = -1
  agg.ids.forEach((id, i) => {
    if (best < 0 || agg.probs[i] > agg.probs[agg.ids.indexOf(best)] || (agg.probs[i] === agg.probs[agg.ids.indexOf(best)] && id < best)) best = id
  })
  if (agg.restCount > 0 && (best < 0 || agg.restProb > agg.probs[agg.ids.indexOf(best)])) return lowestUnlisted(agg)
  return best
}

/** per-id probability after temperature -> top-k -> top-p, or null when a top-p boundary is too close to call */
function refDistribution (agg: Aggregated, V: number, o: SamplingOptions): Float64Array | null {
  const out = new Float64Array(V)
  if (o.temperature === 0) { out[refArgmax(agg)] = 1; return out }
  const listed = new Map<number, number>()
  agg.ids.forEach((id, i) => listed.set(id, agg.probs[i]))
  const toks = Array.from({ length: V }, (_, id) => ({ id, p: listed.get(id) ?? agg.restProb, rest: !listed.has(id) }))
  // rank: descending p; on equal p listed before rest; then ascending id
  toks.sort((a, b) => b.p - a.p || Number(a.rest) - Number(b.rest) || a.id - b.id)
  const pmax = toks[0].p
  let keep = toks.map(t => ({ id: t.id, q: Math.pow(t.p / pmax, 1 / o.temperature) }))
  if (o.topK > 0) keep = keep.slice(0, o.topK)
  if (o.topP < 1) {
    const thr = o.topP * keep.reduce((a, t) => a + t.q, 0)
    let cum = 0
    let j = 0
    for (; j < keep.length; j++) {
      cum += keep[j].q
      if (Math.abs(cum - thr) <= 1e-9 * thr) return null
      if (cum >= thr) break
    }
    keep = keep.slice(0, j + 1)
  }
  const z = keep.reduce((a, t) => a + t.q, 0)
  for (const t of keep) out[t.id] = t.q / z
  return out
}

/** per-id probabilities of a SamplingDist (rest tokens: the restCount lowest unlisted ids) */
function expand (d: SamplingDist, agg: Aggregated, V: number): Float64Array {
  const out = new Float64Array(V)
  d.ids.forEach((id, i) => { out[id] += d.probs[i] })
  const sorted = Uint32Array.from(agg.ids).sort()
  for (let k = 0; k < d.restCount; k++) out[nthUnlisted(sorted, k)] += d.restProb
  return out
}

const close = (a: number, b: number): boolean => Math.abs(a - b) <= 1e-9 * Math.abs(b) + 1e-12

// ---------------------------------------------------------------------------------------

describe('sampling', () => {
  it('distributionAfterSampling is a distribution over kept tokens, within top-k', () => {
    fc.assert(fc.property(aggArb([5, 40, 300, BIG_V]), optsArb, ({ agg }, o) => {
      const d = distributionAfterSampling(agg, o)
      const listed = new Set(agg.ids)
      let sum = d.restCount * d.restProb
      d.ids.forEach((id, i) => {
        assert.ok(d.probs[i] >= 0)
        sum += d.probs[i]
        if (o.temperature > 0) assert.ok(listed.has(id))
      })
      assert.ok(d.restProb >= 0 && d.restCount <= agg.restCount)
      assert.ok(Math.abs(sum - 1) < 1e-9, `sum ${sum}`)
      if (o.topK > 0) assert.ok(d.ids.length + d.restCount <= o.topK)
    }), RUNS)
  })

  it('matches the reference (temperature, top-k, top-p prefix, rest bucket)', () => {
    fc.assert(fc.property(aggArb([5, 40, 300]), optsArb, ({ V, agg }, o) => {
      const want = refDistribution(agg, V, o)
      fc.pre(want !== null)
      const got = expand(distributionAfterSampling(agg, o), agg, V)
      for (let id = 0; id < V; id++) assert.ok(close(got[id], want![id]), `id ${id}: ${got[id]} vs ${want![id]}`)
    }), RUNS)
  })

  it('does not depend on the order of agg.ids', () => {
    fc.assert(fc.property(aggArb([5, 40, 300]), optsArb, fc.integer(), ({ V, agg }, o, seed) => {
      const rng = createRng(seed)
      const perm = Array.from(agg.ids, (_, i) => i).sort(() => rng() - 0.5)
      const shuffled = { ...agg, ids: Uint32Array.from(perm, i => agg.ids[i]), probs: Float64Array.from(perm, i => agg.probs[i]) }
      assert.deepEqual(expand(distributionAfterSampling(shuffled, o), shuffled, V), expand(distributionAfterSampling(agg, o), agg, V))
      assert.equal(argmax(shuffled), argmax(agg))
    }), RUNS)
  })

  it('temperature 0 is argmax (ties to the lowest id), whatever the rng', () => {
    fc.assert(fc.property(aggArb([5, 40, 300, BIG_V]), optsArb, fc.integer(), ({ agg }, o, seed) => {
      const want = refArgmax(agg)
      assert.equal(argmax(agg), want)
      assert.equal(sample(agg, { ...o, temperature: 0 }, createRng(seed)), want)
    }), RUNS)
  })

  it('top-k = 1 is argmax at any temperature and top-p', () => {
    fc.assert(fc.property(aggArb([5, 40, 300, BIG_V]), optsArb, fc.integer(), ({ agg }, o, seed) => {
      assert.equal(sample(agg, { ...o, topK: 1 }, createRng(seed)), argmax(agg))
    }), RUNS)
  })

  it('is deterministic for the same seed', () => {
    fc.assert(fc.property(aggArb([40, BIG_V]), optsArb, fc.integer(), ({ agg }, o, seed) => {
      const r1 = createRng(seed)
      const r2 = createRng(seed)
      const a = Array.from({ length: 20 }, () => sample(agg, o, r1))
      const b = Array.from({ length: 20 }, () => sample(agg, o, r2))
      assert.deepEqual(a, b)
    }), RUNS)
  })

  it('a draw in the rest bucket returns one of the kept unlisted ids', () => {
    const arb = aggArb([5, 40, 300, BIG_V]).filter(({ agg }) => agg.restCount > 0 && agg.restProb > 0)
    fc.assert(fc.property(arb, optsArb, fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), ({ V, agg }, o, x) => {
      const d = distributionAfterSampling(agg, o)
      const restMass = d.restCount * d.restProb
      fc.pre(restMass > 1e-9)
      const listedMass = d.probs.reduce((a, b) => a + b, 0)
      const u = listedMass + restMass * (0.001 + 0.998 * x) // past every listed token, clear of rounding
      fc.pre(u < 1)
      const id = sample(agg, o, () => u)
      assert.ok(id < V && !agg.ids.includes(id), `id ${id} is listed`)
      const sorted = Uint32Array.from(agg.ids).sort()
      assert.ok(id <= nthUnlisted(sorted, d.restCount - 1), `id ${id} outside the kept rest tokens`)
    }), RUNS)
  })

  it('nthUnlisted(k) is the k-th id not listed', () => {
    fc.assert(fc.property(fc.uniqueArray(fc.nat(300), { maxLength: 200 }), fc.nat(400), (ids, k) => {
      const set = new Set(ids)
      let want = -1
      for (let id = 0, c = -1; c < k; id++) if (!set.has(id)) { c++; want = id }
      assert.equal(nthUnlisted(Uint32Array.from(ids).sort(), k), want)
    }), RUNS)
  })

  // chi-square: 20,000 draws with a fixed seed against distributionAfterSampling
  function chiSquare (agg: Aggregated, V: number, o: SamplingOptions, seed: number): void {
    const d = distributionAfterSampling(agg, o)
    const expected = new Map<number, number>()
    const p = expand(d, agg, V)
    p.forEach((x, id) => { if (x > 0) expected.set(id, x) })
    const draws = 20000
    const rng = createRng(seed)
    const counts = new Map<number, number>()
    for (let i = 0; i < draws; i++) {
      const id = sample(agg, o, rng)
      assert.ok(expected.has(id), `drew ${id} of probability 0`)
      counts.set(id, (counts.get(id) ?? 0) + 1)
    }
    // bins with expected count >= 5; the small ones pooled
    let chi = 0
    let df = -1
    let smallE = 0
    let smallO = 0
    for (const [id, x] of expected) {
      const e = x * draws
      const c = counts.get(id) ?? 0
      if (e >= 5) { chi += (c - e) ** 2 / e; df++ } else { smallE += e; smallO += c }
    }
    if (smallE > 0) { chi += (smallO - smallE) ** 2 / Math.max(smallE, 5); df++ }
    assert.ok(df >= 1)
    assert.ok(chi < df + 6 * Math.sqrt(2 * df), `chi2 ${chi.toFixed(1)} with ${df} df`)
    if (process.env.CHI_DEBUG) console.log(V, o, chi.toFixed(1), df)
  }

  const dist = (seed: number, V: number, n: number, tail: number): SparseDist => {
    const rng = createRng(seed)
    const ids = new Set<number>()
    while (ids.size < n) ids.add(Math.floor(rng() * V))
    const ws = Array.from(ids, () => Math.exp(rng() * 6))
    const s = ws.reduce((a, b) => a + b, 0)
    return { ids: Uint32Array.from(ids), logprobs: Float32Array.from(ws, w => Math.log(w / s * (1 - tail))), tailMass: tail }
  }

  it('empirical frequencies match distributionAfterSampling (chi-square, 20,000 draws)', function () {
    this.timeout(30000)
    // small vocabulary, heavy tail: rest tokens are drawn individually
    const small = aggregate([{ dist: dist(1, 40, 8, 0.5), weight: 1 }, { dist: dist(2, 40, 12, 0.3), weight: 2 }], { vocabSize: 40 })
    chiSquare(small, 40, { temperature: 1, topK: 0, topP: 1 }, 11)
    chiSquare(small, 40, { temperature: 0.7, topK: 25, topP: 1 }, 12)
    chiSquare(small, 40, { temperature: 1.5, topK: 0, topP: 0.8 }, 13)
    // LLaMA-size vocabulary, 4 experts, typical settings
    const big = aggregate([1, 2, 3, 4].map(s => ({ dist: dist(s, BIG_V, 256, 0.05), weight: s })), { vocabSize: BIG_V })
    chiSquare(big, BIG_V, { temperature: 0.8, topK: 40, topP: 0.95 }, 14)
    chiSquare(big, BIG_V, { temperature: 1, topK: 0, topP: 0.9 }, 15)
    const prod = aggregate([1, 2].map(s => ({ dist: dist(s + 10, 300, 200, 0.1), weight: 1 })), { rule: 'product', vocabSize: 300 })
    chiSquare(prod, 300, { temperature: 1.2, topK: 0, topP: 1 }, 16)
  })

  it('rest draws are uniform over the unlisted ids', () => {
    // 3 listed tokens of a 50-token vocabulary; 90% of the mass is in the rest bucket
    const agg = makeAgg(50, [4, 9, 30], [1, 2, 3], 0.9)
    chiSquare(agg, 50, { temperature: 1, topK: 0, topP: 1 }, 21)
    chiSquare(agg, 50, { temperature: 1, topK: 10, topP: 1 }, 22) // 7 lowest unlisted ids
  })

  it('createRng is deterministic and roughly uniform', () => {
    const a = createRng(42)
    const b = createRng(42)
    const c = createRng(43)
    const xs = Array.from({ length: 100000 }, () => a())
    assert.deepEqual(Array.from({ length: 100000 }, () => b()), xs)
    assert.notDeepEqual(Array.from({ length: 10 }, () => c()), xs.slice(0, 10))
    assert.ok(xs.every(x => x >= 0 && x < 1))
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length
    assert.ok(Math.abs(mean - 0.5) < 0.005, `mean ${mean}`)
  })

  it('greedy tie-breaks: lowest listed id; a rest token only when it is strictly more probable', () => {
    const tie: Aggregated = { ids: Uint32Array.of(9, 3, 5), probs: Float64Array.of(0.3, 0.3, 0.1), restProb: 0.3 / 7, restCount: 7 }
    assert.equal(argmax(tie), 3)
    const restEq: Aggregated = { ids: Uint32Array.of(4), probs: Float64Array.of(0.25), restProb: 0.25, restCount: 3 }
    assert.equal(argmax(restEq), 4) // equal: the listed token wins
    const restWins: Aggregated = { ids: Uint32Array.of(0, 2), probs: Float64Array.of(0.2, 0.1), restProb: 0.35, restCount: 2 }
    assert.equal(argmax(restWins), 1) // lowest unlisted id
  })

  it('ranks a listed token before rest tokens of equal probability', () => {
    const agg: Aggregated = { ids: Uint32Array.of(3), probs: Float64Array.of(0.2), restProb: 0.2, restCount: 4 }
    const d = distributionAfterSampling(agg, { temperature: 1, topK: 2, topP: 1 })
    assert.deepEqual([...d.ids], [3])
    assert.equal(d.restCount, 1) // token 0, the lowest unlisted id
    assert.ok(close(d.probs[0], 0.5) && close(d.restProb, 0.5))
    assert.equal(sample(agg, { temperature: 1, topK: 1, topP: 1 }, createRng(1)), 3)
  })

  it('top-p equal to a prefix sum keeps exactly that prefix despite rounding', () => {
    // 0.7 + 0.2 = 0.8999999999999999 in binary64
    const agg: Aggregated = { ids: Uint32Array.of(1, 2, 0), probs: Float64Array.of(0.7, 0.2, 0.1), restProb: 0, restCount: 0 }
    assert.deepEqual([...distributionAfterSampling(agg, { temperature: 1, topK: 0, topP: 0.9 }).ids], [1, 2])
    assert.deepEqual([...distributionAfterSampling(agg, { temperature: 1, topK: 0, topP: 0.7 }).ids], [1])
    assert.deepEqual([...distributionAfterSampling(agg, { temperature: 1, topK: 0, topP: 0.71 }).ids], [1, 2])
  })

  it('throws SamplingError on bad options', () => {
    const agg: Aggregated = { ids: Uint32Array.of(1), probs: Float64Array.of(1), restProb: 0, restCount: 9 }
    const bad: SamplingOptions[] = [
      { temperature: -1, topK: 0, topP: 1 },
      { temperature: NaN, topK: 0, topP: 1 },
      { temperature: 1, topK: -1, topP: 1 },
      { temperature: 1, topK: 1.5, topP: 1 },
      { temperature: 1, topK: 0, topP: 0 },
      { temperature: 1, topK: 0, topP: 1.5 },
      { temperature: 0, topK: 0, topP: NaN }
    ]
    for (const o of bad) {
      assert.throws(() => sample(agg, o, createRng(1)), (err: Error) => err.name === 'SamplingError', JSON.stringify(o))
      assert.throws(() => distributionAfterSampling(agg, o), (err: Error) => err.name === 'SamplingError')
    }
  })
})
