/**
 * The 'online' weighting (src/router/online-weights.ts): a router's bounded memory of its
 * experts (ExpertMemory) and one generation's weights (OnlineWeights): base weights from each
 * expert's record, Bayesian averaging over the step's set and its leave-one-out sets.
 */
import assert from 'node:assert/strict'
import fc from 'fast-check'
import {
  ExpertMemory, OnlineWeights, DEFAULT_ONLINE_MEMORY_TOKENS, DEFAULT_ONLINE_EVIDENCE_CAP, DEFAULT_ONLINE_EVIDENCE_STRIDE, ONLINE_LEAVE_ONE_OUT_MAX
} from '../../src/router/online-weights.js'
import { perplexityWeights } from '../../src/aggregate/weighting.js'
import { MAX_TRACKED_EXPERTS } from '../../src/router/health.js'
import { runs } from '../helpers/fuzz.js'

const sum = (xs: number[]): number => xs.reduce((a, x) => a + x, 0)
function near (actual: number[], expected: number[]): void {
  assert.equal(actual.length, expected.length)
  actual.forEach((x, i) => assert.ok(Math.abs(x - expected[i]) < 1e-12, `${x} vs ${expected[i]} at ${i}`))
}

describe('online weights', () => {
  describe('ExpertMemory', () => {
    it('keeps at most memoryTokens tokens per expert (the mean loss kept), evidence within ±evidenceCap', () => {
      const m = new ExpertMemory()
      m.add('a', { nll: 3000, n: 1000, evidence: 25 })
      const a = m.get('a')
      assert.ok(a != null)
      assert.equal(a.n, DEFAULT_ONLINE_MEMORY_TOKENS)
      assert.ok(Math.abs(a.nll / a.n - 3) < 1e-12)
      assert.equal(a.evidence, DEFAULT_ONLINE_EVIDENCE_CAP)
      m.add('a', { nll: 0, n: 0, evidence: -1e9 })
      assert.equal(m.get('a')?.evidence, -DEFAULT_ONLINE_EVIDENCE_CAP)
      // just under the bound nothing is scaled
      const b = new ExpertMemory({ memoryTokens: 10 })
      b.add('x', { nll: 20, n: 10, evidence: 0 })
      assert.deepEqual(b.get('x'), { nll: 20, n: 10, evidence: 0 })
      b.add('x', { nll: 4, n: 1, evidence: 0 })
      assert.equal(b.get('x')?.n, 10)
      assert.ok(Math.abs((b.get('x')?.nll as number) - 240 / 11) < 1e-9)
    })

    it('remembers at most maxExperts experts (default MAX_TRACKED_EXPERTS), the least recently updated forgotten first', () => {
      assert.equal(new ExpertMemory().get('none'), undefined)
      const m = new ExpertMemory({ maxExperts: 3 })
      for (const id of ['a', 'b', 'c']) m.add(id, { nll: 1, n: 1, evidence: 0 })
      m.add('a', { nll: 1, n: 1, evidence: 0 }) // a is now the most recent
      m.add('d', { nll: 1, n: 1, evidence: 0 })
      assert.equal(m.size, 3)
      assert.equal(m.get('b'), undefined)
      assert.equal(m.get('a')?.n, 2)
      const big = new ExpertMemory()
      for (let i = 0; i <= MAX_TRACKED_EXPERTS; i++) big.add(`e${i}`, { nll: 1, n: 1, evidence: 0 })
      assert.equal(big.size, MAX_TRACKED_EXPERTS)
      assert.equal(big.get('e0'), undefined)
    })

    it('ignores non-finite records and rejects bad options; memoryTokens 0 remembers nothing', () => {
      const m = new ExpertMemory()
      m.add('a', { nll: NaN, n: 1, evidence: 0 })
      m.add('b', { nll: 1, n: Infinity, evidence: 0 })
      m.add('c', { nll: 1, n: 1, evidence: -Infinity })
      assert.equal(m.size, 0)
      const none = new ExpertMemory({ memoryTokens: 0 })
      none.add('a', { nll: 1, n: 1, evidence: 0 })
      assert.equal(none.size, 0)
      assert.throws(() => new ExpertMemory({ memoryTokens: -1 }), RangeError)
      assert.throws(() => new ExpertMemory({ evidenceCap: Infinity }), RangeError)
      assert.throws(() => new ExpertMemory({ maxExperts: 0 }), RangeError)
      assert.throws(() => new OnlineWeights(undefined, { fullPrior: 0 }), RangeError)
      assert.throws(() => new OnlineWeights(undefined, { evidenceCap: -1 }), RangeError)
    })
  })

  describe('OnlineWeights', () => {
    it('with no record every expert weighs the same; with two experts the weights are perplexityWeights of the records', () => {
      near(new OnlineWeights().weights(['a', 'b', 'c']), [1 / 3, 1 / 3, 1 / 3])
      const w = new OnlineWeights()
      w.observe([{ id: 'a', p: 0.5 }, { id: 'b', p: 0.01 }])
      w.observe([{ id: 'a', p: 0.25 }, { id: 'b', p: 0.1 }])
      const expected = perplexityWeights([{ logprob: Math.log(0.5 * 0.25), count: 2 }, { logprob: Math.log(0.01 * 0.1), count: 2 }])
      assert.deepEqual(w.weights(['a', 'b']), expected)
    })

    it('an expert whose presence makes the mixture predict worse fades out below its base weight; a useful one does not', () => {
      // c is never better than both a and b; adding it dilutes them
      const w = new OnlineWeights(undefined, { evidenceStride: 1 })
      for (let t = 0; t < 60; t++) w.observe([{ id: 'a', p: 0.3 }, { id: 'b', p: 0.2 + (t % 2) * 0.2 }, { id: 'c', p: 0.15 }])
      const [wa, wb, wc] = w.weights(['a', 'b', 'c'])
      const base = perplexityWeights([{ logprob: 60 * Math.log(0.3), count: 60 }, { logprob: 30 * Math.log(0.2) + 30 * Math.log(0.4), count: 60 }, { logprob: 60 * Math.log(0.15), count: 60 }])
      assert.ok(Math.abs(wa + wb + wc - 1) < 1e-12)
      assert.ok(wc < base[2] / 10, `c ${wc} vs base ${base[2]}`)
      // d is poor on average but the only one to predict every fifth token: it stays
      const v = new OnlineWeights(undefined, { evidenceStride: 1 })
      for (let t = 0; t < 60; t++) {
        const rare = t % 5 === 0
        v.observe([{ id: 'a', p: rare ? 1e-6 : 0.4 }, { id: 'b', p: rare ? 1e-6 : 0.4 }, { id: 'd', p: rare ? 0.5 : 0.01 }])
      }
      const wd = v.weights(['a', 'b', 'd'])[2]
      const baseD = perplexityWeights([{ logprob: 12 * Math.log(1e-6) + 48 * Math.log(0.4), count: 60 }, { logprob: 12 * Math.log(1e-6) + 48 * Math.log(0.4), count: 60 }, { logprob: 12 * Math.log(0.5) + 48 * Math.log(0.01), count: 60 }])[2]
      assert.ok(wd >= baseD * 0.99, `d ${wd} vs base ${baseD}`)
    })

    it('the sets are weighed with the probability the caller computes: members without one expert, weights renormalised', () => {
      const w = new OnlineWeights()
      const calls: Array<{ members: number[], weights: number[] }> = []
      w.observe([{ id: 'a', p: 0.5 }, { id: 'b', p: 0.5 }, { id: 'c', p: 0.5 }], (members, weights) => {
        calls.push({ members, weights })
        return members.includes(2) ? 0.01 : 0.5 // the aggregate with c is far worse
      })
      assert.deepEqual(calls.map(c => c.members), [[0, 1, 2], [1, 2], [0, 2], [0, 1]])
      for (const c of calls) assert.ok(Math.abs(sum(c.weights) - 1) < 1e-12)
      const [, , wc] = w.weights(['a', 'b', 'c'])
      assert.ok(wc < 0.05, `${wc}`)
      // a set the caller has no probability for (NaN, out of [0, 1]) gives no evidence; the others still do
      const memory = new ExpertMemory()
      const v = new OnlineWeights(memory, { evidenceStride: 1 })
      v.observe([{ id: 'a', p: 0.5 }, { id: 'b', p: 0.5 }, { id: 'c', p: 0.5 }], (members) => members.length === 3 ? 0.5 : members.includes(0) ? NaN : 0.25)
      v.observe([{ id: 'a', p: 0.5 }, { id: 'b', p: 0.5 }, { id: 'c', p: 0.5 }], (members) => members.length === 3 ? NaN : 0.9)
      v.commit()
      assert.equal(memory.get('a')?.evidence, Math.log(0.25) - Math.log(0.5)) // without a: the only finite set of the first token
      assert.equal(memory.get('b')?.evidence, 0)
      assert.equal(memory.get('c')?.evidence, 0)
    })

    it('a generation starts from what the router remembers: commit hands it over, bounded', () => {
      const memory = new ExpertMemory()
      const g1 = new OnlineWeights(memory, { evidenceStride: 1 })
      for (let t = 0; t < 40; t++) g1.observe([{ id: 'a', p: 0.4 }, { id: 'b', p: 0.4 }, { id: 'c', p: 0.001 }])
      const during = g1.weights(['a', 'b', 'c'])
      assert.equal(memory.size, 0) // nothing until the generation ends
      g1.commit()
      assert.equal(memory.get('a')?.n, 40)
      const g2 = new OnlineWeights(memory)
      assert.deepEqual(g2.weights(['a', 'b', 'c']), during)
      // a fresh router starts from scratch
      near(new OnlineWeights(new ExpertMemory()).weights(['a', 'b', 'c']), [1 / 3, 1 / 3, 1 / 3])
      // what g2 adds is added once, on top of what g1 left
      g2.observe([{ id: 'a', p: 0.4 }, { id: 'b', p: 0.4 }, { id: 'c', p: 0.001 }])
      g2.commit()
      g2.commit()
      assert.equal(memory.get('a')?.n, 41)
    })

    it(`the sets' evidence comes from every ${DEFAULT_ONLINE_EVIDENCE_STRIDE}th token of a generation (the 1st, ${DEFAULT_ONLINE_EVIDENCE_STRIDE + 1}th, …), whatever the tokens`, () => {
      const w = new OnlineWeights()
      const at: number[] = []
      for (let t = 0; t < 3 * DEFAULT_ONLINE_EVIDENCE_STRIDE + 1; t++) {
        w.observe([{ id: 'a', p: 0.5 }, { id: 'b', p: 0.1 }, { id: 'c', p: 0.2 }], (members) => { if (members.length === 3) at.push(t); return 0.3 })
      }
      assert.deepEqual(at, [0, 1, 2, 3].map(i => i * DEFAULT_ONLINE_EVIDENCE_STRIDE))
      assert.throws(() => new OnlineWeights(undefined, { evidenceStride: 0 }), RangeError)
      assert.throws(() => new OnlineWeights(undefined, { evidenceStride: 1.5 }), RangeError)
    })

    it(`above ${ONLINE_LEAVE_ONE_OUT_MAX} experts a step uses the base weights (no K + 1 aggregations per token)`, () => {
      const ids = Array.from({ length: ONLINE_LEAVE_ONE_OUT_MAX + 1 }, (_, i) => `e${i}`)
      const w = new OnlineWeights()
      let called = 0
      w.observe(ids.map((id, i) => ({ id, p: (i + 1) / 20 })), () => { called++; return 0.5 })
      assert.equal(called, 0)
      assert.deepEqual(w.weights(ids), perplexityWeights(ids.map((_, i) => ({ logprob: Math.log((i + 1) / 20), count: 1 }))))
      // at the bound the sets are weighed
      const at = new OnlineWeights()
      at.observe(ids.slice(0, ONLINE_LEAVE_ONE_OUT_MAX).map(id => ({ id, p: 0.1 })), () => { called++; return 0.5 })
      assert.equal(called, ONLINE_LEAVE_ONE_OUT_MAX + 1)
    })

    it('weights are a distribution and evidence stays within its cap, whatever the probabilities (fast-check)', () => {
      fc.assert(fc.property(
        fc.integer({ min: 1, max: 9 }),
        fc.array(fc.array(fc.oneof(fc.double({ min: 0, max: 1, noNaN: true }), fc.constantFrom(0, NaN, Infinity, 1e-300)), { minLength: 9, maxLength: 9 }), { minLength: 1, maxLength: 30 }),
        (K, steps) => {
          const memory = new ExpertMemory({ evidenceCap: 3 })
          const w = new OnlineWeights(memory, { evidenceStride: 1 })
          const ids = Array.from({ length: K }, (_, i) => `e${i}`)
          for (const ps of steps) {
            const ws = w.weights(ids)
            assert.equal(ws.length, K)
            assert.ok(ws.every(x => x >= 0 && Number.isFinite(x)))
            assert.ok(Math.abs(sum(ws) - 1) < 1e-9)
            w.observe(ids.map((id, i) => ({ id, p: ps[i] })), (members) => ps[members[0]])
          }
          w.commit()
          for (const id of ids) {
            const s = memory.get(id)
            assert.ok(s != null && Math.abs(s.evidence) <= 3 && s.n <= DEFAULT_ONLINE_MEMORY_TOKENS && Number.isFinite(s.nll))
          }
        }), { numRuns: runs(200) })
    })
  })
})
