/**
 * Speculative sampling is lossless: the token `speculativeStep` emits (accepted draft or
 * residual draw) is distributed exactly as `sample` would draw it, whatever the draft.
 */
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { createRng, distributionAfterSampling, samplingProbability, speculativeStep, speculativeStepSampled, proposalDistribution, sampleProposal, argmax } from '../../src/aggregate/index.js'
import type { Aggregated, Proposal, SamplingOptions } from '../../src/aggregate/index.js'
import { NgramDrafter } from '../../src/router/drafter.js'
import { DRAFT_BYTES_PER_TOKEN, FRAME_BYTES_ESTIMATE, MAX_AHEAD, PIPELINE_REACH, draftLengthFor, frameBytes, pipelineAhead } from '../../src/router/generation.js'
import { runs } from '../helpers/fuzz.js'

function makeAgg (V: number, ids: number[], ws: number[], restMass: number): Aggregated {
  const restCount = V - ids.length
  const r = restCount > 0 ? restMass : 0
  const s = ws.reduce((a, b) => a + b, 0)
  const idx = ids.map((_, i) => i).sort((i, j) => ws[j] - ws[i] || ids[i] - ids[j])
  return { ids: Uint32Array.from(idx, i => ids[i]), probs: Float64Array.from(idx, i => ws[i] / s * (1 - r)), restProb: restCount > 0 ? r / restCount : 0, restCount }
}

/** chi-square of emitted tokens against the target distribution; returns [chi, df] */
function chiSquare (agg: Aggregated, V: number, o: SamplingOptions, proposed: number, seed: number, draws = 20_000): [number, number] {
  const rng = createRng(seed)
  const counts = new Map<number, number>()
  for (let i = 0; i < draws; i++) {
    const t = speculativeStep(agg, o, proposed, rng).token
    counts.set(t, (counts.get(t) ?? 0) + 1)
  }
  let chi = 0; let df = -1; let smallE = 0; let smallO = 0
  for (let t = 0; t < V; t++) {
    const e = samplingProbability(agg, o, t) * draws
    const c = counts.get(t) ?? 0
    if (e === 0) { assert.equal(c, 0, `token ${t} has probability 0 but was emitted`); continue }
    if (e >= 5) { chi += (c - e) ** 2 / e; df++ } else { smallE += e; smallO += c }
  }
  if (smallE > 0) { chi += (smallO - smallE) ** 2 / Math.max(smallE, 5); df++ }
  return [chi, Math.max(1, df)]
}

describe('speculative sampling (lossless)', function () {
  this.timeout(60_000)

  it('temperature 0: accepted iff the draft is the argmax, else the argmax', () => {
    fc.assert(fc.property(fc.uniqueArray(fc.nat(299), { minLength: 2, maxLength: 40 }), fc.nat(299), (ids, proposed) => {
      const agg = makeAgg(300, ids, ids.map((_, i) => i + 1), 0.1)
      const r = speculativeStep(agg, { temperature: 0, topK: 0, topP: 1 }, proposed, createRng(1))
      assert.equal(r.token, argmax(agg))
      assert.equal(r.accepted, proposed === argmax(agg))
    }), { numRuns: runs(500) })
  })

  const cases: Array<{ name: string, o: SamplingOptions, proposed: (agg: Aggregated) => number }> = [
    { name: 'draft = the most probable token, T=1', o: { temperature: 1, topK: 0, topP: 1 }, proposed: a => a.ids[0] },
    { name: 'draft = a mid-probability token, T=0.8, top-p 0.95', o: { temperature: 0.8, topK: 0, topP: 0.95 }, proposed: a => a.ids[3] },
    { name: 'draft outside top-k (probability 0), T=1.2, top-k 5', o: { temperature: 1.2, topK: 5, topP: 1 }, proposed: a => a.ids[9] },
    { name: 'draft = an unlisted (rest) token, T=1', o: { temperature: 1, topK: 0, topP: 1 }, proposed: () => 0 }
  ]
  for (const c of cases) {
    it(`emitted tokens follow the target distribution: ${c.name}`, () => {
      // V = 40: 12 listed tokens and 28 rest tokens with 15 % of the mass
      const ids = [5, 7, 9, 11, 13, 17, 19, 23, 29, 31, 37, 39]
      const agg = makeAgg(40, ids, [9, 7, 6, 5, 4, 3, 3, 2, 2, 1, 1, 1], 0.15)
      const [chi, df] = chiSquare(agg, 40, c.o, c.proposed(agg), 42)
      // 99.9 % quantile of chi-square, Wilson–Hilferty approximation
      const z = 3.09
      const crit = df * (1 - 2 / (9 * df) + z * Math.sqrt(2 / (9 * df))) ** 3
      assert.ok(chi < crit, `chi-square ${chi.toFixed(1)} ≥ ${crit.toFixed(1)} (df ${df})`)
    })
  }

  it('accepts a draft token with exactly its target probability', () => {
    const agg = makeAgg(40, [5, 7, 9], [3, 2, 1], 0.1)
    const o = { temperature: 1, topK: 0, topP: 1 }
    const rng = createRng(3)
    let acc = 0
    const n = 20_000
    for (let i = 0; i < n; i++) if (speculativeStep(agg, o, 7, rng).accepted) acc++
    const p = distributionAfterSampling(agg, o).probs[1]
    assert.ok(Math.abs(acc / n - p) < 4 * Math.sqrt(p * (1 - p) / n), `accepted ${acc / n} vs ${p}`)
  })
})

describe('n-gram drafter', () => {
  it('proposes the continuation of the latest earlier occurrence of the context tail', async () => {
    const d = new NgramDrafter()
    assert.deepEqual(await d.propose([1, 2, 3, 4, 5, 9, 2, 3], 3), [4, 5, 9])
    assert.deepEqual(await d.propose([1, 2, 3, 7, 8], 2), [])
    assert.deepEqual(await d.propose([4, 1, 2, 4], 2), [1, 2])
  })
})

describe('speculative sampling with a sampling drafter (proposal distribution q)', function () {
  this.timeout(60_000)
  const V = 40
  const ids = [5, 7, 9, 11, 13, 17, 19, 23, 29, 31, 37, 39]
  const agg = makeAgg(V, ids, [9, 7, 6, 5, 4, 3, 3, 2, 2, 1, 1, 1], 0.15)
  // a drafter that disagrees: it likes 7 and 13, lists rest tokens 0, 1, 2 and a token outside top-k (39)
  const draftIds = Uint32Array.from([7, 13, 5, 0, 1, 2, 39, 23])
  const draftLp = Float32Array.from([-0.5, -1, -2, -2.5, -3, -3, -2, -4])

  const cases: Array<{ name: string, o: SamplingOptions }> = [
    { name: 'T=1', o: { temperature: 1, topK: 0, topP: 1 } },
    { name: 'T=0.8, top-p 0.9', o: { temperature: 0.8, topK: 0, topP: 0.9 } },
    { name: 'T=1.2, top-k 5', o: { temperature: 1.2, topK: 5, topP: 1 } },
    { name: 'T=0.7, top-k 20 (rest block cut by top-k)', o: { temperature: 0.7, topK: 20, topP: 1 } }
  ]
  for (const c of cases) {
    it(`emitted tokens follow the target distribution; acceptance is Σ min(p, q): ${c.name}`, () => {
      const q: Proposal = proposalDistribution(draftIds, draftLp, c.o, V)
      assert.ok(Math.abs(q.probs.reduce((a, b) => a + b, 0) - 1) < 1e-9)
      const rng = createRng(7)
      const draws = 30_000
      const counts = new Map<number, number>()
      let accepted = 0
      for (let i = 0; i < draws; i++) {
        const x = sampleProposal(q, rng)
        const r = speculativeStepSampled(agg, c.o, x, q, rng)
        if (r.accepted) { accepted++; assert.equal(r.token, x) }
        counts.set(r.token, (counts.get(r.token) ?? 0) + 1)
      }
      let chi = 0; let df = -1; let smallE = 0; let smallO = 0
      for (let t = 0; t < V; t++) {
        const e = samplingProbability(agg, c.o, t) * draws
        const n = counts.get(t) ?? 0
        if (e === 0) { assert.equal(n, 0, `token ${t} has probability 0 but was emitted`); continue }
        if (e >= 5) { chi += (n - e) ** 2 / e; df++ } else { smallE += e; smallO += n }
      }
      if (smallE > 0) { chi += (smallO - smallE) ** 2 / Math.max(smallE, 5); df++ }
      df = Math.max(1, df)
      const crit = df * (1 - 2 / (9 * df) + 3.09 * Math.sqrt(2 / (9 * df))) ** 3
      assert.ok(chi < crit, `chi-square ${chi.toFixed(1)} ≥ ${crit.toFixed(1)} (df ${df})`)
      // acceptance = Σ_t min(p(t), q(t))
      let overlap = 0
      for (let i = 0; i < q.ids.length; i++) overlap += Math.min(q.probs[i], samplingProbability(agg, c.o, q.ids[i]))
      const rate = accepted / draws
      assert.ok(Math.abs(rate - overlap) < 4 * Math.sqrt(overlap * (1 - overlap) / draws) + 1e-9, `acceptance ${rate.toFixed(4)} vs Σ min(p, q) ${overlap.toFixed(4)}`)
    })
  }

  it('random targets and proposals: never emits a token of target probability 0', () => {
    fc.assert(fc.property(fc.uniqueArray(fc.nat(59), { minLength: 2, maxLength: 20 }), fc.uniqueArray(fc.nat(59), { minLength: 1, maxLength: 20 }), fc.nat(1000), fc.constantFrom(0, 3, 10), (tIds, dIds, seed, topK) => {
      const a = makeAgg(60, tIds, tIds.map((_, i) => 1 + (i % 5)), 0.2)
      const o = { temperature: 0.9, topK, topP: 0.97 }
      const q = proposalDistribution(Uint32Array.from(dIds), Float32Array.from(dIds, (_x, i) => -0.3 * i), o, 60)
      const rng = createRng(seed)
      for (let i = 0; i < 20; i++) {
        const r = speculativeStepSampled(a, o, sampleProposal(q, rng), q, rng)
        assert.ok(samplingProbability(a, o, r.token) > 0, `emitted ${r.token}`)
      }
    }), { numRuns: runs(300) })
  })
})

describe('pipelined greedy rounds: how far ahead a router drafts (pipelineAhead)', () => {
  it('the most tokens each reached with probability ≥ PIPELINE_REACH, within [1, MAX_AHEAD], never decreasing with acceptance', () => {
    assert.equal(pipelineAhead(0), 1)
    assert.equal(pipelineAhead(Number.NaN), 1)
    assert.equal(pipelineAhead(1), MAX_AHEAD)
    assert.equal(pipelineAhead(0.9999), MAX_AHEAD, 'bounded at MAX_AHEAD (one request\'s draft bound)')
    assert.equal(pipelineAhead(0.5), 3)
    assert.equal(pipelineAhead(0.9), 21)
    fc.assert(fc.property(fc.double({ min: 0.01, max: 0.999, noNaN: true }), fc.double({ min: 0.01, max: 0.999, noNaN: true }), (a, b) => {
      const n = pipelineAhead(a)
      assert.ok(n >= 1 && n <= MAX_AHEAD && Number.isInteger(n))
      if (n > 1 && n < MAX_AHEAD) {
        assert.ok(a ** n >= PIPELINE_REACH - 1e-12, `a^n = ${a ** n}`)
        assert.ok(a ** (n + 1) < PIPELINE_REACH + 1e-12, `a^(n+1) = ${a ** (n + 1)}`)
      }
      if (a <= b) assert.ok(pipelineAhead(a) <= pipelineAhead(b))
    }), { numRuns: runs(500) })
  })
})

describe('adaptive draft length (draftLengthFor)', () => {
  const E = (a: number, n: number): number => (1 - a ** (n + 1)) / (1 - a)
  it('within the room, and within maxFramesPerToken expected frames per emitted token (at the bound: the longest that fits)', () => {
    fc.assert(fc.property(fc.double({ min: 0.05, max: 0.95, noNaN: true }), fc.double({ min: 1, max: 500, noNaN: true }), fc.integer({ min: 0, max: 32 }), fc.double({ min: 1, max: 3, noNaN: true }), (a, rttMs, room, cap) => {
      const n = draftLengthFor({ acceptance: a, rttMs, room, maxFramesPerToken: cap })
      assert.ok(Number.isInteger(n) && n <= room)
      assert.ok(room === 0 ? n === 0 : n >= 1, 'one draft token always (the acceptance stays measurable)')
      if (n > 1) assert.ok((n + 1) / E(a, n) <= cap + 1e-12, `n = ${n}: ${(n + 1) / E(a, n)} frames per token > ${cap}`)
      // never longer than without the cap, and equal to it whenever that one fits the cap
      const free = draftLengthFor({ acceptance: a, rttMs, room, maxFramesPerToken: Infinity })
      assert.ok(n <= free)
      if (free <= 1 || (free + 1) / E(a, free) <= cap) assert.equal(n, free)
    }), { numRuns: runs(300) })
    // a = 0.78: 3 draft tokens cost 1.40 frames per emitted token, 4 cost 1.55, 5 cost 1.70
    assert.equal(draftLengthFor({ acceptance: 0.78, rttMs: 200, room: 16, maxFramesPerToken: 1.6 }), 4)
    assert.equal(draftLengthFor({ acceptance: 0.78, rttMs: 200, room: 16, maxFramesPerToken: 1.5 }), 3)
    assert.equal(draftLengthFor({ acceptance: 0.5, rttMs: 200, room: 16, maxFramesPerToken: 1.3 }), 1, 'one draft token even where it costs more than the cap')
    assert.equal(draftLengthFor({ acceptance: 0.9, rttMs: 200, room: 0, maxFramesPerToken: 2 }), 0, 'no room: no draft')
  })

  it('longer drafts on slower links and at higher acceptance (no cap)', () => {
    const at = (acceptance: number, rttMs: number): number => draftLengthFor({ acceptance, rttMs, room: 16, maxFramesPerToken: Infinity })
    assert.ok(at(0.9, 200) > at(0.9, 5))
    assert.ok(at(0.9, 200) > at(0.5, 200))
    assert.equal(at(Number.NaN, 200), at(0.05, 200), 'an unknown acceptance counts as the lowest')
  })

  it("the default cap is a byte budget: the sessions' measured bytes per frame, else the encoding's estimate", () => {
    assert.equal(frameBytes([undefined, { bytesReceived: 0, frames: 0 }], 'compact'), FRAME_BYTES_ESTIMATE.compact)
    assert.equal(frameBytes([], 'full'), FRAME_BYTES_ESTIMATE.full)
    assert.equal(frameBytes([{ bytesReceived: 6300, frames: 10 }, undefined, { bytesReceived: 1900, frames: 3 }], 'full'), 8200 / 13)
    // the same 1.4 KB buy longer drafts in compact frames than in full ones (a = 0.78: 1.6 full frames per token allow 4)
    const length = (bytes: number): number => draftLengthFor({ acceptance: 0.78, rttMs: 200, room: 16, maxFramesPerToken: DRAFT_BYTES_PER_TOKEN / bytes })
    assert.equal(length(FRAME_BYTES_ESTIMATE.full), 4)
    assert.ok(length(FRAME_BYTES_ESTIMATE.compact) > length(FRAME_BYTES_ESTIMATE.full))
  })
})
