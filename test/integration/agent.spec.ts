/**
 * The agent on a real mesh: 3 expert processes (meshtest-c, meshtest-b, meshtest-c) with a
 * test governance file (fresh keys), an in-process router + GovernanceService, store
 * ':memory:'. With injected metrics (a failing expert, a bandwidth spike) and a real forged
 * HALT (rejected: `state.rejected.forged` grows), one cycle asks the mesh for tasks through
 * the router under the JSON constraint: valid tasks that cite the evidence and name the right
 * actions and tiers, nothing above read-only executed, the audit compares experts at the
 * same positions and the governance state of every peer. Then a real signed HALT published
 * while the cycle's generation runs stops the cycle.
 */
import assert from 'node:assert/strict'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { spawnExpert, stopExpert, type SpawnedExpert } from '../../src/peer/spawn.js'
import { createMeshNode, connectBootstrap, type MeshNode } from '../../src/node/node.js'
import { Router, type RouterObserver } from '../../src/router/router.js'
import { RouterTokenizer } from '../../src/router/tokenizer.js'
import { configToJson, defaultThresholds, type GovernanceConfig } from '../../src/governance/config.js'
import { createEnvelope, Kind } from '../../src/governance/envelope.js'
import { GovernanceState } from '../../src/governance/state.js'
import { GOV_SYNC_PROTOCOL, GovernanceService } from '../../src/governance/service.js'
import { ACTIONS, Tier } from '../../src/governance/tiers.js'
import { Agent, listTasks, type AgentConfig } from '../../src/agent/agent.js'
import { AgentStore } from '../../src/agent/store.js'
import { outputOf } from '../../src/tasks/model.js'
import { matches } from '../../src/agent/json-constraint.js'
import { taskSchema } from '../../src/agent/task-schema.js'
import { allowedActionTypes } from '../../src/agent/detectors.js'
import { checkGovernancePeers, governancePeers } from '../../src/agent/audit.js'
import { waitFor } from '../helpers/wait.js'

const peerOf = (addr: string): string => addr.split('/p2p/')[1]

describe('agent on a real mesh (3 expert processes)', function () {
  this.timeout(180_000)
  const experts: SpawnedExpert[] = []
  let keys: PrivateKey[]
  let config: GovernanceConfig
  let node: MeshNode
  let gov: GovernanceService
  let tokenizer: RouterTokenizer
  let router: Router
  let ids: { c1: string, b: string, c2: string }
  const CFG: AgentConfig = { k: 2, minExperts: 2, expertsPerStream: 1, maxTokens: 200, spotCheckPairs: 3, spotCheckTokens: 4 }

  before(async () => {
    keys = await Promise.all([1, 2, 3].map(async () => generateKeyPair('Ed25519')))
    config = { meshId: `agent-test-${Date.now()}`, keyholders: keys.map(k => ({ publicKey: k.publicKey.raw })), thresholds: defaultThresholds(3), reviewPeriodMs: 24 * 3_600_000, revertOnHalt: 3 }
    const dir = await mkdtemp(join(tmpdir(), 'meshllm-agent-'))
    const govFile = join(dir, 'governance.json')
    await writeFile(govFile, JSON.stringify(configToJson(config)))
    const first = await spawnExpert('meshtest-c', ['--governance', govFile, '--data-dir', join(dir, 'e1')])
    experts.push(first)
    experts.push(...await Promise.all([
      spawnExpert('meshtest-b', ['--governance', govFile, '--data-dir', join(dir, 'e2'), '--bootstrap', first.addr]),
      spawnExpert('meshtest-c', ['--governance', govFile, '--data-dir', join(dir, 'e3'), '--bootstrap', first.addr])
    ]))
    ids = { c1: peerOf(experts[0].addr), b: peerOf(experts[1].addr), c2: peerOf(experts[2].addr) }
    node = await createMeshNode({ listen: ['/ip4/127.0.0.1/tcp/0'] })
    await node.start()
    gov = new GovernanceService(node, new GovernanceState(config))
    await gov.start()
    await connectBootstrap(node, [first.addr])
    tokenizer = await RouterTokenizer.load('meshtest-c')
    router = new Router(node, tokenizer, { haltReason: () => gov.haltReason })
    gov.on({ onHalt: (reason) => router.abortAll(reason) })
    await waitFor(async () => (await router.experts(true)).compatible.length >= 3, 30_000, 'three experts on the DHT')
    await waitFor(() => (node.services.pubsub as any).getSubscribers(gov.topic).length > 0, 20_000, 'governance topic peers')
  })

  after(async () => {
    await tokenizer?.close()
    await gov?.stop()
    await node?.stop()
    await Promise.all(experts.map(stopExpert))
  })

  it('one cycle: a failing expert, a bandwidth spike and a forged HALT give valid tasks that cite the evidence; nothing above read-only runs', async () => {
    // a forged HALT (signed by a stranger): rejected here, never forwarded
    const stranger = await generateKeyPair('Ed25519')
    const now = Date.now()
    const forged = await createEnvelope({ kind: Kind.HALT, reason: 'forged', meshId: config.meshId, version: now, issuedAtMs: now, expiresAtMs: now + 3_600_000 }, [stranger])
    const pub = await gov.publish(forged)
    assert.equal(pub.accepted, false)
    assert.equal(gov.state.rejected.forged, 1)
    assert.equal(gov.haltReason, undefined)

    const store = new AgentStore(':memory:')
    const agent = new Agent({ node, router, governance: gov, store, config: CFG })
    const t0 = Date.now()
    const r = await agent.runCycle({ injected: { experts: { [ids.b]: { failures: 7, successes: 21, consecutiveFailures: 4, circuitOpen: true, lastError: 'stream reset by peer' } }, bytesPerExpertToken: 2400 } })
    const ms = Date.now() - t0
    await agent.close()
    assert.equal(r.state, 'done', r.error)
    assert.equal(r.mode, 'distributed')
    assert.equal(r.metrics!.experts.length, 3)
    assert.ok(r.metrics!.dht.routingTableSize > 0)
    assert.deepEqual(r.findings.map(f => f.kind).sort(), ['bandwidth', 'expert_failing', 'security'])

    for (const f of r.findings) {
      const t = r.stored.find(x => x.findingKey === f.key)
      assert.ok(t != null, `a task for ${f.key}`)
      // proposed by the mesh: a real constrained generation through the router
      assert.equal(t.source, 'mesh', JSON.stringify(t.meta))
      assert.ok((t.meta!.tokens as number) > 0)
      assert.ok((t.meta!.experts as string[]).length >= 1)
      assert.ok(!(t.meta!.experts as string[]).includes(ids.b), 'the failing (circuit open) expert served no proposal')
      const schema = taskSchema({ domains: f.domains, actionTypes: allowedActionTypes(f), experts: f.experts.length > 0 ? f.experts : undefined, configKeys: f.configKeys })
      assert.equal(matches(schema, t.meta!.raw as string), true, `the mesh's text is a document of the schema: ${t.meta!.raw}`)
      assert.ok(f.domains.includes(t.domain as any))
      // the detector's numbers are in the task's evidence
      for (const line of f.evidence) for (const n of line.match(/\d+(?:\.\d+)?/g) ?? []) assert.ok(t.evidence.some(e => e.includes(n)), `${f.kind}: evidence cites ${n}`)
      for (const a of t.actions) {
        assert.ok(f.actionTypes.includes(a.type), `${a.type} answers ${f.kind}`)
        assert.equal(a.known, true)
        assert.equal(a.tier, Tier[ACTIONS[a.type].tier])
        if ('expert' in a.params) assert.equal(a.params.expert, ids.b)
        // phase 0: reports run, suggestions wait for review, the rest is blocked
        const tier = ACTIONS[a.type].tier
        assert.equal(a.state, tier === Tier.READ_ONLY ? 'executed' : tier === Tier.SUGGEST ? 'awaiting_review' : 'blocked', `${a.type}: ${a.reason}`)
      }
    }
    assert.match(r.stored.find(t => t.findingKey === 'security:governance')!.evidence.join('\n'), /1 forged governance messages rejected since the last cycle \(total 1\)/)
    assert.match(r.stored.find(t => t.findingKey === 'bandwidth:mesh')!.evidence.join('\n'), /2400 bytes per expert per token, budget 1000/)
    assert.match(r.stored.find(t => t.findingKey === `expert_failing:${ids.b}`)!.evidence.join('\n'), new RegExp(`expert ${ids.b}: 7 failures of 28 requests, 4 consecutive, circuit open`))
    // nothing above read-only executed; every executed action is a report with stored output
    for (const t of r.stored) {
      for (const a of t.actions) if (a.state === 'executed') assert.equal(a.tier, 'READ_ONLY')
      if (t.actions.some(a => a.state === 'executed')) assert.ok((outputOf(t) ?? '').length > 0)
    }

    // the audit: the two meshtest-c experts agree at the same positions, meshtest-b does not; every peer's governance state matches
    const audit = r.audit!
    assert.equal(audit.spotChecks.length, 3)
    const cc = audit.spotChecks.find(c => [c.a, c.b].sort().join() === [ids.c1, ids.c2].sort().join())!
    assert.equal(cc.error, undefined)
    assert.equal(cc.positions, 4)
    assert.equal(cc.agreement, 1)
    assert.ok(cc.meanTv < 0.05, `same model: TV ${cc.meanTv}`)
    for (const c of audit.spotChecks.filter(x => x !== cc)) { assert.equal(c.error, undefined); assert.ok(c.meanTv > cc.meanTv) }
    assert.ok(audit.governance.length >= 3)
    for (const g of audit.governance) assert.equal(g.consistent, true, JSON.stringify(g))
    const auditTask = r.stored.find(t => t.source === 'audit')!
    assert.equal(auditTask.state, 'executed')
    assert.deepEqual(auditTask.actions.map(a => [a.type, a.tier]), [['report', 'READ_ONLY']])

    const out = { tasks: listTasks(store.tasks).reverse() }
    assert.deepEqual(out.tasks.map(t => t.id), r.tasks.map(t => t.id))
    process.stdout.write(`      one cycle in ${ms} ms: ${r.stored.length} tasks; proposals ${r.stored.filter(t => t.source === 'mesh').map(t => `${t.meta!.tokens as number} tokens/${t.meta!.ms as number} ms (${t.meta!.forcedSteps as number} forced)`).join(', ')}\n`)
    if (process.env.MESHLLM_AGENT_PRINT != null) process.stdout.write(JSON.stringify(out, null, 2) + '\n')
    store.close()
  })

  it('a signed HALT published while the cycle\'s generation runs stops the cycle at once', async () => {
    const store = new AgentStore(':memory:')
    const agent = new Agent({ node, router, governance: gov, store, config: { ...CFG, dedupeMs: 0 } })
    let haltAt = 0
    let tokensBefore = 0
    const observer: RouterObserver = {
      onToken: (ev) => {
        tokensBefore = Math.max(tokensBefore, ev.index + 1)
        if (haltAt === 0 && ev.index === 5) {
          haltAt = Date.now()
          const now = Date.now()
          void createEnvelope({ kind: Kind.HALT, reason: 'agent integration test', meshId: config.meshId, version: now, issuedAtMs: now, expiresAtMs: now + 3_600_000 }, [keys[1]]).then(async env => await gov.publish(env))
        }
      }
    }
    router.observers.add(observer)
    const r = await agent.runCycle({ injected: { bytesPerExpertToken: 5000 } })
    router.observers.delete(observer)
    const stoppedAfter = Date.now() - haltAt
    await agent.close()
    assert.ok(haltAt > 0, 'the HALT was published during a generation')
    assert.equal(r.state, 'halted')
    assert.match(r.haltReason!, /agent integration test/)
    assert.equal(r.stored.filter(t => t.source === 'mesh').length, 0, 'the interrupted proposal stored no task')
    assert.equal(r.audit, undefined, 'no audit after the halt')
    assert.equal(store.cycle(r.cycle)?.state, 'halted')
    assert.ok(stoppedAfter < 3_000, `stopped ${stoppedAfter} ms after the HALT`)
    assert.ok(tokensBefore < 40, `the generation ended early (${tokensBefore} tokens)`)
    // the experts got the HALT too
    await waitFor(() => experts.every(e => /HALTED by governance: agent integration test/.test(e.stderr())), 5_000, 'experts halted')
    process.stdout.write(`      HALT mid-generation: cycle stopped ${stoppedAfter} ms after publishing, after ${tokensBefore} tokens\n`)
    store.close()
  })

  it('the governance audit flags a peer whose state lags (it never saw the HALT)', async () => {
    const lagging = await createMeshNode({ listen: ['/ip4/127.0.0.1/tcp/0'] })
    await lagging.start()
    try {
      // serves the catch-up protocol with an empty log
      await lagging.handle(GOV_SYNC_PROTOCOL, async (stream: any) => { await stream.close() })
      await node.dial(lagging.getMultiaddrs()[0])
      await waitFor(async () => (await governancePeers(gov, 16)).some(p => p.equals(lagging.peerId)), 5_000, 'the lagging peer identified')
      const checks = await checkGovernancePeers(gov, await governancePeers(gov, 16, Object.values(ids)))
      const lag = checks.find(c => c.peer === lagging.peerId.toString())!
      assert.deepEqual([lag.consistent, lag.version, lag.halted], [false, 0, false])
      // experts that are up caught the HALT too; one that is down is reported unreachable, never consistent
      // (an expert process may die on a HALT that lands mid-evaluation: "Sampler is disposed", model-host)
      for (const [i, id] of Object.values(ids).entries()) {
        const c = checks.find(x => x.peer === id)!
        if (experts[i].child.exitCode == null && experts[i].child.signalCode == null) {
          assert.deepEqual([c.consistent, c.halted, c.error], [true, true, undefined], JSON.stringify(c))
        } else {
          assert.equal(c.consistent, false)
          assert.ok(c.error != null)
        }
      }
    } finally {
      await lagging.stop()
    }
  })
})
