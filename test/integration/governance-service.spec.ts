/**
 * GovernanceService as a libp2p service (src/governance/service.ts): the `governance()`
 * factory on real nodes (libp2p's own components, started and stopped with the node), the
 * compatible `new GovernanceService(node, state)`, listeners with unsubscribe and a guard
 * around each call, AbortOptions on the network methods.
 */
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { createMeshNode, type MeshNode } from '../../src/node/node.js'
import { defaultThresholds, type GovernanceConfig } from '../../src/governance/config.js'
import { createEnvelope, Kind } from '../../src/governance/envelope.js'
import { GovernanceState } from '../../src/governance/state.js'
import { GOV_PUSH_PROTOCOL, GOV_SYNC_PROTOCOL, GOVERNANCE_TOPIC_SCORE, GovernanceService, governance, scoreTopic } from '../../src/governance/service.js'

describe('GovernanceService as a libp2p service', function () {
  this.timeout(60_000)
  let keys: PrivateKey[]
  let config: GovernanceConfig
  const nodes: MeshNode[] = []
  let version = Date.now()

  const halt = async (reason: string): Promise<Uint8Array> => {
    const now = Date.now()
    return await createEnvelope({ kind: Kind.HALT, reason, meshId: config.meshId, version: ++version, issuedAtMs: now, expiresAtMs: now + 60_000 }, [keys[0]])
  }

  before(async () => {
    keys = await Promise.all([1, 2, 3].map(async () => generateKeyPair('Ed25519')))
    config = { meshId: `gov-service-${Date.now()}`, keyholders: keys.map(k => ({ publicKey: k.publicKey.raw })), thresholds: defaultThresholds(3), reviewPeriodMs: 86_400_000, revertOnHalt: 3 }
  })

  after(async () => {
    for (const n of nodes) await n.stop()
  })

  it('the governance() factory registers its protocols when the node starts and removes them when it stops', async () => {
    const node = await createMeshNode({ services: { governance: governance({ state: new GovernanceState(config) }) } })
    nodes.push(node)
    const gov = node.services.governance as GovernanceService
    assert.ok(gov instanceof GovernanceService)
    // createMeshNode starts the node (libp2p's default)
    assert.equal(gov.isStarted(), true)
    assert.ok(node.getProtocols().includes(GOV_SYNC_PROTOCOL))
    assert.ok(node.getProtocols().includes(GOV_PUSH_PROTOCOL))
    assert.ok(node.services.pubsub?.topicValidators.has(gov.topic))
    await node.stop()
    assert.equal(gov.isStarted(), false)
    assert.ok(!node.getProtocols().includes(GOV_SYNC_PROTOCOL))
    assert.equal(node.services.pubsub?.topicValidators.has(gov.topic), false)
    await node.start()
    assert.equal(gov.isStarted(), true)
    assert.ok(node.services.pubsub?.topicValidators.has(gov.topic), 'the topic is joined again on a restart')
  })

  it('scoreTopic extends a real gossipsub\'s peer-score parameters; one without them is refused by name', async () => {
    const node = await createMeshNode()
    nodes.push(node)
    const pubsub = node.services.pubsub
    assert.ok(pubsub != null)
    scoreTopic(pubsub, '/meshllm/test/score', GOVERNANCE_TOPIC_SCORE)
    const changed = Object.create(pubsub, { score: { value: undefined } })
    assert.throws(() => { scoreTopic(changed, '/meshllm/test/score', GOVERNANCE_TOPIC_SCORE) }, { name: 'GossipsubInternalsChangedError' })
  })

  it('runs on a minimal node (no gossipsub component): pushes and catches up only', async () => {
    const node = await createMeshNode({ minimal: true, services: { governance: governance({ state: new GovernanceState(config) }) } })
    nodes.push(node)
    await node.start()
    const gov = node.services.governance as GovernanceService
    assert.ok(gov.isStarted())
    const r = await gov.submit(await halt('minimal'))
    assert.equal(r.applied, true)
    assert.equal(r.gossipRecipients, 0)
    assert.deepEqual(r.peers, {})
  })

  it('a push between a factory-made service and a node-made one; listeners: guarded, removable', async () => {
    const a = await createMeshNode({ services: { governance: governance({ state: new GovernanceState(config) }) } })
    const b = await createMeshNode()
    nodes.push(a, b)
    await a.start()
    await b.start()
    const govA = a.services.governance as GovernanceService
    const govB = new GovernanceService(b, new GovernanceState(config))
    await govB.start()
    await b.dial(a.getMultiaddrs()[0])

    const halts: string[] = []
    const changes: number[] = []
    govA.on({ onHalt: () => { throw new Error('a failing listener') } })
    const off = govA.on({ onHalt: (reason) => { halts.push(reason) } })
    govA.on({ onChange: (s) => { changes.push(s.version) } })

    // b's own listener that throws does not stop b from applying and pushing
    govB.on({ onHalt: () => { throw new Error('a failing listener on the submitting side') } })
    const firstBytes = await halt('first')
    const first = await govB.submit(firstBytes)
    assert.equal(first.applied, true)
    // a applied it before answering: by this push, or by its own catch-up from b just before ('known')
    assert.equal((first.peers.applied ?? 0) + (first.peers.known ?? 0), 1, JSON.stringify(first.peers))
    assert.deepEqual(halts, ['first'])
    assert.equal(changes.length, 1)
    assert.equal(govA.haltReason, 'first')

    off()
    const secondBytes = await halt('second')
    const second = await govB.submit(secondBytes)
    assert.equal((second.peers.applied ?? 0) + (second.peers.known ?? 0), 1, JSON.stringify(second.peers))
    assert.equal(govA.haltReason, 'second')
    assert.deepEqual(halts, ['first'], 'an unsubscribed listener is not called')
    assert.equal(changes.length, 2)

    // replays: a's verdict is a refusal code, never a failure
    assert.equal(await govB.pushTo(a.peerId, secondBytes), 'known')
    assert.equal(await govB.pushTo(a.peerId, firstBytes), 'stale')
    assert.deepEqual(halts, ['first'])
    await govB.stop()
  })

  it('AbortOptions: an aborted signal ends syncFrom, pushTo and syncAll', async () => {
    const a = await createMeshNode({ services: { governance: governance({ state: new GovernanceState(config) }) } })
    const b = await createMeshNode({ services: { governance: governance({ state: new GovernanceState(config) }) } })
    nodes.push(a, b)
    await a.start()
    await b.start()
    await b.dial(a.getMultiaddrs()[0])
    const govB = b.services.governance as GovernanceService
    const aborted = AbortSignal.abort(new Error('caller gave up'))
    await assert.rejects(govB.syncFrom(a.peerId, { signal: aborted }))
    await assert.rejects(govB.pushTo(a.peerId, await halt('never sent'), { signal: aborted }))
    const all = await govB.syncAll({ signal: aborted })
    assert.equal(all.peers, 1)
    assert.equal(all.answered, 0)
    // and without one, a catch-up works
    assert.equal(await govB.syncFrom(a.peerId), 0)
  })
})
