/**
 * Issue 10 §9: every per-peer table of a router is bounded (identities are free). At the
 * bound (MAX_TRACKED_EXPERTS) one more expert drops the least recently used entry; a ban in
 * force is the last thing the reputation table forgets.
 */
import assert from 'node:assert/strict'
import { HealthTable, LruMap, MAX_TRACKED_EXPERTS } from '../../src/router/health.js'
import { ReputationTable } from '../../src/router/reputation.js'
import { aggregate } from '../../src/aggregate/aggregate.js'
import type { Frame } from '../../src/wire/types.js'

const V = 1000

function frame (probs: Record<number, number>): Frame {
  const ids = Object.keys(probs).map(Number).sort((x, y) => x - y)
  const listed = ids.reduce((s, id) => s + probs[id], 0)
  return { position: 0, ids: Uint32Array.from(ids), logprobs: Float32Array.from(ids.map(id => Math.log(probs[id]))), tailMass: Math.max(0, 1 - listed) }
}

describe('router: per-peer tables are bounded', () => {
  it('LruMap: at its limit, one more entry drops the least recently used; get refreshes, peek does not', () => {
    const m = new LruMap<string, number>(3)
    m.set('a', 1).set('b', 2).set('c', 3)
    assert.equal(m.get('a'), 1) // a is now the most recent
    assert.equal(m.peek('b'), 2) // peek leaves b the least recent
    m.set('d', 4)
    assert.equal(m.size, 3)
    assert.deepEqual([...m].map(([k]) => k), ['c', 'a', 'd'])
    // entries that may not be evicted are passed over while others remain
    const keep = new LruMap<string, boolean>(2, (_k, pinned) => !pinned)
    keep.set('pinned', true).set('x', false).set('y', false)
    assert.ok(keep.has('pinned') && !keep.has('x') && keep.has('y'))
  })

  it(`HealthTable holds at most MAX_TRACKED_EXPERTS (${MAX_TRACKED_EXPERTS}) experts`, () => {
    const t = new HealthTable()
    for (let i = 0; i < MAX_TRACKED_EXPERTS; i++) t.get(`p${i}`)
    assert.equal(t.size, MAX_TRACKED_EXPERTS)
    t.success('p0', 10) // recently used
    t.failure('p-new', 'refused') // one more expert
    assert.equal(t.size, MAX_TRACKED_EXPERTS)
    assert.equal(t.peek('p0')?.samples, 1, 'the recently used entry stays')
    assert.equal(t.peek('p1'), undefined, 'the least recently used one went')
    assert.equal(t.peek('p-new')?.failures, 1)
  })

  it(`ReputationTable holds at most MAX_TRACKED_EXPERTS (${MAX_TRACKED_EXPERTS}) experts, and a flood of new identities cannot lift a ban`, () => {
    const t = new ReputationTable()
    const honest = [frame({ 1: 0.5, 2: 0.3, 3: 0.1 }), frame({ 1: 0.45, 2: 0.35, 3: 0.1 })]
    const liar = frame({ 999: 0.95 })
    for (let i = 0; i < 100 && !t.banned('liar'); i++) {
      const frames = [{ id: 'h0', frame: honest[0] }, { id: 'h1', frame: honest[1] }, { id: 'liar', frame: liar }]
      t.observe(frames, aggregate(frames.map(f => ({ dist: f.frame, weight: 1 })), { rule: 'median', vocabSize: V }), V)
    }
    assert.ok(t.banned('liar'), 'the liar is banned')
    // the liar's Sybils: as many fresh identities as the table holds, each seen once
    for (let i = 0; i < MAX_TRACKED_EXPERTS; i++) t.get(`sybil${i}`)
    assert.equal(t.size, MAX_TRACKED_EXPERTS)
    assert.ok(t.banned('liar'), 'the ban in force was not evicted')
    assert.equal(t.entries().some(([id]) => id === 'h0'), false, 'unbanned entries went first (least recently used)')
  })
})
