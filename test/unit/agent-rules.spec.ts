/* The agent's rules: detectors on injected metrics, disjoint subsets and minimal rebalancing, capacity and phase, fallback, fractal K, evidence filling, the store. */
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { detect, allowedActionTypes, median, type Finding } from '../../src/agent/detectors.js'
import { syntheticMetrics, metricsToSamples, churn, type InjectedMetrics } from '../../src/agent/observe.js'
import { partition, moved, streamFor, type Assignment } from '../../src/agent/subsets.js'
import { FallbackController, bestExpert, capacityReport, complexityOf, fractalK, phaseThresholds, priorityOf, qualifiedPhase, streamCapacity } from '../../src/agent/capacity.js'
import { mergeEvidence } from '../../src/agent/agent.js'
import { tvDistance, spotCheckPairs } from '../../src/agent/audit.js'
import { AgentStore } from '../../src/agent/store.js'
import { outputOf, type TaskAction } from '../../src/tasks/model.js'
import { ACTIONS, Tier } from '../../src/governance/tiers.js'

const ids = (n: number, p = 'E'): string[] => Array.from({ length: n }, (_, i) => `${p}${String(i).padStart(4, '0')}`)
const healthy = (extra: Record<string, any> = {}): any => ({ samples: 20, successes: 20, failures: 0, consecutiveFailures: 0, circuitOpen: false, latencyMs: 40, ...extra })
function metrics (n: number, patch: InjectedMetrics = {}): ReturnType<typeof syntheticMetrics> {
  const experts: Record<string, any> = {}
  for (const id of ids(n)) experts[id] = healthy()
  return syntheticMetrics({ ...patch, experts: { ...experts, ...(patch.experts ?? {}) } })
}
const kinds = (fs: Finding[]): string[] => fs.map(f => f.kind).sort()

describe('agent: detectors', () => {
  const cfg = { k: 3, minExperts: 3 }

  it('a healthy mesh has no finding', () => {
    assert.deepEqual(detect(metrics(5), { experts: ids(5), rejected: { forged: 0, replay: 0, malformed: 0, other: 0 } }, cfg), [])
  })

  it('a failing expert (open circuit, consecutive failures or failure rate), with its numbers', () => {
    const [a, b, c] = ids(3)
    const fs = detect(metrics(6, { experts: { [a]: healthy({ circuitOpen: true, failures: 4, successes: 16, consecutiveFailures: 1, lastError: 'stream reset' }), [b]: healthy({ consecutiveFailures: 2, failures: 2 }), [c]: healthy({ failures: 5, successes: 15 }) } }), undefined, cfg)
    const failing = fs.filter(f => f.kind === 'expert_failing')
    assert.deepEqual(failing.map(f => f.experts[0]).sort(), [a, b, c])
    const fa = failing.find(f => f.experts[0] === a)!
    assert.equal(fa.severity, 'critical')
    assert.match(fa.evidence[0], new RegExp(`expert ${a}: 4 failures of 20 requests, 1 consecutive, circuit open`))
    assert.match(fa.evidence[1], /stream reset/)
    assert.deepEqual(fa.actionTypes, ['flag_expert', 'report', 'benchmark_expert', 'ban_expert'])
    assert.equal(fa.key, `expert_failing:${a}`)
  })

  it('a slow expert (latency ≫ median), not the failing ones', () => {
    const [a] = ids(1)
    const fs = detect(metrics(5, { experts: { [a]: healthy({ latencyMs: 400 }) } }), undefined, cfg)
    assert.deepEqual(kinds(fs), ['expert_slow'])
    assert.match(fs[0].evidence[0], /latency 400 ms = 10\.0x the median 40 ms of 5 experts/)
    assert.equal(median([1, 3, 2, 10]), 2.5)
  })

  it('bandwidth above 1000 bytes per expert per token', () => {
    assert.deepEqual(kinds(detect(metrics(5, { bytesPerExpertToken: 870 }), undefined, cfg)), [])
    const fs = detect(metrics(5, { bytesPerExpertToken: 2400 }), undefined, cfg)
    assert.deepEqual(kinds(fs), ['bandwidth'])
    assert.match(fs[0].evidence[0], /^2400 bytes per expert per token, budget 1000 \(2\.4x\)/)
    assert.equal(fs[0].severity, 'critical')
    const per = detect(metrics(5, { experts: { E0001: healthy({ bytesPerToken: 1500 }) } }), undefined, cfg)
    assert.deepEqual(per[0].experts, ['E0001'])
  })

  it('too few experts (below K, below the minimum) and for the phase in force', () => {
    assert.deepEqual(kinds(detect(metrics(2), undefined, cfg)), ['too_few_experts'])
    assert.deepEqual(kinds(detect(metrics(4, { experts: { E0000: healthy({ circuitOpen: true }), E0001: healthy({ circuitOpen: true }) } }), undefined, cfg)).filter(k => k === 'too_few_experts'), ['too_few_experts'])
    const fs = detect(metrics(10, { governance: { phase: 3 } }), undefined, { k: 3, minExperts: 280 })
    assert.deepEqual(kinds(fs), ['phase_capacity', 'too_few_experts'])
    assert.match(fs.find(f => f.kind === 'phase_capacity')!.evidence[0], /phase 3 in force, 10 experts qualify for phase 1/)
  })

  it('security: forged and replayed governance messages since the last cycle', () => {
    const prev = { experts: ids(4), rejected: { forged: 2, replay: 1, malformed: 0, other: 0 } }
    assert.deepEqual(detect(metrics(4, { governance: { rejected: { forged: 2, replay: 1 } } }), prev, cfg), [])
    const fs = detect(metrics(4, { governance: { rejected: { forged: 5, replay: 1 } } }), prev, cfg)
    assert.deepEqual(kinds(fs), ['security'])
    assert.equal(fs[0].evidence[0], '3 forged governance messages rejected since the last cycle (total 5)')
    assert.equal(fs[0].severity, 'critical')
    // first cycle (no previous): totals count; after a restart (counter went down) too
    assert.equal(detect(metrics(4, { governance: { rejected: { replay: 1 } } }), undefined, cfg)[0].numbers.replay, 1)
    assert.equal(detect(metrics(4, { governance: { rejected: { forged: 1 } } }), prev, cfg)[0].numbers.forged, 1)
  })

  it('DHT routing table empty; churn of many experts', () => {
    assert.deepEqual(kinds(detect(metrics(4, { dht: { routingTableSize: 0 } }), undefined, cfg)), ['dht_empty'])
    const m = syntheticMetrics({ experts: Object.fromEntries(ids(3).map(i => [i, healthy()])) }, { experts: ids(5) })
    assert.deepEqual(m.churn, { appeared: [], disappeared: ['E0003', 'E0004'] })
    assert.deepEqual(kinds(detect(m, { experts: ids(5) }, cfg)), ['churn'])
    assert.deepEqual(churn(['a', 'b'], ['b', 'c']), { appeared: ['c'], disappeared: ['a'] })
  })

  it('fallback mode keeps only read-only and suggest action types', () => {
    const f = detect(metrics(6, { experts: { E0000: healthy({ circuitOpen: true }) } }), undefined, cfg)[0]
    assert.deepEqual(allowedActionTypes(f, Tier.SUGGEST), ['flag_expert', 'report'])
    for (const t of allowedActionTypes(f, Tier.SUGGEST)) assert.ok(ACTIONS[t].tier <= Tier.SUGGEST)
  })

  it('metrics become labelled samples', () => {
    const s = metricsToSamples(metrics(2, { bytesPerExpertToken: 900 }))
    assert.ok(s.some(x => x.name === 'experts_online' && x.value === 2))
    assert.ok(s.some(x => x.name === 'expert_latency_ms' && x.labels?.expert === 'E0001' && x.value === 40))
    assert.ok(s.some(x => x.name === 'gov_rejected' && x.labels?.reason === 'forged'))
  })
})

describe('agent: subsets', () => {
  const DOMAINS = ['security', 'scheduler', 'network', 'capacity', 'storage', 'governance']
  const check = (a: Assignment, experts: string[], k: number): void => {
    const all = Object.values(a.streams).flat()
    assert.equal(new Set(all).size, all.length, 'disjoint')
    for (const [d, m] of Object.entries(a.streams)) assert.ok(m.length >= k, `${d} has ${m.length} < ${k}`)
    assert.deepEqual([...all, ...a.spare].sort(), [...experts].sort(), 'every expert placed once')
    const sizes = Object.values(a.streams).map(m => m.length)
    if (sizes.length > 0) assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, 'balanced')
  }

  it('property: disjoint subsets of ≥ K, balanced, min(domains, ⌊N/K⌋) streams', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 60 }), fc.integer({ min: 1, max: 8 }), (n, k) => {
      const e = ids(n)
      const a = partition(e, DOMAINS, { k })
      check(a, e, k)
      assert.equal(Object.keys(a.streams).length, Math.min(DOMAINS.length, Math.floor(n / k)))
      assert.deepEqual(Object.keys(a.streams), DOMAINS.slice(0, Object.keys(a.streams).length), 'domains in priority order')
    }))
  })

  it('property: an expert leaving moves at most one expert (or only a dissolved stream\'s)', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 60 }), fc.integer({ min: 1, max: 6 }), fc.nat(), (n, k, pick) => {
      const e = ids(n)
      const a = partition(e, DOMAINS, { k })
      const gone = e[pick % n]
      const rest = e.filter(x => x !== gone)
      const b = partition(rest, DOMAINS, { k, previous: a })
      check(b, rest, k)
      const before = Object.keys(a.streams).length
      const after = Object.keys(b.streams).length
      if (after === before) assert.ok(moved(a, b) <= 1, `moved ${moved(a, b)}`)
      else {
        const dissolved = Object.keys(a.streams).filter(d => !(d in b.streams))
        const bound = dissolved.reduce((s, d) => s + a.streams[d].length, 0) + 1
        assert.ok(moved(a, b) <= bound, `moved ${moved(a, b)} > ${bound}`)
      }
      // an expert joining moves nobody while the stream count stays
      const c = partition([...rest, 'NEW'], DOMAINS, { k, previous: b })
      check(c, [...rest, 'NEW'], k)
      if (Object.keys(c.streams).length === Object.keys(b.streams).length) assert.equal(moved(b, c), 0)
    }))
  })

  it('caps streams by the capacity rule; routes findings to their domain stream', () => {
    const a = partition(ids(30), DOMAINS, { k: 3, maxStreams: 2 })
    assert.deepEqual(Object.keys(a.streams), ['security', 'scheduler'])
    assert.equal(a.streams.security.length + a.streams.scheduler.length, 30)
    assert.equal(streamFor(['network', 'scheduler'], ['security', 'scheduler'], new Map()), 'scheduler')
    assert.equal(streamFor(['storage'], ['security', 'scheduler'], new Map([['security', 2]])), 'scheduler')
  })
})

describe('agent: capacity, fallback, fractal K', () => {
  it('stream capacity: the seed figures (280 → 1, ~1,000 → 3–7, 5,000 → 37+)', () => {
    assert.equal(streamCapacity(279), 0)
    assert.equal(streamCapacity(280), 1)
    const s1000 = streamCapacity(1000)
    assert.ok(s1000 >= 3 && s1000 <= 7, String(s1000))
    assert.ok(streamCapacity(5000) >= 37)
    for (let n = 281; n < 6000; n += 97) assert.ok(streamCapacity(n) >= streamCapacity(n - 97), 'monotone')
    assert.equal(streamCapacity(5, { minExperts: 2, expertsPerStream: 1 }), 4)
  })

  it('qualified phase (reported, never applied)', () => {
    assert.deepEqual(phaseThresholds(), [0, 1, 280, 1000, 5000])
    assert.deepEqual([0, 1, 279, 280, 999, 1000, 4999, 5000].map(n => qualifiedPhase(n)), [0, 1, 1, 2, 2, 3, 3, 4])
    const r = capacityReport(1000, 3, 1)
    assert.equal(r.qualifiedPhase, 3)
    assert.equal(r.currentPhase, 1)
    assert.equal(r.mode, 'distributed')
    assert.match(r.note, /PHASE vote/)
    assert.equal(capacityReport(100, 3, 0).mode, 'fallback')
    assert.throws(() => phaseThresholds({ phaseThresholds: [0, 5, 3, 4, 9] }), RangeError)
  })

  it('fallback engages below the minimum and releases at or above it (with hysteresis)', () => {
    const f = new FallbackController(280)
    assert.deepEqual(f.update(300), { active: false, changed: false })
    assert.deepEqual(f.update(279), { active: true, changed: true })
    assert.deepEqual(f.update(250), { active: true, changed: false })
    assert.deepEqual(f.update(280), { active: false, changed: true })
    const h = new FallbackController(3, 2)
    h.update(2)
    assert.equal(h.update(4).active, true, 'hysteresis: not yet')
    assert.equal(h.update(5).active, false)
  })

  it('the best expert: closed circuit, reliable, fast', () => {
    const best = bestExpert([
      { id: 'slow', ...healthy({ latencyMs: 200 }) },
      { id: 'broken', ...healthy({ latencyMs: 5, circuitOpen: true }) },
      { id: 'flaky', ...healthy({ latencyMs: 30, failures: 10, successes: 10 }) },
      { id: 'good', ...healthy({ latencyMs: 35 }) }
    ])
    assert.equal(best, 'good')
    assert.equal(bestExpert([{ id: 'unmeasured', samples: 0, successes: 0, failures: 0, consecutiveFailures: 0, circuitOpen: false, recordTokensPerSecond: 100 }]), 'unmeasured')
    assert.equal(bestExpert([]), undefined)
  })

  it('fractal K = clamp(round(baseK × priority × complexity), 1, available)', () => {
    assert.equal(fractalK({ baseK: 3, priority: 1, complexity: 1, available: 10 }), 3)
    assert.equal(fractalK({ baseK: 3, priority: 2, complexity: 2, available: 10 }), 10)
    assert.equal(fractalK({ baseK: 3, priority: 2, complexity: 2, available: 50 }), 12)
    assert.equal(fractalK({ baseK: 3, priority: 0.5, complexity: 0.5, available: 10 }), 1)
    assert.equal(fractalK({ baseK: 3, priority: 1, complexity: 1, available: 0 }), 1)
    assert.deepEqual([priorityOf('info'), priorityOf('warning'), priorityOf('critical')], [0.5, 1, 2])
    assert.equal(complexityOf(0, 0), 0.5)
    assert.equal(complexityOf(2, 4), 1.5)
    assert.equal(complexityOf(10, 10), 2)
    fc.assert(fc.property(fc.integer({ min: 1, max: 16 }), fc.double({ min: 0.1, max: 4, noNaN: true }), fc.double({ min: 0.5, max: 2, noNaN: true }), fc.integer({ min: 1, max: 100 }), (b, p, c, n) => {
      const k = fractalK({ baseK: b, priority: p, complexity: c, available: n })
      assert.ok(k >= 1 && k <= n && Number.isInteger(k))
    }))
  })
})

describe('agent: evidence, audit maths', () => {
  it('fills the detector\'s numbers when the model\'s evidence lacks them', () => {
    const det = ['expert X: 5 failures of 15 requests, 3 consecutive, circuit open', 'DHT routing table size 0']
    assert.deepEqual(mergeEvidence([], det), { evidence: det, filled: 2 })
    const m = mergeEvidence(['it failed 5 of 15 requests (3 in a row)', ', ,', 'the table has size 0 right now', 'it failed 5 of 15 requests (3 in a row)'], det)
    assert.deepEqual(m, { evidence: ['it failed 5 of 15 requests (3 in a row)', 'the table has size 0 right now'], filled: 0 })
    assert.equal(mergeEvidence(['only 5 failures'], det).filled, 2)
  })

  it('total-variation distance and spot-check pairs', () => {
    const a = { ids: Uint32Array.of(1, 2), probs: Float64Array.of(0.5, 0.3), restProb: 0.1, restCount: 2 }
    assert.equal(tvDistance(a, a), 0)
    const b = { ids: Uint32Array.of(3, 4), probs: Float64Array.of(0.5, 0.3), restProb: 0.1, restCount: 2 }
    assert.ok(Math.abs(tvDistance(a, b) - 0.6) < 1e-12) // vocabulary {1,2,3,4}: ½(.4+.2+.4+.2)
    const c = { ids: Uint32Array.of(7), probs: Float64Array.of(1), restProb: 0, restCount: 3 }
    const d = { ids: Uint32Array.of(8), probs: Float64Array.of(1), restProb: 0, restCount: 3 }
    assert.equal(tvDistance(c, d), 1)
    assert.deepEqual(spotCheckPairs(['c', 'a', 'b'], 0, 1), [['a', 'b']])
    assert.deepEqual(spotCheckPairs(['c', 'a', 'b'], 2, 2), [['c', 'a'], ['a', 'b']])
    assert.deepEqual(spotCheckPairs(['a'], 0, 1), [])
  })
})

describe('agent: store (node:sqlite)', () => {
  const action = (state: TaskAction['state']): TaskAction => ({ type: 'report', params: { title: 't' }, tier: 'READ_ONLY', known: true, state, reason: '', needs: [] })

  it('cycles, samples, tasks, approvals; bounded retention', () => {
    const s = new AgentStore(':memory:', { maxSamples: 50, maxTasks: 3, maxCycles: 2, maxSampleAgeMs: 1000 })
    const t0 = s.tasks
    try {
      const c1 = s.startCycle(1000)
      s.addSamples(c1, [{ name: 'x', value: 1 }, { name: 'x', labels: { e: 'a' }, value: 2 }, { name: 'bad', value: NaN }], 1000)
      s.endCycle(c1, 'done', 'distributed', { experts: ['a'] }, 1001)
      assert.deepEqual(s.samples(c1).map(x => [x.name, x.labels, x.value]), [['x', {}, 1], ['x', { e: 'a' }, 2]])
      const c2 = s.startCycle(2000)
      assert.deepEqual(s.previousCycle(c2)?.summary, { experts: ['a'] })
      const review: TaskAction = { type: 'flag_expert', params: { expert: 'E0001', reason: 'slow' }, tier: 'SUGGEST', known: true, state: 'awaiting_review', reason: 'SUGGEST: suggestions never execute on their own', needs: ['human review'] }
      const t = t0.addAgentTask({ cycle: c2, domain: 'security', title: 'a', rationale: 'b', evidence: ['1'], actions: [action('executed'), review], source: 'mesh', findingKey: 'k:1', meta: { tokens: 3 } }, 2000)
      assert.equal(t0.get(t.id)?.meta?.tokens, 3)
      assert.deepEqual([t.state, t.status, t.approval, t.tierName, t.type, t.needs], ['awaiting_review', 'queued', 'pending', 'SUGGEST', 'flag_expert', ['human review']])
      assert.equal(t0.openTaskFor('k:1', 0)?.id, t.id)
      assert.equal(t0.openTaskFor('k:1', 2001), undefined)
      t0.addApproval(t.id, { by: 'alice', decision: 'approve', note: 'ok' }, 2100)
      assert.equal(t0.get(t.id)?.state, 'awaiting_review', 'an approval does not execute anything')
      t0.addApproval(t.id, { by: 'bob', decision: 'reject' }, 2200)
      assert.deepEqual([t0.get(t.id)?.state, t0.get(t.id)?.status, t0.get(t.id)?.updatedAtMs], ['rejected', 'cancelled', 2200])
      assert.equal(t0.openTaskFor('k:1', 0), undefined)
      assert.deepEqual(t0.approvals(t.id).map(a => [a.by, a.decision]), [['alice', 'approve'], ['bob', 'reject']])
      assert.throws(() => t0.addApproval('nope', { by: 'x', decision: 'approve' }), (e: any) => e.name === 'TaskNotFoundError' && /no task "nope"/.test(e.message))
      assert.throws(() => t0.addApproval(t.id, { by: 'x', decision: 'maybe' as any }), (e: any) => e.name === 'InvalidTaskError')
      assert.throws(() => t0.addApproval(t.id, { by: 'x'.repeat(257), decision: 'approve' }), (e: any) => e.name === 'InvalidTaskError')
      for (let i = 0; i < 5; i++) t0.addAgentTask({ cycle: c2, domain: 'network', title: `t${i}`, rationale: '', evidence: [], actions: [action('executed')], output: 'report', source: 'audit' }, 3000 + i)
      for (let i = 0; i < 100; i++) s.addSamples(c2, [{ name: 'y', value: i }], 5000)
      s.endCycle(c2, 'done', 'distributed', {}, 5000)
      s.startCycle(6000)
      s.prune(5500)
      assert.equal(t0.count(), 3, 'the task table keeps the newest maxTasks on every insert')
      assert.deepEqual(t0.list().tasks.map(x => x.title), ['t4', 't3', 't2'])
      assert.equal(outputOf(t0.list({ state: 'executed', limit: 1 }).tasks[0]), 'report')
      assert.equal(t0.approvals(t.id).length, 0, 'approvals go with their task')
      assert.ok(s.sampleCount() <= 50)
      assert.equal(s.series('x').length, 0, 'old samples dropped by age')
      assert.equal(s.cycles(10).length, 2)
    } finally {
      s.close()
    }
    assert.equal(t0.db.isOpen, false, 'a task store the agent store opened is closed with it')
  })
})
