/** The connection budget (src/node/connection-budget.ts) on real libp2p nodes over loopback TCP. */
import assert from 'node:assert/strict'
import { KEEP_ALIVE } from '@libp2p/interface'
import { createMeshNode, type MeshNode } from '../../src/node/node.js'
import type { ConnectionBudget } from '../../src/node/connection-budget.js'

describe('connection budget', function () {
  this.timeout(60_000)
  const nodes: MeshNode[] = []
  after(async function () { await Promise.all(nodes.map(async n => { await n.stop() })) })

  it('past its target, closes idle connections this node dialled to untagged peers, and no others', async function () {
    const a = await createMeshNode({ connectionBudget: { target: 2, idleMs: 0, intervalMs: 3_600_000 } })
    nodes.push(a)
    // DHT clients: not in a's routing table, so kad-dht does not tag them as its closest peers
    // (in a mesh of five it would tag them all, and rightly protect them)
    const [b, c, d, e] = await Promise.all(Array.from({ length: 4 }, async () => await createMeshNode({ dhtServer: false })))
    nodes.push(b, c, d, e)
    for (const n of nodes) if (n.status !== 'started') await n.start()
    for (const p of [b, c, d]) await a.dial(p.getMultiaddrs()[0])
    // e dials a: an inbound connection, the dialer's to close
    await e.dial(a.getMultiaddrs()[0])
    for (const p of [b, c]) await a.peerStore.merge(p.peerId, { tags: { [KEEP_ALIVE]: { value: 1 } } })
    // a's side of e's connection registers a moment after e's dial resolves
    for (let i = 0; i < 100 && a.getConnections().length < 4; i++) await new Promise(resolve => setTimeout(resolve, 50))
    assert.equal(a.getConnections().length, 4)
    const budget = a.services.connectionBudget as ConnectionBudget
    assert.equal(await budget.trim(), 1)
    const open = new Set(a.getConnections().map(x => x.remotePeer.toString()))
    assert.ok(!open.has(d.peerId.toString()), 'the untagged outbound connection is closed')
    for (const p of [b, c, e]) assert.ok(open.has(p.peerId.toString()))
    // at or under the target: nothing more to do
    assert.equal(await budget.trim(), 0)
  })
})
