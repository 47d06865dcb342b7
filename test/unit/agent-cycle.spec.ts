/*
 * The agent's cycle offline: a fake router whose "experts" answer random distributions over
 * a synthetic vocabulary (the constraint must still give valid tasks), a real governance
 * state and service (signed HALT, forged messages), a real store. Gating: nothing above
 * read-only executes in any phase; fallback; concurrent streams on disjoint subsets; HALT.
 */
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { defaultLogger } from '@libp2p/logger'
import type { Aggregated } from '../../src/aggregate/types.js'
import { HealthTable } from '../../src/router/health.js'
import type { GenerateOptions, RouterObserver } from '../../src/router/router.js'
import { defaultThresholds, type GovernanceConfig } from '../../src/governance/config.js'
import { createEnvelope, Kind } from '../../src/governance/envelope.js'
import { GovernanceState } from '../../src/governance/state.js'
import { GovernanceService } from '../../src/governance/service.js'
import { ACTIONS, Tier } from '../../src/governance/tiers.js'
import { HaltedError, NoExpertsError } from '../../src/util/errors.js'
import { Agent, listTasks, type AgentConfig } from '../../src/agent/agent.js'
import { runAgentOnce } from '../../src/agent/once.js'
import { AgentStore } from '../../src/agent/store.js'
import { TaskStore } from '../../src/tasks/store.js'
import { outputOf, type TaskRecord } from '../../src/tasks/model.js'
import { TasksApi } from '../../src/api/task-api.js'
import { ACTION_TYPES, DOMAINS } from '../../src/agent/task-schema.js'
import type { InjectedMetrics } from '../../src/agent/observe.js'

// ---- a synthetic vocabulary
const TEXTS: string[] = []
for (let c = 32; c < 127; c++) TEXTS.push(String.fromCharCode(c))
TEXTS.push('{"', '":"', '","', '"}', '}]}', '"},{"', '":{"', '":[', '"],"', ' the', ' expert', ' failing', ' slow', ' mesh', ' report', ' network')
for (const t of [...ACTION_TYPES, ...DOMAINS, 'domain', 'title', 'rationale', 'evidence', 'actions', 'type', 'params', 'expert', 'reason', 'key', 'value']) TEXTS.push(t, `"${t}"`)
const EOS = TEXTS.length
TEXTS.push('')
const V = TEXTS.length

function rng (seed: number): () => number {
  let a = seed >>> 0
  return () => { a = (a + 0x6d2b79f5) >>> 0; let t = a; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 4294967296 }
}
function randomAgg (r: () => number): Aggregated {
  const ids = new Set<number>()
  while (ids.size < 40) ids.add(Math.floor(r() * V))
  const list = [...ids]
  const w = list.map(() => r() ** 2)
  const total = w.reduce((a, b) => a + b, 0)
  const order = list.map((_, i) => i).sort((a, b) => w[b] - w[a])
  return { ids: Uint32Array.from(order.map(i => list[i])), probs: Float64Array.from(order.map(i => w[i] / total)), restProb: 0, restCount: 0 }
}

interface Call { experts?: string[], k?: number, constrained: boolean, spot: boolean }

/** a router-shaped fake: experts(), health, stats, observers, tokenizer, generate() */
function fakeMesh (experts: string[], o: { seed?: number, onToken?: (call: Call, index: number) => Promise<void> | void, fail?: boolean } = {}): any {
  const r = rng(o.seed ?? 1)
  const active: Call[] = []
  const mesh: any = {
    list: experts,
    calls: [] as Call[],
    overlaps: 0,
    maxConcurrent: 0,
    tokenizer: {
      vocabSize: V,
      model: { detokenize: (ids: number[]) => ids.map(i => TEXTS[i] ?? '').join(''), tokens: { eos: EOS } },
      isEndOfGeneration: (id: number) => id === EOS,
      encodePrompt: (s: string) => Array.from({ length: Math.ceil(s.length / 5) }, () => 1)
    },
    health: new HealthTable(),
    stats: { generations: 0, tokens: 0, bytes: 0, expertSteps: 0, lastTokensPerSecond: 0 },
    observers: new Set<RouterObserver>(),
    async experts () {
      return { compatible: mesh.list.map((id: string) => ({ peerId: { toString: () => id }, modelName: 'fake', tokensPerSecond: 50, contextLength: 512, expiresAtMs: Infinity })), incompatible: [] }
    },
    async generate (_prompt: string, g: GenerateOptions) {
      const call: Call = { experts: g.experts, k: g.k, constrained: g.constrain != null, spot: g.ignoreEos === true }
      mesh.calls.push(call)
      if (o.fail === true && !call.spot) throw new NoExpertsError('no experts found on the mesh')
      if (g.experts != null) for (const a of active) if (a.experts?.some(x => g.experts!.includes(x))) mesh.overlaps++
      active.push(call)
      mesh.maxConcurrent = Math.max(mesh.maxConcurrent, active.length)
      const t0 = performance.now()
      const gen: number[] = []
      try {
        for (let i = 0; i < (g.maxTokens ?? 64); i++) {
          await new Promise(resolve => setImmediate(resolve))
          await o.onToken?.(call, i)
          g.signal?.throwIfAborted()
          const raw = randomAgg(r)
          const agg = g.constrain != null ? g.constrain(raw, gen) : raw
          let u = r()
          let tok = agg.ids[0]
          if ((g.temperature ?? 0.8) > 0) for (let j = 0; j < agg.ids.length; j++) { if (u < agg.probs[j]) { tok = agg.ids[j]; break } u -= agg.probs[j] }
          if (tok === EOS && g.ignoreEos !== true) break
          gen.push(tok)
          g.onToken?.({ token: tok, text: TEXTS[tok], experts: g.experts ?? [], index: i })
        }
      } finally {
        active.splice(active.indexOf(call), 1)
      }
      const used = g.experts ?? mesh.list
      const result = { text: gen.map(t => TEXTS[t]).join(''), tokens: gen.length, tokenIds: gen, promptTokens: 10, elapsedMs: performance.now() - t0, tokensPerSecond: 100, k: g.k ?? 3, effectiveK: Math.min(g.k ?? 3, used.length), experts: used.slice(0, g.k ?? 3), bytesPerExpertToken: 850, finishReason: 'eos', steps: [], warnings: [] }
      for (const ob of mesh.observers) ob.onGeneration?.({ result, perExpert: used.slice(0, g.k ?? 3).map((e: string) => ({ expert: e, bytes: 850 * gen.length, frames: gen.length })) })
      return result
    }
  }
  return mesh
}

const fakeNode = (): any => ({
  services: { dht: { routingTable: { size: 3 } }, pubsub: { publish: async () => ({ recipients: [] }) } },
  getPeers: () => [],
  getConnections: () => [],
  logger: defaultLogger(),
  peerStore: { get: async () => ({ protocols: [] }) }
})

const peers = (n: number): string[] => Array.from({ length: n }, (_, i) => `12D3KooWFake${'ABCDEFGHJKLMNPQRSTUVWXYZ'[i]}${'x'.repeat(40)}`)

describe('agent: one cycle against a fake mesh', function () {
  this.timeout(30_000)
  let keys: PrivateKey[]
  let config: GovernanceConfig
  const mkGov = (): GovernanceService => new GovernanceService(fakeNode(), new GovernanceState(config))
  const forged = async (gov: GovernanceService): Promise<void> => {
    const stranger = await generateKeyPair('Ed25519')
    const now = Date.now()
    const env = await createEnvelope({ kind: Kind.HALT, reason: 'forged', meshId: config.meshId, version: now, issuedAtMs: now, expiresAtMs: now + 60_000 }, [stranger])
    const r = await gov.publish(env)
    assert.equal(r.accepted, false)
  }
  const halt = async (gov: GovernanceService, reason = 'test halt'): Promise<void> => {
    const now = Date.now()
    const env = await createEnvelope({ kind: Kind.HALT, reason, meshId: config.meshId, version: now, issuedAtMs: now, expiresAtMs: now + 60_000 }, [keys[0]])
    assert.equal((await gov.publish(env)).accepted, true)
  }

  before(async () => {
    keys = await Promise.all([1, 2, 3].map(async () => generateKeyPair('Ed25519')))
    config = { meshId: 'agent-unit', keyholders: keys.map(k => ({ publicKey: k.publicKey.raw })), thresholds: defaultThresholds(3), reviewPeriodMs: 86_400_000, revertOnHalt: 3 }
  })

  const ex = peers(6)
  const INJ: InjectedMetrics = { experts: { [ex[1]]: { failures: 6, successes: 14, consecutiveFailures: 3, circuitOpen: true, lastError: 'stream reset' } }, bytesPerExpertToken: 2400 }
  const CFG: AgentConfig = { k: 2, minExperts: 2, expertsPerStream: 1, temperature: 1, seed: 7 }

  const checkGating = (tasks: TaskRecord[], phase: number, readOnly = false): void => {
    for (const t of tasks) {
      for (const a of t.actions) {
        assert.equal(a.known, true)
        const tier = ACTIONS[a.type].tier
        assert.equal(a.tier, Tier[tier])
        if (a.state === 'executed') assert.equal(tier, Tier.READ_ONLY, `${a.type} executed`)
        if (tier === Tier.READ_ONLY) assert.equal(a.state, 'executed')
        else if (readOnly || (tier >= Tier.SANDBOX_TEST && phase < [0, 0, 2, 3, 4][tier])) assert.equal(a.state, 'blocked', `${a.type} in phase ${phase}`)
        else if (tier >= Tier.DEPLOY_MINOR) assert.equal(a.state, 'awaiting_quorum', a.type)
        else assert.equal(a.state, 'awaiting_review', a.type)
      }
      const reports = t.actions.filter(a => a.type === 'report').length
      assert.equal(outputOf(t) != null, reports > 0, 'an output exactly when a report ran')
      const order = ['rejected', 'blocked', 'awaiting_quorum', 'awaiting_review', 'queued', 'executed']
      assert.equal(t.state, order.find(s => t.actions.some(a => a.state === s)))
    }
  }

  it('turns findings into mesh-proposed tasks that cite the evidence; only read-only actions run (phase 0)', async () => {
    const gov = mkGov()
    await forged(gov)
    assert.equal(gov.state.rejected.forged, 1)
    const mesh = fakeMesh(ex)
    const store = new AgentStore(':memory:')
    const agent = new Agent({ node: fakeNode(), router: mesh, governance: gov, store, config: CFG })
    const r = await agent.runCycle({ injected: INJ })
    await agent.close()
    assert.equal(r.state, 'done', r.error)
    assert.equal(r.mode, 'distributed')
    assert.deepEqual(r.findings.map(f => f.kind).sort(), ['bandwidth', 'expert_failing', 'security'])
    const byKey = new Map(r.stored.map(t => [t.findingKey, t]))
    for (const f of r.findings) {
      const t = byKey.get(f.key)!
      assert.equal(t.source, 'mesh')
      assert.ok(f.domains.includes(t.domain as any), t.domain)
      for (const line of f.evidence) for (const n of line.match(/\d+(?:\.\d+)?/g) ?? []) assert.ok(t.evidence.some(e => e.includes(n)), `evidence cites ${n}`)
      for (const a of t.actions) {
        assert.ok(f.actionTypes.includes(a.type), `${a.type} answers ${f.kind}`)
        if ('expert' in a.params) assert.equal(a.params.expert, ex[1])
      }
      assert.equal(typeof t.meta?.raw, 'string')
      JSON.parse(t.meta!.raw as string)
    }
    assert.match(byKey.get('security:governance')!.evidence.join('\n'), /1 forged governance messages rejected since the last cycle \(total 1\)/)
    const audit = r.stored.find(t => t.source === 'audit')!
    assert.equal(audit.state, 'executed')
    assert.match(outputOf(audit)!, /spot check/)
    checkGating(r.stored, 0)
    // the circuit-open expert serves no stream
    assert.ok(!Object.values(r.streams).flat().includes(ex[1]))
    // cycles, samples and tasks are in the store; listTasks gives the CLI shape
    assert.equal(store.cycle(r.cycle)?.state, 'done')
    assert.ok(store.samples(r.cycle).some(s => s.name === 'bytes_per_expert_token' && s.value === 2400))
    const views = listTasks(store.tasks)
    assert.equal(views.length, r.stored.length)
    for (const v of views) {
      assert.deepEqual(Object.keys(v), ['id', 'domain', 'title', 'rationale', 'evidence', 'actions', 'state', 'origin'])
      assert.equal(v.origin, 'agent')
      for (const a of v.actions) assert.deepEqual(Object.keys(a), ['type', 'tier', 'params'])
    }
    store.close()
  })

  it('in every phase and mode nothing above read-only executes', async () => {
    const seen = new Set<string>()
    for (const [phase, readOnly] of [[0, false], [2, false], [3, false], [4, false], [4, true]] as Array<[number, boolean]>) {
      for (let seed = 1; seed <= 3; seed++) {
        const gov = mkGov()
        gov.state.phase = phase
        gov.state.readOnly = readOnly
        await forged(gov)
        const store = new AgentStore(':memory:')
        const agent = new Agent({ node: fakeNode(), router: fakeMesh(ex, { seed }), governance: gov, store, config: { ...CFG, seed, maxTokens: 400 } })
        const r = await agent.runCycle({ injected: { ...INJ, governance: { phase } } })
        await agent.close()
        assert.equal(r.state, 'done', r.error)
        checkGating(r.stored, phase, readOnly)
        for (const t of r.stored) for (const a of t.actions) seen.add(`${a.tier}:${a.state}`)
        store.close()
      }
    }
    assert.ok(seen.has('READ_ONLY:executed'))
    assert.ok([...seen].some(s => !s.startsWith('READ_ONLY')), [...seen].join(' '))
  })

  it('falls back to the single best expert (K = 1, read-only and suggest only) below the minimum, and releases above it', async () => {
    const gov = mkGov()
    const mesh = fakeMesh(ex.slice(0, 3))
    const store = new AgentStore(':memory:')
    const agent = new Agent({ node: fakeNode(), router: mesh, governance: gov, store, config: { ...CFG, minExperts: 5 } })
    mesh.health.success(ex[2], 5) // the fastest measured expert
    mesh.health.success(ex[0], 80)
    const r1 = await agent.runCycle({ injected: { bytesPerExpertToken: 3000 } })
    assert.equal(r1.mode, 'fallback')
    assert.equal(agent.centralised, true)
    assert.deepEqual(r1.streams, { central: [ex[2]] })
    const gens = mesh.calls.filter((c: Call) => c.constrained && !c.spot)
    assert.ok(gens.length >= 2)
    for (const c of gens) { assert.deepEqual(c.experts, [ex[2]]); assert.equal(c.k, 1) }
    for (const t of r1.stored) for (const a of t.actions) assert.ok(ACTIONS[a.type].tier <= Tier.SUGGEST, a.type)
    assert.ok(r1.findings.some(f => f.kind === 'too_few_experts'))
    // back above the minimum
    mesh.list = ex
    mesh.calls.length = 0
    const r2 = await agent.runCycle({ injected: { bytesPerExpertToken: 3000 } })
    assert.equal(r2.mode, 'distributed')
    assert.equal(agent.centralised, false)
    assert.ok(Object.keys(r2.streams).length >= 2)
    await agent.close()
    store.close()
  })

  it('runs independent task streams concurrently on disjoint expert subsets', async () => {
    const gov = mkGov()
    await forged(gov)
    const many = peers(12)
    const mesh = fakeMesh(many)
    const store = new AgentStore(':memory:')
    const agent = new Agent({ node: fakeNode(), router: mesh, governance: gov, store, config: CFG })
    const r = await agent.runCycle({ injected: { ...INJ, experts: { [many[1]]: INJ.experts![ex[1]] }, dht: { routingTableSize: 0 } } })
    await agent.close()
    assert.equal(r.state, 'done', r.error)
    const streams = Object.values(r.streams)
    assert.ok(streams.length >= 3, JSON.stringify(r.streams))
    const all = streams.flat()
    assert.equal(new Set(all).size, all.length, 'disjoint')
    for (const s of streams) assert.ok(s.length >= 2)
    const gens = mesh.calls.filter((c: Call) => c.constrained && !c.spot)
    for (const c of gens) assert.ok(streams.some(s => c.experts!.every((x: string) => s.includes(x))), 'each generation inside one stream')
    assert.equal(mesh.overlaps, 0, 'no expert shared by two concurrent generations')
    assert.ok(mesh.maxConcurrent >= 2, 'streams ran concurrently')
    store.close()
  })

  it('a HALT during a generation aborts it and stops the agent', async () => {
    const gov = mkGov()
    const store = new AgentStore(':memory:')
    let fired = false
    const mesh = fakeMesh(ex, { onToken: async (call, i) => { if (call.constrained && !call.spot && i === 3 && !fired) { fired = true; await halt(gov, 'mid-cycle') } } })
    const agent = new Agent({ node: fakeNode(), router: mesh, governance: gov, store, config: CFG })
    const r = await agent.runCycle({ injected: INJ })
    assert.equal(fired, true)
    assert.equal(r.state, 'halted')
    assert.match(r.haltReason!, /mid-cycle/)
    assert.equal(r.stored.filter(t => t.source === 'mesh').length, 0, 'the interrupted proposal stored nothing')
    assert.equal(r.stored.filter(t => t.source === 'audit').length, 0, 'no audit after the halt')
    assert.equal(store.cycle(r.cycle)?.state, 'halted')
    // while halted: a cycle stops at once, start() refuses, runAgentOnce throws HaltedError
    const r2 = await agent.runCycle({ injected: INJ })
    assert.equal(r2.state, 'halted')
    assert.equal(r2.metrics, undefined)
    assert.throws(() => agent.start(60_000), HaltedError)
    await agent.close()
    await assert.rejects(runAgentOnce({ node: fakeNode(), router: fakeMesh(ex), governance: gov, store }), (e: any) => e.name === 'HaltedError' && /halted by governance: mid-cycle/.test(e.message))
    store.close()
  })

  it('start(): 1 min … 24 h, first cycle at once, the loop stops on HALT', async () => {
    const gov = mkGov()
    const store = new AgentStore(':memory:')
    const agent = new Agent({ node: fakeNode(), router: fakeMesh(ex), governance: gov, store, config: CFG })
    assert.throws(() => agent.start(59_999), RangeError)
    assert.throws(() => agent.start(86_400_001), RangeError)
    const first = new Promise(resolve => agent.start(60_000, { onCycle: resolve }))
    assert.throws(() => agent.start(60_000), /already started/)
    assert.equal(((await first) as any).state, 'done')
    assert.equal(agent.started, true)
    await halt(gov)
    assert.equal(agent.started, false)
    await agent.close()
    store.close()
  })

  it('an open task for the same finding suppresses a new proposal; a failed generation still records the finding', async () => {
    const gov = mkGov()
    const store = new AgentStore(':memory:')
    const earlier = { type: 'suggest_config', params: { key: 'dht.k', value: 20 }, tier: 'SUGGEST', known: true, state: 'awaiting_review' as const, reason: 'SUGGEST: suggestions never execute on their own', needs: ['human review'] }
    store.tasks.addAgentTask({ cycle: 0, domain: 'network', title: 'earlier', rationale: '', evidence: [], actions: [earlier], source: 'mesh', findingKey: 'dht_empty:node' })
    const mesh = fakeMesh(ex, { fail: true })
    const agent = new Agent({ node: fakeNode(), router: mesh, governance: gov, store, config: CFG })
    const r = await agent.runCycle({ injected: { dht: { routingTableSize: 0 }, bytesPerExpertToken: 5000 } })
    await agent.close()
    assert.deepEqual(r.suppressed, ['dht_empty:node'])
    const t = r.stored.find(x => x.findingKey === 'bandwidth:mesh')!
    assert.equal(t.source, 'detector')
    assert.equal(t.state, 'executed')
    assert.deepEqual(t.actions.map(a => a.type), ['report'])
    assert.match(t.evidence[0], /5000 bytes per expert per token/)
    store.close()
  })

  it('runAgentOnce returns exactly the CLI shape', async () => {
    const gov = mkGov()
    const store = new AgentStore(':memory:')
    const out = await runAgentOnce({ node: fakeNode(), router: fakeMesh(ex), governance: gov, store, injected: INJ, config: CFG })
    assert.deepEqual(Object.keys(out), ['tasks'])
    assert.ok(out.tasks.length >= 3)
    for (const t of out.tasks) {
      assert.deepEqual(Object.keys(t), ['id', 'domain', 'title', 'rationale', 'evidence', 'actions', 'state', 'origin'])
      for (const a of t.actions) assert.deepEqual(Object.keys(a), ['type', 'tier', 'params'])
    }
    assert.deepEqual(JSON.parse(JSON.stringify(out)), out)
    store.close()
  })
  it('one task table: the cycle\'s tasks are listed by the API facade (TasksApi) beside a submitted task, each with its tier, approval and state', async () => {
    const gov = mkGov()
    const tasks = new TaskStore(':memory:')
    const api = new TasksApi(tasks, gov, false)
    const store = new AgentStore(tasks)
    const submitted = api.submit({ type: 'flag_expert', paramsJson: JSON.stringify({ expert: ex[1], reason: 'slow' }), description: 'look at it', source: 'operator:alice' })
    const agent = new Agent({ node: fakeNode(), router: fakeMesh(ex), governance: gov, store, config: CFG })
    const r = await agent.runCycle({ injected: INJ })
    await agent.close()
    assert.equal(r.state, 'done', r.error)
    const listed = api.list({})
    assert.equal(listed.total, r.stored.length + 1)
    assert.deepEqual(listed.tasks.map(t => t.id), [...r.stored.map(t => t.id).reverse(), submitted.id], 'newest first, both kinds')
    for (const t of r.stored) {
      const got = api.get(t.id)
      assert.equal(got.origin, 'agent')
      assert.deepEqual(got, t)
      assert.equal(got.description, t.description)
      // the agent's state and the API's status / approval agree (docs/agent.md, the mapping)
      const expected = { executed: ['done', 'auto'], awaiting_review: ['queued', 'pending'], awaiting_quorum: ['queued', 'pending'], blocked: ['queued', 'blocked'], rejected: ['cancelled', 'blocked'], queued: ['queued', 'auto'] }[t.state as string]
      assert.deepEqual([got.status, got.approval], expected, `${t.state}`)
      assert.equal(got.tierName, Tier[Math.max(...t.actions.map(a => Tier[a.tier as keyof typeof Tier] as number))])
      assert.equal(got.type, t.actions.find(a => a.state === t.state)?.type)
    }
    const audit = r.stored.find(t => t.source === 'audit')!
    assert.deepEqual(api.list({ status: 'done' }).tasks.map(t => t.id).includes(audit.id), true)
    assert.equal(typeof JSON.parse(JSON.stringify(audit.result)), 'string', 'the report is the result')
    const sub = api.get(submitted.id)
    assert.deepEqual([sub.origin, sub.status, sub.approval, sub.tierName, sub.state, sub.source], ['api', 'queued', 'pending', 'SUGGEST', 'awaiting_review', 'operator:alice'])
    assert.deepEqual(sub.actions.map(a => [a.type, a.tier, a.state]), [['flag_expert', 'SUGGEST', 'awaiting_review']])
    // `meshllm tasks` lists the submitted one too (origin 'api', its description as rationale)
    const views = listTasks(tasks, { state: 'awaiting_review' })
    assert.ok(views.some(v => v.id === submitted.id && v.origin === 'api' && v.rationale === 'look at it'))
    store.close()
    assert.equal(tasks.db.isOpen, true, 'a shared task store stays open')
    api.close()
    tasks.close()
  })
})
