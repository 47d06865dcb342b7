import assert from 'node:assert/strict'
import { disagreement, invalidFrame, ReputationTable } from '../../src/router/reputation.js'
import { aggregate } from '../../src/aggregate/aggregate.js'
import type { Frame } from '../../src/wire/types.js'

const V = 1000

function frame (probs: Record<number, number>, position = 0): Frame {
  const ids = Object.keys(probs).map(Number).sort((x, y) => x - y)
  const listed = ids.reduce((s, id) => s + probs[id], 0)
  return { position, ids: Uint32Array.from(ids), logprobs: Float32Array.from(ids.map(id => Math.log(probs[id]))), tailMass: Math.max(0, 1 - listed) }
}

function step (t: ReputationTable, frames: Array<{ id: string, frame: Frame }>): void {
  const agg = aggregate(frames.map(f => ({ dist: f.frame, weight: t.weight(f.id) })), { rule: 'median', vocabSize: V })
  t.observe(frames, agg, V)
}

describe('reputation and bans', () => {
  it('disagreement is 0 for the aggregate itself and large for a disjoint frame', () => {
    const f = frame({ 1: 0.6, 2: 0.3, 3: 0.05 })
    const agg = aggregate([{ dist: f, weight: 1 }], { rule: 'mixture', vocabSize: V })
    const q = new Map<number, number>()
    agg.ids.forEach((id, i) => q.set(id, agg.probs[i]))
    assert.ok(disagreement(f, q, agg.restProb, agg.ids[0], V) < 1e-3)
    const g = frame({ 500: 0.9, 501: 0.05 })
    assert.ok(disagreement(g, q, agg.restProb, agg.ids[0], V) > 0.9)
  })

  it('bans a persistent outlier after minSamples + banStrikes frames, for a growing time; weak honest experts stay', () => {
    let now = 0
    const t = new ReputationTable({ now: () => now })
    const honestA = frame({ 1: 0.5, 2: 0.3, 3: 0.1 })
    const weakB = frame({ 1: 0.3, 2: 0.35, 4: 0.2 }) // honest but weak: disagrees on the top token
    const weakC = frame({ 1: 0.4, 3: 0.3, 2: 0.1 })
    const liar = frame({ 999: 0.95 })
    let bannedAt = -1
    for (let i = 0; i < 100 && bannedAt < 0; i++) {
      step(t, [{ id: 'a', frame: honestA }, { id: 'b', frame: weakB }, { id: 'c', frame: weakC }, { id: 'x', frame: liar }])
      if (t.banned('x')) bannedAt = i + 1
    }
    assert.ok(bannedAt > 0 && bannedAt <= 30, `banned after ${bannedAt} frames`)
    assert.ok(['a', 'b', 'c'].every(id => !t.banned(id) && t.get(id).bans === 0))
    assert.equal(t.get('x').framesAtFirstBan, bannedAt)
    now += 29_000
    assert.ok(t.banned('x'))
    now += 2_000
    assert.ok(!t.banned('x'), 'the first ban lasts 30 s')
    for (let i = 0; i < 100 && !t.banned('x'); i++) step(t, [{ id: 'a', frame: honestA }, { id: 'b', frame: weakB }, { id: 'c', frame: weakC }, { id: 'x', frame: liar }])
    assert.equal(t.get('x').bans, 2)
    now += 59_000
    assert.ok(t.banned('x'), 'the second ban lasts 60 s')
  })

  it('an outlier loses aggregation weight before it is banned', () => {
    const t = new ReputationTable({ banStrikes: 1000 })
    for (let i = 0; i < 20; i++) step(t, [{ id: 'a', frame: frame({ 1: 0.5, 2: 0.3 }) }, { id: 'b', frame: frame({ 1: 0.4, 2: 0.4 }) }, { id: 'x', frame: frame({ 7: 0.9 }) }])
    assert.ok(t.weight('x') < 0.5, `weight ${t.weight('x')}`)
    assert.equal(t.weight('a'), 1)
  })

  it('two experts alone are never judged (no majority)', () => {
    const t = new ReputationTable()
    for (let i = 0; i < 50; i++) step(t, [{ id: 'a', frame: frame({ 1: 0.9 }) }, { id: 'x', frame: frame({ 7: 0.9 }) }])
    assert.ok(!t.banned('x') && !t.banned('a'))
  })

  it('invalidFrame rejects frames that decode but are not distributions', () => {
    assert.equal(invalidFrame(frame({ 1: 0.5, 2: 0.3 }), V), undefined)
    assert.match(invalidFrame({ position: 0, ids: Uint32Array.of(2, 1), logprobs: Float32Array.of(-1, -1), tailMass: 0.26 }, V) ?? '', /ascending/)
    assert.match(invalidFrame({ position: 0, ids: Uint32Array.of(1, 2), logprobs: Float32Array.of(-0.01, -0.01), tailMass: 0.5 }, V) ?? '', /mass/)
    assert.match(invalidFrame({ position: 0, ids: Uint32Array.of(1), logprobs: Float32Array.of(0.5), tailMass: 0 }, V) ?? '', /logprob/)
    assert.match(invalidFrame({ position: 0, ids: Uint32Array.of(1), logprobs: Float32Array.of(-0.1), tailMass: 2 }, V) ?? '', /tail/)
  })
})
